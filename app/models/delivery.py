"""Push delivery: endpoints GP systems register, and the transactional outbox of messages to them."""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, SecretStr, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from app.db.base import UTCDateTime, enum_column, utc_now
from app.services.validation import check_no_nul


class MessageFormat(StrEnum):
    R4 = "fhir-r4"  # FHIR R4 document Bundle (every service)
    UPDATE_RECORD = "gp-connect-update-record"  # STU3 ITK3 message (not DMS)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    DEAD = "dead"


class Endpoint(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_ods: str = Field(foreign_key="organisation.ods_code", max_length=10, index=True)
    url: str = Field(max_length=500)
    format: MessageFormat = Field(sa_column=enum_column(MessageFormat))
    secret: str = Field(max_length=200)
    active: bool = True
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


class OutboxMessage(SQLModel, table=True):
    """One message to one endpoint, written in the transaction of the change it reports."""

    __tablename__ = "outbox_message"
    __table_args__ = (
        Index(
            "ix_outbox_message_status_priority_next_attempt_at",
            "status",
            "priority",
            "next_attempt_at",
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    endpoint_id: uuid.UUID = Field(foreign_key="endpoint.id", index=True)
    recipient_ods: str = Field(max_length=10, index=True)
    referral_id: uuid.UUID = Field(foreign_key="referral.id", index=True)
    kind: str = Field(
        max_length=40
    )  # summary | declined | returned | overdue | urgent-escalation | ...
    priority: int = 1  # 0 urgent first
    format: MessageFormat = Field(sa_column=enum_column(MessageFormat))
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: DeliveryStatus = Field(sa_column=enum_column(DeliveryStatus, index=True))
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class EndpointCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "url": "https://gp-system.example.nhs.uk/pharmref/inbox",
                "format": "fhir-r4",
                "secret": "a-long-random-shared-secret-of-32-chars",
            }
        },
    )

    url: AnyHttpUrl
    format: MessageFormat = MessageFormat.R4
    secret: SecretStr = PydanticField(
        min_length=32, max_length=200, description="Shared secret for the HMAC signature"
    )

    @field_validator("secret")
    @classmethod
    def _secret_storable(cls, value: SecretStr) -> SecretStr:
        check_no_nul(value.get_secret_value())
        return value


ENDPOINT_EXAMPLE: dict[str, Any] = {
    "id": "0b6f3f5c-5d1e-4d0b-8f5e-2a1f0c9d7e61",
    "org_ods": "A81001",
    "url": "https://gp-system.example.nhs.uk/pharmref/inbox",
    "format": "fhir-r4",
    "active": True,
    "created_at": "2026-11-22T09:00:00Z",
}


class EndpointPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"example": ENDPOINT_EXAMPLE})

    id: uuid.UUID
    org_ods: str
    url: str
    format: MessageFormat
    active: bool
    created_at: datetime


DELIVERY_EXAMPLE: dict[str, Any] = {
    "id": "7d8e3c1a-4b2f-4e6a-9c0d-1f2e3a4b5c6d",
    "endpoint_id": "0b6f3f5c-5d1e-4d0b-8f5e-2a1f0c9d7e61",
    "recipient_ods": "A81001",
    "referral_id": "2803eae0-9fb1-4197-a497-7f04b58ea75f",
    "kind": "summary",
    "priority": 1,
    "format": "fhir-r4",
    "status": "delivered",
    "attempts": 1,
    "next_attempt_at": "2026-11-22T11:00:00Z",
    "last_status_code": 200,
    "last_error": None,
    "created_at": "2026-11-22T11:00:00Z",
    "delivered_at": "2026-11-22T11:00:01Z",
}


class DeliveryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"example": DELIVERY_EXAMPLE})

    id: uuid.UUID
    endpoint_id: uuid.UUID
    recipient_ods: str
    referral_id: uuid.UUID
    kind: str
    priority: int
    format: MessageFormat
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveriesPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"data": [DELIVERY_EXAMPLE], "next_cursor": None}}
    )

    data: list[DeliveryPublic]
    next_cursor: str | None = None
