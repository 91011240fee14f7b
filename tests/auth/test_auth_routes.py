from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import Session, select

from app.fhir import systems
from app.models.enums import Role
from app.models.referral import Referral
from app.routers.examples import JSON_REFERRAL
from tests.auth.forged import ATTACKS, valid
from tests.helpers import auth

JSON_URL = "/api/v1/organisations/FA001"
FHIR_URL = "/fhir/Organization/FA001"

# Authorization header values that never carry a usable bearer token.
NOT_BEARER: dict[str, dict[str, str]] = {
    "no-header": {},
    "basic-scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
    "token-without-scheme": {"Authorization": valid()},
    "bearer-without-token": {"Authorization": "Bearer"},
    "bearer-blank-token": {"Authorization": "Bearer    "},
}


def assert_json_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "Unauthorized"
    assert body["detail"]


def assert_fhir_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert_issue(body, code="login", rec="REC_UNAUTHORIZED")


def assert_issue(outcome: dict[str, Any], *, code: str, rec: str) -> None:
    [issue] = outcome["issue"]
    assert issue["severity"] == "error"
    assert issue["code"] == code
    [coding] = issue["details"]["coding"]
    assert (coding["system"], coding["code"]) == (systems.HTTP_ERROR_CODES, rec)


@pytest.mark.parametrize("url", [JSON_URL, FHIR_URL])
def test_valid_rs256_token_reads_organisation(client: TestClient, url: str) -> None:
    response = client.get(url, headers=auth(Role.PHARMACY, "FA001"))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("ods_code", body.get("id")) == "FA001"


def test_bearer_scheme_is_case_insensitive(client: TestClient) -> None:
    response = client.get(JSON_URL, headers={"Authorization": f"bearer {valid()}"})

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("headers", NOT_BEARER.values(), ids=NOT_BEARER.keys())
def test_missing_bearer_token_json_returns_401(client: TestClient, headers: dict[str, str]) -> None:
    assert_json_unauthorized(client.get(JSON_URL, headers=headers))


@pytest.mark.parametrize("headers", NOT_BEARER.values(), ids=NOT_BEARER.keys())
def test_missing_bearer_token_fhir_returns_401_operation_outcome(
    client: TestClient, headers: dict[str, str]
) -> None:
    assert_fhir_unauthorized(client.get(FHIR_URL, headers=headers))


@pytest.mark.parametrize(("attack", "reason"), ATTACKS.values(), ids=ATTACKS.keys())
def test_attack_token_json_returns_401(
    client: TestClient, attack: Callable[[], str], reason: str
) -> None:
    response = client.get(JSON_URL, headers={"Authorization": f"Bearer {attack()}"})

    assert_json_unauthorized(response)
    assert reason in response.json()["detail"]


@pytest.mark.parametrize(("attack", "reason"), ATTACKS.values(), ids=ATTACKS.keys())
def test_attack_token_fhir_returns_401_operation_outcome(
    client: TestClient, attack: Callable[[], str], reason: str
) -> None:
    response = client.get(FHIR_URL, headers={"Authorization": f"Bearer {attack()}"})

    assert_fhir_unauthorized(response)
    assert reason in response.json()["issue"][0]["diagnostics"]


def _referral_count(session: Session) -> int:
    return session.exec(select(func.count()).select_from(Referral)).one()


def test_icb_analyst_create_referral_returns_403(client: TestClient, session: Session) -> None:
    before = _referral_count(session)

    response = client.post(
        "/api/v1/referrals", json=JSON_REFERRAL, headers=auth(Role.ICB_ANALYST, "QXX")
    )

    assert response.status_code == 403, response.text
    assert "www-authenticate" not in response.headers
    assert response.json() == {
        "error": "Forbidden",
        "detail": "The icb-analyst role may not use this operation.",
    }
    assert _referral_count(session) == before


def test_icb_analyst_search_service_requests_returns_403_operation_outcome(
    client: TestClient,
) -> None:
    response = client.get("/fhir/ServiceRequest", headers=auth(Role.ICB_ANALYST, "QXX"))

    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert_issue(response.json(), code="forbidden", rec="REC_FORBIDDEN")


def test_invalid_token_on_role_restricted_route_is_401_not_403(client: TestClient) -> None:
    response = client.post(
        "/api/v1/referrals",
        json=JSON_REFERRAL,
        headers={"Authorization": f"Bearer {ATTACKS['tampered-payload'][0]()}"},
    )

    assert_json_unauthorized(response)


def test_referrer_role_passes_role_check_on_create_referral(client: TestClient) -> None:
    response = client.post("/api/v1/referrals", json={}, headers=auth(Role.GP_PRACTICE, "A81001"))

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationFailed"
