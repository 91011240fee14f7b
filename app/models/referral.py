"""Referrals: the stored row, the JSON intake schema, and the public views."""

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint, desc, text
from sqlmodel import Field, SQLModel

from app.db.base import UTCDateTime, enum_column, utc_now
from app.models.enums import (
    ContraceptiveType,
    Intake,
    Pathway,
    ReferralSource,
    ReferralStatus,
    Service,
    Sex,
)
from app.models.types import DmdCode, IsoDate, IsoDateTime, NhsNumber, OdsCode, Version
from app.services.validation import check_no_nul

Priority = Literal["routine", "urgent"]
ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(check_no_nul),
]
LongText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=4000),
    AfterValidator(check_no_nul),
]
# The referral table stores patient names in 100 characters.
PersonName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(check_no_nul),
]
Phone = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=6, max_length=20, pattern=r"^\+?[0-9 ()-]+$"
    ),
]


OPEN_UNMARKED = "overdue_at IS NULL AND (status = 'accepted' OR status = 'received')"


class Referral(SQLModel, table=True):
    __table_args__ = (
        # A pharmacy's inbox in its order (urgent first, then the soonest due): a page is the
        # index's first rows, not a sort of every referral the pharmacy holds in that state.
        Index(
            "ix_referral_pharmacy_ods_status_priority_due_at",
            "pharmacy_ods",
            "status",
            desc("priority"),
            "due_at",
            "id",
        ),
        Index("ix_referral_referrer_ods_created_at", "referrer_ods", "created_at"),
        Index("ix_referral_updated_at", "updated_at"),
        Index("ix_referral_status_due_at", "status", "due_at"),
        # The sweep's overdue claim: only open referrals not yet marked overdue (a small index;
        # the (status, due_at) one holds every open referral past due, marked or not).
        Index(
            "ix_referral_due_at_open_unmarked",
            "due_at",
            "id",
            postgresql_where=text(OPEN_UNMARKED),
            sqlite_where=text(OPEN_UNMARKED),
        ),
        # /metrics counts referrals by service and state: an index-only scan instead of the table
        Index("ix_referral_service_status", "service", "status"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    reference: str = Field(max_length=20, unique=True)
    service: Service = Field(sa_column=enum_column(Service))
    pathway: Pathway | None = Field(default=None, sa_column=enum_column(Pathway, nullable=True))
    status: ReferralStatus = Field(sa_column=enum_column(ReferralStatus))
    status_reason: str | None = Field(default=None, max_length=500)
    source: ReferralSource = Field(sa_column=enum_column(ReferralSource))
    intake: Intake = Field(sa_column=enum_column(Intake))
    priority: str = Field(default="routine", max_length=10)

    referrer_ods: str = Field(foreign_key="organisation.ods_code", max_length=10)
    pharmacy_ods: str = Field(foreign_key="organisation.ods_code", max_length=10)
    patient_practice_ods: str | None = Field(default=None, max_length=10, index=True)
    clinician_name: str | None = Field(default=None, max_length=200)
    clinician_id: str | None = Field(default=None, max_length=40)

    patient_nhs_number: str | None = Field(default=None, max_length=10, index=True)
    patient_family_name: str = Field(max_length=100)
    patient_given_name: str = Field(max_length=100)
    patient_birth_date: date
    patient_sex: Sex = Field(sa_column=enum_column(Sex))
    patient_phone: str | None = Field(default=None, max_length=20)

    reason: str = Field(sa_column=Column(Text, nullable=False))
    notes: str | None = Field(default=None, sa_column=Column(Text))
    bp_systolic: int | None = None
    bp_diastolic: int | None = None
    bp_measured_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    bmi: float | None = None
    abpm_requested: bool = False
    contraceptive_type: ContraceptiveType | None = Field(
        default=None, sa_column=enum_column(ContraceptiveType, nullable=True)
    )
    contraceptive_dmd_code: str | None = Field(default=None, max_length=20)
    contraceptive_name: str | None = Field(default=None, max_length=200)
    discharged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    discharge_medicines: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))

    forwarded_from_id: uuid.UUID | None = Field(default=None, foreign_key="referral.id", index=True)
    bars_bundle_id: str | None = Field(default=None, max_length=64)
    correlation_id: str | None = Field(default=None, max_length=64)
    authored_at: datetime = Field(sa_type=UTCDateTime)
    due_at: datetime = Field(sa_type=UTCDateTime)
    overdue_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    escalated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    version: int = 1
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


