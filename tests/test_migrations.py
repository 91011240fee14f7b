from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, Table, inspect
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, create_engine

import app.models  # noqa: F401  (registers every table on SQLModel.metadata)
from alembic import command
from app.db import migrations


def differences(engine: Engine, metadata: MetaData = SQLModel.metadata) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def test_models_match_migrations_on_test_database(engine: Engine) -> None:
    assert migrations.is_current(engine)

    assert differences(engine) == [], "models and migrations differ: add an Alembic revision"


def test_compare_reports_a_table_without_migration(engine: Engine) -> None:
    metadata = MetaData(naming_convention=SQLModel.metadata.naming_convention)
    for table in SQLModel.metadata.tables.values():
        table.to_metadata(metadata)
    Table("not_migrated", metadata, Column("id", Integer, primary_key=True))

    assert [diff[0] for diff in differences(engine, metadata)] == ["add_table"]


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh = create_engine(url)
    yield url, fresh
    fresh.dispose()


def test_upgrade_downgrade_upgrade_on_empty_sqlite(fresh_sqlite: tuple[str, Engine]) -> None:
    url, fresh = fresh_sqlite
    config = migrations.alembic_config(url)
    tables = set(SQLModel.metadata.tables)
    assert tables

    command.upgrade(config, "head")
    assert migrations.is_current(fresh)
    assert tables <= set(inspect(fresh).get_table_names())

    command.downgrade(config, "base")
    assert not migrations.is_current(fresh)
    assert set(inspect(fresh).get_table_names()) <= {"alembic_version"}

    command.upgrade(config, "head")
    assert migrations.is_current(fresh)
    assert differences(fresh) == []


def test_migration_history_is_linear() -> None:
    script = ScriptDirectory.from_config(migrations.alembic_config("sqlite://"))

    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1
