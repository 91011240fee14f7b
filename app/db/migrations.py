"""Alembic helpers: upgrade to head, and whether the database is at head."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from alembic import command


def _root() -> Path:
    """The folder holding alembic.ini: the source checkout, or the working directory of an
    installed copy (the Docker image runs from /app, where alembic.ini and alembic/ are copied)."""
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "alembic.ini").exists() else Path.cwd()


def alembic_config(url: str) -> Config:
    root = _root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "alembic"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def sorted_indexes(metadata: MetaData) -> frozenset[str]:
    """Indexes that give a column a sort direction (`desc(...)`). SQLite's reflection reports
    their columns but not the direction, so compared there they always look changed; PostgreSQL
    reflects them in full. tests/test_migrations.py checks their directions on SQLite itself."""
    return frozenset(
        str(index.name)
        for table in metadata.tables.values()
        for index in table.indexes
        if any(not isinstance(expression, Column) for expression in index.expressions)
    )


def include_object_for(dialect: str, metadata: MetaData) -> Callable[..., bool]:
    """Alembic's include_object hook for comparing models with a database of `dialect`."""
    skipped = sorted_indexes(metadata) if dialect == "sqlite" else frozenset()

    def include_object(_object: Any, name: str | None, type_: str, *_args: Any) -> bool:
        return not (type_ == "index" and name in skipped)

    return include_object


def upgrade(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def is_current(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
    except SQLAlchemyError:
        return False
    heads = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_heads()
    return set(current) == set(heads)


def serves_this_release(engine: Engine) -> bool:
    """Readiness: reachable, and the schema is at this code's head, or at a revision this code
    does not know: a newer release has migrated it and this process is an old one still running
    during a rolling deploy (migrations only ever add what older code can ignore). An empty,
    unreachable or not yet migrated database is not ready."""
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except SQLAlchemyError:
        return False
    script = ScriptDirectory.from_config(alembic_config(str(engine.url)))
    if current == set(script.get_heads()):
        return True
    known = {revision.revision for revision in script.walk_revisions()}
    return bool(current) and not current & known
