from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir_core.constraints import FHIR_TYPES_MAPS
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.errors import Issue
from app.fhir.raw_checks import (
    MAX_DEPTH,
    MAX_ISSUES,
    _elements,
    check_raw_resource,
    scan_raw_resource,
)
from app.fhir.resources import get_fhir_model_class
from tests.helpers import EXAMPLES as EXAMPLES_ROOT

EXAMPLES_DIR = EXAMPLES_ROOT
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.json"))
ABPM = EXAMPLES_DIR / "REFREQ06 - Referral Service Request New Full - GP to BP - ABPM.json"
# Entry indexes in the ABPM example.
SERVICE_REQUEST, OBSERVATION, PATIENT, HEALTHCARE_SERVICE = 1, 4, 7, 16

NULL = "null is not allowed; omit the element"

JsonPath = tuple[str | int, ...]


def load(path: Path = ABPM) -> dict[str, Any]:
    bundle: dict[str, Any] = orjson.loads(path.read_bytes())
    return bundle


def resource(bundle: dict[str, Any], index: int, resource_type: str) -> dict[str, Any]:
    found: dict[str, Any] = bundle["entry"][index]["resource"]
    assert found["resourceType"] == resource_type
    return found


def problems(issues: list[Issue]) -> list[tuple[str, str | None]]:
    return [(issue.code, issue.expression) for issue in issues]


def patient(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **elements}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name[:8])
def test_check_raw_resource_official_examples_have_no_issues(path: Path) -> None:
    assert len(EXAMPLES) == 3
    assert check_raw_resource(load(path)) == []


def test_check_raw_resource_null_resource_is_invalid() -> None:
    assert check_raw_resource(None) == [
        Issue(code="invalid", diagnostics=NULL, expression="Bundle")
    ]


def test_check_raw_resource_null_top_level_element_is_invalid() -> None:
    bundle = load()
    bundle["timestamp"] = None

    assert check_raw_resource(bundle) == [
        Issue(code="invalid", diagnostics=NULL, expression="Bundle.timestamp")
    ]


def test_check_raw_resource_null_in_arrays_is_invalid() -> None:
    bundle = load()
    bundle["entry"][2] = None
    resource(bundle, SERVICE_REQUEST, "ServiceRequest")["meta"]["profile"].append(None)
    resource(bundle, PATIENT, "Patient")["contact"][0]["telecom"].insert(0, None)

    assert problems(check_raw_resource(bundle)) == [
        ("invalid", "Bundle.entry[1].resource.meta.profile[1]"),
        ("invalid", "Bundle.entry[2]"),
        ("invalid", "Bundle.entry[7].resource.contact[0].telecom[0]"),
    ]


def test_check_raw_resource_empty_object_is_invalid() -> None:
    bundle = load()
    resource(bundle, SERVICE_REQUEST, "ServiceRequest")["subject"] = {}

    assert check_raw_resource(bundle) == [
        Issue(
            code="invalid",
            diagnostics="empty object is not allowed; omit the element",
            expression="Bundle.entry[1].resource.subject",
        )
    ]


def test_check_raw_resource_empty_array_is_invalid() -> None:
    bundle = load()
    resource(bundle, PATIENT, "Patient")["name"][0]["given"] = []

    assert check_raw_resource(bundle) == [
        Issue(
            code="invalid",
            diagnostics="empty array is not allowed; omit the element",
            expression="Bundle.entry[7].resource.name[0].given",
        )
    ]


