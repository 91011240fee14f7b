"""The audit of reads: who read which referrals' patient-identifiable data, when and how."""

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer
from sqlmodel import Field, SQLModel

from app.db.base import UTCDateTime, enum_column, utc_now
from app.models.enums import Role

# 64-bit ids on PostgreSQL; SQLite only auto-increments an INTEGER primary key.
AuditId = BigInteger().with_variant(Integer(), "sqlite")


class ReadAudit(SQLModel, table=True):
    """One row per read of patient data; rows are only ever inserted."""

    __tablename__ = "read_audit"
    __table_args__ = (
        Index("ix_read_audit_actor_org_id", "actor_org", "id"),
        Index("ix_read_audit_actor_subject_id", "actor_subject", "id"),
        Index("ix_read_audit_at", "at"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(AuditId, primary_key=True, autoincrement=True)
    )
    at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    actor_subject: str = Field(max_length=200)
    actor_org: str = Field(max_length=10)
    actor_role: Role = Field(sa_column=enum_column(Role))
    method: str = Field(max_length=10)
    route: str = Field(max_length=200)  # the path template, e.g. /fhir/ServiceRequest/{referral_id}
    request_id: str | None = Field(default=None, max_length=64)
    correlation_id: str | None = Field(default=None, max_length=64)
    referral_count: int = 0


class ReadAuditReferral(SQLModel, table=True):
    """The referrals one read disclosed. No foreign key to referral: the audit outlives any
    retention purge of the referrals themselves."""

    __tablename__ = "read_audit_referral"
    __table_args__ = (Index("ix_read_audit_referral_referral_id", "referral_id", "read_audit_id"),)

    read_audit_id: int = Field(
        sa_column=Column(AuditId, ForeignKey("read_audit.id", ondelete="CASCADE"), primary_key=True)
    )
    referral_id: uuid.UUID = Field(primary_key=True)


READ_AUDIT_EXAMPLE: dict[str, Any] = {
    "id": 1042,
    "at": "2026-11-22T10:15:00Z",
    "actor_subject": "gp-practice:A81001",
    "actor_org": "A81001",
    "actor_role": "gp-practice",
    "method": "GET",
    "route": "/api/v1/referrals/{referral_id}",
    "request_id": "6f1c2e0a-3b4d-4c5e-8f90-1a2b3c4d5e6f",
    "correlation_id": "0d9c8b7a-6e5f-4a3b-9c2d-1e0f9a8b7c6d",
    "referral_ids": ["2803eae0-9fb1-4197-a497-7f04b58ea75f"],
}


class ReadAuditPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": READ_AUDIT_EXAMPLE})

    id: int
    at: datetime
    actor_subject: str
    actor_org: str
    actor_role: Role
    method: str
    route: str
    request_id: str | None
    correlation_id: str | None
    referral_ids: list[uuid.UUID]


class ReadAuditsPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"data": [READ_AUDIT_EXAMPLE], "next_cursor": "MTA0Mg"}}
    )

    data: list[ReadAuditPublic]
    next_cursor: str | None = None
