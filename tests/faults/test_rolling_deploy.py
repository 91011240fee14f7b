"""/readyz through a rolling deploy: `pharmref migrate` for release N+1 runs while release N's
processes still serve. They must stay ready on the newer schema (else the load balancer drops
every old process at once), while a process whose schema is not yet migrated must not be."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from alembic import command
from app.db import migrations
from app.main import app
from app.routers import health


@pytest.fixture
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Engine]]:
    """A database of its own at this code's head, watched by /readyz."""
    url = f"sqlite:///{tmp_path / 'deploy.db'}"
    migrations.upgrade(url)
    database = create_engine(url)
    monkeypatch.setattr(health, "engine", database)
    yield url, database
    database.dispose()


def _readiness() -> tuple[int, dict[str, str]]:
    with TestClient(app) as client:
        response = client.get("/readyz")
    return response.status_code, response.json()


@pytest.mark.usefixtures("deployed")
def test_ready_at_this_releases_head() -> None:
    assert _readiness() == (200, {"status": "ok"})


def test_still_ready_once_a_newer_release_has_migrated(deployed: tuple[str, Engine]) -> None:
    _url, database = deployed
    with database.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'a1b2c3d4e5f6'"))

    assert _readiness() == (200, {"status": "ok"})


def test_not_ready_before_this_releases_migration(deployed: tuple[str, Engine]) -> None:
    url, _database = deployed
    command.downgrade(migrations.alembic_config(url), "-1")

    assert _readiness() == (503, {"status": "unavailable"})


def test_not_ready_on_an_empty_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setattr(health, "engine", empty)
    try:
        assert _readiness() == (503, {"status": "unavailable"})
    finally:
        empty.dispose()