@pytest.mark.parametrize(
    ("mutate", "bad_value", "expression", "diagnostics"),
    [
        pytest.param(
            lambda b: resource(b, HEALTHCARE_SERVICE, "HealthcareService").__setitem__(
                "active", "true"
            ),
            "true",
            "Bundle.entry[16].resource.active",
            "expected a JSON boolean",
            id="string-for-boolean",
        ),
        pytest.param(
            lambda b: resource(b, OBSERVATION, "Observation")["component"][0][
                "valueQuantity"
            ].__setitem__("value", "120"),
            "120",
            "Bundle.entry[4].resource.component[0].valueQuantity.value",
            "expected a JSON number",
            id="string-for-decimal",
        ),
        pytest.param(
            lambda b: resource(b, PATIENT, "Patient")["contact"][0]["telecom"][1].__setitem__(
                "rank", "1"
            ),
            "1",
            "Bundle.entry[7].resource.contact[0].telecom[1].rank",
            "expected a JSON number (integer)",
            id="string-for-positiveInt",
        ),
        pytest.param(
            lambda b: resource(b, PATIENT, "Patient")["contact"][0]["extension"][0].__setitem__(
                "valuePositiveInt", "1"
            ),
            "1",
            "Bundle.entry[7].resource.contact[0].extension[0].valuePositiveInt",
            "expected a JSON number (integer)",
            id="string-for-positiveInt-in-extension",
        ),
        pytest.param(
            lambda b: resource(b, PATIENT, "Patient")["contact"][0]["telecom"][1].__setitem__(
                "rank", 1.5
            ),
            "1.5",
            "Bundle.entry[7].resource.contact[0].telecom[1].rank",
            "expected a JSON number (integer)",
            id="fraction-for-positiveInt",
        ),
        pytest.param(
            lambda b: resource(b, PATIENT, "Patient").__setitem__("birthDate", 19590504),
            "19590504",
            "Bundle.entry[7].resource.birthDate",
            "expected a JSON string",
            id="number-for-date",
        ),
        pytest.param(
            lambda b: resource(b, PATIENT, "Patient").__setitem__(
                "identifier", {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}
            ),
            "9434765919",
            "Bundle.entry[7].resource.identifier",
            "expected a JSON array",
            id="object-for-array",
        ),
        pytest.param(
            lambda b: resource(b, PATIENT, "Patient").__setitem__("gender", ["female"]),
            "female",
            "Bundle.entry[7].resource.gender",
            "expected a single value, not a JSON array",
            id="array-for-single",
        ),
        pytest.param(
            lambda b: resource(b, SERVICE_REQUEST, "ServiceRequest").__setitem__(
                "subject", "Patient/9434765919"
            ),
            "9434765919",
            "Bundle.entry[1].resource.subject",
            "expected a JSON object",
            id="string-for-complex",
        ),
        pytest.param(
            lambda b: b["entry"][PATIENT].__setitem__("resource", "Patient/9434765919"),
            "9434765919",
            "Bundle.entry[7].resource",
            "expected a JSON object",
            id="string-for-resource",
        ),
    ],
)
def test_check_raw_resource_wrong_json_type_is_value_error(
    mutate: Callable[[dict[str, Any]], None], bad_value: str, expression: str, diagnostics: str
) -> None:
    bundle = load()
    mutate(bundle)

    issues = check_raw_resource(bundle)

    assert issues == [Issue(code="value", diagnostics=diagnostics, expression=expression)]
    assert all(bad_value not in issue.diagnostics for issue in issues)


def test_check_raw_resource_primitive_extension_object_accepted() -> None:
    extension = {
        "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
        "valueDateTime": "1959-05-04T06:30:00Z",
    }
    bundle = load()
    resource(bundle, PATIENT, "Patient")["_birthDate"] = {"id": "bd", "extension": [extension]}

    assert check_raw_resource(bundle) == []


def test_check_raw_resource_primitive_extension_object_is_walked() -> None:
    body = patient(
        birthDate="1959-05-04", _birthDate={"extension": [{"url": "u", "valueDateTime": 19590504}]}
    )

    assert problems(check_raw_resource(body, expression="Patient")) == [
        ("value", "Patient._birthDate.extension[0].valueDateTime")
    ]


def test_check_raw_resource_null_aligned_with_extension_array_accepted() -> None:
    name = {
        "given": ["Julie", None],
        "_given": [None, {"extension": [{"url": "u", "valueString": "x"}]}],
    }

    assert check_raw_resource(patient(name=[name]), expression="Patient") == []


def test_check_raw_resource_null_not_aligned_with_extension_array_is_invalid() -> None:
    name = {"given": ["Julie", None, None], "_given": [None, None]}

    assert problems(check_raw_resource(patient(name=[name]), expression="Patient")) == [
        ("invalid", "Patient.name[0].given[1]"),
        ("invalid", "Patient.name[0].given[2]"),
        ("invalid", "Patient.name[0]._given[1]"),
    ]


