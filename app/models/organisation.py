"""The directory: organisations keyed by ODS code, memberships, list sizes, pharmacy services."""

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db.base import UTCDateTime, enum_column, utc_now
from app.models.enums import OrgKind, Service


class Organisation(SQLModel, table=True):
    ods_code: str = Field(primary_key=True, max_length=10)
    kind: OrgKind = Field(sa_column=enum_column(OrgKind, index=True))
    name: str = Field(max_length=200)
    postcode: str | None = Field(default=None, max_length=10)
    active: bool = True
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


class Membership(SQLModel, table=True):
    """A practice's membership of a PCN, or a PCN's membership of a place, over a date range."""

    __table_args__ = (
        UniqueConstraint("member_ods", "group_ods", "start_date"),
        Index("ix_membership_group_ods_start_date", "group_ods", "start_date"),
    )

    id: int | None = Field(default=None, primary_key=True)
    member_ods: str = Field(foreign_key="organisation.ods_code", max_length=10, index=True)
    group_ods: str = Field(foreign_key="organisation.ods_code", max_length=10)
    start_date: date
    end_date: date | None = None


class ListSize(SQLModel, table=True):
    """Registered patients of a practice from an effective date; rows are history, never updated."""

    __tablename__ = "list_size"

    practice_ods: str = Field(foreign_key="organisation.ods_code", primary_key=True, max_length=10)
    effective_date: date = Field(primary_key=True)
    registered_patients: int = Field(ge=0)


class PharmacyService(SQLModel, table=True):
    """A service a pharmacy is registered to provide, with its directory (DoS) service id."""

    __tablename__ = "pharmacy_service"

    pharmacy_ods: str = Field(foreign_key="organisation.ods_code", primary_key=True, max_length=10)
    service: Service = Field(sa_column=enum_column(Service, primary_key=True))
    service_id: str | None = Field(default=None, max_length=20, unique=True)
    start_date: date | None = None


class ServicePublic(BaseModel):
    service: Service
    service_id: str | None


ORGANISATION_EXAMPLE: dict[str, Any] = {
    "ods_code": "FA001",
    "kind": "pharmacy",
    "name": "Elm Street Pharmacy",
    "postcode": "ZZ4 8YH",
    "active": True,
    "pcn": None,
    "place": None,
    "registered_patients": None,
    "services": [
        {"service": "pharmacy-first", "service_id": "2000011001"},
        {"service": "blood-pressure", "service_id": "2000011002"},
    ],
}


class OrganisationPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": ORGANISATION_EXAMPLE})

    ods_code: str
    kind: OrgKind
    name: str
    postcode: str | None
    active: bool
    pcn: str | None = None
    place: str | None = None
    registered_patients: int | None = None
    services: list[ServicePublic] = []


class OrganisationsPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {"data": [ORGANISATION_EXAMPLE], "count": 1, "next_cursor": "FA001"}
        }
    )

    data: list[OrganisationPublic]
    count: int
    next_cursor: str | None = None
