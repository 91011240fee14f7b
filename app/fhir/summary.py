"""Consultation -> FHIR R4 `document` Bundle: the summary a pharmacy sends after a consultation.

Pure: no DB, no HTTP. One document per consultation row, so a DMS referral has one per stage.
The clinical content (what was recorded, what pharmref derived, the outcome) is read here once
and rendered both as this R4 document and as the GP Connect Update Record (update_record.py).

| consultation / referral                    | document                                              |
|--------------------------------------------|-------------------------------------------------------|
| consultation.id                            | Bundle.id and Composition.id; every other resource id |
|                                            | is a uuid5 of it (so stable)                          |
| service                                    | Composition.type (SERVICE_TYPE), Encounter.reasonCode |
| pharmacy (ODS, name)                       | Organization; Composition.custodian; title            |
| practice (ODS, name)                       | Organization; Patient.generalPractitioner            |
| clinician_name, gphc_number                | Practitioner (GPhC identifier) + PractitionerRole     |
|                                            | (SNOMED 46255001 Pharmacist) = Composition.author    |
| patient_* (referral)                       | Patient (NHS number when present, name, birth, sex)   |
| record.consulted_at, recorded_at           | Encounter.period (finished, AMB, 307778003)          |
| referral.id, referral.reference            | Encounter.basedOn / Observation.basedOn ServiceRequest |
| record.pathway (Pharmacy First)            | Condition (pathway SNOMED code, or the referral reason) |
| clinic readings, contraception BP          | Observation BP panel (LOINC 85354-9 + SNOMED 75367002) |
| pulse                                      | Observation heart rate (LOINC 8867-4 + SNOMED 364075005) |
| ABPM daytime averages                      | Observation 2181371000000107 (GP Connect ABPM triplet) |
| BMI                                        | Observation 60621009 + LOINC 39156-5                  |
| derived BP category / ABPM result          | Observation.interpretation and note                   |
| PGD supply (medicine / product)            | MedicationDispense (dm+d; UKCore-MedicationSupplyType |
|                                            | patient-group-direction)                              |
| outcome, override, urgent escalation       | ClinicalImpression (summary, note) in "Outcome and    |
|                                            | follow-up", and that section's narrative              |

Sections (codes from UKCore-RecordStandardHeadings, the UK Core binding for section.code), each
with generated XHTML narrative; a section with no entries carries an emptyReason:
consultation `clinical-summary`, observations `observations`, medicines supplied
`medications-and-medical-devices`, outcome and follow-up `outcome`.

DMS has no national SNOMED service code in any source (nhs-interop section 5.4), so its
Composition.type is pharmref's own `dms` code in `systems.PHARMREF_SERVICE`.
"""

import html
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from pydantic import TypeAdapter

from app.fhir import systems
from app.fhir.bars import CONDITION_FOR_PATHWAY
from app.fhir.resources import Bundle
from app.models.consultation import (
    BloodPressureConsultationIn,
    Consultation,
    ConsultationIn,
    ContraceptionConsultationIn,
    DmsStageIn,
    PharmacyFirstConsultationIn,
)
from app.models.enums import Pathway, Service
from app.models.referral import Referral

Json = dict[str, Any]
ConsultationRecord = (
    PharmacyFirstConsultationIn
    | BloodPressureConsultationIn
    | ContraceptionConsultationIn
    | DmsStageIn
)


class OrganisationLike(Protocol):
    """An organisation as the directory holds it (Organisation, OrganisationPublic)."""

    @property
    def ods_code(self) -> str: ...

    @property
    def name(self) -> str: ...


# ---- code tables ------------------------------------------------------------------------------

SERVICE_TYPE: dict[Service, tuple[str, str, str]] = {
    Service.PHARMACY_FIRST: (
        systems.SNOMED,
        "1577041000000109",
        "Community Pharmacist Consultation Service for minor illness",
    ),
    Service.BLOOD_PRESSURE: (
        systems.SNOMED,
        "1659111000000107",
        "Community Pharmacy Blood Pressure Check Service",
    ),
    Service.CONTRACEPTION: (
        systems.SNOMED,
        "1659121000000101",
        "Community Pharmacy Contraception Service",
    ),
    Service.DMS: (systems.PHARMREF_SERVICE, "dms", "Discharge Medicines Service"),
}

PATHWAY_TEXT: dict[Pathway, str] = {
    Pathway.MINOR_ILLNESS: "Minor illness",
    Pathway.SINUSITIS: "Acute sinusitis",
    Pathway.SORE_THROAT: "Acute sore throat (acute pharyngitis)",
    Pathway.ACUTE_OTITIS_MEDIA: "Acute otitis media",
    Pathway.INFECTED_INSECT_BITE: "Infected insect bite",
    Pathway.IMPETIGO: "Impetigo",
    Pathway.SHINGLES: "Shingles (herpes zoster)",
    Pathway.UNCOMPLICATED_UTI: "Uncomplicated urinary tract infection",
}

