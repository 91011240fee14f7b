"""The consultation summary document (FHIR R4): conformance for every service, and the content
a GP practice reads.

Layers, as the style guide asks: the raw JSON (no nulls, no empty values), the official FHIR R4
JSON schema, the fhir.resources R4B models (the Bundle and each entry's own model), then the
codes pharmref commits to (SNOMED check digits, service and section codes, UK Core codings).
The `check_*` helpers are also run against tampered documents, to show they catch regressions.
"""

import json
import uuid
from collections.abc import Callable
from copy import deepcopy
from functools import cache
from pathlib import Path
from typing import Any, get_args
from xml.etree import ElementTree

import jsonschema  # type: ignore[import-untyped]
import pytest

from app.fhir import summary, systems
from app.fhir.resources import Bundle, get_fhir_model_class
from app.models.consultation import ContraceptionConsultationIn, PharmacyFirstConsultationIn
from app.models.enums import Pathway, Service
from app.services import clinical_rules as rules
from app.services.validation import snomed_code_is_valid
from tests.fhir import consultation_cases as cases
from tests.fhir.consultation_cases import (
    NOW,
    PHARMACY,
    PRACTICE,
    Case,
    check_no_nulls_or_empties,
    codes,
    walk,
)

Json = dict[str, Any]
SCHEMA = Path(__file__).parent / "schema" / "fhir.r4.schema.json"
UPDATE_RECORD_EXAMPLES = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "reference"
    / "update-record-examples"
    / "json-converted"
)
XHTML_DIV = "{http://www.w3.org/1999/xhtml}div"

EXPECTED_TYPE = {
    Service.PHARMACY_FIRST: (systems.SNOMED, "1577041000000109"),
    Service.BLOOD_PRESSURE: (systems.SNOMED, "1659111000000107"),
    Service.CONTRACEPTION: (systems.SNOMED, "1659121000000101"),
    Service.DMS: (systems.PHARMREF_SERVICE, "dms"),
}
GP_CONNECT_EXAMPLE = {
    Service.PHARMACY_FIRST: "pharmacy-first-service--example-1.json",
    Service.BLOOD_PRESSURE: "blood-pressure-check-service--example-1.json",
    Service.CONTRACEPTION: "contraception-service--example-1.json",
}
SECTION_CODES = ["clinical-summary", "observations", "medications-and-medical-devices", "outcome"]

CASES = pytest.mark.parametrize("make_case", cases.ALL_CASES, ids=lambda f: f.__name__)


def document(case: Case, **overrides: Any) -> Json:
    arguments: dict[str, Any] = {
        "referral": case.referral,
        "consultation": case.consultation,
        "pharmacy": PHARMACY,
        "practice": PRACTICE,
        "now": NOW,
    }
    return summary.summary_document_json(**(arguments | overrides))


def resources(bundle: Json, resource_type: str | None = None) -> list[Json]:
    found = [entry["resource"] for entry in bundle["entry"]]
    return [r for r in found if resource_type is None or r["resourceType"] == resource_type]


def by_url(bundle: Json) -> dict[str, Json]:
    return {entry["fullUrl"]: entry["resource"] for entry in bundle["entry"]}


def composition(bundle: Json) -> Json:
    first: Json = bundle["entry"][0]["resource"]
    return first


def codings(concept: Json) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept["coding"]}


@cache
def schema_validator() -> Any:
    schema = json.loads(SCHEMA.read_text())
    # Validate against the Bundle definition, not the oneOf of every resource, for precise errors.
    schema["oneOf"] = [{"$ref": "#/definitions/Bundle"}]
    return jsonschema.Draft6Validator(schema)


# ---- checks (also run against tampered documents below) ------------------------------------


def check_schema(bundle: Json) -> None:
    errors = sorted(schema_validator().iter_errors(bundle), key=lambda e: list(e.path))
    messages = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors]
    assert not messages, messages