def test_check_raw_resource_contained_dispatches_on_resource_type() -> None:
    body = patient(
        contained=[
            {"resourceType": "Organization", "active": "yes"},
            {"resourceType": "NotAResource", "active": "yes"},
            {"resourceType": "Extension", "url": 1},
            {"resourceType": None},
        ]
    )

    assert problems(check_raw_resource(body, expression="Patient")) == [
        ("value", "Patient.contained[0].active"),
        ("invalid", "Patient.contained[3].resourceType"),
    ]


def test_check_raw_resource_parameters_resource_dispatches_on_resource_type() -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "p", "resource": patient(active="true")},
            {"name": "n", "valueInteger": "1"},
        ],
    }

    assert problems(check_raw_resource(body, expression="Parameters")) == [
        ("value", "Parameters.parameter[0].resource.active"),
        ("value", "Parameters.parameter[1].valueInteger"),
    ]


def test_check_raw_resource_unknown_elements_skipped() -> None:
    body = patient(
        unknownElement=None, _unknown={}, modifierExtension=[{"url": "u", "valueBoolean": "false"}]
    )

    assert problems(check_raw_resource(body, expression="Patient")) == [
        ("value", "Patient.modifierExtension[0].valueBoolean")
    ]


def test_check_raw_resource_unknown_resource_type_skipped() -> None:
    assert check_raw_resource({"resourceType": "Bundel", "type": None}) == []
    assert check_raw_resource({"type": None}) == []


def test_check_raw_resource_stops_after_max_issues() -> None:
    issues = check_raw_resource(
        patient(identifier=[None] * (MAX_ISSUES + 50)), expression="Patient"
    )

    assert len(issues) == MAX_ISSUES + 1
    assert issues[MAX_ISSUES - 1].expression == f"Patient.identifier[{MAX_ISSUES - 1}]"
    assert issues[-1] == Issue(
        code="too-costly",
        diagnostics=f"more than {MAX_ISSUES} problems; the rest were not reported",
        severity="information",
    )


def test_check_raw_resource_exactly_max_issues_not_truncated() -> None:
    issues = check_raw_resource(patient(identifier=[None] * MAX_ISSUES), expression="Patient")

    assert len(issues) == MAX_ISSUES
    assert {issue.code for issue in issues} == {"invalid"}


def test_check_raw_resource_deep_nesting_reported_once() -> None:
    innermost: dict[str, Any] = {"url": "u", "valueBoolean": "deep"}
    extension = innermost
    for _ in range(MAX_DEPTH):
        extension = {"url": "u", "extension": [extension]}
    body = patient(extension=[extension], modifierExtension=[extension], active="true")

    issues = check_raw_resource(body, expression="Patient")

    assert [issue.code for issue in issues] == ["too-costly", "value"]
    assert issues[0].expression is not None
    assert issues[0].expression.startswith("Patient.extension[0].extension[0].extension[0]")
    assert issues[1].expression == "Patient.active"


def test_check_raw_resource_element_maps_cover_every_r4b_field() -> None:
    get_fhir_model_class("Bundle")  # imports fhirtypes, which registers every R4B type
    models = {
        get_fhir_model_class(key.split(".", 1)[1].removesuffix("Type"))
        for key, module in FHIR_TYPES_MAPS.items()
        if module.startswith("fhir.resources.R4B.")
    }
    assert len(models) > 600

    for model in models:
        aliases = {field.alias or name for name, field in model.model_fields.items()} - {
            "fhir_comments"
        }
        assert set(_elements(model)) == aliases, model.__name__


def _leaves(value: object, path: JsonPath = ()) -> Iterator[JsonPath]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path


def _expression(path: JsonPath) -> str:
    return "Bundle" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def _replace(bundle: dict[str, Any], path: JsonPath, value: object) -> object:
    parent: Any = bundle
    for part in path[:-1]:
        parent = parent[part]
    old: object = parent[path[-1]]
    parent[path[-1]] = value
    return old


