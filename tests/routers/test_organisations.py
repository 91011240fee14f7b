from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.organization import Organization
from sqlalchemy import func
from sqlmodel import Session, select

from app.fhir import systems
from app.models.enums import OrgKind, Role, Service
from app.models.organisation import Organisation, PharmacyService
from tests.helpers import auth

ODS = systems.ODS_ORGANISATION


def headers() -> dict[str, str]:
    return auth(Role.GP_PRACTICE, "A81001")


def walk(client: TestClient, query: str, *, limit: int) -> list[dict[str, Any]]:
    """Every organisation a filtered listing returns, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        url = f"/api/v1/organisations?{query}&limit={limit}"
        response = client.get(url + (f"&cursor={cursor}" if cursor else ""), headers=headers())
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["count"] == len(page["data"]) <= limit
        items.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    pytest.fail("paging did not end")


def test_read_organisations_by_service_lists_only_registered_pharmacies(
    client: TestClient, session: Session
) -> None:
    registered = set(
        session.exec(
            select(PharmacyService.pharmacy_ods).where(
                PharmacyService.service == Service.CONTRACEPTION
            )
        ).all()
    )

    items = walk(client, "kind=pharmacy&service=contraception", limit=200)

    codes = {item["ods_code"] for item in items}
    assert "FA001" in codes
    assert "FA002" not in codes
    assert codes == registered
    for item in items:
        assert item["kind"] == "pharmacy"
        assert "contraception" in {s["service"] for s in item["services"]}


def test_read_organisations_by_pcn_lists_its_practices(client: TestClient) -> None:
    response = client.get("/api/v1/organisations?pcn=U00001", headers=headers())

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    codes = {item["ods_code"] for item in data}
    assert {"A81001", "A81002"} <= codes
    assert {item["kind"] for item in data} == {"gp-practice"}
    assert {item["pcn"] for item in data} == {"U00001"}


def test_read_organisations_cursor_walks_every_pharmacy_once(
    client: TestClient, session: Session
) -> None:
    expected = session.exec(
        select(func.count()).select_from(Organisation).where(Organisation.kind == OrgKind.PHARMACY)
    ).one()

    items = walk(client, "kind=pharmacy", limit=50)

    codes = [item["ods_code"] for item in items]
    assert expected > 50
    assert len(codes) == expected
    assert len(set(codes)) == expected
    assert codes == sorted(codes)
    assert {item["kind"] for item in items} == {"pharmacy"}


def test_read_organisations_bad_kind_returns_422_naming_kind(client: TestClient) -> None:
    response = client.get("/api/v1/organisations?kind=hospital", headers=headers())

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "ValidationFailed"
    assert [f["field"] for f in body["fields"]] == ["query.kind"]
    assert "hospital" not in response.text


def test_read_organisations_limit_over_maximum_returns_422(client: TestClient) -> None:
    response = client.get("/api/v1/organisations?limit=100000", headers=headers())

    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == ["query.limit"]


def test_read_organisation_practice_has_pcn_and_list_size(client: TestClient) -> None:
    response = client.get("/api/v1/organisations/A81001", headers=headers())

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ods_code"] == "A81001"
    assert body["kind"] == "gp-practice"
    assert body["name"] == "Oak Lane Surgery"
    assert body["pcn"] == "U00001"
    assert body["registered_patients"] > 0
    assert body["services"] == []


def test_read_organisation_code_is_case_insensitive(client: TestClient) -> None:
    response = client.get("/api/v1/organisations/a81001", headers=headers())

    assert response.status_code == 200, response.text
    assert response.json()["ods_code"] == "A81001"


def test_read_organisation_pcn_has_place(client: TestClient) -> None:
    response = client.get("/api/v1/organisations/U00001", headers=headers())

    assert response.status_code == 200, response.text
    assert response.json()["place"] == "QXX01"


def test_read_organisation_pharmacy_lists_services_with_ids(client: TestClient) -> None:
    response = client.get("/api/v1/organisations/FA001", headers=headers())

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "pharmacy"
    assert {s["service"]: s["service_id"] for s in body["services"]} == {
        "pharmacy-first": "2000011001",
        "blood-pressure": "2000011002",
        "contraception": "2000011003",
        "dms": "2000011004",
    }


def test_read_organisation_unknown_returns_404(client: TestClient) -> None:
    response = client.get("/api/v1/organisations/ZZZ999", headers=headers())

    assert response.status_code == 404
    assert response.json() == {
        "error": "NotFound",
        "detail": "No organisation with that ODS code is in the directory.",
    }


def test_read_fhir_organization_pharmacy(client: TestClient) -> None:
    response = client.get("/fhir/Organization/FA001", headers=headers())

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    organization = Organization.model_validate(body)
    assert organization.id == "FA001"
    assert [(i["system"], i["value"]) for i in body["identifier"]] == [(ODS, "FA001")]
    assert body["name"] == "Elm Street Pharmacy"
    assert body["active"] is True
    assert "null" not in response.text


def test_read_fhir_organization_practice_is_part_of_its_pcn(client: TestClient) -> None:
    response = client.get("/fhir/Organization/A81001", headers=headers())

    assert response.status_code == 200, response.text
    assert response.json()["partOf"] == {"identifier": {"system": ODS, "value": "U00001"}}


def test_search_fhir_organization_by_ods_identifier(client: TestClient) -> None:
    response = client.get(f"/fhir/Organization?identifier={ODS}|A81001", headers=headers())

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    Bundle.model_validate(body)
    assert body["type"] == "searchset"
    assert body["total"] == 1
    [entry] = body["entry"]
    assert entry["resource"]["resourceType"] == "Organization"
    assert entry["resource"]["id"] == "A81001"
    assert entry["resource"]["partOf"]["identifier"] == {"system": ODS, "value": "U00001"}


def test_search_fhir_organization_unknown_code_returns_empty_searchset(
    client: TestClient,
) -> None:
    response = client.get(f"/fhir/Organization?identifier={ODS}|ZZZ999", headers=headers())

    assert response.status_code == 200, response.text
    body = response.json()
    Bundle.model_validate(body)
    assert body["type"] == "searchset"
    assert body["total"] == 0
    assert body.get("entry", []) == []


def test_search_fhir_organization_other_identifier_system_returns_400(
    client: TestClient,
) -> None:
    response = client.get(
        f"/fhir/Organization?identifier={systems.DOS_SERVICE_ID}|2000011001", headers=headers()
    )

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    [issue] = body["issue"]
    assert issue["code"] == "not-supported"
    assert issue["expression"] == ["identifier"]
    assert issue["details"]["coding"][0]["code"] == "REC_BAD_REQUEST"


def test_search_fhir_organization_without_identifier_returns_400(client: TestClient) -> None:
    response = client.get("/fhir/Organization", headers=headers())

    assert response.status_code == 400
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["details"]["coding"][0]["code"] == "REC_BAD_REQUEST"


def test_read_fhir_organization_unknown_returns_404_operation_outcome(
    client: TestClient,
) -> None:
    response = client.get("/fhir/Organization/ZZZ999", headers=headers())

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    [issue] = body["issue"]
    assert issue["code"] == "not-found"
    assert issue["details"]["coding"][0] == {
        "system": systems.HTTP_ERROR_CODES,
        "code": "REC_NOT_FOUND",
        "display": "404: The Receiver has found nothing matching the request.",
    }


def test_read_fhir_metadata_without_auth_is_capability_statement(client: TestClient) -> None:
    response = client.get("/fhir/metadata")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    CapabilityStatement.model_validate(body)
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"
    assert body["format"] == ["application/fhir+json"]
    resources = {r["type"] for r in body["rest"][0]["resource"]}
    assert {"Organization", "ServiceRequest"} <= resources