def check_models(bundle: Json) -> None:
    Bundle.model_validate(bundle)
    for resource in resources(bundle):
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def check_snomed_codes(bundle: Json) -> None:
    snomed = codes(bundle, systems.SNOMED) + codes(bundle, systems.DMD)
    assert snomed
    invalid = [code for code in snomed if not snomed_code_is_valid(code)]
    assert not invalid, invalid


def check_composition_type(bundle: Json, service: Service) -> None:
    assert codings(composition(bundle)["type"]) == {EXPECTED_TYPE[service]}


def check_sections(bundle: Json) -> None:
    urls = by_url(bundle)
    sections = composition(bundle)["section"]
    assert [s["code"]["coding"][0]["code"] for s in sections] == SECTION_CODES
    for section in sections:
        assert {c["system"] for c in section["code"]["coding"]} == {systems.UKCORE_RECORD_HEADINGS}
        assert section["title"]
        assert "text" in section, section["title"]
        assert section["text"]["status"] == "generated"
        div = ElementTree.fromstring(section["text"]["div"])
        assert div.tag == XHTML_DIV
        assert "".join(div.itertext()).strip()
        assert ("entry" in section) != ("emptyReason" in section), section["title"]
        for entry in section.get("entry", []):
            assert entry["reference"] in urls
        if "emptyReason" in section:
            assert codes(section["emptyReason"], systems.LIST_EMPTY_REASON)


def check_references_resolve(bundle: Json) -> None:
    urls = by_url(bundle)
    local = [
        (path, node["reference"])
        for path, node in walk(bundle)
        if isinstance(node, dict)
        and isinstance(node.get("reference"), str)
        and node["reference"].startswith("urn:uuid:")
    ]
    assert local
    dangling = [(path, ref) for path, ref in local if ref not in urls]
    assert not dangling, dangling
    referenced = {ref for _, ref in local}
    unreferenced = [url for url in list(urls)[1:] if url not in referenced]
    assert not unreferenced, unreferenced


def check_all(bundle: Json, service: Service) -> None:
    check_no_nulls_or_empties(bundle)
    check_schema(bundle)
    check_models(bundle)
    check_snomed_codes(bundle)
    check_composition_type(bundle, service)
    check_sections(bundle)
    check_references_resolve(bundle)


# ---- conformance, every service ----------------------------------------------------------------


@CASES
def test_summary_document_conforms(make_case: Callable[[], Case]) -> None:
    case = make_case()
    check_all(document(case), case.consultation.service)


@CASES
def test_summary_document_is_a_document_bundle_led_by_its_composition(
    make_case: Callable[[], Case],
) -> None:
    case = make_case()
    bundle = document(case)
    assert bundle["type"] == "document"
    assert bundle["identifier"] == {"system": systems.PHARMREF_DOCUMENT, "value": bundle["id"]}
    assert bundle["timestamp"] == NOW.isoformat()
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in bundle["entry"])
    head = composition(bundle)
    assert head["resourceType"] == "Composition"
    assert head["status"] == "final"
    assert (
        head["title"]
        == f"Elm Street Pharmacy - {summary.service_title(case.consultation.service, case.consultation.stage)}"
    )
    urls = by_url(bundle)
    assert urls[head["subject"]["reference"]]["resourceType"] == "Patient"
    assert urls[head["encounter"]["reference"]]["resourceType"] == "Encounter"
    assert urls[head["custodian"]["reference"]]["identifier"] == [
        {"system": systems.ODS_ORGANISATION, "value": "FA001"}
    ]
    [author] = head["author"]
    assert urls[author["reference"]]["resourceType"] == "PractitionerRole"
    assert head["date"] == case.consultation.recorded_at.isoformat()


@CASES
def test_model_wrapper_renders_the_same_document(make_case: Callable[[], Case]) -> None:
    case = make_case()
    model = summary.to_summary_document(
        referral=case.referral,
        consultation=case.consultation,
        pharmacy=PHARMACY,
        practice=PRACTICE,
        now=NOW,
    )
    assert isinstance(model, Bundle)
    rendered = model.model_dump_json(exclude_none=True)
    # fhir.resources writes UTC as Z; nothing else may change on the way through the models.
    assert json.loads(rendered.replace('Z"', '+00:00"')) == document(case)