OUTCOME_TEXT: dict[str, str] = {
    # Pharmacy First
    "advice-self-care": "Advice and self-care",
    "otc-product": "Over-the-counter product recommended",
    "pgd-supply": "Medicine supplied under a patient group direction",
    "referred-gp-urgent": "Referred to the GP practice (urgent)",
    "referred-gp-routine": "Referred to the GP practice (routine)",
    "signposted": "Signposted to another service",
    "escalated-urgent-care": "Escalated to urgent care",
    # Blood pressure (clinical_rules.bp_recommended_outcome)
    "referred-gp-same-day": "Referred for same-day GP assessment",
    "referred-gp-irregular-pulse": "Referred to the GP practice: irregular pulse",
    "referred-gp-hypertension": "Referred to the GP practice: hypertension",
    "abpm-repeat": "Ambulatory blood pressure monitoring to be repeated",
    "advice-no-hypertension": "Hypertension not confirmed: healthy-behaviour advice",
    "abpm-fitted": "Ambulatory blood pressure monitor fitted; results to follow",
    "abpm-offered": "Ambulatory blood pressure monitoring offered",
    "advice-low-bp": "Low blood pressure: advice given",
    "advice-normal-bp": "Normal blood pressure: healthy-behaviour advice",
    # Contraception
    "supplied": "Oral contraception supplied under a patient group direction",
    "not-supplied-referred": "Not supplied; referred",
    # Discharge Medicines Service
    "stage-1-complete": "Stage 1 complete: discharge medicines checked and reconciled",
    "stage-2-complete": "Stage 2 complete: first new prescription checked",
    "stage-3-complete": "Stage 3 complete: check-and-reinforce consultation held; service complete",
    "ended-early": "Service ended at this stage",
}

BP_CATEGORY_TEXT: dict[str, str] = {
    "low": "low (below 90/60)",
    "normal": "normal (90/60 to 139/89)",
    "high": "high (140/90 to 179/119)",
    "very-high": "very high (180/120 or above)",
}
BP_CATEGORY_INTERPRETATION: dict[str, tuple[str, str]] = {
    "low": ("L", "Low"),
    "normal": ("N", "Normal"),
    "high": ("H", "High"),
    "very-high": ("HH", "Critical high"),
}
ABPM_RESULT_TEXT: dict[str, str] = {
    "hypertension-confirmed": "hypertension confirmed (daytime average 135/85 or above)",
    "not-confirmed": "hypertension not confirmed (daytime average below 135/85)",
    "too-few-readings": "not a valid result (fewer than 14 daytime readings)",
}
ABPM_INTERPRETATION: dict[str, tuple[str, str]] = {
    "hypertension-confirmed": ("H", "High"),
    "not-confirmed": ("N", "Normal"),
    "too-few-readings": ("IND", "Indeterminate"),
}
DMS_STAGE_TEXT: dict[int, str] = {
    1: "Stage 1: discharge referral received, clinically checked and reconciled against the "
    "pre-admission medicines",
    2: "Stage 2: first new prescription after discharge checked against the discharge medicines",
    3: "Stage 3: check-and-reinforce consultation with the patient",
}

# SNOMED CT and LOINC codings used in both renderings.
BP_PANEL_LOINC = (systems.LOINC, "85354-9", "Blood pressure panel with all children optional")
BP_PANEL_SNOMED = (systems.SNOMED, "75367002", "Blood pressure")
SYSTOLIC_LOINC = (systems.LOINC, "8480-6", "Systolic blood pressure")
SYSTOLIC_SNOMED = (systems.SNOMED, "72313002", "Systolic arterial pressure")
DIASTOLIC_LOINC = (systems.LOINC, "8462-4", "Diastolic blood pressure")
DIASTOLIC_SNOMED = (systems.SNOMED, "1091811000000102", "Diastolic arterial pressure")
HEART_RATE_LOINC = (systems.LOINC, "8867-4", "Heart rate")
HEART_RATE_SNOMED = (systems.SNOMED, "364075005", "Heart rate")
ABPM_HEADER = (systems.SNOMED, "2181371000000107", "Average ambulatory blood pressure")
ABPM_SYSTOLIC = (systems.SNOMED, "2181381000000109", "Average ambulatory systolic blood pressure")
ABPM_DIASTOLIC = (
    systems.SNOMED,
    "2181391000000106",
    "Average ambulatory diastolic blood pressure",
)
BMI_SNOMED = (systems.SNOMED, "60621009", "Body mass index")
BMI_LOINC = (systems.LOINC, "39156-5", "Body mass index (BMI) [Ratio]")
PHARMACIST_SNOMED = (systems.SNOMED, "46255001", "Pharmacist")
SEEN_IN_PRIMARY_CARE = (systems.SNOMED, "307778003", "Seen in primary care establishment")
PRESENTING_COMPLAINT = (systems.SNOMED, "33962009", "Presenting complaint")

Code = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    title: str
    heading: str
    heading_display: str
    empty_reason: tuple[str, str]


