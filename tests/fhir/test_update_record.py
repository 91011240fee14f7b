"""GP Connect Update Record (ITK3, FHIR STU3): each service's message against the published
example for that service (update-record-examples/json-converted), and the STU3 models.

What must match an example: the MessageHeader event and handling extension, the profiles per
resource, the resource types (the skeleton exactly; clinical resources only of the kinds the
examples use), the Composition.type, the single uncoded section listing every entry, the PRSB
headings in meta.tag, and the observation codes and units. Where the examples carry a known
defect (an invalid SNOMED id) the corrected code is expected.
"""

import json
from collections import Counter
from collections.abc import Callable
from copy import deepcopy
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from app.core.errors import NotSupported
from app.fhir import stu3, systems, update_record
from app.models.enums import Service
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
EXAMPLES = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "reference"
    / "update-record-examples"
    / "json-converted"
)
EXAMPLE_FOR: dict[str, str] = {
    "pharmacy_first_pgd": "pharmacy-first-service--example-1.json",
    "pharmacy_first_minor_illness": "pharmacy-first-service--example-2.json",
    "blood_pressure_abpm_escalated": "blood-pressure-check-service--example-2.json",
    "contraception_coc_supplied": "contraception-service--example-1.json",
}
# Known defect in blood-pressure example 1 (GP Connect release note 1.1.5).
CORRECTED = {"1091811000000100": "1091811000000102"}
# GP Connect 1.2.0 "Handling observations": the ABPM average triplet (nhs-interop.md 2.4).
ABPM_TRIPLET = {"2181371000000107", "2181381000000109", "2181391000000106"}
SKELETON = frozenset(
    {
        "MessageHeader",
        "Organization",
        "Bundle",
        "Composition",
        "Encounter",
        "Practitioner",
        "PractitionerRole",
        "Patient",
    }
)
EXPECTED_CLINICAL: dict[str, dict[str, int]] = {
    "pharmacy_first_pgd": {"MedicationDispense": 1, "Condition": 1, "ClinicalImpression": 2},
    "pharmacy_first_minor_illness": {"ClinicalImpression": 2},
    "blood_pressure_abpm_escalated": {"Observation": 5, "ClinicalImpression": 2},
    "contraception_coc_supplied": {
        "Observation": 2,
        "MedicationDispense": 1,
        "ClinicalImpression": 2,
    },
}
EXPECTED_OBSERVATIONS: dict[str, list[tuple[str, list[str]]]] = {
    "pharmacy_first_pgd": [],
    "pharmacy_first_minor_illness": [],
    "blood_pressure_abpm_escalated": [
        ("163020007", ["72313002", "1091811000000102"]),
        ("364075005", []),
        ("163020007", ["72313002", "1091811000000102"]),
        ("364075005", []),
        ("2181371000000107", ["2181381000000109", "2181391000000106"]),
    ],
    "contraception_coc_supplied": [
        ("163020007", ["72313002", "1091811000000102"]),
        ("60621009", []),
    ],
}

CASES = pytest.mark.parametrize("make_case", cases.UPDATE_RECORD_CASES, ids=lambda f: f.__name__)


def message(case: Case, **overrides: Any) -> Json:
    arguments: dict[str, Any] = {
        "referral": case.referral,
        "consultation": case.consultation,
        "pharmacy": PHARMACY,
        "practice": PRACTICE,
        "now": NOW,
    }
    return update_record.update_record_message_json(**(arguments | overrides))


@cache
def _example(name: str) -> str:
    return (EXAMPLES / name).read_text()


def example_for(make_case: Callable[[], Case]) -> Json:
    loaded: Json = json.loads(_example(EXAMPLE_FOR[make_case.__name__]))
    return loaded


def all_examples() -> list[Json]:
    return [json.loads(_example(name)) for name in sorted(set(EXAMPLE_FOR.values()))] + [
        json.loads(_example(name))
        for name in (
            "blood-pressure-check-service--example-1.json",
            "contraception-service--example-2.json",
        )
    ]