@CASES
def test_summary_document_is_stable_for_the_same_consultation(
    make_case: Callable[[], Case],
) -> None:
    case = make_case()
    assert document(case) == document(case)
    other = make_case()
    other.consultation.id = uuid.uuid4()
    ids = {r["id"] for r in resources(document(case))}
    assert ids.isdisjoint(r["id"] for r in resources(document(other)))


@pytest.mark.parametrize("service", list(GP_CONNECT_EXAMPLE))
def test_composition_type_is_the_gp_connect_service_code(service: Service) -> None:
    example = json.loads((UPDATE_RECORD_EXAMPLES / GP_CONNECT_EXAMPLE[service]).read_text())
    example_type = example["entry"][2]["resource"]["entry"][0]["resource"]["type"]
    case = {
        Service.PHARMACY_FIRST: cases.pharmacy_first_pgd,
        Service.BLOOD_PRESSURE: cases.blood_pressure_abpm_escalated,
        Service.CONTRACEPTION: cases.contraception_coc_supplied,
    }[service]()
    ours = composition(document(case))["type"]
    assert ours == example_type
    assert (
        ours
        == summary.summary_document_json(
            referral=case.referral,
            consultation=case.consultation,
            pharmacy=PHARMACY,
            practice=None,
            now=NOW,
        )["entry"][0]["resource"]["type"]
    )


# ---- the resources ------------------------------------------------------------------------------


def test_patient_practice_pharmacist_and_encounter() -> None:
    case = cases.pharmacy_first_pgd()
    bundle = document(case)
    urls = by_url(bundle)
    [patient] = resources(bundle, "Patient")
    assert patient["identifier"] == [{"system": systems.NHS_NUMBER, "value": "9990000018"}]
    assert patient["name"] == [{"use": "official", "family": "Quillfeather", "given": ["Marisol"]}]
    assert (patient["gender"], patient["birthDate"]) == ("female", "1990-04-01")
    [gp] = patient["generalPractitioner"]
    assert urls[gp["reference"]]["identifier"] == [
        {"system": systems.ODS_ORGANISATION, "value": "A81001"}
    ]
    assert urls[gp["reference"]]["name"] == "Riverside Surgery"

    [practitioner] = resources(bundle, "Practitioner")
    assert practitioner["identifier"] == [{"system": systems.GPHC_NUMBER, "value": "2099999"}]
    assert practitioner["name"] == [
        {"text": "Priya Example", "family": "Example", "given": ["Priya"]}
    ]
    [role] = resources(bundle, "PractitionerRole")
    assert codings(role["code"][0]) == {(systems.SNOMED, "46255001")}
    assert urls[role["practitioner"]["reference"]] is practitioner
    assert urls[role["organization"]["reference"]]["name"] == "Elm Street Pharmacy"

    [encounter] = resources(bundle, "Encounter")
    assert encounter["status"] == "finished"
    assert encounter["class"]["code"] == "AMB"
    assert codings(encounter["type"][0]) == {(systems.SNOMED, "307778003")}
    assert encounter["basedOn"] == [
        {
            "reference": f"ServiceRequest/{case.referral.id}",
            "identifier": {
                "system": systems.PHARMREF_REFERRAL_REFERENCE,
                "value": case.referral.reference,
            },
        }
    ]
    assert encounter["period"] == {
        "start": "2026-11-22T14:30:00+00:00",
        "end": "2026-11-22T14:55:00+00:00",
    }
    assert codings(encounter["reasonCode"][0]) == {(systems.SNOMED, "1577041000000109")}


def test_patient_without_nhs_number_or_known_practice() -> None:
    case = cases.pharmacy_first_minor_illness()
    case.referral.patient_nhs_number = None
    case.referral.patient_practice_ods = None
    bundle = document(case, practice=None)
    check_all(bundle, Service.PHARMACY_FIRST)
    [patient] = resources(bundle, "Patient")
    assert "identifier" not in patient
    assert "generalPractitioner" not in patient
    assert len(resources(bundle, "Organization")) == 1