def _wrong_type(value: object) -> object:
    return 1 if isinstance(value, str) else str(value).lower()


LEAVES = [(example, path) for example in EXAMPLES for path in _leaves(load(example))]


@settings(max_examples=300, database=None)
@given(st.sampled_from(LEAVES))
def test_check_raw_resource_null_leaf_reported_at_its_path(leaf: tuple[Path, JsonPath]) -> None:
    example, path = leaf
    bundle = load(example)
    _replace(bundle, path, None)

    assert problems(check_raw_resource(bundle)) == [("invalid", _expression(path))]


@settings(max_examples=300, database=None)
@given(st.sampled_from([leaf for leaf in LEAVES if leaf[1][-1] != "resourceType"]))
def test_check_raw_resource_leaf_of_wrong_json_type_reported_at_its_path(
    leaf: tuple[Path, JsonPath],
) -> None:
    example, path = leaf
    bundle = load(example)
    _replace(bundle, path, _wrong_type(_replace(bundle, path, None)))

    issues = check_raw_resource(bundle)

    assert problems(issues) == [("value", _expression(path))]
    assert issues[0].diagnostics in {
        "expected a JSON boolean",
        "expected a JSON number",
        "expected a JSON number (integer)",
        "expected a JSON string",
    }


def test_nul_character_in_a_string_is_reported_without_the_value() -> None:
    bundle = load(EXAMPLES[0])
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    patient["name"][0]["family"] = "Jo\x00nes"
    patient["name"][0]["given"] = ["Ju\x00lie"]

    found = check_raw_resource(bundle)

    assert [(i.code, i.diagnostics) for i in found] == [
        ("value", "NUL characters are not allowed in FHIR strings"),
        ("value", "NUL characters are not allowed in FHIR strings"),
    ]
    assert all("Jo" not in i.diagnostics for i in found)


# ---- the SNOMED codings found on the same walk (app/fhir/bars.py's check-digit warnings) -------

SNOMED = "http://snomed.info/sct"


def every_coding(value: Any, expression: str) -> Iterator[tuple[str, str]]:
    """The oracle: every object below `value` with the SNOMED system and a string code, found by
    walking all of the JSON (known elements or not), in document order."""
    if isinstance(value, dict):
        if value.get("system") == SNOMED and isinstance(value.get("code"), str):
            yield expression, value["code"]
        for key, child in value.items():
            yield from every_coding(child, f"{expression}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from every_coding(child, f"{expression}[{index}]")


def with_bad_codes(bundle: dict[str, Any]) -> dict[str, Any]:
    """The ABPM example with SNOMED codings added where a scan could miss them: an extension's
    valueCoding, a contained resource, an Observation component and a Quantity's code."""
    bad = {"system": SNOMED, "code": "123456780"}
    observation = resource(bundle, OBSERVATION, "Observation")
    observation["component"] = [{"code": {"coding": [dict(bad)]}, "valueQuantity": dict(bad)}]
    patient_ = resource(bundle, PATIENT, "Patient")
    patient_["extension"] = [{"url": "https://example.org/x", "valueCoding": dict(bad)}]
    service_request = resource(bundle, SERVICE_REQUEST, "ServiceRequest")
    service_request["contained"] = [
        {
            "resourceType": "Condition",
            "id": "c1",
            "code": {"coding": [dict(bad)]},
            "subject": {"reference": "Patient/x"},
        }
    ]
    return bundle


@pytest.mark.parametrize(
    "bundle",
    [*(load(path) for path in EXAMPLES), with_bad_codes(load())],
    ids=[*(path.name[:8] for path in EXAMPLES), "bad-codes-everywhere"],
)
def test_the_walk_finds_every_snomed_coding_a_whole_tree_walk_finds(bundle: dict[str, Any]) -> None:
    scan = scan_raw_resource(bundle, expression="Bundle", coding_system=SNOMED)

    assert scan.issues == []
    assert scan.codings == list(every_coding(bundle, "Bundle"))
    assert scan.codings  # the examples carry SNOMED codes: the comparison is not vacuous


def test_the_walk_collects_no_codings_unless_asked() -> None:
    assert scan_raw_resource(load()).codings == []