SECTIONS: tuple[Section, ...] = (
    Section(
        "consultation",
        "Consultation",
        "clinical-summary",
        "Clinical summary",
        ("notasked", "Not Asked"),
    ),
    Section(
        "observations", "Observations", "observations", "Observations", ("notasked", "Not Asked")
    ),
    Section(
        "medicines",
        "Medicines supplied",
        "medications-and-medical-devices",
        "Medications and medical devices",
        ("nilknown", "Nil Known"),
    ),
    Section("outcome", "Outcome and follow-up", "outcome", "Outcome", ("notasked", "Not Asked")),
)


# ---- the clinical content, independent of FHIR release -----------------------------------------

_RECORD: TypeAdapter[ConsultationRecord] = TypeAdapter(ConsultationIn)


@dataclass(frozen=True, slots=True)
class BpReading:
    systolic: int
    diastolic: int
    pulse: int | None
    irregular_pulse: bool
    measured_at: datetime
    category: str | None  # pharmref's category, on the reading it was derived from
    category_basis: str = "Blood pressure"


@dataclass(frozen=True, slots=True)
class AbpmAverage:
    fitted_on: date | None
    returned_on: date
    readings: int
    systolic: int
    diastolic: int
    result: str | None


@dataclass(frozen=True, slots=True)
class Supply:
    dmd_code: str
    name: str
    quantity: float | None
    unit: str | None
    dose: str | None
    months: int | None


@dataclass(frozen=True, slots=True)
class Facts:
    """What one consultation says, read once for both renderings."""

    service: Service
    stage: int
    record: ConsultationRecord
    derived: dict[str, Any]
    consulted_at: datetime
    recorded_at: datetime
    bp_readings: list[BpReading]
    abpm: AbpmAverage | None
    bmi: float | None
    supply: Supply | None
    condition: tuple[str | None, str] | None  # (SNOMED code or None, text)
    consultation_lines: list[str]
    observation_lines: list[str]
    medicine_lines: list[str]
    outcome_lines: list[str]

    @property
    def service_code(self) -> Code:
        return SERVICE_TYPE[self.service]

    @property
    def service_title(self) -> str:
        return service_title(self.service, self.stage)


def service_title(service: Service, stage: int) -> str:
    title = SERVICE_TYPE[service][2]
    return f"{title}, stage {stage}" if service is Service.DMS else title


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def json_number(value: float) -> int | float:
    """A JSON number as written by people: 20, not 20.0."""
    return int(value) if float(value).is_integer() else value


def _outcome_text(code: str) -> str:
    return OUTCOME_TEXT.get(code, code)


CLINIC_BASIS = "Clinic blood pressure (the lower of the last two readings)"


def _bp_readings(
    record: ConsultationRecord, derived: dict[str, Any], consulted: datetime
) -> list[BpReading]:
    if isinstance(record, BloodPressureConsultationIn):
        clinic = derived.get("clinic_reading") or {}
        chosen: int | None = None
        last_two = range(max(0, len(record.clinic_readings) - 2), len(record.clinic_readings))
        for index in last_two:
            reading = record.clinic_readings[index]
            if (reading.systolic, reading.diastolic) == (
                clinic.get("systolic"),
                clinic.get("diastolic"),
            ):
                chosen = index
                break
        return [
            BpReading(
                systolic=r.systolic,
                diastolic=r.diastolic,
                pulse=r.pulse,
                irregular_pulse=r.irregular_pulse,
                measured_at=_aware(r.measured_at or consulted),
                category=derived.get("category") if index == chosen else None,
                category_basis=CLINIC_BASIS,
            )
            for index, r in enumerate(record.clinic_readings)
        ]
    if isinstance(record, ContraceptionConsultationIn) and record.blood_pressure is not None:
        return [
            BpReading(
                systolic=record.blood_pressure.systolic,
                diastolic=record.blood_pressure.diastolic,
                pulse=None,
                irregular_pulse=False,
                measured_at=consulted,
                category=derived.get("bp_category"),
            )
        ]
    return []


def _abpm(record: ConsultationRecord, derived: dict[str, Any]) -> AbpmAverage | None:
    if not isinstance(record, BloodPressureConsultationIn) or record.abpm is None:
        return None
    abpm = record.abpm
    if (
        abpm.returned_on is None
        or abpm.daytime_readings is None
        or abpm.daytime_average_systolic is None
        or abpm.daytime_average_diastolic is None
    ):
        return None
    return AbpmAverage(
        fitted_on=abpm.fitted_on,
        returned_on=abpm.returned_on,
        readings=abpm.daytime_readings,
        systolic=abpm.daytime_average_systolic,
        diastolic=abpm.daytime_average_diastolic,
        result=derived.get("abpm_result"),
    )