def test_practice_known_only_by_ods_code_is_an_identifier_reference() -> None:
    case = cases.pharmacy_first_minor_illness()
    [patient] = resources(document(case, practice=None), "Patient")
    assert patient["generalPractitioner"] == [
        {
            "type": "Organization",
            "identifier": {"system": systems.ODS_ORGANISATION, "value": "A81001"},
        }
    ]


def test_pharmacy_first_pgd_supply_condition_and_dispense() -> None:
    bundle = document(cases.pharmacy_first_pgd())
    [condition] = resources(bundle, "Condition")
    assert codings(condition["code"]) == {(systems.SNOMED, "262550002")}
    assert condition["code"]["text"] == "Infected insect bite"
    assert codes(condition["category"], systems.CONDITION_CATEGORY) == ["encounter-diagnosis"]
    [dispense] = resources(bundle, "MedicationDispense")
    assert dispense["status"] == "completed"
    assert dispense["medicationCodeableConcept"]["coding"] == [
        {
            "system": "https://dmd.nhs.uk",
            "code": "289411000001107",
            "display": "Flucloxacillin 500mg capsules",
        }
    ]
    assert dispense["type"]["coding"] == [
        {
            "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-MedicationSupplyType",
            "code": "patient-group-direction",
            "display": "Patient group direction",
        }
    ]
    assert dispense["quantity"] == {"value": 20, "unit": "capsule"}
    assert dispense["dosageInstruction"] == [{"text": "One capsule four times a day for 5 days"}]
    medicines = composition(bundle)["section"][2]
    assert medicines["entry"] == [{"reference": f"urn:uuid:{dispense['id']}"}]
    assert resources(bundle, "Observation") == []


def test_every_clinical_pathway_has_a_coded_condition() -> None:
    for pathway in Pathway:
        case = cases.pharmacy_first_pgd()
        case.consultation.record = case.consultation.record | {"pathway": str(pathway)}
        if pathway is Pathway.MINOR_ILLNESS:
            case.consultation.record = case.consultation.record | {"outcome": "advice-self-care"}
        [condition] = resources(document(case), "Condition")
        coded = codes(condition["code"], systems.SNOMED)
        if pathway is Pathway.MINOR_ILLNESS:
            assert coded == []
        else:
            assert len(coded) == 1
            assert snomed_code_is_valid(coded[0])


def test_minor_illness_advice_has_empty_sections_with_reasons() -> None:
    case = cases.pharmacy_first_minor_illness()
    bundle = document(case)
    [condition] = resources(bundle, "Condition")
    assert condition["code"] == {"text": "Blocked nose and cough for 4 days"}
    assert codings(condition["category"][0]) == {(systems.SNOMED, "33962009")}
    _, observations, medicines, outcome = composition(bundle)["section"]
    assert codes(observations["emptyReason"], systems.LIST_EMPTY_REASON) == ["notasked"]
    assert codes(medicines["emptyReason"], systems.LIST_EMPTY_REASON) == ["nilknown"]
    assert "Advice and self-care" in outcome["text"]["div"]
    assert resources(bundle, "MedicationDispense") == []


