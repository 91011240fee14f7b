from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, Table, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression
from sqlmodel import SQLModel, create_engine

import app.models  # noqa: F401  (registers every table on SQLModel.metadata)
from alembic import command
from app.db import migrations


def differences(engine: Engine, metadata: MetaData = SQLModel.metadata) -> list[Any]:
    with engine.connect() as connection:
        include_object = migrations.include_object_for(connection.dialect.name, metadata)
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_object": include_object,
            },
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


def test_area_rollups_migration_sums_the_practice_rows(fresh_sqlite: tuple[str, Engine]) -> None:
    url, fresh = fresh_sqlite
    config = migrations.alembic_config(url)
    command.upgrade(config, "643e33563cd7")
    rollup = Table("uptake_rollup", MetaData(), autoload_with=fresh)
    key = {"grain": "month", "period_start": date(2026, 1, 1), "pcn_ods": "U00001",
           "place_ods": "QXX01", "icb_ods": "QXX", "service": "pharmacy-first"}  # fmt: skip
    zero = {c.name: 0 for c in rollup.columns if c.name not in key}
    with fresh.begin() as connection:
        connection.execute(
            rollup.insert(),
            [
                zero | key | {"side": "practice", "org_ods": "A81001", "source": "gp-practice",
                              "pathway": "sore-throat", "made": 2, "completed": 1,
                              "completed_h004": 1, "completion_hours_sum": 5.0},
                zero | key | {"side": "practice", "org_ods": "A81002", "source": "nhs111",
                              "pathway": "", "made": 3, "completed_h004": 0},
                zero | key | {"side": "practice", "org_ods": "A81002", "source": "nhs111",
                              "pathway": "", "service": "dms", "made": 7},
                zero | key | {"side": "pharmacy", "org_ods": "FA001", "pcn_ods": "", "place_ods": "",
                              "icb_ods": "", "source": "nhs111", "pathway": "", "made": 5},
            ],
        )  # fmt: skip

    command.upgrade(config, "head")

    with fresh.connect() as connection:
        area = connection.execute(
            select(rollup.c.service, rollup.c.made, rollup.c.completed, rollup.c.completed_h004,
                   rollup.c.completion_hours_sum, rollup.c.org_ods, rollup.c.source,
                   rollup.c.pathway, rollup.c.pcn_ods)
            .where(rollup.c.side == "area")
            .order_by(rollup.c.service)
        ).all()  # fmt: skip
    assert [tuple(row) for row in area] == [
        ("dms", 7, 0, 0, 0.0, "", "", "", "U00001"),
        ("pharmacy-first", 5, 1, 1, 5.0, "", "", "", "U00001"),
    ]
    command.downgrade(config, "643e33563cd7")
    with fresh.connect() as connection:
        sides = connection.execute(select(rollup.c.side).distinct()).scalars().all()
    assert sorted(sides) == ["pharmacy", "practice"]


def _directions_in_models(name: str) -> list[tuple[str, bool]]:
    """(column, descending) for each column of the model index `name`."""
    index = next(
        index
        for table in SQLModel.metadata.tables.values()
        for index in table.indexes
        if index.name == name
    )
    columns = []
    for expression in index.expressions:
        if isinstance(expression, UnaryExpression):
            # desc("priority"): the modifier, and the column named by the textual reference
            descending = expression.modifier is operators.desc_op
            columns.append((str(expression.element.element), descending))
        else:
            assert isinstance(expression, Column)
            columns.append((expression.name, False))
    return columns


def _directions_in_database(engine: Engine, name: str) -> list[tuple[str, bool]]:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"PRAGMA index_xinfo('{name}')").all()
            # (seqno, cid, name, desc, coll, key): key columns only, not the rowid
            return [(str(row[2]), bool(row[3])) for row in rows if row[5]]
        definition = connection.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"), {"name": name}
        ).scalar_one()
    inside = definition[definition.index("(") + 1 : definition.rindex(")")]
    return [
        (part.split()[0], part.strip().endswith(" DESC"))
        for part in (column.strip() for column in inside.split(","))
    ]


def test_sorted_indexes_have_the_models_directions(engine: Engine) -> None:
    """What compare_metadata cannot see on SQLite (its reflection drops DESC), checked here."""
    names = migrations.sorted_indexes(SQLModel.metadata)
    assert "ix_referral_pharmacy_ods_status_priority_due_at" in names

    for name in sorted(names):
        assert _directions_in_database(engine, name) == _directions_in_models(name), name
