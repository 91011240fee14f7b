"""The append-only audit trail of a referral: every state change and clinical write."""

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from app.db.base import UTCDateTime, enum_column, utc_now
from app.models.enums import ReferralStatus, Role


class ReferralEvent(SQLModel, table=True):
    """One row per change; rows are only ever inserted."""

    __tablename__ = "referral_event"
    __table_args__ = (Index("ix_referral_event_referral_id_id", "referral_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    referral_id: uuid.UUID = Field(foreign_key="referral.id")
    action: str = Field(max_length=40)
    from_status: ReferralStatus | None = Field(
        default=None, sa_column=enum_column(ReferralStatus, nullable=True)
    )
    to_status: ReferralStatus | None = Field(
        default=None, sa_column=enum_column(ReferralStatus, nullable=True)
    )
    version: int
    actor_subject: str = Field(max_length=200)
    actor_org: str = Field(max_length=10)
    actor_role: Role = Field(sa_column=enum_column(Role))
    notify_referrer: bool = False
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


EVENT_EXAMPLE: dict[str, Any] = {
    "action": "declined",
    "from_status": "received",
    "to_status": "declined",
    "version": 2,
    "actor_org": "FA001",
    "actor_role": "pharmacy",
    "notify_referrer": True,
    "detail": {"reason_code": "capacity", "reason": "No pharmacist available today"},
    "at": "2026-11-22T10:15:00Z",
}


class ReferralEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"example": EVENT_EXAMPLE})

    action: str
    from_status: ReferralStatus | None
    to_status: ReferralStatus | None
    version: int
    actor_org: str
    actor_role: Role
    notify_referrer: bool
    detail: dict[str, Any] | None
    at: datetime


class ReferralHistory(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "referral_id": "2803eae0-9fb1-4197-a497-7f04b58ea75f",
                "reference": "PF-7NG49-TK37B",
                "status": "declined",
                "events": [EVENT_EXAMPLE],
            }
        }
    )

    referral_id: uuid.UUID
    reference: str
    status: ReferralStatus
    events: list[ReferralEventPublic]