def document(bundle: Json) -> Json:
    doc: Json = bundle["entry"][2]["resource"]
    return doc


def members(bundle: Json) -> list[Json]:
    """Every resource of a message: the message's own entries and the document's."""
    return [e["resource"] for e in bundle["entry"]] + [
        e["resource"] for e in document(bundle)["entry"]
    ]


def resource_types(bundle: Json) -> Counter[str]:
    return Counter(r["resourceType"] for r in members(bundle))


def composition(bundle: Json) -> Json:
    head: Json = document(bundle)["entry"][0]["resource"]
    return head


def of_type(bundle: Json, resource_type: str) -> list[Json]:
    return [r for r in members(bundle) if r["resourceType"] == resource_type]


def profiles(bundle: Json) -> dict[tuple[str, str], str]:
    """(where, resourceType) -> profile, where is `message` or `document`."""
    found: dict[tuple[str, str], str] = {("message", "Bundle"): bundle["meta"]["profile"][0]}
    for where, entries in (("message", bundle["entry"]), ("document", document(bundle)["entry"])):
        for entry in entries:
            resource = entry["resource"]
            key = (where, resource["resourceType"])
            found[key] = resource["meta"]["profile"][0].strip()
    return found


def observation_codes(bundle: Json) -> list[tuple[str, list[str]]]:
    return [
        (
            CORRECTED.get(o["code"]["coding"][0]["code"], o["code"]["coding"][0]["code"]),
            [
                CORRECTED.get(c["code"]["coding"][0]["code"], c["code"]["coding"][0]["code"])
                for c in o.get("component", [])
            ],
        )
        for o in of_type(bundle, "Observation")
    ]


def headings(bundle: Json) -> set[tuple[str, str]]:
    return {
        (r["resourceType"], tag["code"])
        for r in members(bundle)
        for tag in r.get("meta", {}).get("tag", [])
        if tag["system"] == systems.GPC_RECORD_HEADINGS
    }


# ---- checks (also run against the examples, and against tampered messages) --------------------


def check_models(bundle: Json) -> None:
    stu3.Bundle.model_validate(bundle)
    for resource in members(bundle):
        stu3.get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def check_section_lists_every_entry(bundle: Json) -> None:
    [section] = composition(bundle)["section"]
    assert set(section) == {"entry"}, "one section: no code, no title, no HTML text"
    listed = [e["reference"] for e in section["entry"]]
    assert listed == [e["fullUrl"] for e in document(bundle)["entry"][1:]]


def check_header(bundle: Json, example: Json) -> None:
    ours, theirs = bundle["entry"][0]["resource"], example["entry"][0]["resource"]
    assert ours["event"] == theirs["event"]
    [handling] = ours["extension"]
    [example_handling] = theirs["extension"]
    assert handling["url"] == example_handling["url"]
    assert [e["url"] for e in handling["extension"]] == [
        e["url"] for e in example_handling["extension"]
    ]
    fixed = {"BusAckRequested", "InfAckRequested", "RecipientType", "MessageDefinition"}
    for ext, example_ext in zip(handling["extension"], example_handling["extension"], strict=True):
        if ext["url"] in fixed:
            assert ext == example_ext
    sender_reference = handling["extension"][4]["valueString"]
    by_url = {e["fullUrl"]: e["resource"] for e in document(bundle)["entry"]}
    assert by_url[sender_reference]["resourceType"] == "Encounter"
    message_urls = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    assert message_urls[ours["sender"]["reference"]]["resourceType"] == "Organization"
    [focus] = ours["focus"]
    assert message_urls[focus["reference"]] is document(bundle)


def check_composition_type(bundle: Json, example: Json) -> None:
    assert composition(bundle)["type"] == composition(example)["type"]


