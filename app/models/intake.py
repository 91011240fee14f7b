"""The channel-independent shape of a new referral: FHIR and JSON intake both produce it."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.core.errors import Issue
from app.models.enums import ContraceptiveType, Pathway, ReferralSource, Service, Sex


@dataclass(kw_only=True)
class NewReferral:
    """A validated referral, whichever channel it came in by; `paths` maps fields to payload paths."""

    service: Service
    pathway: Pathway | None = None
    pharmacy_ods: str
    source: ReferralSource | None = None
    priority: str = "routine"
    patient_nhs_number: str | None
    patient_family_name: str
    patient_given_name: str
    patient_birth_date: Any
    patient_sex: Sex
    patient_phone: str | None
    patient_practice_ods: str | None = None
    claimed_referrer_ods: str | None = None
    clinician_name: str | None = None
    clinician_id: str | None = None
    reason: str
    notes: str | None = None
    bp_systolic: int | None = None
    bp_diastolic: int | None = None
    bp_measured_at: datetime | None = None
    bmi: float | None = None
    abpm_requested: bool = False
    contraceptive_type: ContraceptiveType | None = None
    contraceptive_dmd_code: str | None = None
    contraceptive_name: str | None = None
    discharged_at: datetime | None = None
    discharge_medicines: list[dict[str, Any]] | None = None
    authored_at: datetime | None = None
    due_by: datetime | None = None
    timeframe: timedelta | None = None
    bars_bundle_id: str | None = None
    correlation_id: str | None = None
    paths: dict[str, str] = field(default_factory=dict)
    warnings: list[Issue] = field(default_factory=list)

    def path(self, logical: str) -> str:
        return self.paths.get(logical, logical)
