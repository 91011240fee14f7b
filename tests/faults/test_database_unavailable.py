"""The database away, in process: every route answers 503 with Retry-After (a JSON error, or an
OperationOutcome on /fhir), quickly and without a stack trace, and the engine recovers by itself."""

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from app.core.config import settings
from app.db import session as db_session
from app.db.session import get_session, make_engine, request_session
from app.main import app
from app.models.enums import Role
from app.routers import errors, health
from tests.factories import json_referral
from tests.faults.live import free_port
from tests.faults.proxy import TcpProxy
from tests.helpers import auth, bars_headers

GP = ("gp-practice", "A81001")
BP_REFERRAL = Path(__file__).resolve().parents[2] / "app" / "fhir" / "example_bp_referral.json"


def _use_engine(engine: Engine) -> None:
    def sessions() -> Iterator[Session]:
        with request_session(engine) as session:
            yield session

    app.dependency_overrides[get_session] = sessions


@pytest.fixture
def unreachable() -> Iterator[Engine]:
    """The application's engine set-up pointed at a port nobody listens on."""
    broken = make_engine(f"postgresql+psycopg://pharmref@127.0.0.1:{free_port()}/pharmref")
    yield broken
    broken.dispose()


@pytest.fixture
def client_without_database(
    unreachable: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    _use_engine(unreachable)
    monkeypatch.setattr(health, "engine", unreachable)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    app.dependency_overrides.clear()


def _assert_json_503(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "2"
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "error": "ServiceUnavailable",
        "detail": "The database is unavailable; retry shortly.",
    }


def _assert_fhir_503(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "2"
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    [issue] = outcome["issue"]
    assert (issue["severity"], issue["code"]) == ("error", "transient")
    assert issue["details"]["coding"][0]["code"] == "REC_UNAVAILABLE"
    assert issue["diagnostics"] == "The database is unavailable; retry shortly."


def test_json_intake_answers_503_with_retry_after(
    client_without_database: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pharmref.errors"):
        response = client_without_database.post(
            "/api/v1/referrals",
            json=json_referral(),
            headers={**auth(*GP), "Idempotency-Key": "outage-1"},
        )

    _assert_json_503(response)
    assert "Traceback" not in response.text
    [record] = [r for r in caplog.records if r.name == "pharmref.errors"]
    assert record.getMessage() == "database unavailable: OperationalError"
    assert record.exc_info is None


@pytest.mark.parametrize(
    "path", ["/api/v1/referrals", "/api/v1/organisations?kind=pharmacy", "/api/v1/deliveries"]
)
def test_json_reads_answer_503(client_without_database: TestClient, path: str) -> None:
    _assert_json_503(client_without_database.get(path, headers=auth(*GP)))


def test_fhir_intake_answers_503_operation_outcome(client_without_database: TestClient) -> None:
    response = client_without_database.post(
        "/fhir/$process-message", content=BP_REFERRAL.read_bytes(), headers=bars_headers()
    )

    _assert_fhir_503(response)


def test_fhir_search_answers_503_operation_outcome(client_without_database: TestClient) -> None:
    response = client_without_database.get(
        "/fhir/ServiceRequest", headers=auth(Role.PHARMACY, "FA001")
    )

    _assert_fhir_503(response)


def test_readiness_is_503_with_retry_after_while_liveness_stays_200(
    client_without_database: TestClient,
) -> None:
    ready = client_without_database.get("/readyz")
    live = client_without_database.get("/healthz")

    assert (ready.status_code, ready.json()) == (503, {"status": "unavailable"})
    assert ready.headers["Retry-After"] == "2"
    assert (live.status_code, live.json()) == (200, {"status": "ok"})


def test_exhausted_pool_answers_503(engine: Engine) -> None:
    """Every pooled connection busy for longer than the pool timeout: 503, not a queue forever."""
    tiny = create_engine(engine.url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    _use_engine(tiny)
    try:
        with tiny.connect(), TestClient(app, raise_server_exceptions=False) as client:
            response = client.get("/api/v1/referrals", headers=auth(*GP))
    finally:
        app.dependency_overrides.clear()
        tiny.dispose()

    _assert_json_503(response)


def _probe_app(engine: Engine) -> FastAPI:
    probe = FastAPI()
    errors.install(probe)

    @probe.get("/slow")
    def slow() -> dict[str, str]:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_sleep(5)"))
        return {"status": "finished"}

    @probe.get("/fhir/slow")
    def fhir_slow() -> dict[str, str]:
        return slow()

    @probe.get("/integrity")
    def integrity() -> dict[str, str]:
        raise IntegrityError("INSERT ...", {}, Exception("duplicate key"))

    return probe


def test_integrity_error_is_still_a_500_not_a_503() -> None:
    with TestClient(_probe_app(create_engine("sqlite://")), raise_server_exceptions=False) as c:
        response = c.get("/integrity")

    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    assert response.json()["error"] == "AppError"


@pytest.mark.postgres_only
@pytest.mark.parametrize("path", ["/slow", "/fhir/slow"])
def test_statement_timeout_bounds_a_query_and_answers_503(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("statement_timeout is a PostgreSQL setting")
    monkeypatch.setattr(settings, "db_statement_timeout_seconds", 0.2)
    bounded = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        with TestClient(_probe_app(bounded), raise_server_exceptions=False) as client:
            response = client.get(path)
    finally:
        bounded.dispose()

    if path.startswith("/fhir"):
        _assert_fhir_503(response)
    else:
        _assert_json_503(response)


@pytest.mark.postgres_only
def test_connections_carry_the_timeouts(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("libpq connection parameters")
    app_engine = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        with app_engine.connect() as connection:
            timeout = connection.execute(text("SHOW statement_timeout")).scalar_one()
            name = connection.execute(text("SHOW application_name")).scalar_one()
            parameters = connection.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    finally:
        app_engine.dispose()

    assert (timeout, name) == ("30s", "pharmref")
    assert parameters["connect_timeout"] == "5"
    assert (parameters["keepalives_idle"], parameters["keepalives_count"]) == ("5", "3")
    assert app_engine.pool.timeout() == settings.db_pool_timeout_seconds  # type: ignore[attr-defined]


def test_no_statement_timeout_when_set_to_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "db_statement_timeout_seconds", 0)

    assert "options" not in db_session.postgres_connect_args()


@pytest.mark.postgres_only
def test_engine_recovers_by_itself_after_the_database_returns(engine: Engine) -> None:
    """Cut every connection and refuse new ones: 503s; restore: 200s on the same engine, with no
    restart (the pool's check of each connection it hands out, and its disconnect handling,
    replace the dead connections)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("needs a PostgreSQL server to cut off")
    with TcpProxy(engine.url.host or "127.0.0.1", engine.url.port or 5432) as proxy:
        via_proxy = make_engine(
            engine.url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        )
        _use_engine(via_proxy)
        try:
            with TestClient(app, raise_server_exceptions=False) as client:
                headers = auth(*GP)
                before = client.get("/api/v1/referrals?limit=1", headers=headers)
                proxy.cut()
                during = [client.get("/api/v1/referrals?limit=1", headers=headers) for _ in "ab"]
                proxy.restore()
                after = client.get("/api/v1/referrals?limit=1", headers=headers)
        finally:
            app.dependency_overrides.clear()
            via_proxy.dispose()

    assert before.status_code == 200, before.text
    for response in during:
        _assert_json_503(response)
    assert after.status_code == 200, after.text
    assert json.loads(after.text)["data"] is not None


@pytest.mark.postgres_only
def test_connections_left_from_before_a_restart_are_replaced_unseen(engine: Engine) -> None:
    """The database restarts while the pool is idle: the first request after it must not pay
    for the dead pooled connection (the pool's check replaces it)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("needs a PostgreSQL server to cut off")
    with TcpProxy(engine.url.host or "127.0.0.1", engine.url.port or 5432) as proxy:
        via_proxy = make_engine(
            engine.url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        )
        _use_engine(via_proxy)
        try:
            with TestClient(app, raise_server_exceptions=False) as client:
                headers = auth(*GP)
                before = client.get("/api/v1/referrals?limit=1", headers=headers)
                connections_before = proxy.accepted
                proxy.cut()
                proxy.restore()
                after = client.get("/api/v1/referrals?limit=1", headers=headers)
        finally:
            app.dependency_overrides.clear()
            via_proxy.dispose()

    assert (before.status_code, after.status_code) == (200, 200), after.text
    assert proxy.accepted > connections_before