def check_profiles(bundle: Json, example: Json) -> None:
    ours, theirs = profiles(bundle), profiles(example)
    assert ours.keys() <= theirs.keys()
    assert {key: ours[key] for key in ours} == {key: theirs[key] for key in ours}


def check_resource_types(bundle: Json, example: Json, clinical: dict[str, int]) -> None:
    ours, theirs = resource_types(bundle), resource_types(example)
    assert {t: ours[t] for t in SKELETON} == {t: theirs[t] for t in SKELETON}
    assert set(ours) <= set(theirs)
    assert {t: n for t, n in ours.items() if t not in SKELETON} == clinical


def check_observation_codes(bundle: Json, expected: list[tuple[str, list[str]]]) -> None:
    allowed = ABPM_TRIPLET | {
        code
        for example in all_examples()
        for header, parts in observation_codes(example)
        for code in (header, *parts)
    }
    found = observation_codes(bundle)
    assert found == expected
    assert {code for header, parts in found for code in (header, *parts)} <= allowed


def check_snomed_codes(bundle: Json) -> None:
    snomed = codes(bundle, systems.SNOMED) + codes(bundle, systems.DMD)
    invalid = [code for code in snomed if not snomed_code_is_valid(code)]
    assert not invalid, invalid


# ---- conformance, every supported service ---------------------------------------------------


def test_examples_satisfy_the_structural_checks() -> None:
    for example in all_examples():
        check_models(example)
        check_section_lists_every_entry(example)
        check_header(example, example)


@CASES
def test_update_record_message_validates_with_the_stu3_models(
    make_case: Callable[[], Case],
) -> None:
    bundle = message(make_case())
    check_no_nulls_or_empties(bundle)
    check_models(bundle)
    model = update_record.to_update_record_message(
        referral=make_case().referral,
        consultation=make_case().consultation,
        pharmacy=PHARMACY,
        practice=PRACTICE,
        now=NOW,
    )
    assert isinstance(model, stu3.Bundle)
    rendered = model.model_dump_json(exclude_none=True)
    assert json.loads(rendered.replace('Z"', '+00:00"')) == bundle


@CASES
def test_update_record_message_matches_its_example(make_case: Callable[[], Case]) -> None:
    bundle, example = message(make_case()), example_for(make_case)
    assert bundle["type"] == "message"
    assert document(bundle)["type"] == "document"
    check_header(bundle, example)
    check_composition_type(bundle, example)
    check_profiles(bundle, example)
    check_resource_types(bundle, example, EXPECTED_CLINICAL[make_case.__name__])
    check_section_lists_every_entry(bundle)
    check_observation_codes(bundle, EXPECTED_OBSERVATIONS[make_case.__name__])
    check_snomed_codes(bundle)
    every_example_heading = set().union(*(headings(e) for e in all_examples()))
    assert headings(bundle) <= every_example_heading


