"""Per-client rate limiting over HTTP: 429 with Retry-After in the route family's error shape,
per-client isolation, unauthenticated callers by address, health and metrics exempt."""

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlmodel import Session

from app.core.config import settings
from app.models.enums import Role
from app.models.rate_limit import RateLimitCounter
from app.routers import deps
from tests.helpers import auth

LIMIT = 3
PHARMACY = auth(Role.PHARMACY, "FA001")


@pytest.fixture(autouse=True)
def _limit(monkeypatch: pytest.MonkeyPatch, session: Session) -> None:
    # Counters other tests committed in the same (frozen) minute must not spend this budget.
    session.execute(delete(RateLimitCounter))
    monkeypatch.setattr(settings, "rate_limit_per_minute", LIMIT)
    # Mid-minute and standing still, so no test straddles a window boundary.
    monkeypatch.setattr(deps, "utc_now", lambda: datetime(2026, 11, 22, 10, 15, 20, tzinfo=UTC))


def statuses(client: TestClient, path: str, headers: dict[str, str], times: int) -> list[int]:
    return [client.get(path, headers=headers).status_code for _ in range(times)]


def test_over_the_limit_is_429_json_with_retry_after(client: TestClient) -> None:
    assert statuses(client, "/api/v1/organisations/FA001", PHARMACY, LIMIT) == [200] * LIMIT

    response = client.get("/api/v1/organisations/FA001", headers=PHARMACY)

    assert response.status_code == 429
    retry_after = int(response.headers["retry-after"])
    assert retry_after == 40  # 10:15:20 -> the window ends at 10:16:00
    assert response.json() == {
        "error": "TooManyRequests",
        "detail": f"More than {LIMIT} requests in a minute from this client; "
        f"retry after {retry_after} seconds.",
    }


def test_over_the_limit_on_fhir_is_an_operation_outcome(client: TestClient) -> None:
    statuses(client, "/fhir/Organization/FA001", PHARMACY, LIMIT)

    response = client.get("/fhir/Organization/FA001", headers=PHARMACY)

    assert response.status_code == 429
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert int(response.headers["retry-after"]) >= 1
    [issue] = response.json()["issue"]
    assert issue["code"] == "throttled"
    assert issue["details"]["coding"][0]["code"] == "REC_TOO_MANY_REQUESTS"


def test_every_route_of_a_client_shares_one_budget(client: TestClient) -> None:
    client.get("/api/v1/organisations/FA001", headers=PHARMACY)
    client.get("/fhir/Organization/FA001", headers=PHARMACY)
    client.get("/api/v1/referrals", headers=PHARMACY)

    assert client.get("/fhir/metadata", headers=PHARMACY).status_code == 429


def test_clients_are_limited_separately(client: TestClient) -> None:
    other_org = auth(Role.PHARMACY, "FA002")
    statuses(client, "/api/v1/organisations/FA001", PHARMACY, LIMIT + 1)

    assert statuses(client, "/api/v1/organisations/FA001", other_org, LIMIT) == [200] * LIMIT
    assert client.get("/api/v1/organisations/FA001", headers=other_org).status_code == 429


def test_same_org_other_subject_is_another_client(client: TestClient) -> None:
    from app.auth.tokens import create_access_token

    second_system = {
        "Authorization": "Bearer "
        + create_access_token(subject="another-system", org="FA001", role=Role.PHARMACY)
    }
    statuses(client, "/api/v1/organisations/FA001", PHARMACY, LIMIT + 1)

    assert client.get("/api/v1/organisations/FA001", headers=second_system).status_code == 200


def test_unauthenticated_and_bad_token_callers_are_limited_by_address(client: TestClient) -> None:
    forged = {"Authorization": "Bearer not-a-token"}

    first = statuses(client, "/fhir/metadata", {}, 2)
    second = statuses(client, "/api/v1/organisations/FA001", forged, 1)
    refused = client.get("/fhir/metadata")

    assert first == [200, 200]
    assert second == [401]
    assert refused.status_code == 429
    assert client.get("/fhir/metadata", headers=PHARMACY).status_code == 200


def test_health_and_metrics_are_exempt(client: TestClient) -> None:
    statuses(client, "/fhir/metadata", {}, LIMIT + 1)

    assert statuses(client, "/healthz", {}, LIMIT + 2) == [200] * (LIMIT + 2)
    assert client.get("/readyz").status_code in {200, 503}
    assert client.get("/metrics").status_code == 200


def test_zero_disables_the_limit(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "rate_limit_per_minute", 0)

    codes = statuses(client, "/api/v1/organisations/FA001", PHARMACY, LIMIT * 3)

    assert codes == [200] * (LIMIT * 3)


def test_a_token_is_verified_once_for_the_limit_then_remembered(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.auth.tokens import create_access_token, decode_token

    token = create_access_token(subject=f"memo-{id(client)}", org="FA001", role=Role.PHARMACY)
    verified: list[str] = []

    def counting(value: str) -> object:
        verified.append(value)
        return decode_token(value)

    monkeypatch.setattr("app.routers.deps.decode_token", counting)

    codes = statuses(
        client, "/api/v1/organisations/FA001", {"Authorization": f"Bearer {token}"}, LIMIT + 1
    )

    assert codes == [200] * LIMIT + [429]
    assert verified == [token]
