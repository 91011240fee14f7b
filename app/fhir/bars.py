"""BaRS Application 5 message Bundles in, pharmref referrals out (pure: no DB, no HTTP).

Validation runs in layers, each reporting FHIRPath expressions into the submitted Bundle:
1. raw JSON (`raw_checks`): nulls, empty objects and arrays, strings standing in for booleans or numbers;
2. the fhir.resources R4B models (structure, datatypes, unknown elements);
3. the code sets pharmref depends on (MessageHeader event and reason, ServiceRequest status and
   category, Patient.gender) and the BaRS message rules (focus, Encounter and CarePlan status);
4. identifiers and codes that pharmref interprets (NHS number modulus 11, SNOMED CT check digits of
   Condition and Observation codes). A SNOMED code with a bad check digit anywhere else is reported
   as a warning and does not stop the referral (official examples carry such codes in Task.code).

Mapping (BaRS element -> referral field):
| ServiceRequest.category (usecases-categories-bars) | service: a5t1 Pharmacy First, a5t2 contraception,
|                                                    | a5t3 blood pressure; pharmref's own `dms` code for DMS |
| Condition.code (SNOMED, Pharmacy First only)      | pathway (the seven clinical pathway conditions)      |
| Condition.code.text / display                     | reason                                               |
| CarePlan.activity.outcomeCodeableConcept.text     | notes                                                |
| ServiceRequest.subject -> Patient                 | NHS number, name, birth date, sex, primary phone     |
| Patient.generalPractitioner -> Organization (ODS) | registered practice                                   |
| ServiceRequest.requester -> Practitioner(Role)    | clinician name and identifier                        |
| ServiceRequest.priority                           | priority (urgent, asap, stat -> urgent)              |
| Task.restriction.period / occurrencePeriod        | timeframe (due time = receipt + its length)          |
| Task.code 824421000000101                         | ABPM requested                                        |
| Observation 75367002 / LOINC 85354-9              | latest blood pressure                                |
| Observation 60621009 / LOINC 39156-5              | BMI                                                  |
| MedicationStatement (reason 339871000000104 = COC) | current contraceptive (contraception referrals)      |
| MedicationStatement (DMS referrals)               | discharge medicines; Encounter.period.end = discharge |
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from app.core.errors import BadRequest, Issue, NotSupported, ValidationFailed
from app.fhir import systems
from app.fhir.raw_checks import scan_raw_resource
from app.fhir.resources import Bundle, get_fhir_model_class
from app.models.enums import ContraceptiveType, Pathway, Service, Sex
from app.models.intake import NewReferral
from app.services.validation import nhs_number_is_valid, snomed_code_is_valid

Json = dict[str, Any]

USE_CASE_SERVICE: dict[tuple[str, str], Service] = {
    (systems.USE_CASES, "a5t1"): Service.PHARMACY_FIRST,
    (systems.USE_CASES, "a5t2"): Service.CONTRACEPTION,
    (systems.USE_CASES, "a5t3"): Service.BLOOD_PRESSURE,
    (systems.PHARMREF_USE_CASES, "dms"): Service.DMS,
}
SERVICE_USE_CASE: dict[Service, tuple[str, str]] = {v: k for k, v in USE_CASE_SERVICE.items()}

PATHWAY_CONDITIONS: dict[str, Pathway] = {
    "15805002": Pathway.SINUSITIS,
    "363746003": Pathway.SORE_THROAT,
    "3110003": Pathway.ACUTE_OTITIS_MEDIA,
    "262550002": Pathway.INFECTED_INSECT_BITE,
    "48277006": Pathway.IMPETIGO,
    "4740000": Pathway.SHINGLES,
    "1090711000000102": Pathway.UNCOMPLICATED_UTI,
}
CONDITION_FOR_PATHWAY = {v: k for k, v in PATHWAY_CONDITIONS.items()}

BP_PANEL = {(systems.SNOMED, "75367002"), (systems.LOINC, "85354-9"), (systems.SNOMED, "163020007")}
SYSTOLIC = {(systems.SNOMED, "271649006"), (systems.SNOMED, "72313002"), (systems.LOINC, "8480-6")}
DIASTOLIC = {
    (systems.SNOMED, "271650006"),
    (systems.SNOMED, "1091811000000102"),
    (systems.LOINC, "8462-4"),
}
BMI = {(systems.SNOMED, "60621009"), (systems.LOINC, "39156-5")}
ABPM_REFERRAL = "824421000000101"
COC_SUPPLY = "339871000000104"
DMD_SYSTEMS = {systems.DMD, "http://snomed.info/sct"}

REQUEST_STATUS = {
    "draft",
    "active",
    "on-hold",
    "revoked",
    "completed",
    "entered-in-error",
    "unknown",
}
GENDERS = {s.value for s in Sex}
CANCEL_STATUSES = {"revoked", "entered-in-error"}
URGENT_PRIORITIES = {"urgent", "asap", "stat"}
# Elements whose SNOMED codes pharmref interprets: a bad check digit there is an error, elsewhere a warning.
INTERPRETED_CODES = ("Condition.code", "Observation.code", "Observation.component")


@dataclass
class BarsMessage:
    """A structurally valid BaRS message: the raw Bundle plus an index of its entries."""

    raw: Json
    reason: str  # new | update
    focus_index: int
    warnings: list[Issue] = field(default_factory=list)
    by_url: dict[str, int] = field(default_factory=dict)

    @property
    def bundle_id(self) -> str | None:
        value = self.raw.get("id")
        return value if isinstance(value, str) else None

    @property
    def header(self) -> Json:
        resource: Json = self.raw["entry"][0]["resource"]
        return resource

    def resource(self, index: int) -> Json:
        resource: Json = self.raw["entry"][index]["resource"]
        return resource

    def path(self, index: int, element: str = "") -> str:
        base = f"Bundle.entry[{index}].resource"
        return f"{base}.{element}" if element else base

    def resolve(self, reference: Any) -> int | None:
        if not isinstance(reference, dict):
            return None
        ref = reference.get("reference")
        if not isinstance(ref, str):
            return None
        if ref in self.by_url:
            return self.by_url[ref]
        # Relative references such as "Patient/123" match an entry whose fullUrl ends with them.
        for url, index in self.by_url.items():
            if url.endswith("/" + ref):
                return index
        return None

    def entries(self, resource_type: str) -> Iterator[tuple[int, Json]]:
        for index, entry in enumerate(self.raw["entry"]):
            resource = entry["resource"]
            if resource["resourceType"] == resource_type:
                yield index, resource


@dataclass(frozen=True, slots=True)
class CancelRequest:
    referral_id: str
    reason: str | None
    last_updated: datetime | None
    warnings: list[Issue]


# ---- layers 1 to 3: structure -----------------------------------------------------------------


def _model_issues(raw: Json) -> list[Issue]:
    issues = []
    for index, entry in enumerate(raw.get("entry", [])):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            issues.append(
                Issue("required", "Every entry needs a resource.", f"Bundle.entry[{index}]")
            )
            continue
        try:
            get_fhir_model_class(str(resource.get("resourceType")))
        except (ValueError, KeyError):
            issues.append(
                Issue(
                    "invalid",
                    "Unknown FHIR R4 resourceType.",
                    f"Bundle.entry[{index}].resource.resourceType",
                )
            )
    if issues:
        return issues
    try:
        Bundle.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors()[:100]:
            loc = [part for part in error["loc"] if part != "root"]
            expression = "Bundle" + "".join(
                f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc
            )
            issue_code = "structure" if error["type"] == "extra_forbidden" else "invalid"
            if error["type"] == "missing":
                issue_code = "required"
            issues.append(Issue(issue_code, str(error["msg"])[:200], expression))
    return issues


def parse_message(raw: Any, *, supported_versions: list[str]) -> BarsMessage:
    """Validate a BaRS message Bundle through the structural layers and index its entries."""
    if not isinstance(raw, dict) or raw.get("resourceType") != "Bundle":
        raise ValidationFailed(
            "The body must be a FHIR Bundle.",
            issues=[Issue("structure", "Expected a Bundle resource.", "Bundle")],
        )
    scan = scan_raw_resource(raw, expression="Bundle", coding_system=systems.SNOMED)
    if scan.issues:
        raise ValidationFailed("The Bundle is not valid FHIR JSON.", issues=scan.issues)
    model_issues = _model_issues(raw)
    if model_issues:
        raise ValidationFailed("The Bundle does not conform to FHIR R4.", issues=model_issues)

    version = (raw.get("meta") or {}).get("versionId")
    if version is None:
        raise BadRequest(
            "Bundle.meta.versionId is required.",
            issues=[
                Issue("invariant", "Missing BaRS application version.", "Bundle.meta.versionId")
            ],
        )
    if version not in supported_versions:
        raise NotSupported(
            "This BaRS application version is not supported.",
            issues=[
                Issue(
                    "not-supported",
                    f"Supported versions: {', '.join(supported_versions)}.",
                    "Bundle.meta.versionId",
                )
            ],
        )
    issues: list[Issue] = []
    if raw.get("type") != "message":
        issues.append(Issue("value", "Bundle.type must be message.", "Bundle.type"))
    entries = raw.get("entry") or []
    if not entries or entries[0]["resource"]["resourceType"] != "MessageHeader":
        issues.append(
            Issue("structure", "The first entry must be a MessageHeader.", "Bundle.entry[0]")
        )
    if issues:
        raise ValidationFailed("The Bundle is not a BaRS message.", issues=issues)

    message = BarsMessage(raw=raw, reason="", focus_index=-1)
    for index, entry in enumerate(entries):
        url = entry.get("fullUrl")
        if isinstance(url, str):
            message.by_url[url] = index
        resource = entry["resource"]
        if isinstance(resource.get("id"), str):
            message.by_url.setdefault(f"{resource['resourceType']}/{resource['id']}", index)
    header = message.header
    event = header.get("eventCoding") or {}
    if (
        event.get("system") != systems.MESSAGE_EVENTS
        or event.get("code") != "servicerequest-request"
    ):
        raise NotSupported(
            "pharmref receives servicerequest-request messages only.",
            issues=[
                Issue(
                    "not-supported",
                    "Unsupported message event.",
                    "Bundle.entry[0].resource.eventCoding",
                )
            ],
        )
    reasons = [
        coding.get("code")
        for coding in (header.get("reason") or {}).get("coding", [])
        if coding.get("system") == systems.MESSAGE_REASON
    ]
    reason = next((r for r in reasons if r in ("new", "update")), None)
    if reason is None:
        raise ValidationFailed(
            "MessageHeader.reason must be new or update.",
            issues=[
                Issue(
                    "required", "Missing or unsupported reason.", "Bundle.entry[0].resource.reason"
                )
            ],
        )
    message.reason = reason
    focus = message.resolve((header.get("focus") or [None])[0])
    if focus is None or message.resource(focus)["resourceType"] != "ServiceRequest":
        raise ValidationFailed(
            "MessageHeader.focus must reference the ServiceRequest in the Bundle.",
            issues=[
                Issue("invariant", "Focus not resolvable.", "Bundle.entry[0].resource.focus[0]")
            ],
        )
    message.focus_index = focus
    status = message.resource(focus).get("status")
    if status not in REQUEST_STATUS:
        raise ValidationFailed(
            "ServiceRequest.status is not a FHIR request-status code.",
            issues=[Issue("code-invalid", "Unknown status code.", message.path(focus, "status"))],
        )
    message.warnings.extend(_snomed_warnings(message, scan.codings))
    return message


# An object's place below one of the message's resources: the entry and the resource's element.
_IN_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]\.resource(?:\.([^.\[]+))?")


def _snomed_warnings(message: BarsMessage, codings: list[tuple[str, str]]) -> list[Issue]:
    """Bad SNOMED check digits in elements pharmref does not interpret become warnings.
    `codings`: the SNOMED (expression, code) pairs the raw-JSON walk found, in document order."""
    warnings = []
    for expression, code in codings:
        if snomed_code_is_valid(code):
            continue
        where = _IN_ENTRY.match(expression)
        if where is None:
            continue  # the Bundle's own elements, not a resource's
        kind = message.resource(int(where[1]))["resourceType"]
        if where[2] is not None and f"{kind}.{where[2]}" in INTERPRETED_CODES:
            continue  # reported as an error where the code is interpreted
        warnings.append(
            Issue(
                "code-invalid",
                "SNOMED CT code fails its check digit; ignored because pharmref does not depend on it.",
                f"{expression}.code",
                severity="warning",
            )
        )
    return warnings


# ---- layer 4: the referral itself -------------------------------------------------------------


def _codings(concept: Any) -> list[Json]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding", []) if isinstance(c, dict)]


def _has_code(concept: Any, codes: set[tuple[str, str]]) -> bool:
    return any((c.get("system"), c.get("code")) in codes for c in _codings(concept))


def _text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    if concept.get("text"):
        return str(concept["text"])
    for coding in _codings(concept):
        if coding.get("display"):
            return str(coding["display"])
    return None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _ods(message: BarsMessage, index: int | None) -> tuple[str | None, list[Issue]]:
    """The ODS code of an Organization entry, normalising the URI spellings of official examples."""
    if index is None or message.resource(index)["resourceType"] != "Organization":
        return None, []
    warnings = []
    for position, identifier in enumerate(message.resource(index).get("identifier", [])):
        system = identifier.get("system")
        canonical = systems.ALIASES.get(system, system)
        if canonical == systems.ODS_ORGANISATION and identifier.get("value"):
            if canonical != system:
                warnings.append(
                    Issue(
                        "value",
                        f"Identifier system normalised to {systems.ODS_ORGANISATION} (URIs are case-sensitive).",
                        message.path(index, f"identifier[{position}].system"),
                        severity="warning",
                    )
                )
            return str(identifier["value"]).upper(), warnings
    return None, warnings


@dataclass
class _Extraction:
    message: BarsMessage
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)

    def error(self, code: str, diagnostics: str, expression: str) -> None:
        self.errors.append(Issue(code, diagnostics, expression))

    def warn(self, code: str, diagnostics: str, expression: str) -> None:
        self.warnings.append(Issue(code, diagnostics, expression, severity="warning"))


def _service(ex: _Extraction, request: Json) -> Service | None:
    message = ex.message
    where = message.path(message.focus_index, "category")
    found = [
        USE_CASE_SERVICE[key]
        for concept in request.get("category", [])
        for coding in _codings(concept)
        if (key := (coding.get("system"), str(coding.get("code", "")).lower())) in USE_CASE_SERVICE
    ]
    if not found:
        raise NotSupported(
            "The ServiceRequest category names no use case pharmref receives (a5t1, a5t2, a5t3, dms).",
            issues=[Issue("not-supported", "Unsupported or missing use-case category.", where)],
        )
    is_referral = any(
        coding.get("system") == systems.SERVICEREQUEST_CATEGORY and coding.get("code") == "referral"
        for concept in request.get("category", [])
        for coding in _codings(concept)
    )
    if not is_referral:
        ex.error(
            "invariant",
            "The category must include referral (message-category-servicerequest).",
            where,
        )
    return found[0]


def _patient(ex: _Extraction, request: Json, new: dict[str, Any]) -> None:
    message = ex.message
    index = message.resolve(request.get("subject"))
    if index is None or message.resource(index)["resourceType"] != "Patient":
        ex.error(
            "required",
            "ServiceRequest.subject must reference the Patient in the Bundle.",
            message.path(message.focus_index, "subject"),
        )
        return
    patient = message.resource(index)
    new["patient_nhs_number"] = None
    for position, identifier in enumerate(patient.get("identifier", [])):
        system = identifier.get("system")
        if systems.ALIASES.get(system, system) != systems.NHS_NUMBER:
            continue
        where = message.path(index, f"identifier[{position}].value")
        ex.paths["patient.nhs_number"] = where
        value = str(identifier.get("value", "")).replace(" ", "")
        if not nhs_number_is_valid(value):
            ex.error(
                "value", "Not a valid NHS number (10 digits with a modulus 11 check digit).", where
            )
        new["patient_nhs_number"] = value
    names = patient.get("name", [])
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else None)
    family = (name or {}).get("family")
    given = ((name or {}).get("given") or [None])[0]
    if not family or not given:
        ex.error(
            "required", "The patient needs a family and a given name.", message.path(index, "name")
        )
    new["patient_family_name"], new["patient_given_name"] = family, given
    ex.paths["patient.birth_date"] = message.path(index, "birthDate")
    ex.paths["patient"] = message.path(index)
    try:
        new["patient_birth_date"] = date.fromisoformat(str(patient.get("birthDate")))
    except ValueError:
        ex.error(
            "required",
            "The patient's full birth date (YYYY-MM-DD) is required.",
            message.path(index, "birthDate"),
        )
    gender = patient.get("gender")
    if gender not in GENDERS:
        ex.error(
            "code-invalid" if gender else "required",
            "Patient.gender must be male, female, other or unknown.",
            message.path(index, "gender"),
        )
    else:
        new["patient_sex"] = Sex(gender)
    new["patient_phone"] = _primary_phone(patient)
    if new["patient_phone"] is None:
        ex.error(
            "required",
            "The patient needs a call-back phone number (telecom or rank-1 contact).",
            message.path(index, "contact"),
        )
    practice_index = message.resolve((patient.get("generalPractitioner") or [None])[0])
    practice, warnings = _ods(message, practice_index)
    ex.warnings.extend(warnings)
    new["patient_practice_ods"] = practice


def _rank(item: Json) -> int:
    if isinstance(item.get("rank"), int):
        return int(item["rank"])
    for extension in item.get("extension", []):
        if extension.get("url", "").endswith("Extension-UKCore-ContactRank"):
            return int(extension.get("valuePositiveInt", 99))
    return 99


def _primary_phone(patient: Json) -> str | None:
    telecoms = [t for t in patient.get("telecom", []) if t.get("system") == "phone"]
    for contact in sorted(patient.get("contact", []), key=_rank):
        telecoms.extend(
            t for t in sorted(contact.get("telecom", []), key=_rank) if t.get("system") == "phone"
        )
    for telecom in telecoms:
        if telecom.get("value"):
            return str(telecom["value"])[:20]
    return None


def _clinician(ex: _Extraction, request: Json, new: dict[str, Any]) -> None:
    message = ex.message
    index = message.resolve(request.get("requester"))
    if index is not None and message.resource(index)["resourceType"] == "PractitionerRole":
        index = message.resolve(message.resource(index).get("practitioner"))
    if index is None or message.resource(index)["resourceType"] != "Practitioner":
        ex.warn(
            "required",
            "No requesting practitioner; the referring organisation is recorded.",
            message.path(message.focus_index, "requester"),
        )
        return
    practitioner = message.resource(index)
    name = (practitioner.get("name") or [{}])[0]
    parts = [*name.get("prefix", []), *name.get("given", []), name.get("family", "")]
    new["clinician_name"] = (name.get("text") or " ".join(p for p in parts if p)).strip()[
        :200
    ] or None
    identifier = (practitioner.get("identifier") or [{}])[0]
    new["clinician_id"] = str(identifier["value"])[:40] if identifier.get("value") else None


def _bars_rules(ex: _Extraction, request: Json, service: Service) -> None:
    message = ex.message
    if request.get("status") != "active":
        ex.error(
            "invariant",
            "A new referral's ServiceRequest.status must be active.",
            message.path(message.focus_index, "status"),
        )
    if service is Service.DMS:
        return  # pharmref's own use case: Encounter and CarePlan are optional
    encounter = message.resolve(request.get("encounter"))
    if encounter is None:
        ex.error(
            "required",
            "ServiceRequest.encounter must reference the Encounter in the Bundle.",
            message.path(message.focus_index, "encounter"),
        )
    elif message.resource(encounter).get("status") not in ("triaged", "finished"):
        ex.error(
            "invariant",
            "Encounter.status must be triaged or finished.",
            message.path(encounter, "status"),
        )
    care_plans = list(message.entries("CarePlan"))
    if not care_plans:
        ex.error("required", "A BaRS referral carries a CarePlan.", "Bundle.entry")
    for index, care_plan in care_plans:
        if care_plan.get("status") != "completed":
            ex.error(
                "invariant", "CarePlan.status must be completed.", message.path(index, "status")
            )


def _condition(ex: _Extraction, service: Service, new: dict[str, Any]) -> None:
    message = ex.message
    new["pathway"] = Pathway.MINOR_ILLNESS if service is Service.PHARMACY_FIRST else None
    reasons = []
    for index, condition in message.entries("Condition"):
        text = _text(condition.get("code"))
        if text:
            reasons.append(text)
        for position, coding in enumerate(_codings(condition.get("code"))):
            if coding.get("system") != systems.SNOMED:
                continue
            where = message.path(index, f"code.coding[{position}].code")
            if not snomed_code_is_valid(str(coding.get("code"))):
                ex.error("code-invalid", "SNOMED CT code fails its check digit.", where)
            elif service is Service.PHARMACY_FIRST and coding["code"] in PATHWAY_CONDITIONS:
                new["pathway"] = PATHWAY_CONDITIONS[coding["code"]]
                ex.paths["pathway"] = where
    new["reason"] = (
        "; ".join(reasons)[:4000]
        or _text(message.resource(message.focus_index).get("code"))
        or (f"Referral to the {service} service")
    )
    notes = [
        str(outcome["text"])
        for _, care_plan in message.entries("CarePlan")
        for activity in care_plan.get("activity", [])
        for outcome in activity.get("outcomeCodeableConcept", [])
        if outcome.get("text")
    ]
    new["notes"] = "\n".join(notes)[:4000] or None


def _quantity(value: Any) -> float | None:
    if isinstance(value, dict) and isinstance(value.get("value"), int | float):
        return float(value["value"])
    return None


def _observations(ex: _Extraction, new: dict[str, Any]) -> None:
    message = ex.message
    for index, observation in message.entries("Observation"):
        for position, coding in enumerate(_codings(observation.get("code"))):
            if coding.get("system") == systems.SNOMED and not snomed_code_is_valid(
                str(coding.get("code"))
            ):
                ex.error(
                    "code-invalid",
                    "SNOMED CT code fails its check digit.",
                    message.path(index, f"code.coding[{position}].code"),
                )
        if _has_code(observation.get("code"), BP_PANEL):
            ex.paths["blood_pressure"] = message.path(index)
            for position, component in enumerate(observation.get("component", [])):
                value = _quantity(component.get("valueQuantity"))
                if value is None:
                    continue
                if _has_code(component.get("code"), SYSTOLIC):
                    new["bp_systolic"] = round(value)
                elif _has_code(component.get("code"), DIASTOLIC):
                    new["bp_diastolic"] = round(value)
                else:
                    ex.warn(
                        "code-unknown",
                        "Blood pressure component code not recognised; ignored.",
                        message.path(index, f"component[{position}].code"),
                    )
            new["bp_measured_at"] = _instant(observation.get("effectiveDateTime"))
            for field_name, low, high in (("bp_systolic", 40, 300), ("bp_diastolic", 20, 200)):
                reading = new.get(field_name)
                if reading is not None and not low <= reading <= high:
                    ex.error(
                        "value",
                        f"Blood pressure reading outside {low} to {high} mm[Hg].",
                        message.path(index, "component"),
                    )
        elif _has_code(observation.get("code"), BMI):
            bmi = _quantity(observation.get("valueQuantity"))
            if bmi is not None and not 10 < bmi < 100:
                ex.error(
                    "value",
                    "BMI outside 10 to 100 kg/m2.",
                    message.path(index, "valueQuantity.value"),
                )
            new["bmi"] = bmi


def _medicines(ex: _Extraction, service: Service, new: dict[str, Any]) -> None:
    message = ex.message
    medicines = []
    for index, statement in message.entries("MedicationStatement"):
        concept = statement.get("medicationCodeableConcept")
        coding = next((c for c in _codings(concept) if c.get("system") in DMD_SYSTEMS), None)
        name = _text(concept) or "Unnamed medicine"
        dose = next((d.get("text") for d in statement.get("dosage", []) if d.get("text")), None)
        if service is Service.CONTRACEPTION:
            is_coc = any(
                c.get("code") == COC_SUPPLY
                for r in statement.get("reasonCode", [])
                for c in _codings(r)
            )
            if is_coc:
                new["contraceptive_type"] = ContraceptiveType.COC
            new["contraceptive_dmd_code"] = coding.get("code") if coding else None
            new["contraceptive_name"] = name[:200]
            ex.paths["current_contraceptive"] = message.path(index)
        medicines.append(
            {
                "name": name[:200],
                "dmd_code": coding.get("code") if coding else None,
                "dose": dose[:200] if dose else None,
                "change": "unchanged",
            }
        )
    if service is Service.DMS:
        new["discharge_medicines"] = medicines
        ex.paths["discharge_medicines"] = "Bundle.entry"
        encounter = message.resolve(message.resource(message.focus_index).get("encounter"))
        if encounter is not None:
            new["discharged_at"] = _instant(
                (message.resource(encounter).get("period") or {}).get("end")
            )


def _timeframe(message: BarsMessage, request: Json) -> timedelta | None:
    periods = [
        (task.get("restriction") or {}).get("period") or {} for _, task in message.entries("Task")
    ] + [request.get("occurrencePeriod") or {}]
    for period in periods:
        start, end = _instant(period.get("start")), _instant(period.get("end"))
        if start and end and end > start:
            return end - start
    return None


def to_new_referral(
    message: BarsMessage, *, pharmacy_ods: str, caller_org: str, correlation_id: str | None
) -> NewReferral:
    """Extract a referral from a `new` message; every problem found is reported at once."""
    ex = _Extraction(message=message, warnings=list(message.warnings))
    request = message.resource(message.focus_index)
    service = _service(ex, request)
    assert service is not None
    new: dict[str, Any] = {}
    _bars_rules(ex, request, service)
    _patient(ex, request, new)
    _clinician(ex, request, new)
    _condition(ex, service, new)
    _observations(ex, new)
    _medicines(ex, service, new)
    new["abpm_requested"] = any(
        c.get("code") == ABPM_REFERRAL
        for _, task in message.entries("Task")
        for c in _codings(task.get("code"))
    )
    if ex.errors:
        raise ValidationFailed("The referral message has invalid content.", issues=ex.errors)

    sender_index = message.resolve(message.header.get("sender"))
    sender, warnings = _ods(message, sender_index)
    ex.warnings.extend(warnings)
    if sender is not None and sender != caller_org:
        ex.warn(
            "business-rule",
            "MessageHeader.sender differs from the authenticated organisation, "
            "which is recorded as the referrer.",
            "Bundle.entry[0].resource.sender",
        )
    receiver_index = message.resolve((message.header.get("destination") or [{}])[0].get("receiver"))
    receiver, warnings = _ods(message, receiver_index)
    ex.warnings.extend(warnings)
    if receiver is not None and receiver != pharmacy_ods:
        ex.warn(
            "business-rule",
            "MessageHeader.destination.receiver differs from NHSD-Target-Identifier, "
            "which decides the receiving pharmacy.",
            "Bundle.entry[0].resource.destination[0].receiver",
        )
    ex.paths["pharmacy_ods"] = "NHSD-Target-Identifier"
    ex.paths["service"] = message.path(message.focus_index, "category")
    return NewReferral(
        service=service,
        pharmacy_ods=pharmacy_ods,
        priority="urgent" if request.get("priority") in URGENT_PRIORITIES else "routine",
        authored_at=_instant(request.get("authoredOn")),
        timeframe=_timeframe(message, request),
        bars_bundle_id=message.bundle_id,
        correlation_id=correlation_id,
        paths=ex.paths,
        warnings=ex.warnings,
        **new,
    )


def to_cancel_request(message: BarsMessage) -> CancelRequest:
    """An `update` message: the ServiceRequest (id = pharmref's id) revoked or entered-in-error."""
    request = message.resource(message.focus_index)
    where = message.path(message.focus_index)
    if request.get("status") not in CANCEL_STATUSES:
        raise ValidationFailed(
            "An update must set ServiceRequest.status to revoked or entered-in-error.",
            issues=[
                Issue(
                    "invariant",
                    "Unsupported update; to change a referral, revoke and re-refer.",
                    f"{where}.status",
                )
            ],
        )
    referral_id = request.get("id")
    if not isinstance(referral_id, str):
        raise ValidationFailed(
            "ServiceRequest.id must carry the id returned when the referral was made.",
            issues=[Issue("required", "Missing ServiceRequest.id.", f"{where}.id")],
        )
    reason = _text((request.get("reasonCode") or [None])[0])
    if request.get("status") == "entered-in-error":
        reason = reason or "Entered in error"
    return CancelRequest(
        referral_id=referral_id,
        reason=(reason or "Revoked by the referrer")[:500],
        last_updated=_instant((request.get("meta") or {}).get("lastUpdated")),
        warnings=message.warnings,
    )
