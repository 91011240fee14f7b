import gc
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool
from sqlmodel import Session, create_engine

from app.core.config import settings
from app.db import migrations
from app.db.session import get_session
from app.fhir import systems
from app.main import app
from app.models.enums import Role
from tests.helpers import auth

OVERSIZED = b"x" * (settings.max_body_bytes + 1)
UNREACHABLE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/x"

# (method, path, needs a token, expected status): a success, JSON errors and FHIR errors.
ECHO_CASES = {
    "healthz": ("GET", "/healthz", False, 200),
    "json-ok": ("GET", "/api/v1/organisations/FA001", True, 200),
    "json-404": ("GET", "/api/v1/organisations/ZZZ999", True, 404),
    "json-401": ("GET", "/api/v1/organisations/FA001", False, 401),
    "json-unknown-route": ("GET", "/api/v1/nowhere", False, 404),
    "fhir-ok": ("GET", "/fhir/Organization/FA001", True, 200),
    "fhir-404": ("GET", "/fhir/Organization/ZZZ999", True, 404),
    "fhir-401": ("GET", "/fhir/Organization/FA001", False, 401),
    "fhir-405": ("DELETE", "/fhir/metadata", False, 405),
}


def request(
    client: TestClient, case: tuple[str, str, bool, int], headers: dict[str, str]
) -> httpx.Response:
    method, path, needs_token, status = case
    if needs_token:
        headers = {**headers, **auth(Role.PHARMACY, "FA001")}
    response: httpx.Response = client.request(method, path, headers=headers)
    assert response.status_code == status, response.text
    return response


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def assert_operation_outcome(response: httpx.Response, *, code: str, rec: str) -> None:
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    [issue] = body["issue"]
    assert issue["code"] == code
    [coding] = issue["details"]["coding"]
    assert (coding["system"], coding["code"]) == (systems.HTTP_ERROR_CODES, rec)


@pytest.mark.parametrize("case", ECHO_CASES.values(), ids=ECHO_CASES.keys())
def test_request_and_correlation_ids_are_echoed(
    client: TestClient, case: tuple[str, str, bool, int]
) -> None:
    request_id, correlation_id = str(uuid.uuid4()), "conv-2026.11:22_a"

    response = request(
        client, case, {"X-Request-Id": request_id, "X-Correlation-Id": correlation_id}
    )

    assert response.headers["x-request-id"] == request_id
    assert response.headers["x-correlation-id"] == correlation_id


@pytest.mark.parametrize("case", ECHO_CASES.values(), ids=ECHO_CASES.keys())
def test_correlation_id_generated_when_absent(
    client: TestClient, case: tuple[str, str, bool, int]
) -> None:
    first = request(client, case, {})
    second = request(client, case, {})

    generated = first.headers["x-correlation-id"]
    assert uuid.UUID(generated)
    assert generated != second.headers["x-correlation-id"]
    assert "x-request-id" not in first.headers


def test_id_of_exactly_64_safe_characters_is_echoed(client: TestClient) -> None:
    value = "a" * 64

    response = client.get("/healthz", headers={"X-Request-Id": value, "X-Correlation-Id": value})

    assert response.headers["x-request-id"] == value
    assert response.headers["x-correlation-id"] == value


@pytest.mark.parametrize(
    "unsafe",
    ["has space", "a" * 65, "tab\there", "semi;colon", "<script>", 'quote"d', "slash/path"],
)
def test_unsafe_ids_are_not_echoed(client: TestClient, unsafe: str) -> None:
    response = client.get("/healthz", headers={"X-Request-Id": unsafe, "X-Correlation-Id": unsafe})

    assert response.status_code == 200
    assert "x-request-id" not in response.headers
    replacement = response.headers["x-correlation-id"]
    assert replacement != unsafe
    assert uuid.UUID(replacement)
    assert unsafe not in response.headers.values()


@pytest.mark.parametrize("case", ECHO_CASES.values(), ids=ECHO_CASES.keys())
def test_security_headers_present(client: TestClient, case: tuple[str, str, bool, int]) -> None:
    response = request(client, case, {})

    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert len(response.headers.get_list("x-content-type-options")) == 1


def _assert_json_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "error": "PayloadTooLarge",
        "detail": f"The request body is larger than {settings.max_body_bytes} bytes.",
    }
    assert response.headers["x-content-type-options"] == "nosniff"


def _assert_fhir_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert_operation_outcome(response, code="too-costly", rec="REC_BAD_REQUEST")


def test_body_over_limit_with_content_length_json_returns_413(client: TestClient) -> None:
    response = client.post(
        "/api/v1/referrals",
        content=OVERSIZED,
        headers={**auth(Role.GP_PRACTICE, "A81001"), "Content-Type": "application/json"},
    )

    assert response.request.headers["content-length"] == str(len(OVERSIZED))
    _assert_json_too_large(response)


def test_body_over_limit_streamed_json_returns_413(client: TestClient) -> None:
    response = client.post(
        "/api/v1/referrals",
        content=chunks(OVERSIZED),
        headers={**auth(Role.GP_PRACTICE, "A81001"), "Content-Type": "application/json"},
    )

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    _assert_json_too_large(response)