@CASES
def test_composition_and_people(make_case: Callable[[], Case]) -> None:
    case = make_case()
    bundle = message(case)
    head = composition(bundle)
    by_url = {e["fullUrl"]: e["resource"] for e in document(bundle)["entry"]}
    assert head["status"] == "final"
    assert head["title"] == f"Elm Street Pharmacy - {head['type']['coding'][0]['display']}"
    [author] = head["author"]
    assert by_url[author["reference"]]["resourceType"] == "Practitioner"
    [practitioner] = of_type(bundle, "Practitioner")
    assert {"system": systems.GPHC_NUMBER, "value": "2099999"} in practitioner["identifier"]
    [role] = of_type(bundle, "PractitionerRole")
    assert role["code"][0]["coding"] == [
        {
            "system": "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-SDSJobRoleName-1",
            "code": "R1290",
            "display": "Pharmacist",
        }
    ]
    [patient] = of_type(bundle, "Patient")
    nhs_number = patient["identifier"][0]
    assert (nhs_number["system"], nhs_number["value"]) == (systems.NHS_NUMBER, "9990000018")
    assert codes(nhs_number["extension"], systems.CARECONNECT_NHS_NUMBER_VERIFICATION) == ["02"]
    assert patient["generalPractitioner"] == [
        {
            "identifier": {"system": systems.ODS_ORGANISATION, "value": "A81001"},
            "display": "Riverside Surgery",
        }
    ]
    [encounter] = of_type(bundle, "Encounter")
    assert encounter["status"] == "finished"
    assert codes(encounter["type"], systems.SNOMED) == ["307778003"]
    assert encounter["reason"][0]["coding"] == head["type"]["coding"]
    sender, pharmacy = of_type(bundle, "Organization")
    assert (
        sender["identifier"]
        == pharmacy["identifier"]
        == [{"system": systems.ODS_ORGANISATION, "value": "FA001"}]
    )
    assert bundle["entry"][0]["resource"]["source"] == {"endpoint": "FA001"}
    assert message(case, sender_mailbox="FA001OT001")["entry"][0]["resource"]["source"] == {
        "endpoint": "FA001OT001"
    }


def test_pgd_supply_is_typed_as_in_the_pharmacy_first_example() -> None:
    make_case = cases.pharmacy_first_pgd
    bundle, example = message(make_case()), example_for(make_case)
    [dispense] = of_type(bundle, "MedicationDispense")
    [theirs] = of_type(example, "MedicationDispense")
    for element in ("type", "category", "status"):
        assert dispense[element] == theirs[element]
    assert codes(dispense["medicationCodeableConcept"], systems.DMD) == ["289411000001107"]
    assert dispense["quantity"] == {"value": 20, "unit": "capsule"}
    assert dispense["dosageInstruction"] == [
        {
            "text": "One capsule four times a day for 5 days",
            "patientInstruction": "One capsule four times a day for 5 days",
        }
    ]
    [condition] = of_type(bundle, "Condition")
    assert codes(condition["code"], systems.SNOMED) == ["262550002"]
    assert condition["meta"]["tag"] == of_type(example, "Condition")[0]["meta"]["tag"]


def test_contraception_supply_is_a_pgd_supply_of_months() -> None:
    bundle = message(cases.contraception_coc_supplied())
    [dispense] = of_type(bundle, "MedicationDispense")
    assert codes(dispense["type"], systems.CARECONNECT_MEDICATION_SUPPLY_TYPE) == [
        "patient-group-direction"
    ]
    assert dispense["daysSupply"] == {
        "value": 12,
        "unit": "month",
        "system": systems.UCUM,
        "code": "mo",
    }


def test_observation_units_match_the_examples() -> None:
    units: dict[str, tuple[str, str]] = {}
    for example in all_examples():
        for observation in of_type(example, "Observation"):
            for part in [observation, *observation.get("component", [])]:
                if "valueQuantity" in part:
                    quantity = part["valueQuantity"]
                    units[part["code"]["coding"][0]["code"]] = (quantity["unit"], quantity["code"])
    ours = [
        part
        for make_case in cases.UPDATE_RECORD_CASES
        for observation in of_type(message(make_case()), "Observation")
        for part in [observation, *observation.get("component", [])]
        if "valueQuantity" in part
    ]
    assert len(ours) == 11
    for part in ours:
        quantity = part["valueQuantity"]
        expected = units.get(part["code"]["coding"][0]["code"], ("millimeter of mercury", "mm[Hg]"))
        assert (quantity["unit"], quantity["code"]) == expected
        assert quantity["system"] == systems.UCUM


