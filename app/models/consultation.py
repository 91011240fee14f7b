"""Consultation records: one per referral (DMS: one per stage), with the derived clinical results."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from app.db.base import UTCDateTime, enum_column, utc_now
from app.models.enums import ContraceptiveType, Pathway, Service
from app.models.referral import LongText, ShortText
from app.models.types import DmdCode, IsoDate, IsoDateTime, Version
from app.services.validation import check_no_nul

Note500 = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(check_no_nul),
]


class Consultation(SQLModel, table=True):
    """What the pharmacy recorded (`record`), what pharmref derived from it (`derived`: BP category,
    ABPM result, COC safety, escalations) and any reasoned clinician override, kept side by side."""

    __table_args__ = (
        Index("ix_consultation_referral_id_stage", "referral_id", "stage", unique=True),
        # Keyset paging of summaries in recording order (GET /fhir/Composition?_lastUpdated=).
        Index("ix_consultation_recorded_at_id", "recorded_at", "id"),
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


# ---- the consultation records, one schema per service ---------------------------------------

GphcNumber = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{7}$"),
    PydanticField(description="The responsible pharmacist's 7-digit GPhC registration number"),
]


class OverrideIn(BaseModel):
    """A clinician's reasoned departure from the outcome pharmref derives; it is kept with the record."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=10, max_length=1000),
        AfterValidator(check_no_nul),
    ]


class _ConsultationBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Version | None = PydanticField(default=None, description="Or send If-Match")
    clinician_name: ShortText
    gphc_number: GphcNumber
    consulted_at: IsoDateTime | None = None
    notes: LongText | None = None
    override: OverrideIn | None = None


class MedicineSupplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dmd_code: DmdCode
    name: ShortText
    dose: ShortText
    quantity: float = PydanticField(gt=0, le=1000)
    unit: ShortText = "dose"


PharmacyFirstOutcome = Literal[
    "advice-self-care",
    "otc-product",
    "pgd-supply",
    "referred-gp-urgent",
    "referred-gp-routine",
    "signposted",
    "escalated-urgent-care",
]


class PharmacyFirstConsultationIn(_ConsultationBase):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "service": "pharmacy-first",
                "version": 2,
                "clinician_name": "Priya Example",
                "gphc_number": "2099999",
                "pathway": "sore-throat",
                "gateway_criteria_met": True,
                "outcome": "pgd-supply",
                "medicine": {
                    "dmd_code": "39695211000001102",
                    "name": "Phenoxymethylpenicillin 250mg tablets",
                    "dose": "Two tablets four times a day for 5 days",
                    "quantity": 40,
                    "unit": "tablet",
                },
            }
        }
    )

    service: Literal["pharmacy-first"]
    pathway: Pathway
    gateway_criteria_met: bool | None = PydanticField(
        default=None, description="Required for the seven clinical pathways"
    )
    outcome: PharmacyFirstOutcome
    medicine: MedicineSupplyIn | None = PydanticField(
        default=None, description="Required for pgd-supply"
    )


class ClinicReadingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    systolic: int = PydanticField(ge=40, le=300)
    diastolic: int = PydanticField(ge=20, le=200)
    pulse: int | None = PydanticField(default=None, ge=20, le=250)
    irregular_pulse: bool = False
    measured_at: IsoDateTime | None = None


class AbpmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offered_on: IsoDate | None = None
    fitted_on: IsoDate | None = None
    returned_on: IsoDate | None = None
    daytime_readings: int | None = PydanticField(default=None, ge=0, le=200)
    daytime_average_systolic: int | None = PydanticField(default=None, ge=40, le=300)
    daytime_average_diastolic: int | None = PydanticField(default=None, ge=20, le=200)


class BloodPressureConsultationIn(_ConsultationBase):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "service": "blood-pressure",
                "version": 2,
                "clinician_name": "Priya Example",
                "gphc_number": "2099999",
                "clinic_readings": [
                    {"systolic": 152, "diastolic": 96, "pulse": 72},
                    {"systolic": 148, "diastolic": 94, "pulse": 70},
                ],
                "abpm": {
                    "offered_on": "2026-11-20",
                    "fitted_on": "2026-11-20",
                    "returned_on": "2026-11-21",
                    "daytime_readings": 26,
                    "daytime_average_systolic": 141,
                    "daytime_average_diastolic": 88,
                },
                "outcome": "referred-gp-hypertension",
            }
        }
    )

    service: Literal["blood-pressure"]
    clinic_readings: list[ClinicReadingIn] = PydanticField(min_length=1, max_length=10)
    abpm: AbpmIn | None = None
    outcome: Annotated[
        str, StringConstraints(min_length=1, max_length=40), AfterValidator(check_no_nul)
    ] = PydanticField(
        description="What the pharmacist did; it must match the outcome pharmref derives unless overridden"
    )


class ContraceptiveProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dmd_code: DmdCode
    name: ShortText


class VitalBloodPressureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    systolic: int = PydanticField(ge=40, le=300)
    diastolic: int = PydanticField(ge=20, le=200)


class ContraceptionConsultationIn(_ConsultationBase):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "service": "contraception",
                "version": 2,
                "clinician_name": "Priya Example",
                "gphc_number": "2099999",
                "supply_type": "ongoing",
                "pill": "coc",
                "product": {"dmd_code": "17346711000001106", "name": "Rigevidon tablets"},
                "months_supplied": 12,
                "blood_pressure": {"systolic": 118, "diastolic": 76},
                "bmi": 24.1,
                "outcome": "supplied",
            }
        }
    )

    service: Literal["contraception"]
    supply_type: Literal["initiation", "ongoing"]
    pill: ContraceptiveType
    product: ContraceptiveProductIn | None = None
    months_supplied: int | None = PydanticField(default=None, ge=1, le=12)
    blood_pressure: VitalBloodPressureIn | None = None
    bmi: float | None = PydanticField(default=None, gt=10, lt=100)
    outcome: Literal["supplied", "not-supplied-referred"]
    reason_not_supplied: Note500 | None = None


class DmsStageIn(_ConsultationBase):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "service": "dms",
                "version": 2,
                "clinician_name": "Priya Example",
                "gphc_number": "2099999",
                "stage": 1,
                "completed_on": "2026-11-22",
                "reconciled": True,
                "issues_found": [
                    "Ramipril dose differs from pre-admission: confirmed with the ward"
                ],
            }
        }
    )

    service: Literal["dms"]
    stage: Literal[1, 2, 3]
    completed_on: IsoDate
    reconciled: bool | None = PydanticField(
        default=None,
        description="Stage 1: discharge medicines reconciled against pre-admission medicines",
    )
    prescription_checked: bool | None = PydanticField(
        default=None,
        description="Stage 2: first post-discharge prescription checked against the discharge list",
    )
    patient_consulted: bool | None = PydanticField(
        default=None, description="Stage 3: check-and-reinforce consultation held with the patient"
    )
    issues_found: list[Note500] = PydanticField(default_factory=list, max_length=50)
    could_not_complete_reason: Note500 | None = PydanticField(
        default=None, description="Ends the service at this stage, with the reason"
    )


ConsultationIn = Annotated[
    PharmacyFirstConsultationIn
    | BloodPressureConsultationIn
    | ContraceptionConsultationIn
    | DmsStageIn,
    PydanticField(discriminator="service"),
]


class ConsultationPublic(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "example": {
                "id": "5a0c1f9e-8d0b-4a4f-9c55-0d3b2f0f6a11",
                "referral_id": "2803eae0-9fb1-4197-a497-7f04b58ea75f",
                "service": "blood-pressure",
                "stage": 0,
                "outcome": "referred-gp-hypertension",
                "clinician_name": "Priya Example",
                "gphc_number": "2099999",
                "record": {"clinic_readings": [{"systolic": 152, "diastolic": 96}]},
                "derived": {
                    "clinic_reading": {"systolic": 148, "diastolic": 94},
                    "category": "high",
                    "abpm_result": "hypertension-confirmed",
                    "recommended_outcome": "referred-gp-hypertension",
                    "urgent_escalation": False,
                },
                "override": None,
                "recorded_at": "2026-11-22T11:00:00Z",
                "referral_status": "completed",
                "referral_version": 3,
            }
        },
    )

    id: uuid.UUID
    referral_id: uuid.UUID
    service: Service
    stage: int
    outcome: str
    clinician_name: str
    gphc_number: str
    record: dict[str, Any]
    derived: dict[str, Any]
    override: dict[str, Any] | None
    recorded_at: datetime
    referral_status: str | None = None
    referral_version: int | None = None