def test_body_over_limit_with_content_length_fhir_returns_413(client: TestClient) -> None:
    response = client.post(
        "/fhir/$process-message",
        content=OVERSIZED,
        headers={**auth(Role.GP_PRACTICE, "A81001"), "Content-Type": "application/fhir+json"},
    )

    assert response.request.headers["content-length"] == str(len(OVERSIZED))
    _assert_fhir_too_large(response)


def test_body_over_limit_streamed_fhir_returns_413(client: TestClient) -> None:
    response = client.post(
        "/fhir/$process-message",
        content=chunks(OVERSIZED),
        headers={**auth(Role.GP_PRACTICE, "A81001"), "Content-Type": "application/fhir+json"},
    )

    assert "content-length" not in response.request.headers
    _assert_fhir_too_large(response)


def test_body_over_limit_without_token_still_413(client: TestClient) -> None:
    response = client.post(
        "/api/v1/referrals", content=chunks(OVERSIZED), headers={"X-Request-Id": "r-1"}
    )

    _assert_json_too_large(response)
    assert response.headers["x-request-id"] == "r-1"


def test_body_at_limit_is_not_refused(client: TestClient) -> None:
    response = client.post(
        "/api/v1/referrals",
        content=b" " * settings.max_body_bytes,
        headers={**auth(Role.GP_PRACTICE, "A81001"), "Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationFailed"


def test_unknown_route_returns_404_json(client: TestClient) -> None:
    response = client.get("/api/v1/nowhere")

    assert response.status_code == 404
    assert response.json() == {"error": "NotFound", "detail": "No such endpoint."}


def test_unknown_fhir_route_returns_404_operation_outcome(client: TestClient) -> None:
    response = client.get("/fhir/Patient/123")

    assert response.status_code == 404
    assert_operation_outcome(response, code="not-found", rec="REC_NOT_FOUND")


def test_wrong_method_returns_405_json_with_allow(client: TestClient) -> None:
    response = client.delete("/api/v1/organisations/FA001", headers=auth(Role.ADMIN, "QXX"))

    assert response.status_code == 405
    assert response.json() == {
        "error": "MethodNotAllowed",
        "detail": "Method not allowed for this endpoint.",
    }
    assert response.headers["allow"] == "GET"


def test_wrong_method_on_fhir_returns_405_operation_outcome(client: TestClient) -> None:
    response = client.put("/fhir/metadata", json={})

    assert response.status_code == 405
    assert_operation_outcome(response, code="not-supported", rec="REC_METHOD_NOT_ALLOWED")


def test_healthz_returns_ok(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.fixture
def empty_engine(tmp_path: Path) -> Iterator[Engine]:
    empty = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    yield empty
    empty.dispose()


@pytest.fixture
def unreachable_engine() -> Iterator[Engine]:
    down = create_engine(UNREACHABLE_URL, connect_args={"connect_timeout": 1})
    yield down
    down.dispose()


def test_is_current_on_migrated_test_database(engine: Engine) -> None:
    assert migrations.is_current(engine)


def test_is_current_false_on_empty_database(empty_engine: Engine) -> None:
    assert not migrations.is_current(empty_engine)


def test_is_current_false_on_unreachable_database(unreachable_engine: Engine) -> None:
    assert not migrations.is_current(unreachable_engine)


def test_readyz_returns_200_when_migrated(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /readyz checks the app's own engine (the dev database in tests); point it at the test one.
    monkeypatch.setattr("app.routers.health.engine", engine)

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("target", ["empty_engine", "unreachable_engine"])
def test_readyz_returns_503_when_not_ready(
    client: TestClient,
    target: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("app.routers.health.engine", request.getfixturevalue(target))

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}


def _assert_no_internals(response: httpx.Response) -> None:
    for leak in ("Traceback", "psycopg", "OperationalError", "127.0.0.1", "sqlalchemy"):
        assert leak not in response.text


def test_database_outage_returns_503_json(client: TestClient, unreachable_engine: Engine) -> None:
    with Session(unreachable_engine) as down:
        app.dependency_overrides[get_session] = lambda: down
        response = client.get("/api/v1/referrals", headers=auth(Role.GP_PRACTICE, "A81001"))

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert response.json() == {
        "error": "ServiceUnavailable",
        "detail": "The database is unavailable; retry shortly.",
    }
    _assert_no_internals(response)


def test_database_outage_returns_503_operation_outcome(
    client: TestClient, unreachable_engine: Engine
) -> None:
    with Session(unreachable_engine) as down:
        app.dependency_overrides[get_session] = lambda: down
        response = client.get("/fhir/ServiceRequest", headers=auth(Role.GP_PRACTICE, "A81001"))

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert_operation_outcome(response, code="transient", rec="REC_UNAVAILABLE")
    _assert_no_internals(response)


def test_connection_pool_exhausted_returns_503(client: TestClient, tmp_path: Path) -> None:
    busy = create_engine(
        f"sqlite:///{tmp_path / 'busy.db'}",
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.05,
    )
    with busy.connect(), Session(busy) as starved:
        app.dependency_overrides[get_session] = lambda: starved
        response = client.get("/api/v1/referrals", headers=auth(Role.GP_PRACTICE, "A81001"))
    busy.dispose()

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert response.json()["error"] == "ServiceUnavailable"


def test_start_up_heap_is_frozen_once_serving() -> None:
    """A full garbage collection does not walk what start-up built (gc.freeze)."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0

    with TestClient(app):
        frozen = gc.get_freeze_count()

    assert frozen > 10_000  # the application's modules, routes and models
