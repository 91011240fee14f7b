"""Consultation records: one per referral (DMS: one per stage), with the derived clinical results."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from app.db.base import UTCDateTime, enum_column, utc_now
from app.models.enums import Service


class Consultation(SQLModel, table=True):
    """What the pharmacy recorded (`record`), what pharmref derived from it (`derived`: BP category,
    ABPM result, COC safety, escalations) and any reasoned clinician override, kept side by side."""

    __table_args__ = (
        Index("ix_consultation_referral_id_stage", "referral_id", "stage", unique=True),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    referral_id: uuid.UUID = Field(foreign_key="referral.id")
    service: Service = Field(sa_column=enum_column(Service))
    stage: int = Field(default=0, description="DMS stage 1, 2 or 3; 0 for the other services")
    outcome: str = Field(max_length=40)
    clinician_name: str = Field(max_length=200)
    gphc_number: str = Field(max_length=7)
    record: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    derived: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    override: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    recorded_by_org: str = Field(max_length=10)
    recorded_by_subject: str = Field(max_length=200)
    recorded_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