def _supply(record: ConsultationRecord) -> Supply | None:
    if isinstance(record, PharmacyFirstConsultationIn):
        if record.outcome != "pgd-supply" or record.medicine is None:
            return None
        medicine = record.medicine
        return Supply(
            dmd_code=medicine.dmd_code,
            name=medicine.name,
            quantity=medicine.quantity,
            unit=medicine.unit,
            dose=medicine.dose,
            months=None,
        )
    if isinstance(record, ContraceptionConsultationIn):
        if record.outcome != "supplied" or record.product is None:
            return None
        return Supply(
            dmd_code=record.product.dmd_code,
            name=record.product.name,
            quantity=None,
            unit=None,
            dose=None,
            months=record.months_supplied,
        )
    return None


def _condition(record: ConsultationRecord, referral: Referral) -> tuple[str | None, str] | None:
    if not isinstance(record, PharmacyFirstConsultationIn):
        return None
    if record.pathway is Pathway.MINOR_ILLNESS:
        return None, referral.reason
    return CONDITION_FOR_PATHWAY.get(record.pathway), PATHWAY_TEXT[record.pathway]


def _consultation_lines(
    record: ConsultationRecord,
    referral: Referral,
    consultation: Consultation,
    facts_title: str,
    consulted: datetime,
) -> list[str]:
    lines = [
        f"{facts_title}: consultation on {consulted.date().isoformat()} with "
        f"{consultation.clinician_name} (GPhC {consultation.gphc_number}).",
        f"Referral {referral.reference} from {referral.referrer_ods}: {referral.reason}",
    ]
    derived = consultation.derived
    if isinstance(record, PharmacyFirstConsultationIn):
        lines.append(f"Pathway: {PATHWAY_TEXT[record.pathway]}.")
        if record.gateway_criteria_met is not None:
            met = "met" if record.gateway_criteria_met else "not met"
            lines.append(f"Gateway criteria {met}.")
        if derived.get("pathway_age_band_met") is False:
            lines.append("The patient is outside the pathway's age band.")
    elif isinstance(record, BloodPressureConsultationIn):
        lines.append(f"Clinic blood pressure readings taken: {len(record.clinic_readings)}.")
        if record.abpm is not None and record.abpm.fitted_on is not None:
            lines.append(
                f"Ambulatory blood pressure monitor fitted on {record.abpm.fitted_on.isoformat()}."
            )
    elif isinstance(record, ContraceptionConsultationIn):
        lines.append(
            f"{record.supply_type.capitalize()} supply of {record.pill.upper()} "
            f"({'combined' if record.pill == 'coc' else 'progestogen-only'} pill)."
        )
    else:
        lines.append(
            f"{DMS_STAGE_TEXT[record.stage]}; completed on {record.completed_on.isoformat()}."
        )
        checks = {
            "reconciled": "Discharge medicines reconciled",
            "prescription_checked": "Prescription checked",
            "patient_consulted": "Patient consulted",
        }
        for name, text in checks.items():
            value = getattr(record, name)
            if value is not None:
                lines.append(f"{text}: {'yes' if value else 'no'}.")
        if record.stage == 1 and referral.discharge_medicines:
            medicines = "; ".join(
                f"{m.get('name')} ({m.get('change', 'unchanged')})"
                for m in referral.discharge_medicines
            )
            lines.append(f"Discharge medicines: {medicines}.")
        if "hours_from_receipt" in derived:
            within = "within" if derived.get("stage1_within_72_hours") else "outside"
            lines.append(
                f"Completed {derived['hours_from_receipt']} hours after receipt ({within} 72 hours)."
            )
        lines.extend(f"Issue found: {issue}" for issue in record.issues_found)
        if not record.issues_found:
            lines.append("No issues found.")
    if record.notes:
        lines.append(f"Pharmacist's notes: {record.notes}")
    return lines


def _observation_lines(
    readings: list[BpReading], abpm: AbpmAverage | None, bmi: float | None
) -> list[str]:
    lines = []
    for reading in readings:
        line = f"Blood pressure {reading.systolic}/{reading.diastolic} mmHg"
        if reading.pulse is not None:
            line += f", pulse {reading.pulse}/min"
        if reading.irregular_pulse:
            line += " (irregular pulse)"
        lines.append(line + f", {reading.measured_at.isoformat()}.")
        if reading.category is not None:
            lines.append(
                f"{reading.category_basis} {reading.systolic}/{reading.diastolic} mmHg: "
                f"{BP_CATEGORY_TEXT.get(reading.category, reading.category)} (pharmref)."
            )
    if abpm is not None:
        result = ABPM_RESULT_TEXT.get(abpm.result or "", "no result derived")
        lines.append(
            f"Ambulatory blood pressure daytime average {abpm.systolic}/{abpm.diastolic} mmHg "
            f"from {abpm.readings} readings, returned {abpm.returned_on.isoformat()}: {result} (pharmref)."
        )
    if bmi is not None:
        lines.append(f"BMI {bmi} kg/m2.")
    return lines