def test_blood_pressure_observations_are_coded_as_uk_core() -> None:
    case = cases.blood_pressure_abpm_escalated()
    bundle = document(case)
    observations = resources(bundle, "Observation")
    assert all(o["basedOn"] == [summary.referral_reference(case.referral)] for o in observations)
    assert all(
        codes(o["category"], systems.OBSERVATION_CATEGORY) == ["vital-signs"] for o in observations
    )
    panels = [o for o in observations if (systems.LOINC, "85354-9") in codings(o["code"])]
    assert len(panels) == 2
    for panel in panels:
        assert codings(panel["code"]) == {(systems.LOINC, "85354-9"), (systems.SNOMED, "75367002")}
        assert "valueQuantity" not in panel
        systolic, diastolic = panel["component"]
        assert codings(systolic["code"]) == {
            (systems.LOINC, "8480-6"),
            (systems.SNOMED, "72313002"),
        }
        assert codings(diastolic["code"]) == {
            (systems.LOINC, "8462-4"),
            (systems.SNOMED, "1091811000000102"),
        }
        for component in panel["component"]:
            assert component["valueQuantity"]["system"] == systems.UCUM
            assert component["valueQuantity"]["code"] == "mm[Hg]"
    first, clinic = panels
    assert "interpretation" not in first
    assert [c["valueQuantity"]["value"] for c in clinic["component"]] == [148, 94]
    assert codes(clinic["interpretation"], systems.OBSERVATION_INTERPRETATION) == ["H"]
    assert "high (140/90 to 179/119)" in clinic["note"][0]["text"]

    pulses = [o for o in observations if (systems.SNOMED, "364075005") in codings(o["code"])]
    assert [codings(p["code"]) for p in pulses] == [
        {(systems.LOINC, "8867-4"), (systems.SNOMED, "364075005")}
    ] * 2
    assert [p["valueQuantity"] for p in pulses] == [
        {"value": 88, "unit": "beats/minute", "system": systems.UCUM, "code": "/min"},
        {"value": 84, "unit": "beats/minute", "system": systems.UCUM, "code": "/min"},
    ]
    assert all(p["interpretation"][0]["text"] == "Irregular pulse" for p in pulses)

    [abpm] = [o for o in observations if (systems.SNOMED, "2181371000000107") in codings(o["code"])]
    assert abpm["effectivePeriod"] == {"start": "2026-11-20", "end": "2026-11-21"}
    assert [(codings(c["code"]), c["valueQuantity"]["value"]) for c in abpm["component"]] == [
        ({(systems.SNOMED, "2181381000000109")}, 141),
        ({(systems.SNOMED, "2181391000000106")}, 88),
    ]
    assert codes(abpm["interpretation"], systems.OBSERVATION_INTERPRETATION) == ["H"]
    assert "26 daytime readings" in abpm["note"][0]["text"]


def test_outcome_narrative_carries_the_override_and_the_urgent_escalation() -> None:
    case = cases.blood_pressure_abpm_escalated()
    bundle = document(case)
    outcome = composition(bundle)["section"][3]
    text = "".join(ElementTree.fromstring(outcome["text"]["div"]).itertext())
    assert "Outcome: Referred to the GP practice: hypertension." in text
    assert "recommend: Referred to the GP practice: irregular pulse" in text
    assert "Irregular pulse already under GP review; ABPM confirms hypertension" in text
    assert "URGENT escalation to the referrer: irregular pulse" in text
    assert "notified at 2026-11-22T14:55:00+00:00" in text
    [impression] = resources(bundle, "ClinicalImpression")
    assert outcome["entry"] == [{"reference": f"urn:uuid:{impression['id']}"}]
    assert "URGENT escalation" in impression["summary"]
    assert impression["note"] == [
        {
            "text": "Clinician override: Irregular pulse already under GP review; ABPM confirms hypertension"
        }
    ]


def test_very_high_blood_pressure_escalation_is_named() -> None:
    case = cases.blood_pressure_abpm_escalated()
    case.consultation.derived = case.consultation.derived | {"category": "very-high"}
    outcome = composition(document(case))["section"][3]
    assert "very high blood pressure (180/120 or above)" in outcome["text"]["div"]


