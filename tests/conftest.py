"""Test fixtures: one migrated database per run (SQLite by default, PostgreSQL when
PHARMREF_TEST_DATABASE_URL names one), the demo directory loaded once, and a transaction per test
that is rolled back afterwards (services' own commits become savepoints)."""

import base64
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from app.auth.tokens import create_access_token
from app.db import migrations
from app.db.session import get_session
from app.main import app
from app.models.enums import Role
from app.services.demo_directory import demo_directory_path
from app.services.directory_import import import_directory

EXAMPLES = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "reference"
    / "bars-examples"
    / "json-converted"
)


def _test_url() -> str:
    url = os.environ.get("PHARMREF_TEST_DATABASE_URL")
    if url:
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"sqlite:///{tempfile.mkdtemp(prefix='pharmref-test-')}/test.db"


def _sqlite_savepoints(engine: Engine) -> None:
    """pysqlite's own transaction handling breaks SAVEPOINT; let SQLAlchemy emit BEGIN itself."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    url = _test_url()
    test_engine = create_engine(url)
    if test_engine.dialect.name == "postgresql":
        with test_engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    else:
        _sqlite_savepoints(test_engine)
    migrations.upgrade(url)
    with Session(test_engine) as session:
        import_directory(session=session, directory=demo_directory_path())
    yield test_engine
    test_engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    connection = engine.connect()
    outer = connection.begin()
    test_session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    yield test_session
    test_session.close()
    outer.rollback()
    connection.close()


@pytest.fixture
def client(session: Session) -> Iterator[TestClient]:
    app.dependency_overrides[get_session] = lambda: session
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    app.dependency_overrides.clear()


def token_for(role: Role | str, org: str) -> str:
    return create_access_token(subject=f"test:{role}:{org}", org=org, role=Role(role))


def auth(role: Role | str, org: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(role, org)}"}


def target_header(value: str, system: str = "https://fhir.nhs.uk/Id/ods-organization-code") -> str:
    return base64.b64encode(json.dumps({"system": system, "value": value}).encode()).decode()


def bars_headers(
    *,
    org: str = "A81001",
    role: Role = Role.GP_PRACTICE,
    target: str = "FA001",
    request_id: str | None = None,
) -> dict[str, str]:
    return {
        **auth(role, org),
        "X-Request-Id": request_id or str(uuid.uuid4()),
        "X-Correlation-Id": str(uuid.uuid4()),
        "NHSD-Target-Identifier": target_header(target),
        "Content-Type": "application/fhir+json",
    }


def load_example(name: str) -> dict[str, Any]:
    """An official BaRS example (json-converted), unmodified."""
    matches = sorted(EXAMPLES.glob(f"{name}*.json"))
    assert matches, f"no example {name} under {EXAMPLES}"
    data: dict[str, Any] = json.loads(matches[0].read_text())
    return data
