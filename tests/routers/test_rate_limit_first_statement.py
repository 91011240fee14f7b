"""The rate limit in a request's own session (as in production): the count is the request's
first statement, in the worker thread that makes it; a request that makes none is counted when
its session closes. Real autocommitted sessions on the test database, so these tests keep out of
the per-test transaction and remove their own counters."""

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, event
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.auth.tokens import create_access_token
from app.core.config import settings
from app.db import raw
from app.db.session import get_session, request_session
from app.main import app
from app.models.enums import Role
from app.models.rate_limit import RateLimitCounter
from app.routers import deps
from app.services import rate_limit

LIMIT = 3


@pytest.fixture(autouse=True)
def _limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "rate_limit_per_minute", LIMIT)
    monkeypatch.setattr(deps, "utc_now", lambda: datetime(2026, 11, 22, 10, 15, 20, tzinfo=UTC))


@pytest.fixture
def request_client(engine: Engine) -> Iterator[tuple[TestClient, str]]:
    """The app with its real per-request sessions (autocommitted statements, as in production)
    on the test database, for a client of its own whose counter is removed afterwards."""

    async def real_session() -> AsyncIterator[Session]:
        session = request_session(engine)
        try:
            yield session
        finally:
            session.close()

    subject = f"first-statement-{uuid.uuid4()}"
    headers = {
        "Authorization": "Bearer "
        + create_access_token(subject=subject, org="FA001", role=Role.PHARMACY)
    }
    app.dependency_overrides[get_session] = real_session
    try:
        with TestClient(app, raise_server_exceptions=False) as test_client:
            test_client.headers.update(headers)
            yield test_client, subject
    finally:
        app.dependency_overrides.clear()
        with Session(engine) as cleanup:
            cleanup.execute(
                delete(RateLimitCounter).where(
                    col(RateLimitCounter.client_key)
                    == rate_limit.client_key(org="FA001", subject=subject)
                )
            )
            cleanup.commit()


@pytest.fixture
def statements(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every statement the app sends, through SQLAlchemy or straight through the driver."""
    sent: list[str] = []

    def record(*args: object) -> None:
        if args[2] not in ("BEGIN", "COMMIT"):  # the test engine's own on SQLite
            sent.append(str(args[2]))

    direct = raw._execute

    def record_direct(connection: Any, statement: raw.Statement, parameters: Any) -> Any:
        sent.append(statement.postgresql()[0])
        return direct(connection, statement, parameters)

    monkeypatch.setattr(raw, "_execute", record_direct)
    event.listen(engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine, "before_cursor_execute", record)


def test_a_request_session_counts_as_its_first_statement(
    request_client: tuple[TestClient, str], statements: list[str]
) -> None:
    client, _ = request_client

    first = client.get("/api/v1/organisations/FA001")

    assert first.status_code == 200
    assert statements[0].startswith("INSERT INTO rate_limit_counter")
    codes = [client.get("/api/v1/organisations/FA001").status_code for _ in range(LIMIT)]
    assert codes == [200] * (LIMIT - 1) + [429]


def test_an_over_the_limit_request_does_nothing_else(
    request_client: tuple[TestClient, str], statements: list[str]
) -> None:
    client, _ = request_client
    for _ in range(LIMIT):
        client.get("/api/v1/organisations/FA001")
    statements.clear()

    refused = client.get("/api/v1/referrals")

    assert refused.status_code == 429
    assert len(statements) == 1
    assert statements[0].startswith("INSERT INTO rate_limit_counter")


def test_a_request_that_makes_no_statement_is_counted_when_its_session_closes(
    request_client: tuple[TestClient, str], engine: Engine
) -> None:
    client, subject = request_client
    # A malformed id is refused before any statement.
    assert client.get("/api/v1/referrals/not-a-uuid").status_code == 404

    with Session(engine) as other:
        hits = other.exec(
            select(RateLimitCounter.hits).where(
                col(RateLimitCounter.client_key)
                == rate_limit.client_key(org="FA001", subject=subject)
            )
        ).one()
    assert hits == 1