def _medicine_lines(supply: Supply | None) -> list[str]:
    if supply is None:
        return []
    line = f"{supply.name} (dm+d {supply.dmd_code})"
    if supply.quantity is not None:
        line += f": {json_number(supply.quantity)} {supply.unit or ''}".rstrip()
    if supply.months is not None:
        line += f": {supply.months} months' supply"
    lines = [line + ". Supplied under a patient group direction."]
    if supply.dose:
        lines.append(f"Dose: {supply.dose}")
    return lines


def _outcome_lines(
    record: ConsultationRecord, referral: Referral, consultation: Consultation
) -> list[str]:
    derived = consultation.derived
    lines = [f"Outcome: {_outcome_text(consultation.outcome)}."]
    recommended = derived.get("recommended_outcome")
    if recommended and recommended != consultation.outcome:
        lines.append(f"pharmref's rules recommend: {_outcome_text(recommended)}.")
    if consultation.override:
        lines.append(
            f"Clinician override of the recommended outcome. Reason: {consultation.override.get('reason', '')}"
        )
    if derived.get("urgent_escalation"):
        reason = (
            "very high blood pressure (180/120 or above), same-day GP assessment needed"
            if derived.get("category") == "very-high"
            else "irregular pulse found at the blood pressure check, GP assessment needed"
        )
        line = f"URGENT escalation to the referrer: {reason}."
        if referral.escalated_at is not None:
            line += f" The referrer was notified at {_aware(referral.escalated_at).isoformat()}."
        lines.append(line)
    if derived.get("abpm_pending"):
        lines.append("Follow-up: the ambulatory monitor results will be sent when it is returned.")
    if isinstance(record, ContraceptionConsultationIn):
        if record.reason_not_supplied:
            lines.append(f"Reason not supplied: {record.reason_not_supplied}")
        exclusions = derived.get("coc_exclusions") or []
        if record.pill == "coc" and exclusions:
            lines.extend(f"COC exclusion: {exclusion}" for exclusion in exclusions)
        if derived.get("age_within_limit") is False:
            lines.append("The patient is over the age limit for this pill under the service.")
    if isinstance(record, DmsStageIn):
        if record.could_not_complete_reason:
            lines.append(f"Could not complete: {record.could_not_complete_reason}")
        elif record.stage < 3:
            lines.append(f"Follow-up: DMS stage {record.stage + 1} to come.")
    return lines


def consultation_facts(*, referral: Referral, consultation: Consultation) -> Facts:
    """Read a stored consultation once: the record re-validated, the derived results, the text."""
    record = _RECORD.validate_python(consultation.record)
    recorded = _aware(consultation.recorded_at)
    consulted = _aware(record.consulted_at) if record.consulted_at else recorded
    readings = _bp_readings(record, consultation.derived, consulted)
    abpm = _abpm(record, consultation.derived)
    bmi = record.bmi if isinstance(record, ContraceptionConsultationIn) else None
    supply = _supply(record)
    service = consultation.service
    title = service_title(service, consultation.stage)
    return Facts(
        service=service,
        stage=consultation.stage,
        record=record,
        derived=consultation.derived,
        consulted_at=consulted,
        recorded_at=recorded,
        bp_readings=readings,
        abpm=abpm,
        bmi=bmi,
        supply=supply,
        condition=_condition(record, referral),
        consultation_lines=_consultation_lines(record, referral, consultation, title, consulted),
        observation_lines=_observation_lines(readings, abpm, bmi),
        medicine_lines=_medicine_lines(supply),
        outcome_lines=_outcome_lines(record, referral, consultation),
    )


# ---- R4 rendering -------------------------------------------------------------------------------


def _coding(code: Code) -> Json:
    system, value, display = code
    return {"system": system, "code": value, "display": display}


def _concept(*codes: Code, text: str | None = None) -> Json:
    concept: Json = {"coding": [_coding(c) for c in codes]}
    concept["text"] = text or codes[0][2]
    return concept


def _mmhg(value: int) -> Json:
    return {"value": value, "unit": "mmHg", "system": systems.UCUM, "code": "mm[Hg]"}


def narrative(lines: list[str]) -> Json:
    """Generated XHTML narrative, every line escaped."""
    body = "".join(f"<p>{html.escape(line, quote=False)}</p>" for line in lines)
    return {
        "status": "generated",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>',
    }


def split_name(name: str) -> tuple[str, list[str]]:
    """A recorded full name as (family, given): the last word is taken as the family name."""
    words = name.split()
    if len(words) < 2:
        return name, []
    return words[-1], words[:-1]


def referral_reference(referral: Referral) -> Json:
    return {
        "reference": f"ServiceRequest/{referral.id}",
        "identifier": {"system": systems.PHARMREF_REFERRAL_REFERENCE, "value": referral.reference},
    }


class _Ids:
    def __init__(self, consultation_id: uuid.UUID, prefix: str = "") -> None:
        self._base = consultation_id
        self._prefix = prefix

    def __call__(self, name: str) -> str:
        return str(uuid.uuid5(self._base, self._prefix + name))

    def ref(self, name: str) -> Json:
        return {"reference": f"urn:uuid:{self(name)}"}


