"""Summary Compositions for search (pure): the search parameters, and the Composition and searchset
checked against the official FHIR R4 JSON schema, the R4B models and the document they lead."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from app.core.errors import BadRequest
from app.fhir import composition, summary, systems
from app.fhir.composition import Bound, CompositionSearch, last_updated_bounds, parse_search
from app.fhir.resources import Bundle, get_fhir_model_class
from app.models.consultation import Consultation
from app.models.referral import Referral
from tests.fhir import consultation_cases as cases
from tests.fhir.consultation_cases import NOW, PHARMACY, PRACTICE, Case, check_no_nulls_or_empties
from tests.fhir.test_summary import check_schema

Json = dict[str, Any]
CASES = pytest.mark.parametrize("make_case", cases.ALL_CASES, ids=lambda f: f.__name__)
NHS = "https://fhir.nhs.uk/Id/nhs-number|9990000018"


def utc(year: int, month: int, day: int, hour: int = 0, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, 0, 0, micro, tzinfo=UTC)


def parse(query: list[tuple[str, str]]) -> CompositionSearch:
    return parse_search(query, default_count=50, max_count=200)


def bad_expression(query: list[tuple[str, str]]) -> str | None:
    with pytest.raises(BadRequest) as caught:
        parse(query)
    [issue] = caught.value.issues
    return issue.expression


# ---- _lastUpdated -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "bounds"),
    [
        ("gt2026-11-22T10:00:00Z", (("gt", utc(2026, 11, 22, 10)),)),
        ("ge2026-11-22T10:00:00.250+00:00", (("ge", utc(2026, 11, 22, 10, micro=250000)),)),
        ("lt2026-11-22T11:00:00+01:00", (("lt", utc(2026, 11, 22, 10)),)),
        ("le2026-11-22T10:00:00.123456Z", (("le", utc(2026, 11, 22, 10, micro=123456)),)),
        # an unencoded "+" arrives as a space
        ("gt2026-11-22T10:00:00 00:00", (("gt", utc(2026, 11, 22, 10)),)),
        # a date is its whole UTC period
        ("2026-11-22", (("ge", utc(2026, 11, 22)), ("lt", utc(2026, 11, 23)))),
        ("eq2026-11", (("ge", utc(2026, 11, 1)), ("lt", utc(2026, 12, 1)))),
        ("2026-12", (("ge", utc(2026, 12, 1)), ("lt", utc(2027, 1, 1)))),
        ("2026", (("ge", utc(2026, 1, 1)), ("lt", utc(2027, 1, 1)))),
        ("gt2026-11-21", (("ge", utc(2026, 11, 22)),)),
        ("ge2026-11-21", (("ge", utc(2026, 11, 21)),)),
        ("lt2026-11-21", (("lt", utc(2026, 11, 21)),)),
        ("le2026-11-21", (("lt", utc(2026, 11, 22)),)),
        ("le2026-02", (("lt", utc(2026, 3, 1)),)),
    ],
)
def test_last_updated_bounds(value: str, bounds: tuple[Bound, ...]) -> None:
    assert last_updated_bounds(value) == bounds


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-22T10:00:00Z",  # an instant needs a comparison prefix
        "eq2026-11-22T10:00:00Z",
        "gt2026-11-22T10:00:00",  # no time zone
        "gt2026-11-22T10:00Z",  # no seconds
        "gt2026-13-01",
        "gt2026-02-30",
        "gtyesterday",
        "xx2026-11-22",
        "ne2026-11-22",
        "sa2026-11-22",
        "gt9999",  # its period ends past the last representable instant
        "",
    ],
)
def test_last_updated_refuses(value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        last_updated_bounds(value)
    assert caught.value.issues[0].expression == "_lastUpdated"


# ---- the whole query ---------------------------------------------------------------------------


def test_parse_search_defaults() -> None:
    assert parse([]) == CompositionSearch(nhs_number=None, recorded=(), count=50, cursor=None)


def test_parse_search_everything() -> None:
    found = parse(
        [
            ("subject:identifier", NHS),
            ("_lastUpdated", "ge2026-11-01"),
            ("_lastUpdated", "lt2026-11-22T10:00:00Z"),
            ("_count", "0"),
            ("_cursor", "abc"),
            ("_format", "json"),
        ]
    )
    assert found == CompositionSearch(
        nhs_number="9990000018",
        recorded=(("ge", utc(2026, 11, 1)), ("lt", utc(2026, 11, 22, 10))),
        count=0,
        cursor="abc",
    )


@pytest.mark.parametrize(
    "value", [NHS, "9990000018", "https://fhir.nhs.uk/id/nhs-number|9990000018"]
)
def test_subject_and_patient_identifier_take_an_nhs_number(value: str) -> None:
    assert parse([("subject:identifier", value)]).nhs_number == "9990000018"
    assert parse([("patient:identifier", value)]).nhs_number == "9990000018"


@pytest.mark.parametrize(
    ("query", "expression"),
    [
        ([("status", "final")], "status"),
        ([("subject", "Patient/1")], "subject"),
        ([("subject:identifier", "https://fhir.nhs.uk/Id/ods-organization-code|A81001")], None),
        ([("subject:identifier", "|9990000018")], None),
        ([("subject:identifier", f"{NHS},9990000026")], None),
        ([("subject:identifier", "https://fhir.nhs.uk/Id/nhs-number|9990000019")], None),
        ([("subject:identifier", NHS), ("patient:identifier", NHS)], "subject:identifier"),
        ([("_count", "-1")], "_count"),
        ([("_count", "ten")], "_count"),
        ([("_count", "201")], "_count"),
        ([("_count", "1"), ("_count", "2")], "_count"),
        ([("_cursor", "a"), ("_cursor", "b")], "_cursor"),
        ([("_cursor", "a" * 201)], "_cursor"),
        ([("_format", "xml")], "_format"),
    ],
)
def test_parse_search_refuses(query: list[tuple[str, str]], expression: str | None) -> None:
    found = bad_expression(query)
    assert found == (expression or query[0][0])


def test_unknown_parameters_are_all_named() -> None:
    with pytest.raises(BadRequest) as caught:
        parse([("b", "1"), ("a", "2"), ("_count", "5")])
    assert [issue.expression for issue in caught.value.issues] == ["a", "b"]
    assert all(issue.code == "not-supported" for issue in caught.value.issues)


# ---- the Composition ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    consultation: Consultation
    referral: Referral
    pharmacy_name: str


def head_of(case: Case) -> Head:
    return Head(case.consultation, case.referral, PHARMACY.name)


def document_composition(case: Case) -> Json:
    document = summary.summary_document_json(
        referral=case.referral,
        consultation=case.consultation,
        pharmacy=PHARMACY,
        practice=PRACTICE,
        now=NOW,
    )
    first: Json = document["entry"][0]["resource"]
    return first


def searchset(heads: list[Head], **overrides: Any) -> Json:
    arguments: dict[str, Any] = {
        "total": len(heads),
        "base_url": "http://127.0.0.1:8000/fhir",
        "self_url": "http://127.0.0.1:8000/fhir/Composition?_count=50",
        "next_url": None,
    }
    return composition.searchset_json(heads, **(arguments | overrides))


@CASES
def test_composition_is_the_documents_head(make_case: Callable[[], Case]) -> None:
    case = make_case()
    found = composition.composition_json(
        consultation=case.consultation, referral=case.referral, pharmacy_name=PHARMACY.name
    )
    lead = document_composition(case)
    for field in ("resourceType", "id", "identifier", "status", "type", "date", "title"):
        assert found[field] == lead[field], field
    assert found["id"] == str(case.consultation.id)
    assert found["meta"] == {"lastUpdated": case.consultation.recorded_at.isoformat()}
    assert found["subject"]["identifier"] == {"system": systems.NHS_NUMBER, "value": "9990000018"}
    assert found["author"] == [
        {
            "type": "Practitioner",
            "identifier": {"system": systems.GPHC_NUMBER, "value": case.consultation.gphc_number},
            "display": case.consultation.clinician_name,
        }
    ]
    assert found["custodian"]["reference"] == "Organization/FA001"
    assert f"Bundle/{case.consultation.id}" in found["text"]["div"]
    assert "section" not in found
    get_fhir_model_class("Composition").model_validate(found)


@CASES
def test_searchset_conforms(make_case: Callable[[], Case]) -> None:
    case = make_case()
    bundle = searchset(
        [head_of(case)], total=7, next_url="http://127.0.0.1:8000/fhir/Composition?_cursor=x"
    )
    check_no_nulls_or_empties(bundle)
    check_schema(bundle)
    Bundle.model_validate(bundle)
    assert bundle["total"] == 7
    assert [link["relation"] for link in bundle["link"]] == ["self", "next"]
    [entry] = bundle["entry"]
    document_id = str(case.consultation.id)
    assert entry["fullUrl"] == f"http://127.0.0.1:8000/fhir/Composition/{document_id}"
    assert entry["link"] == [
        {"relation": "related", "url": f"http://127.0.0.1:8000/fhir/Bundle/{document_id}"}
    ]
    assert entry["search"] == {"mode": "match"}


def test_empty_searchset_has_no_entries() -> None:
    bundle = searchset([])
    check_schema(bundle)
    assert "entry" not in bundle
    assert bundle["total"] == 0
    assert bundle["link"] == [
        {"relation": "self", "url": "http://127.0.0.1:8000/fhir/Composition?_count=50"}
    ]


def test_patient_without_nhs_number_is_named_only() -> None:
    case = cases.pharmacy_first_pgd()
    case.referral.patient_nhs_number = None
    found = composition.composition_json(
        consultation=case.consultation, referral=case.referral, pharmacy_name="Elm Street Pharmacy"
    )
    assert found["subject"] == {"type": "Patient", "display": "Marisol Quillfeather"}
    check_schema(searchset([head_of(case)]))


def test_dms_stages_have_their_own_compositions() -> None:
    first = cases.dms_stage_1()
    second = cases.dms_stage_1()
    second.consultation.id = uuid.uuid4()
    second.consultation.stage = 2
    titles = [
        composition.composition_json(
            consultation=c.consultation, referral=c.referral, pharmacy_name=PHARMACY.name
        )["title"]
        for c in (first, second)
    ]
    assert titles == [
        "Elm Street Pharmacy - Discharge Medicines Service, stage 1",
        "Elm Street Pharmacy - Discharge Medicines Service, stage 2",
    ]
    bundle = searchset([head_of(first), head_of(second)])
    check_schema(bundle)
    assert len({e["fullUrl"] for e in bundle["entry"]}) == 2


def test_schema_check_catches_a_broken_entry() -> None:
    bundle = searchset([head_of(cases.pharmacy_first_pgd())])
    bundle["entry"][0]["search"] = {"mode": "found"}
    with pytest.raises(AssertionError):
        check_schema(bundle)
