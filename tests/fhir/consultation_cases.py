"""In-memory referrals and consultations for the summary mappers, one per service scenario, and
the JSON walkers their tests share.

The `record` dicts are what `record_consultation` stores (the validated input schema dumped as
JSON) and `derived` holds what app/services/consultations.py computes for that record.
"""

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from app.models.consultation import Consultation
from app.models.enums import (
    ContraceptiveType,
    Intake,
    OrgKind,
    Pathway,
    ReferralSource,
    ReferralStatus,
    Service,
    Sex,
)
from app.models.organisation import Organisation, OrganisationPublic
from app.models.referral import Referral

CREATED = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
CONSULTED = datetime(2026, 11, 22, 14, 30, tzinfo=UTC)
RECORDED = datetime(2026, 11, 22, 14, 55, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)

PHARMACY = OrganisationPublic(
    ods_code="FA001", kind=OrgKind.PHARMACY, name="Elm Street Pharmacy", postcode=None, active=True
)
PRACTICE = Organisation(ods_code="A81001", kind=OrgKind.GP_PRACTICE, name="Riverside Surgery")


@dataclass(frozen=True)
class Case:
    name: str
    referral: Referral
    consultation: Consultation


def make_referral(service: Service, **overrides: Any) -> Referral:
    values: dict[str, Any] = {
        "id": uuid.uuid5(uuid.NAMESPACE_URL, f"referral:{service}:{overrides.get('reference')}"),
        "reference": "PF-7NG49-TK37B",
        "service": service,
        "status": ReferralStatus.COMPLETED,
        "source": ReferralSource.GP_PRACTICE,
        "intake": Intake.FHIR,
        "priority": "routine",
        "referrer_ods": "A81001",
        "pharmacy_ods": "FA001",
        "patient_practice_ods": "A81001",
        "clinician_name": "Dr Sam Example",
        "patient_nhs_number": "9990000018",
        "patient_family_name": "Quillfeather",
        "patient_given_name": "Marisol",
        "patient_birth_date": date(1990, 4, 1),
        "patient_sex": Sex.FEMALE,
        "reason": "Sore throat for 3 days",
        "authored_at": CREATED,
        "due_at": CREATED + timedelta(hours=24),
        "version": 3,
        "created_at": CREATED,
        "updated_at": RECORDED,
    }
    return Referral(**(values | overrides))


def make_consultation(
    referral: Referral,
    *,
    record: dict[str, Any],
    derived: dict[str, Any],
    outcome: str,
    stage: int = 0,
    override: dict[str, Any] | None = None,
) -> Consultation:
    base = {
        "service": str(referral.service),
        "clinician_name": "Priya Example",
        "gphc_number": "2099999",
        "consulted_at": CONSULTED.isoformat().replace("+00:00", "Z"),
        "notes": None,
    }
    return Consultation(
        id=uuid.uuid5(referral.id, f"consultation:{stage}"),
        referral_id=referral.id,
        service=referral.service,
        stage=stage,
        outcome=outcome,
        clinician_name="Priya Example",
        gphc_number="2099999",
        record=json.loads(json.dumps(base | record)),
        derived=derived,
        override=override,
        recorded_by_org="FA001",
        recorded_by_subject="test:pharmacy:FA001",
        recorded_at=RECORDED,
    )


def pharmacy_first_pgd() -> Case:
    referral = make_referral(
        Service.PHARMACY_FIRST,
        reference="PF-PGD01-AAAAA",
        pathway=Pathway.INFECTED_INSECT_BITE,
        reason="Red, swollen insect bite on the forearm for 2 days",
    )
    consultation = make_consultation(
        referral,
        record={
            "pathway": "infected-insect-bite",
            "gateway_criteria_met": True,
            "outcome": "pgd-supply",
            "notes": "Not allergic to penicillin. Site tender & swollen <5cm>.",
            "medicine": {
                "dmd_code": "289411000001107",
                "name": "Flucloxacillin 500mg capsules",
                "dose": "One capsule four times a day for 5 days",
                "quantity": 20,
                "unit": "capsule",
            },
        },
        derived={"pathway_age_band_met": True, "clinical_pathway": True},
        outcome="pgd-supply",
    )
    return Case("pharmacy-first-pgd", referral, consultation)


def pharmacy_first_minor_illness() -> Case:
    referral = make_referral(
        Service.PHARMACY_FIRST,
        reference="PF-MIN01-BBBBB",
        pathway=Pathway.MINOR_ILLNESS,
        reason="Blocked nose and cough for 4 days",
    )
    consultation = make_consultation(
        referral,
        record={"pathway": "minor-illness", "outcome": "advice-self-care"},
        derived={"pathway_age_band_met": True, "clinical_pathway": False},
        outcome="advice-self-care",
    )
    return Case("pharmacy-first-minor-illness", referral, consultation)