def composition_identifier(consultation_id: uuid.UUID) -> Json:
    """The Composition's business identifier, the same in the document and in search results."""
    return {
        "system": systems.PHARMREF_DOCUMENT,
        "value": str(uuid.uuid5(consultation_id, "composition")),
    }


def _entry(resource: Json) -> Json:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}


def _organisation(ids: _Ids, key: str, org: OrganisationLike) -> Json:
    return {
        "resourceType": "Organization",
        "id": ids(key),
        "identifier": [{"system": systems.ODS_ORGANISATION, "value": org.ods_code}],
        "name": org.name,
    }


def _patient(ids: _Ids, referral: Referral, practice: OrganisationLike | None) -> Json:
    patient: Json = {"resourceType": "Patient", "id": ids("patient")}
    if referral.patient_nhs_number:
        patient["identifier"] = [
            {"system": systems.NHS_NUMBER, "value": referral.patient_nhs_number}
        ]
    patient["name"] = [
        {
            "use": "official",
            "family": referral.patient_family_name,
            "given": [referral.patient_given_name],
        }
    ]
    patient["gender"] = str(referral.patient_sex)
    patient["birthDate"] = referral.patient_birth_date.isoformat()
    if practice is not None:
        patient["generalPractitioner"] = [ids.ref("practice")]
    elif referral.patient_practice_ods:
        patient["generalPractitioner"] = [
            {
                "type": "Organization",
                "identifier": {
                    "system": systems.ODS_ORGANISATION,
                    "value": referral.patient_practice_ods,
                },
            }
        ]
    return patient


def _practitioner(ids: _Ids, consultation: Consultation) -> Json:
    family, given = split_name(consultation.clinician_name)
    name: Json = {"text": consultation.clinician_name, "family": family}
    if given:
        name["given"] = given
    return {
        "resourceType": "Practitioner",
        "id": ids("practitioner"),
        "identifier": [{"system": systems.GPHC_NUMBER, "value": consultation.gphc_number}],
        "name": [name],
    }


def _encounter(ids: _Ids, facts: Facts, referral: Referral) -> Json:
    period: Json = {"start": facts.consulted_at.isoformat()}
    if facts.recorded_at >= facts.consulted_at:
        period["end"] = facts.recorded_at.isoformat()
    return {
        "resourceType": "Encounter",
        "id": ids("encounter"),
        "status": "finished",
        "class": {"system": systems.ACT_CODE, "code": "AMB", "display": "ambulatory"},
        "type": [_concept(SEEN_IN_PRIMARY_CARE)],
        "subject": ids.ref("patient"),
        "basedOn": [referral_reference(referral)],
        "participant": [
            {
                "type": [
                    {
                        "coding": [
                            {
                                "system": systems.PARTICIPATION_TYPE,
                                "code": "PPRF",
                                "display": "primary performer",
                            }
                        ]
                    }
                ],
                "individual": ids.ref("role"),
            }
        ],
        "period": period,
        "reasonCode": [_concept(facts.service_code)],
        "serviceProvider": ids.ref("pharmacy"),
    }


def _observation_base(ids: _Ids, key: str, referral: Referral) -> Json:
    return {
        "resourceType": "Observation",
        "id": ids(key),
        "basedOn": [referral_reference(referral)],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": systems.OBSERVATION_CATEGORY,
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ]
            }
        ],
    }


def _observation_context(ids: _Ids, resource: Json, effective: Json) -> Json:
    resource["subject"] = ids.ref("patient")
    resource["encounter"] = ids.ref("encounter")
    resource.update(effective)
    resource["performer"] = [ids.ref("role")]
    return resource


def _interpretation(code: str, display: str, text: str) -> list[Json]:
    return [
        {
            "coding": [
                {"system": systems.OBSERVATION_INTERPRETATION, "code": code, "display": display}
            ],
            "text": text,
        }
    ]


