"""GET /fhir/Composition: a GP system finds new consultation summaries (paging, filters, who sees
what, bad parameters), and GET /fhir/Composition/{id}. Every searchset is checked against the
official FHIR R4 JSON schema and the R4B models."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.composition import Composition
from sqlmodel import Session

from app.core.config import settings
from app.models.consultation import Consultation
from app.models.enums import Role, Service
from app.models.user import User
from tests.factories import NHS_NUMBERS, caller
from tests.fhir.test_summary import check_schema
from tests.helpers import auth
from tests.routers.test_consultations import accepted, dms, record

GP = auth(Role.GP_PRACTICE, "A81001")
PATIENT, OTHER_PATIENT = NHS_NUMBERS[0], NHS_NUMBERS[1]
NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ADVICE = {"service": "pharmacy-first", "pathway": "minor-illness", "outcome": "advice-self-care"}
BASE = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)


def subject(nhs_number: str = PATIENT) -> str:
    return "subject:identifier=" + quote(f"{NHS_SYSTEM}|{nhs_number}", safe="")


def stamp(moment: datetime) -> str:
    return quote(moment.isoformat(), safe="")


def summary(
    client: TestClient,
    session: Session,
    at: datetime,
    *,
    nhs_number: str = PATIENT,
    referrer: User | None = None,
) -> str:
    """A recorded Pharmacy First consultation whose summary was recorded `at`; its id."""
    referral = accepted(client, session, referrer=referrer, patient={"nhs_number": nhs_number})
    response = record(client, referral, ADVICE)
    assert response.status_code == 201, response.text
    return recorded_at(session, response.json()["id"], at)


def recorded_at(session: Session, consultation_id: str, at: datetime) -> str:
    consultation = session.get(Consultation, uuid.UUID(consultation_id))
    assert consultation is not None
    consultation.recorded_at = at
    session.add(consultation)
    session.flush()
    return consultation_id


def search(client: TestClient, query: str = "", headers: dict[str, str] = GP) -> dict[str, Any]:
    response = client.get(f"/fhir/Composition?{query}", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    check_schema(body)
    Bundle.model_validate(body)
    for entry in body.get("entry", []):
        Composition.model_validate(entry["resource"])
    assert body["type"] == "searchset"
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [entry["resource"]["id"] for entry in body.get("entry", [])]


def next_link(body: dict[str, Any]) -> str | None:
    url = next((link["url"] for link in body["link"] if link["relation"] == "next"), None)
    if url is None:
        return None
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def pages(client: TestClient, query: str, headers: dict[str, str] = GP) -> list[dict[str, Any]]:
    found = [search(client, query, headers)]
    while (url := next_link(found[-1])) is not None:
        found.append(search(client, url.split("?", 1)[1], headers))
    return found


# ---- finding summaries -------------------------------------------------------------------------


def test_search_by_subject_in_recording_order(client: TestClient, session: Session) -> None:
    later = summary(client, session, BASE + timedelta(minutes=2))
    other = summary(client, session, BASE + timedelta(minutes=1), nhs_number=OTHER_PATIENT)
    first = summary(client, session, BASE)

    body = search(client, subject())

    assert ids(body) == [first, later]
    assert body["total"] == 2
    assert ids(search(client, subject(OTHER_PATIENT))) == [other]
    assert ids(search(client)) == [first, other, later]
    assert ids(search(client, "patient:identifier=" + PATIENT)) == [first, later]
    assert [link["relation"] for link in body["link"]] == ["self"]


def test_entry_is_the_composition_and_leads_to_the_document(
    client: TestClient, session: Session
) -> None:
    consultation_id = summary(client, session, BASE)

    [entry] = search(client, subject())["entry"]

    composition = entry["resource"]
    assert composition["id"] == consultation_id
    assert composition["meta"]["lastUpdated"] == BASE.isoformat()
    assert composition["subject"]["identifier"] == {"system": NHS_SYSTEM, "value": PATIENT}
    assert entry["fullUrl"] == f"http://testserver/fhir/Composition/{consultation_id}"
    assert entry["search"] == {"mode": "match"}
    read = client.get(urlsplit(entry["fullUrl"]).path, headers=GP)
    assert read.status_code == 200
    assert read.json() == composition
    [related] = entry["link"]
    assert related["relation"] == "related"
    document = client.get(urlsplit(related["url"]).path, headers=GP).json()
    assert (document["type"], document["id"]) == ("document", consultation_id)
    lead = document["entry"][0]["resource"]
    for field in ("resourceType", "id", "identifier", "status", "type", "date", "title"):
        assert lead[field] == composition[field], field
    custodian = client.get(f"/fhir/{composition['custodian']['reference']}", headers=GP)
    assert custodian.json()["name"] == composition["custodian"]["display"]


def test_pages_follow_next_links_without_loss_or_repeats(
    client: TestClient, session: Session
) -> None:
    created = [summary(client, session, BASE + timedelta(minutes=i)) for i in range(5)]
    summary(client, session, BASE, nhs_number=OTHER_PATIENT)

    found = pages(client, f"{subject()}&_count=2")

    assert [len(page.get("entry", [])) for page in found] == [2, 2, 1]
    assert [page["total"] for page in found] == [5, 5, 5]
    assert [i for page in found for i in ids(page)] == created
    for page in found[:-1]:
        kept = parse_qs(urlsplit(next_link(page) or "").query)
        assert kept["subject:identifier"] == [f"{NHS_SYSTEM}|{PATIENT}"]
        assert kept["_count"] == ["2"]


def test_paging_is_stable_across_ties_and_new_summaries(
    client: TestClient, session: Session
) -> None:
    tied = sorted(summary(client, session, BASE) for _ in range(3))

    first = search(client, "_count=2")
    assert ids(first) == tied[:2]
    late = summary(client, session, BASE - timedelta(minutes=5))  # before the cursor: not seen
    newest = summary(client, session, BASE + timedelta(minutes=5))
    url = next_link(first)
    assert url is not None
    second = search(client, url.split("?", 1)[1])

    assert ids(second) == [tied[2], newest]
    assert second["total"] == 5
    assert late not in ids(first) + ids(second)


def test_count_zero_gives_the_total_only(client: TestClient, session: Session) -> None:
    summary(client, session, BASE)
    summary(client, session, BASE + timedelta(minutes=1))

    body = search(client, "_count=0")

    assert body["total"] == 2
    assert "entry" not in body
    assert [link["relation"] for link in body["link"]] == ["self"]


def test_default_page_size_is_the_configured_default(
    client: TestClient, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "page_size_default", 1)
    summary(client, session, BASE)
    summary(client, session, BASE + timedelta(minutes=1))

    body = search(client)

    assert len(body["entry"]) == 1
    assert next_link(body) is not None


# ---- _lastUpdated --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"_lastUpdated=gt{stamp(BASE)}", [1, 2]),
        (f"_lastUpdated=ge{stamp(BASE)}", [0, 1, 2]),
        (f"_lastUpdated=lt{stamp(BASE + timedelta(minutes=2))}", [0, 1]),
        (f"_lastUpdated=le{stamp(BASE + timedelta(minutes=1))}", [0, 1]),
        (
            f"_lastUpdated=gt{stamp(BASE)}&_lastUpdated=lt{stamp(BASE + timedelta(minutes=2))}",
            [1],
        ),
        ("_lastUpdated=gt2026-03-10T10:00:00Z", [1, 2]),
        ("_lastUpdated=gt2026-03-10T10:00:00+00:00", [1, 2]),  # "+" unencoded: a space
        ("_lastUpdated=ge2026-03-10T11:00:00%2B01:00", [0, 1, 2]),
        ("_lastUpdated=2026-03-10", [0, 1, 2]),
        ("_lastUpdated=eq2026-03", [0, 1, 2]),
        ("_lastUpdated=2026-03-09", []),
        ("_lastUpdated=gt2026-03-09", [0, 1, 2]),
        ("_lastUpdated=gt2026-03-10", []),
        ("_lastUpdated=le2026-03-10", [0, 1, 2]),
        ("_lastUpdated=lt2026-03-10", []),
    ],
)
def test_last_updated(
    client: TestClient, session: Session, query: str, expected: list[int]
) -> None:
    created = [summary(client, session, BASE + timedelta(minutes=i)) for i in range(3)]

    body = search(client, f"{subject()}&{query}")

    assert ids(body) == [created[i] for i in expected]
    assert body["total"] == len(expected)


# ---- DMS stages and who sees what ----------------------------------------------------------------


def test_each_dms_stage_has_a_composition_for_the_registered_practice(
    client: TestClient, session: Session
) -> None:
    referral = accepted(client, session, Service.DMS, patient={"registered_practice_ods": "A81001"})
    stages = []
    for stage in (1, 2):
        response = record(client, referral, dms(stage))
        assert response.status_code == 201, response.text
        stages.append(recorded_at(session, response.json()["id"], BASE + timedelta(hours=stage)))
        session.refresh(referral)

    body = search(client, subject())
    trust = search(client, "", auth(Role.TRUST, "RX1"))

    assert ids(body) == stages == ids(trust)
    assert [e["resource"]["title"] for e in body["entry"]] == [
        "Elm Street Pharmacy - Discharge Medicines Service, stage 1",
        "Elm Street Pharmacy - Discharge Medicines Service, stage 2",
    ]
    assert {e["resource"]["type"]["coding"][0]["code"] for e in body["entry"]} == {"dms"}
    for stage_id in stages:
        document = client.get(f"/fhir/Bundle/{stage_id}", headers=GP)
        assert document.status_code == 200
    assert search(client, "", auth(Role.GP_PRACTICE, "A81002"))["total"] == 0


@pytest.mark.parametrize(
    ("role", "org", "sees"),
    [
        (Role.GP_PRACTICE, "A81001", ["ours"]),
        (Role.GP_PRACTICE, "A81002", ["theirs"]),
        (Role.GP_PRACTICE, "A81003", []),
        (Role.PHARMACY, "FA001", ["ours", "theirs"]),
        (Role.PHARMACY, "FA002", []),
        (Role.TRUST, "RX1", []),
        (Role.NHS111, "NHS11", []),
        (Role.ADMIN, "QXX", ["ours", "theirs"]),
    ],
)
def test_each_caller_sees_only_its_summaries(
    client: TestClient, session: Session, role: Role, org: str, sees: list[str]
) -> None:
    created = {
        "ours": summary(client, session, BASE),
        # the same patient, referred by (and registered at) another practice
        "theirs": summary(
            client,
            session,
            BASE + timedelta(minutes=1),
            referrer=caller(Role.GP_PRACTICE, "A81002"),
        ),
    }
    headers = auth(role, org)

    by_subject = search(client, subject(), headers)

    assert ids(by_subject) == [created[name] for name in sees]
    assert by_subject["total"] == len(sees)
    assert ids(search(client, "", headers)) == [created[name] for name in sees]
    for name, consultation_id in created.items():
        read = client.get(f"/fhir/Composition/{consultation_id}", headers=headers)
        assert read.status_code == (200 if name in sees else 404)


def test_roles_without_patient_data_are_refused(client: TestClient) -> None:
    analyst = client.get("/fhir/Composition", headers=auth(Role.ICB_ANALYST, "QXX"))
    anonymous = client.get("/fhir/Composition")

    assert analyst.status_code == 403
    assert analyst.json()["resourceType"] == "OperationOutcome"
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("composition_id", ["not-a-uuid", str(uuid.uuid4())])
def test_read_unknown_composition_is_404(client: TestClient, composition_id: str) -> None:
    response = client.get(f"/fhir/Composition/{composition_id}", headers=GP)

    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


# ---- bad parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expression"),
    [
        ("status=final", "status"),
        ("subject=Patient/9990000018", "subject"),
        ("subject:identifier=https://fhir.nhs.uk/Id/nhs-number|9990000019", "subject:identifier"),
        ("subject:identifier=https://example.org/mrn|12345", "subject:identifier"),
        (f"{subject()}&{subject()}", "subject:identifier"),
        ("_lastUpdated=2026-03-10T10:00:00Z", "_lastUpdated"),
        ("_lastUpdated=gtyesterday", "_lastUpdated"),
        ("_lastUpdated=ne2026-03-10", "_lastUpdated"),
        ("_count=-1", "_count"),
        ("_count=lots", "_count"),
        (f"_count={settings.page_size_max + 1}", "_count"),
        ("_format=xml", "_format"),
        ("_cursor=%25%25%25", "_cursor"),
        ("_cursor=bm90IGEgY3Vyc29y", "_cursor"),
    ],
)
def test_bad_parameters_are_400_operation_outcomes(
    client: TestClient, query: str, expression: str
) -> None:
    response = client.get(f"/fhir/Composition?{query}", headers=GP)

    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    [issue] = body["issue"]
    assert issue["details"]["coding"][0]["code"] == "REC_BAD_REQUEST"
    assert issue["expression"] == [expression]
    assert "999000001" not in issue["diagnostics"]  # no NHS number echoed back


def test_metadata_advertises_composition_search_and_document_reads(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()

    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    composition = resources["Composition"]
    assert {i["code"] for i in composition["interaction"]} == {"read", "search-type"}
    assert {p["name"] for p in composition["searchParam"]} == {
        "subject",
        "patient",
        "_lastUpdated",
        "_count",
    }
    assert "GET Bundle/{Composition.id}" in composition["documentation"]
    assert resources["Bundle"]["interaction"] == [{"code": "read"}]
