"""Test fixtures: one migrated database per run (SQLite by default, PostgreSQL when
PHARMREF_TEST_DATABASE_URL names one), the demo directory loaded once, and a transaction per test
that is rolled back afterwards (services' own commits become savepoints)."""

import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from app.core.config import settings
from app.db import migrations
from app.db.session import get_session
from app.main import app
from app.services.demo_directory import demo_directory_path
from app.services.directory_import import import_directory

# Property tests share a busy 2-core CI machine with PostgreSQL: no per-example deadline (a slow
# example is not a failure), and fixed seeds so a CI run is repeatable.
hypothesis_settings.register_profile("pharmref", deadline=None, derandomize=True)
hypothesis_settings.load_profile("pharmref")


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
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA busy_timeout=10000")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


@pytest.fixture(scope="session", autouse=True)
def _no_background_sweep() -> Iterator[None]:
    """The app's lifespan would start the periodic sweep on the application's own engine (the
    configured database, not the test one) and race the tests' transactions; the tests drive the
    sweep themselves (tests/services/test_sweep.py), so the test app runs without it; likewise
    without the in-process delivery worker (tests/services/test_delivery.py turns it on)."""
    interval, in_process = settings.sweep_interval_seconds, settings.delivery_in_process
    settings.sweep_interval_seconds, settings.delivery_in_process = 0, False
    yield
    settings.sweep_interval_seconds, settings.delivery_in_process = interval, in_process


@pytest.fixture(scope="session", autouse=True)
def _no_rate_limit() -> Iterator[None]:
    """Fuzzing and property tests send hundreds of requests as one client within a minute; the
    rate limit's own tests (tests/routers/test_rate_limit.py) turn it on."""
    limit = settings.rate_limit_per_minute
    settings.rate_limit_per_minute = 0
    yield
    settings.rate_limit_per_minute = limit


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


@pytest.fixture
def preserve_logging() -> Iterator[None]:
    """Put the logging configuration back after a test that installs pharmref's own
    (`configure_logging` replaces the root handlers, pytest's capture among them)."""
    manager = logging.Logger.manager
    names = [None, *manager.loggerDict]
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
    yield
    for name in [None, *manager.loggerDict]:
        logger = logging.getLogger(name)
        level, handlers, propagate, disabled = saved.get(name, (logging.NOTSET, [], True, False))
        logger.setLevel(level)
        logger.handlers = handlers
        logger.propagate = propagate
        logger.disabled = disabled