def test_contraception_supply_bmi_and_blood_pressure() -> None:
    bundle = document(cases.contraception_coc_supplied())
    observations = resources(bundle, "Observation")
    [bp] = [o for o in observations if (systems.SNOMED, "75367002") in codings(o["code"])]
    assert codes(bp["interpretation"], systems.OBSERVATION_INTERPRETATION) == ["N"]
    [bmi] = [o for o in observations if (systems.SNOMED, "60621009") in codings(o["code"])]
    assert codings(bmi["code"]) == {(systems.SNOMED, "60621009"), (systems.LOINC, "39156-5")}
    assert bmi["valueQuantity"] == {
        "value": 24.1,
        "unit": "kg/m2",
        "system": systems.UCUM,
        "code": "kg/m2",
    }
    [dispense] = resources(bundle, "MedicationDispense")
    assert codes(dispense["medicationCodeableConcept"], systems.DMD) == ["17346711000001106"]
    assert codes(dispense["type"], systems.UKCORE_MEDICATION_SUPPLY_TYPE) == [
        "patient-group-direction"
    ]
    assert dispense["daysSupply"] == {
        "value": 12,
        "unit": "month",
        "system": systems.UCUM,
        "code": "mo",
    }
    assert resources(bundle, "Condition") == []


def test_contraception_not_supplied_says_why() -> None:
    case = cases.contraception_coc_supplied()
    case.consultation.outcome = "not-supplied-referred"
    case.consultation.record = case.consultation.record | {
        "outcome": "not-supplied-referred",
        "blood_pressure": {"systolic": 142, "diastolic": 90},
        "reason_not_supplied": "Blood pressure 142/90: GP appointment within 7 days",
    }
    case.consultation.derived = case.consultation.derived | {
        "bp_category": "high",
        "coc_safe": False,
        "coc_exclusions": ["Blood pressure 140/90 or above: COC is not supplied."],
    }
    bundle = document(case)
    check_all(bundle, Service.CONTRACEPTION)
    _, _, medicines, outcome = composition(bundle)["section"]
    assert "emptyReason" in medicines
    assert "Blood pressure 142/90: GP appointment within 7 days" in outcome["text"]["div"]
    assert "COC exclusion: Blood pressure 140/90 or above" in outcome["text"]["div"]


def test_dms_document_per_stage() -> None:
    case = cases.dms_stage_1()
    bundle = document(case)
    head = composition(bundle)
    assert head["title"] == "Elm Street Pharmacy - Discharge Medicines Service, stage 1"
    assert head["type"]["coding"] == [
        {
            "system": systems.PHARMREF_SERVICE,
            "code": "dms",
            "display": "Discharge Medicines Service",
        }
    ]
    assert all("(DMS stage 1)" in s["title"] for s in head["section"])
    consultation = "".join(ElementTree.fromstring(head["section"][0]["text"]["div"]).itertext())
    assert "Stage 1: discharge referral received" in consultation
    assert "Issue found: Ramipril dose differs from pre-admission" in consultation
    assert "Bisoprolol 1.25mg tablets (new)" in consultation
    assert "within 72 hours" in consultation
    assert "DMS stage 2 to come" in head["section"][3]["text"]["div"]

    stage_2 = cases.dms_stage_1()
    stage_2.consultation.id = uuid.uuid4()
    stage_2.consultation.stage = 2
    stage_2.consultation.outcome = "stage-2-complete"
    stage_2.consultation.derived = {"issues_found": 0, "ended_early": False}
    stage_2.consultation.record = stage_2.consultation.record | {
        "stage": 2,
        "reconciled": None,
        "prescription_checked": True,
        "issues_found": [],
    }
    second = document(stage_2)
    check_all(second, Service.DMS)
    assert composition(second)["title"].endswith("stage 2")
    assert second["id"] != bundle["id"]


def test_narrative_escapes_recorded_text() -> None:
    bundle = document(cases.pharmacy_first_pgd())
    div = composition(bundle)["section"][0]["text"]["div"]
    assert "Site tender &amp; swollen &lt;5cm&gt;." in div
    assert "<5cm>" not in div
    assert "Site tender & swollen <5cm>." in "".join(ElementTree.fromstring(div).itertext())


# ---- exhaustive code maps -------------------------------------------------------------------