def _observations(ids: _Ids, facts: Facts, referral: Referral) -> list[Json]:
    observations: list[Json] = []
    for index, reading in enumerate(facts.bp_readings):
        effective = {"effectiveDateTime": reading.measured_at.isoformat()}
        bp = _observation_base(ids, f"bp-{index}", referral)
        bp["code"] = _concept(BP_PANEL_LOINC, BP_PANEL_SNOMED, text="Blood pressure")
        _observation_context(ids, bp, effective)
        if reading.category is not None:
            category_text = BP_CATEGORY_TEXT.get(reading.category, reading.category)
            if reading.category in BP_CATEGORY_INTERPRETATION:
                code, display = BP_CATEGORY_INTERPRETATION[reading.category]
                bp["interpretation"] = _interpretation(
                    code, display, f"Blood pressure category: {category_text}"
                )
            bp["note"] = [
                {"text": f"{reading.category_basis}: {category_text}; derived by pharmref."}
            ]
        bp["component"] = [
            {
                "code": _concept(SYSTOLIC_LOINC, SYSTOLIC_SNOMED, text="Systolic blood pressure"),
                "valueQuantity": _mmhg(reading.systolic),
            },
            {
                "code": _concept(
                    DIASTOLIC_LOINC, DIASTOLIC_SNOMED, text="Diastolic blood pressure"
                ),
                "valueQuantity": _mmhg(reading.diastolic),
            },
        ]
        observations.append(bp)
        if reading.pulse is not None:
            pulse = _observation_base(ids, f"pulse-{index}", referral)
            pulse["code"] = _concept(HEART_RATE_LOINC, HEART_RATE_SNOMED)
            _observation_context(ids, pulse, effective)
            pulse["valueQuantity"] = {
                "value": reading.pulse,
                "unit": "beats/minute",
                "system": systems.UCUM,
                "code": "/min",
            }
            if reading.irregular_pulse:
                pulse["interpretation"] = _interpretation("A", "Abnormal", "Irregular pulse")
                pulse["note"] = [{"text": "Irregular pulse."}]
            observations.append(pulse)
    if facts.abpm is not None:
        abpm = facts.abpm
        period: Json = {"end": abpm.returned_on.isoformat()}
        if abpm.fitted_on is not None:
            period["start"] = abpm.fitted_on.isoformat()
        resource = _observation_base(ids, "abpm", referral)
        resource["code"] = _concept(
            ABPM_HEADER, text="Average ambulatory blood pressure (daytime readings)"
        )
        _observation_context(ids, resource, {"effectivePeriod": period})
        if abpm.result in ABPM_INTERPRETATION:
            code, display = ABPM_INTERPRETATION[abpm.result]
            resource["interpretation"] = _interpretation(
                code, display, f"ABPM: {ABPM_RESULT_TEXT[abpm.result]}"
            )
        resource["note"] = [
            {
                "text": f"Average of {abpm.readings} daytime readings; result derived by pharmref: "
                f"{ABPM_RESULT_TEXT.get(abpm.result or '', 'none')}."
            }
        ]
        resource["component"] = [
            {"code": _concept(ABPM_SYSTOLIC), "valueQuantity": _mmhg(abpm.systolic)},
            {"code": _concept(ABPM_DIASTOLIC), "valueQuantity": _mmhg(abpm.diastolic)},
        ]
        observations.append(resource)
    if facts.bmi is not None:
        bmi = _observation_base(ids, "bmi", referral)
        bmi["code"] = _concept(BMI_SNOMED, BMI_LOINC, text="Body mass index")
        _observation_context(ids, bmi, {"effectiveDateTime": facts.consulted_at.isoformat()})
        bmi["valueQuantity"] = {
            "value": facts.bmi,
            "unit": "kg/m2",
            "system": systems.UCUM,
            "code": "kg/m2",
        }
        observations.append(bmi)
    return observations


def _dispense(ids: _Ids, facts: Facts) -> Json | None:
    supply = facts.supply
    if supply is None:
        return None
    dispense: Json = {
        "resourceType": "MedicationDispense",
        "id": ids("dispense"),
        "status": "completed",
        "category": {
            "coding": [
                {
                    "system": systems.MEDICATION_DISPENSE_CATEGORY,
                    "code": "community",
                    "display": "Community",
                }
            ]
        },
        "medicationCodeableConcept": {
            "coding": [{"system": systems.DMD, "code": supply.dmd_code, "display": supply.name}],
            "text": supply.name,
        },
        "subject": ids.ref("patient"),
        "context": ids.ref("encounter"),
        "performer": [{"actor": ids.ref("role")}],
        "type": {
            "coding": [
                {
                    "system": systems.UKCORE_MEDICATION_SUPPLY_TYPE,
                    "code": "patient-group-direction",
                    "display": "Patient group direction",
                }
            ]
        },
    }
    if supply.quantity is not None:
        quantity: Json = {"value": json_number(supply.quantity)}
        if supply.unit:
            quantity["unit"] = supply.unit
        dispense["quantity"] = quantity
    if supply.months is not None:
        dispense["daysSupply"] = {
            "value": supply.months,
            "unit": "month",
            "system": systems.UCUM,
            "code": "mo",
        }
    dispense["whenHandedOver"] = facts.consulted_at.isoformat()
    if supply.dose:
        dispense["dosageInstruction"] = [{"text": supply.dose}]
    return dispense


def _condition_resource(ids: _Ids, facts: Facts) -> Json | None:
    if facts.condition is None:
        return None
    code, text = facts.condition
    concept: Json = {"text": text}
    if code is not None:
        concept = {"coding": [{"system": systems.SNOMED, "code": code}], "text": text}
        category = {
            "coding": [
                {
                    "system": systems.CONDITION_CATEGORY,
                    "code": "encounter-diagnosis",
                    "display": "Encounter Diagnosis",
                }
            ]
        }
    else:
        category = {"coding": [_coding(PRESENTING_COMPLAINT)]}
    return {
        "resourceType": "Condition",
        "id": ids("condition"),
        "clinicalStatus": {
            "coding": [
                {"system": systems.CONDITION_CLINICAL, "code": "active", "display": "Active"}
            ]
        },
        "category": [category],
        "code": concept,
        "subject": ids.ref("patient"),
        "encounter": ids.ref("encounter"),
        "recordedDate": facts.consulted_at.isoformat(),
        "asserter": ids.ref("role"),
    }


