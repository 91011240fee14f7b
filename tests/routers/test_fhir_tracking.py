"""FHIR reads of referrals: ServiceRequest by id and search with paging links."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.servicerequest import ServiceRequest

from app.models.enums import Role
from tests.helpers import auth, bars_headers
from tests.routers.test_fhir_intake import make_fhir_referral, synthetic


def search(
    client: TestClient, url: str, org: str = "A81001", role: Role = Role.GP_PRACTICE
) -> dict[str, Any]:
    response = client.get(url, headers=auth(role, org))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    Bundle.model_validate(body)
    assert body["type"] == "searchset"
    return body


def test_read_service_request_returns_valid_r4(client: TestClient) -> None:
    referral_id = make_fhir_referral(client)

    response = client.get(
        f"/fhir/ServiceRequest/{referral_id}", headers=auth(Role.GP_PRACTICE, "A81001")
    )

    assert response.status_code == 200
    body = response.json()
    ServiceRequest.model_validate(body)
    assert body["id"] == referral_id
    assert body["status"] == "active"
    assert body["performer"][0]["identifier"]["value"] == "FA001"
    assert body["contained"][0]["identifier"][0] == {
        "system": "https://fhir.nhs.uk/Id/nhs-number",
        "value": "9990000018",
    }
    assert "null" not in response.text


def test_read_service_request_visible_to_receiving_pharmacy(client: TestClient) -> None:
    referral_id = make_fhir_referral(client)

    response = client.get(
        f"/fhir/ServiceRequest/{referral_id}", headers=auth(Role.PHARMACY, "FA001")
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("role", "org", "status"),
    [
        (Role.GP_PRACTICE, "A81002", 404),
        (Role.PHARMACY, "FA002", 404),
        (Role.ICB_ANALYST, "QXX", 403),
    ],
)
def test_read_service_request_other_org_hidden(
    client: TestClient, role: Role, org: str, status: int
) -> None:
    referral_id = make_fhir_referral(client)

    response = client.get(f"/fhir/ServiceRequest/{referral_id}", headers=auth(role, org))

    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"


def test_search_service_requests_pages_with_next_links(client: TestClient) -> None:
    created = {make_fhir_referral(client) for _ in range(5)}

    seen: list[str] = []
    url: str | None = "/fhir/ServiceRequest?_count=2"
    pages = 0
    while url:
        body = search(client, url)
        seen.extend(e["resource"]["id"] for e in body["entry"])
        url = next((link["url"] for link in body["link"] if link["relation"] == "next"), None)
        pages += 1

    assert pages == 3
    assert sorted(seen) == sorted(created)


def test_search_service_requests_last_updated_and_status(client: TestClient) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    referral_id = make_fhir_referral(client)
    stamp = before.isoformat().replace("+00:00", "Z")

    assert [
        e["resource"]["id"]
        for e in search(client, f"/fhir/ServiceRequest?_lastUpdated=gt{stamp}")["entry"]
    ] == [referral_id]
    assert search(client, f"/fhir/ServiceRequest?_lastUpdated=lt{stamp}").get("entry", []) == []
    assert len(search(client, "/fhir/ServiceRequest?status=active").get("entry", [])) == 1
    assert search(client, "/fhir/ServiceRequest?status=completed").get("entry", []) == []


def test_search_service_requests_only_own(client: TestClient) -> None:
    make_fhir_referral(client)

    assert search(client, "/fhir/ServiceRequest", org="A81002").get("entry", []) == []
    assert (
        len(search(client, "/fhir/ServiceRequest", org="FA001", role=Role.PHARMACY)["entry"]) == 1
    )


@pytest.mark.parametrize(
    "query",
    ["_lastUpdated=yesterday", "_lastUpdated=le2026-01-01", "status=nonsense", "_cursor=%%%"],
)
def test_search_service_requests_bad_parameter_returns_400(client: TestClient, query: str) -> None:
    response = client.get(f"/fhir/ServiceRequest?{query}", headers=auth(Role.GP_PRACTICE, "A81001"))

    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_search_service_requests_bad_count_returns_operation_outcome(client: TestClient) -> None:
    response = client.get("/fhir/ServiceRequest?_count=0", headers=auth(Role.GP_PRACTICE, "A81001"))

    assert response.status_code == 400
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == ["query._count"]


def test_cancelled_referral_reads_as_revoked(client: TestClient) -> None:
    referral_id = make_fhir_referral(client)
    bundle = synthetic("REFREQ03")
    bundle["entry"][0]["resource"]["reason"]["coding"][0]["code"] = "update"
    bundle["entry"][1]["resource"].update({"id": referral_id, "status": "revoked"})
    bundle["entry"][1]["resource"]["meta"]["lastUpdated"] = "2099-01-01T00:00:00Z"
    assert (
        client.post(
            "/fhir/$process-message", content=json.dumps(bundle), headers=bars_headers()
        ).status_code
        == 200
    )

    body = client.get(
        f"/fhir/ServiceRequest/{referral_id}", headers=auth(Role.GP_PRACTICE, "A81001")
    ).json()

    assert body["status"] == "revoked"
    assert body["meta"]["versionId"] == "2"