def blood_pressure_abpm_escalated() -> Case:
    referral = make_referral(
        Service.BLOOD_PRESSURE,
        reference="BP-ABPM1-CCCCC",
        reason="Raised clinic BP at the practice; please check and offer ABPM",
        patient_sex=Sex.MALE,
        patient_birth_date=date(1971, 8, 8),
        bp_systolic=150,
        bp_diastolic=95,
        abpm_requested=True,
        escalated_at=RECORDED,
    )
    consultation = make_consultation(
        referral,
        record={
            "clinic_readings": [
                {"systolic": 152, "diastolic": 96, "pulse": 88, "irregular_pulse": True},
                {"systolic": 148, "diastolic": 94, "pulse": 84, "irregular_pulse": True},
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
        },
        derived={
            "clinic_reading": {"systolic": 148, "diastolic": 94},
            "category": "high",
            "irregular_pulse": True,
            "abpm_pending": False,
            "abpm_result": "hypertension-confirmed",
            "recommended_outcome": "referred-gp-irregular-pulse",
            "urgent_escalation": True,
        },
        outcome="referred-gp-hypertension",
        stage=2,
        override={
            "reason": "Irregular pulse already under GP review; ABPM confirms hypertension",
            "by": "test:pharmacy:FA001",
        },
    )
    return Case("blood-pressure-abpm-escalated", referral, consultation)


def contraception_coc_supplied() -> Case:
    referral = make_referral(
        Service.CONTRACEPTION,
        reference="OC-COC01-DDDDD",
        reason="Ongoing supply of combined pill",
        contraceptive_type=ContraceptiveType.COC,
        contraceptive_dmd_code="17346711000001106",
        contraceptive_name="Rigevidon tablets",
    )
    consultation = make_consultation(
        referral,
        record={
            "supply_type": "ongoing",
            "pill": "coc",
            "product": {"dmd_code": "17346711000001106", "name": "Rigevidon tablets"},
            "months_supplied": 12,
            "blood_pressure": {"systolic": 118, "diastolic": 76},
            "bmi": 24.1,
            "outcome": "supplied",
        },
        derived={
            "bp_category": "normal",
            "coc_safe": True,
            "coc_exclusions": [],
            "age_within_limit": True,
        },
        outcome="supplied",
    )
    return Case("contraception-coc-supplied", referral, consultation)


def dms_stage_1() -> Case:
    referral = make_referral(
        Service.DMS,
        reference="DM-STG01-EEEEE",
        reason="Discharged after NSTEMI; new ramipril and bisoprolol",
        source=ReferralSource.TRUST,
        referrer_ods="RXH01",
        discharged_at=CREATED - timedelta(days=1),
        discharge_medicines=[
            {"name": "Ramipril 2.5mg capsules", "dose": "One daily", "change": "new"},
            {"name": "Bisoprolol 1.25mg tablets", "dose": "One daily", "change": "new"},
            {"name": "Simvastatin 40mg tablets", "dose": None, "change": "stopped"},
        ],
    )
    consultation = make_consultation(
        referral,
        record={
            "stage": 1,
            "completed_on": "2026-11-22",
            "reconciled": True,
            "issues_found": ["Ramipril dose differs from pre-admission: confirmed with the ward"],
        },
        derived={
            "issues_found": 1,
            "ended_early": False,
            "hours_from_receipt": 5.5,
            "stage1_within_72_hours": True,
        },
        outcome="stage-1-complete",
        stage=1,
    )
    return Case("dms-stage-1", referral, consultation)


ALL_CASES = (
    pharmacy_first_pgd,
    pharmacy_first_minor_illness,
    blood_pressure_abpm_escalated,
    contraception_coc_supplied,
    dms_stage_1,
)
UPDATE_RECORD_CASES = ALL_CASES[:4]


def walk(value: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{path}[{index}]")


def codes(value: Any, system: str) -> list[str]:
    return [
        node["code"]
        for _, node in walk(value)
        if isinstance(node, dict) and node.get("system") == system and "code" in node
    ]


def check_no_nulls_or_empties(bundle: dict[str, Any]) -> None:
    """FHIR JSON never carries null, "", [] or {} (fhir.resources would let some through)."""
    empty = [path for path, value in walk(bundle) if value is None or value in ("", [], {})]
    assert not empty, empty