class InboundMessage(SQLModel, table=True):
    """Every accepted intake request: the raw validated body, and the key that makes it idempotent."""

    __tablename__ = "inbound_message"
    __table_args__ = (UniqueConstraint("sender_ods", "key_kind", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    sender_ods: str = Field(max_length=10)
    key_kind: str = Field(max_length=20)  # x-request-id | idempotency-key
    key: str = Field(max_length=200)
    body_sha256: str = Field(max_length=64)
    referral_id: uuid.UUID = Field(foreign_key="referral.id", index=True)
    action: str = Field(max_length=20)  # create | cancel
    body: str = Field(sa_column=Column(Text, nullable=False))
    received_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


# ---- JSON intake schema -------------------------------------------------------------------


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nhs_number: NhsNumber | None = PydanticField(
        default=None,
        description="Omit when the patient has no NHS number (allowed, as BaRS requires).",
    )
    family_name: PersonName
    given_name: PersonName
    birth_date: IsoDate
    sex: Sex
    phone: Phone = PydanticField(description="Primary call-back number")
    registered_practice_ods: OdsCode | None = PydanticField(
        default=None,
        description="The patient's registered GP practice; defaults to the referrer for GP referrals.",
    )


class ReferrerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organisation_ods: OdsCode | None = PydanticField(
        default=None, description="Must be the caller's own organisation when given."
    )
    clinician_name: ShortText
    clinician_id: (
        Annotated[
            str,
            StringConstraints(strip_whitespace=True, max_length=40),
            AfterValidator(check_no_nul),
        ]
        | None
    ) = PydanticField(default=None, description="SDS user or role profile id, GMC or NMC number")


class BloodPressureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    systolic: int = PydanticField(ge=40, le=300)
    diastolic: int = PydanticField(ge=20, le=200)
    measured_at: IsoDateTime | None = None


class ContraceptiveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ContraceptiveType
    dmd_code: DmdCode | None = None
    name: ShortText | None = None


class DischargeMedicineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ShortText
    dmd_code: DmdCode | None = None
    dose: ShortText | None = None
    change: Literal["new", "changed", "stopped", "unchanged"] = "unchanged"


class ReferralCreate(BaseModel):
    """A referral from a system without FHIR; stored exactly as a BaRS referral would be."""

    model_config = ConfigDict(extra="forbid")

    service: Service
    pathway: Pathway | None = PydanticField(
        default=None,
        description="Pharmacy First only: a clinical pathway or minor-illness (the default).",
    )
    pharmacy_ods: OdsCode
    source: ReferralSource | None = PydanticField(
        default=None, description="Defaults from the caller's role; a trust may say urgent-care."
    )
    priority: Priority = "routine"
    patient: PatientIn
    referrer: ReferrerIn
    reason: LongText
    notes: LongText | None = None
    due_by: IsoDateTime | None = None
    blood_pressure: BloodPressureIn | None = PydanticField(
        default=None, description="Required for blood-pressure referrals: the latest reading."
    )
    bmi: float | None = PydanticField(default=None, gt=10, lt=100)
    abpm_requested: bool = False
    current_contraceptive: ContraceptiveIn | None = None
    discharged_at: IsoDateTime | None = None
    discharge_medicines: list[DischargeMedicineIn] | None = PydanticField(
        default=None, max_length=100, description="Required for DMS referrals."
    )


# ---- public views ---------------------------------------------------------------------------


class PatientPublic(BaseModel):
    nhs_number: str | None
    family_name: str
    given_name: str
    birth_date: date
    sex: Sex
    phone: str | None
    registered_practice_ods: str | None


class ContraceptivePublic(BaseModel):
    type: ContraceptiveType | None
    dmd_code: str | None
    name: str | None


REFERRAL_EXAMPLE: dict[str, Any] = {
    "id": "2803eae0-9fb1-4197-a497-7f04b58ea75f",
    "reference": "PF-7NG49-TK37B",
    "service": "pharmacy-first",
    "pathway": "sore-throat",
    "status": "received",
    "status_reason": None,
    "source": "gp-practice",
    "intake": "json",
    "priority": "routine",
    "referrer_ods": "A81001",
    "pharmacy_ods": "FA001",
    "clinician_name": "Dr Sam Example",
    "clinician_id": "G1234567",
    "patient": {
        "nhs_number": "9990000018",
        "family_name": "Testpatient",
        "given_name": "Alex",
        "birth_date": "1990-04-01",
        "sex": "female",
        "phone": "07700900001",
        "registered_practice_ods": "A81001",
    },
    "reason": "Sore throat for 3 days, FeverPAIN 2",
    "notes": None,
    "blood_pressure": None,
    "bmi": None,
    "abpm_requested": False,
    "current_contraceptive": None,
    "discharged_at": None,
    "discharge_medicines": None,
    "authored_at": "2026-11-22T09:00:00Z",
    "due_at": "2026-11-23T09:00:00Z",
    "version": 1,
    "created_at": "2026-11-22T09:00:00Z",
    "updated_at": "2026-11-22T09:00:00Z",
}


class ReferralPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": REFERRAL_EXAMPLE})
    id: uuid.UUID
    reference: str
    service: Service
    pathway: Pathway | None
    status: ReferralStatus
    status_reason: str | None
    source: ReferralSource
    intake: Intake
    priority: str
    referrer_ods: str
    pharmacy_ods: str
    clinician_name: str | None
    clinician_id: str | None
    patient: PatientPublic
    reason: str
    notes: str | None
    blood_pressure: BloodPressureIn | None
    bmi: float | None
    abpm_requested: bool
    current_contraceptive: ContraceptivePublic | None
    discharged_at: datetime | None
    discharge_medicines: list[DischargeMedicineIn] | None
    authored_at: datetime
    due_at: datetime
    version: int
    created_at: datetime
    updated_at: datetime


class ReferralsPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "data": [REFERRAL_EXAMPLE],
                "next_cursor": "MjAyNi0xMS0yMlQwOTowMDowMCswMDowMHwy",
            }
        }
    )

    data: list[ReferralPublic]
    next_cursor: str | None = None


