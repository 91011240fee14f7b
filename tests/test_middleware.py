"""The request middleware: header size limit (431), security headers on every kind of response
(errors, 404, 429, 431, 500 included), one access log line per request, and the request's
database sessions closed once it is answered."""

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from app.core.config import settings
from app.db import session as db_session
from app.db.session import SessionDep
from app.fhir import service_request as service_request_fhir
from app.middleware import RequestContextMiddleware
from app.models.enums import Role
from app.routers import deps
from app.services import organisations as organisation_service
from tests.factories import make_referral
from tests.helpers import auth

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
PHARMACY = auth(Role.PHARMACY, "FA001")


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get_list(name) == [value], name
    assert response.headers["x-correlation-id"]


def oversized_headers(total: int) -> dict[str, str]:
    """Headers adding up to at least `total` bytes, split over several fields."""
    return {f"X-Padding-{i}": "p" * 1000 for i in range(total // 1000 + 1)}


def test_headers_over_the_limit_get_431_json(client: TestClient) -> None:
    response = client.get(
        "/api/v1/organisations/FA001",
        headers={**PHARMACY, **oversized_headers(settings.max_header_bytes)},
    )

    assert response.status_code == 431
    assert response.json() == {
        "error": "HeadersTooLarge",
        "detail": f"The request headers are larger than {settings.max_header_bytes} bytes.",
    }
    assert_security_headers(response)


def test_headers_over_the_limit_get_431_operation_outcome_on_fhir(client: TestClient) -> None:
    response = client.get(
        "/fhir/metadata",
        headers={"X-Correlation-Id": "conv-431", **oversized_headers(settings.max_header_bytes)},
    )

    assert response.status_code == 431
    assert response.headers["content-type"].startswith("application/fhir+json")
    [issue] = response.json()["issue"]
    assert issue["code"] == "too-costly"
    assert response.headers["x-correlation-id"] == "conv-431"
    assert_security_headers(response)


def test_oversized_token_gets_431_before_any_verification(client: TestClient) -> None:
    token = "e" * (settings.max_header_bytes + 1)

    response = client.get("/api/v1/referrals", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 431


def test_headers_just_under_the_limit_are_served(client: TestClient) -> None:
    padding = settings.max_header_bytes - 2000  # room for the token and the client's own headers

    response = client.get(
        "/api/v1/organisations/FA001", headers={**PHARMACY, "X-Padding": "p" * padding}
    )

    assert response.status_code == 200


def _raise_on_organisation(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(organisation_service, "get_organisation_or_raise", broken)


def _too_many(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "rate_limit_per_minute", 1)
    monkeypatch.setattr(deps, "utc_now", lambda: datetime(2026, 11, 22, 10, 15, 20, tzinfo=UTC))


ResponseCase = tuple[str, str, dict[str, str], int, Callable[[pytest.MonkeyPatch], None] | None]
CASES: dict[str, ResponseCase] = {
    "200": ("GET", "/api/v1/organisations/FA001", PHARMACY, 200, None),
    "401": ("GET", "/api/v1/referrals", {}, 401, None),
    "403": ("GET", "/api/v1/audit/reads", PHARMACY, 403, None),
    "404-route": ("GET", "/nowhere/at/all", {}, 404, None),
    "404-fhir": ("GET", "/fhir/Organization/ZZZ999", PHARMACY, 404, None),
    "405": ("DELETE", "/fhir/metadata", {}, 405, None),
    "422": ("GET", "/api/v1/referrals?limit=0", PHARMACY, 422, None),
    "429": ("GET", "/api/v1/organisations/FA001", PHARMACY, 429, _too_many),
    "500-json": ("GET", "/api/v1/organisations/FA001", PHARMACY, 500, _raise_on_organisation),
    "500-fhir": ("GET", "/fhir/Organization/FA001", PHARMACY, 500, _raise_on_organisation),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_security_headers_on_every_kind_of_response(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, case: ResponseCase
) -> None:
    method, path, headers, status, arrange = case
    if arrange is not None:
        arrange(monkeypatch)
    if status == 429:
        client.request(method, path, headers=headers)

    response = client.request(method, path, headers={**headers, "X-Correlation-Id": "conv-1"})

    assert response.status_code == status, response.text
    assert_security_headers(response)
    assert response.headers["x-correlation-id"] == "conv-1"


def test_unhandled_error_is_a_500_in_the_route_family_shape(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _raise_on_organisation(monkeypatch)

    json_error = client.get("/api/v1/organisations/FA001", headers=PHARMACY)
    fhir_error = client.get("/fhir/Organization/FA001", headers=PHARMACY)

    assert json_error.json() == {
        "error": "AppError",
        "detail": "An unexpected error occurred; it has been logged.",
    }
    assert fhir_error.headers["content-type"].startswith("application/fhir+json")
    assert fhir_error.json()["issue"][0]["code"] == "exception"


def test_413_carries_the_security_headers(client: TestClient) -> None:
    response = client.post(
        "/api/v1/referrals",
        content=b"x" * (settings.max_body_bytes + 1),
        headers={**auth(Role.GP_PRACTICE, "A81001"), "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert_security_headers(response)


def test_docs_page_is_served_without_the_content_security_policy(client: TestClient) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert "content-security-policy" not in response.headers
    assert response.headers["x-frame-options"] == "DENY"


def test_access_log_names_the_route_template_never_the_path(
    client: TestClient, caplog: pytest.LogCaptureFixture, session: Session
) -> None:
    referral = make_referral(session)
    caplog.set_level(logging.INFO, logger="pharmref.access")

    client.get(
        f"/fhir/ServiceRequest/{referral.id}",
        headers={**PHARMACY, "X-Request-Id": "req-7", "X-Correlation-Id": "conv-7"},
    )
    client.get("/no/such/9990000018/path")

    served, unmatched = [r for r in caplog.records if r.name == "pharmref.access"]
    assert served.getMessage() == "GET /fhir/ServiceRequest/{referral_id} 200"
    assert (served.method, served.route, served.status) == (  # type: ignore[attr-defined]
        "GET",
        "/fhir/ServiceRequest/{referral_id}",
        200,
    )
    assert served.duration_ms >= 0  # type: ignore[attr-defined]
    assert str(referral.id) not in served.getMessage()
    assert unmatched.route == "unmatched"  # type: ignore[attr-defined]
    assert "9990000018" not in unmatched.getMessage()


def test_service_request_mapper_failure_is_logged_once(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    session: Session,
) -> None:
    referral = make_referral(session)

    def broken(_: object) -> None:
        raise ValueError("bad")

    monkeypatch.setattr(service_request_fhir, "service_request_json", broken)

    response = client.get(f"/fhir/ServiceRequest/{referral.id}", headers=PHARMACY)

    assert response.status_code == 500
    errors = [r for r in caplog.records if r.name == "pharmref.errors"]
    assert len(errors) == 1
    assert errors[0].exc_info is not None


def test_the_sessions_a_request_opened_are_closed_once_it_is_answered(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real `get_session` (no test override): the request's session, left inside a
    transaction by its route, is closed by the middleware and its connection is back in the pool
    (rolled back), whether the route answered or failed."""
    pooled = create_engine(engine.url.render_as_string(hide_password=False))
    monkeypatch.setattr(db_session, "engine", pooled)
    inner = FastAPI()

    @inner.get("/read")
    def read(session: SessionDep) -> dict[str, int]:
        return {"one": session.execute(select(1)).scalar_one()}

    @inner.get("/fail")
    def fail(session: SessionDep) -> None:
        session.execute(select(1))
        raise RuntimeError("route failed")

    wrapped = RequestContextMiddleware(inner, max_body_bytes=1000, max_header_bytes=8000)
    try:
        with TestClient(wrapped, raise_server_exceptions=False) as test_client:
            assert test_client.get("/read").json() == {"one": 1}
            assert pooled.pool.checkedout() == 0  # type: ignore[attr-defined]
            assert test_client.get("/fail").status_code == 500
            assert pooled.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        pooled.dispose()