def test_code_maps_cover_every_value() -> None:
    assert set(summary.SERVICE_TYPE) == set(Service)
    assert set(summary.PATHWAY_TEXT) == set(Pathway)
    assert (
        set(summary.BP_CATEGORY_TEXT)
        == set(summary.BP_CATEGORY_INTERPRETATION)
        == {str(c) for c in rules.BpCategory}
    )
    assert (
        set(summary.ABPM_RESULT_TEXT)
        == set(summary.ABPM_INTERPRETATION)
        == {str(r) for r in rules.AbpmResult}
    )
    outcomes = set(get_args(PharmacyFirstConsultationIn.model_fields["outcome"].annotation))
    outcomes |= set(get_args(ContraceptionConsultationIn.model_fields["outcome"].annotation))
    outcomes |= {
        rules.bp_recommended_outcome(
            category=category, irregular_pulse=irregular, abpm=abpm, abpm_pending=pending
        )
        for category in rules.BpCategory
        for irregular in (False, True)
        for abpm in (None, *rules.AbpmResult)
        for pending in (False, True)
    }
    outcomes |= {"stage-1-complete", "stage-2-complete", "stage-3-complete", "ended-early"}
    assert outcomes == set(summary.OUTCOME_TEXT)


def test_every_code_table_snomed_id_has_a_valid_check_digit() -> None:
    tables: list[Any] = [
        summary.SERVICE_TYPE,
        [
            summary.BP_PANEL_SNOMED,
            summary.SYSTOLIC_SNOMED,
            summary.DIASTOLIC_SNOMED,
            summary.HEART_RATE_SNOMED,
            summary.ABPM_HEADER,
            summary.ABPM_SYSTOLIC,
            summary.ABPM_DIASTOLIC,
            summary.BMI_SNOMED,
            summary.PHARMACIST_SNOMED,
            summary.SEEN_IN_PRIMARY_CARE,
            summary.PRESENTING_COMPLAINT,
        ],
    ]
    snomed = [code for system, code, _ in summary.SERVICE_TYPE.values() if system == systems.SNOMED]
    snomed += [code for system, code, _ in tables[1] if system == systems.SNOMED]
    assert len(snomed) == 14
    assert all(snomed_code_is_valid(code) for code in snomed), snomed


# ---- the checks catch regressions --------------------------------------------------------------


def tampered(change: Callable[[Json], None]) -> Json:
    bundle = deepcopy(document(cases.blood_pressure_abpm_escalated()))
    change(bundle)
    return bundle


def _wrong_type(bundle: Json) -> None:
    composition(bundle)["type"]["coding"][0]["code"] = "1659111000000100"


def _null(bundle: Json) -> None:
    resources(bundle, "Patient")[0]["birthDate"] = None


def _unknown_element(bundle: Json) -> None:
    resources(bundle, "Encounter")[0]["reason"] = [{"text": "STU3 element name"}]


def _bad_check_digit(bundle: Json) -> None:
    resources(bundle, "Observation")[0]["component"][1]["code"]["coding"][1]["code"] = (
        "1091811000000100"
    )


def _no_narrative(bundle: Json) -> None:
    del composition(bundle)["section"][1]["text"]


def _entries_and_empty_reason(bundle: Json) -> None:
    composition(bundle)["section"][1]["emptyReason"] = {"text": "none"}


def _dangling_reference(bundle: Json) -> None:
    composition(bundle)["author"] = [{"reference": f"urn:uuid:{uuid.uuid4()}"}]


def _bad_datetime(bundle: Json) -> None:
    resources(bundle, "Observation")[0]["effectiveDateTime"] = "2026-11-22 14:30"


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (_wrong_type, lambda b: check_composition_type(b, Service.BLOOD_PRESSURE)),
        (_null, check_no_nulls_or_empties),
        (_null, check_schema),
        (_unknown_element, check_schema),
        (_unknown_element, check_models),
        (_bad_check_digit, check_snomed_codes),
        (_no_narrative, check_sections),
        (_entries_and_empty_reason, check_sections),
        (_dangling_reference, check_references_resolve),
        (_bad_datetime, check_schema),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_checks_fail_on_a_regressed_document(
    change: Callable[[Json], None], check: Callable[[Json], None]
) -> None:
    check(document(cases.blood_pressure_abpm_escalated()))
    with pytest.raises((AssertionError, ValueError)):
        check(tampered(change))