class IntakeWarning(BaseModel):
    expression: str | None
    diagnostics: str


class ReferralCreated(ReferralPublic):
    model_config = ConfigDict(json_schema_extra={"example": {**REFERRAL_EXAMPLE, "warnings": []}})

    warnings: list[IntakeWarning] = []


# ---- lifecycle actions ----------------------------------------------------------------------


class DeclineReason(StrEnum):
    SERVICE_UNAVAILABLE = "service-unavailable"
    NO_CAPACITY = "no-capacity"
    PATIENT_NOT_ELIGIBLE = "patient-not-eligible"
    CLINICALLY_INAPPROPRIATE = "clinically-inappropriate"
    PATIENT_DECLINED = "patient-declined"
    OTHER = "other"


Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(check_no_nul),
]


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"version": 1}})

    version: Version | None = PydanticField(
        default=None,
        description="The version you last read; or send If-Match with the ETag instead.",
    )


class DeclineIn(ActionIn):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "version": 1,
                "reason_code": "no-capacity",
                "reason": "No pharmacist on duty",
            }
        }
    )

    reason_code: DeclineReason
    reason: Reason | None = None


class ForwardIn(ActionIn):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {"version": 2, "pharmacy_ods": "FA002", "reason": "Closer to the patient"}
        }
    )

    pharmacy_ods: OdsCode
    reason: Reason | None = None


class ReasonIn(ActionIn):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {"version": 1, "reason": "Needs a GP examination: ear drum not visible"}
        }
    )

    reason: Reason


class NoContactIn(ActionIn):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {"version": 1, "reason": "Three calls unanswered within the timeframe"}
        }
    )

    reason: Reason | None = None


class ForwardedPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"original": REFERRAL_EXAMPLE, "forwarded": REFERRAL_EXAMPLE}}
    )

    original: ReferralPublic
    forwarded: ReferralPublic