def test_clinical_impressions_carry_the_summary_and_the_outcome() -> None:
    bundle = message(cases.blood_pressure_abpm_escalated())
    summary, advice = of_type(bundle, "ClinicalImpression")
    assert [summary["meta"]["tag"][0]["code"], advice["meta"]["tag"][0]["code"]] == [
        "clinical-summary",
        "information-and-advice-given",
    ]
    assert "Clinic blood pressure readings taken: 2." in summary["summary"]
    assert "URGENT escalation to the referrer: irregular pulse" in advice["summary"]
    assert "Irregular pulse already under GP review" in advice["summary"]
    [abpm] = [o for o in of_type(bundle, "Observation") if "effectivePeriod" in o]
    assert abpm["effectivePeriod"] == {"start": "2026-11-20", "end": "2026-11-21"}
    assert "hypertension confirmed" in abpm["comment"]


def test_minor_illness_sends_no_uncoded_condition() -> None:
    bundle = message(cases.pharmacy_first_minor_illness())
    assert of_type(bundle, "Condition") == []
    summary = of_type(bundle, "ClinicalImpression")[0]["summary"]
    assert "Blocked nose and cough for 4 days" in summary


def test_no_section_text_anywhere() -> None:
    for make_case in cases.UPDATE_RECORD_CASES:
        bundle = message(make_case())
        assert not [p for p, _ in walk(bundle) if p.endswith(".div")]


# ---- refusals -----------------------------------------------------------------------------------


def test_dms_is_refused_r4_only() -> None:
    with pytest.raises(NotSupported, match="R4 only"):
        message(cases.dms_stage_1())
    assert Service.DMS not in update_record.SUPPORTED_SERVICES


def test_patient_without_nhs_number_is_refused() -> None:
    case = cases.pharmacy_first_pgd()
    case.referral.patient_nhs_number = None
    with pytest.raises(NotSupported, match="NHS number"):
        message(case)


# ---- the checks catch regressions --------------------------------------------------------------


def tampered(change: Callable[[Json], None]) -> Json:
    bundle = deepcopy(message(cases.blood_pressure_abpm_escalated()))
    change(bundle)
    return bundle


def _wrong_type(bundle: Json) -> None:
    composition(bundle)["type"]["coding"][0]["code"] = "1577041000000109"


def _wrong_event(bundle: Json) -> None:
    bundle["entry"][0]["resource"]["event"]["code"] = "ITK007C"


def _wrong_profile(bundle: Json) -> None:
    of_type(bundle, "Patient")[0]["meta"]["profile"] = [
        "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"
    ]


def _section_code(bundle: Json) -> None:
    composition(bundle)["section"][0]["code"] = {"text": "Consultation"}


def _extra_resource_type(bundle: Json) -> None:
    document(bundle)["entry"].append(
        {"fullUrl": "urn:uuid:x", "resource": {"resourceType": "AllergyIntolerance"}}
    )


def _r4_observation_code(bundle: Json) -> None:
    of_type(bundle, "Observation")[0]["code"]["coding"][0]["code"] = "75367002"


def _r4_element(bundle: Json) -> None:
    of_type(bundle, "Observation")[0]["encounter"] = {"reference": "urn:uuid:x"}


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (_wrong_type, check_composition_type),
        (_wrong_event, check_header),
        (_wrong_profile, check_profiles),
        (_section_code, lambda b, _: check_section_lists_every_entry(b)),
        (
            _extra_resource_type,
            lambda b, e: check_resource_types(
                b, e, EXPECTED_CLINICAL["blood_pressure_abpm_escalated"]
            ),
        ),
        (
            _r4_observation_code,
            lambda b, _: check_observation_codes(
                b, EXPECTED_OBSERVATIONS["blood_pressure_abpm_escalated"]
            ),
        ),
        (_r4_element, lambda b, _: check_models(b)),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_checks_fail_on_a_regressed_message(
    change: Callable[[Json], None], check: Callable[[Json, Json], None]
) -> None:
    example = example_for(cases.blood_pressure_abpm_escalated)
    check(message(cases.blood_pressure_abpm_escalated()), example)
    with pytest.raises((AssertionError, ValueError)):
        check(tampered(change), example)