def _outcome_impression(ids: _Ids, facts: Facts, consultation: Consultation) -> Json:
    impression: Json = {
        "resourceType": "ClinicalImpression",
        "id": ids("outcome"),
        "status": "completed",
        "subject": ids.ref("patient"),
        "encounter": ids.ref("encounter"),
        "effectiveDateTime": facts.consulted_at.isoformat(),
        "date": facts.recorded_at.isoformat(),
        "assessor": ids.ref("role"),
        "summary": " ".join(facts.outcome_lines),
    }
    if consultation.override and consultation.override.get("reason"):
        impression["note"] = [{"text": f"Clinician override: {consultation.override['reason']}"}]
    return impression


def summary_document_json(
    *,
    referral: Referral,
    consultation: Consultation,
    pharmacy: OrganisationLike,
    practice: OrganisationLike | None,
    now: datetime,
) -> Json:
    """The consultation summary as an R4 document Bundle (conformance is proven in the tests)."""
    facts = consultation_facts(referral=referral, consultation=consultation)
    ids = _Ids(consultation.id)
    observations = _observations(ids, facts, referral)
    dispense = _dispense(ids, facts)
    condition = _condition_resource(ids, facts)
    outcome = _outcome_impression(ids, facts, consultation)
    encounter = _encounter(ids, facts, referral)
    section_resources: dict[str, list[Json]] = {
        "consultation": [encounter] + ([condition] if condition else []),
        "observations": observations,
        "medicines": [dispense] if dispense else [],
        "outcome": [outcome],
    }
    section_lines = {
        "consultation": facts.consultation_lines,
        "observations": facts.observation_lines or ["No observations recorded."],
        "medicines": facts.medicine_lines or ["No medicines supplied."],
        "outcome": facts.outcome_lines,
    }
    sections = []
    for section in SECTIONS:
        title = section.title
        if facts.service is Service.DMS:
            title = f"{title} (DMS stage {facts.stage})"
        rendered: Json = {
            "title": title,
            "code": {
                "coding": [
                    {
                        "system": systems.UKCORE_RECORD_HEADINGS,
                        "code": section.heading,
                        "display": section.heading_display,
                    }
                ]
            },
            "text": narrative(section_lines[section.key]),
        }
        members = section_resources[section.key]
        if members:
            rendered["entry"] = [{"reference": f"urn:uuid:{r['id']}"} for r in members]
        else:
            code, display = section.empty_reason
            rendered["emptyReason"] = {
                "coding": [{"system": systems.LIST_EMPTY_REASON, "code": code, "display": display}]
            }
        sections.append(rendered)
    composition: Json = {
        "resourceType": "Composition",
        "id": str(consultation.id),  # = the document id: GET Bundle/{Composition.id}
        "identifier": composition_identifier(consultation.id),
        "status": "final",
        "type": _concept(facts.service_code),
        "subject": ids.ref("patient"),
        "encounter": ids.ref("encounter"),
        "date": facts.recorded_at.isoformat(),
        "author": [ids.ref("role")],
        "title": f"{pharmacy.name} - {facts.service_title}",
        "custodian": ids.ref("pharmacy"),
        "section": sections,
    }
    role = {
        "resourceType": "PractitionerRole",
        "id": ids("role"),
        "practitioner": ids.ref("practitioner"),
        "organization": ids.ref("pharmacy"),
        "code": [_concept(PHARMACIST_SNOMED)],
    }
    resources: list[Json] = [
        composition,
        _patient(ids, referral, practice),
        encounter,
        _practitioner(ids, consultation),
        role,
        _organisation(ids, "pharmacy", pharmacy),
    ]
    if practice is not None:
        resources.append(_organisation(ids, "practice", practice))
    if condition:
        resources.append(condition)
    resources.extend(observations)
    if dispense:
        resources.append(dispense)
    resources.append(outcome)
    document_id = str(consultation.id)  # the Bundle is read at /fhir/Bundle/{consultation id}
    return {
        "resourceType": "Bundle",
        "id": document_id,
        "meta": {"lastUpdated": now.isoformat()},
        "identifier": {"system": systems.PHARMREF_DOCUMENT, "value": document_id},
        "type": "document",
        "timestamp": now.isoformat(),
        "entry": [_entry(resource) for resource in resources],
    }


def to_summary_document(
    *,
    referral: Referral,
    consultation: Consultation,
    pharmacy: OrganisationLike,
    practice: OrganisationLike | None,
    now: datetime,
) -> Bundle:
    """The consultation summary as an R4 Bundle model (see summary_document_json)."""
    return Bundle.model_validate(
        summary_document_json(
            referral=referral,
            consultation=consultation,
            pharmacy=pharmacy,
            practice=practice,
            now=now,
        )
    )
