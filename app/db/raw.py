"""The statements of the hot paths, run through psycopg itself on PostgreSQL.

For a short statement SQLAlchemy spends more CPU than the driver does: building the execution
context, setting up the result's metadata from the cursor's description and wrapping each row
cost about 0.2 ms a statement here, where psycopg's own execute and fetch cost about 0.07 ms.
The few statements every referral's intake and change make (the rate limit's count, the directory
read, the referral's load, the one-statement write of app/db/writes.py) are therefore compiled once
by SQLAlchemy and run with the driver's cursor: on the session's connection, inside the session's
transaction when there is one, and otherwise (a request's session between transactions)
autocommitted. Elsewhere (SQLite) they run through SQLAlchemy as any statement does.

What SQLAlchemy would otherwise do for them is done here: a driver error becomes the same
SQLAlchemy exception (so callers catch `IntegrityError` and the error handlers answer 503 for a
lost database), and a connection found dead is invalidated.
"""

from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, TypeVar

import psycopg
from psycopg.pq import ExecStatus
from sqlalchemy import Enum as SAEnum
from sqlalchemy import Table, TypeDecorator
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, class_mapper, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_dict
from sqlalchemy.sql.expression import ClauseElement, Executable
from sqlmodel import SQLModel

from app.db.session import (
    RequestSession,
    autocommit,
    execute_committed,
    execute_read,
    run_autocommitted,
)

_POSTGRESQL = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
_Model = TypeVar("_Model", bound=SQLModel)
_TUPLES_OK = ExecStatus.TUPLES_OK


class Statement:
    """A statement built once, with its PostgreSQL text and constant parameters compiled once."""

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: tuple[str, dict[str, Any]] | None = None

    def postgresql(self) -> tuple[str, dict[str, Any]]:
        if self._compiled is None:
            assert isinstance(self.statement, ClauseElement)
            compiled = self.statement.compile(dialect=_POSTGRESQL)
            # Every parameter the text names, with the values built into the statement (a
            # literal `hits = 1` is a parameter too); each call supplies the others.
            self._compiled = (compiled.string, dict(compiled.params))
        return self._compiled


def fetch(
    session: Session, statement: Statement, parameters: Mapping[str, Any]
) -> Sequence[tuple[Any, ...]]:
    """A read's rows (plain tuples of the driver's values)."""
    return _run(session, statement, parameters, commit=False)


def commit(
    session: Session, statement: Statement, parameters: Mapping[str, Any]
) -> Sequence[tuple[Any, ...]]:
    """Run a statement and commit it with whatever the session's transaction holds; its rows."""
    return _run(session, statement, parameters, commit=True)


def _run(
    session: Session, statement: Statement, parameters: Mapping[str, Any], *, commit: bool
) -> Sequence[tuple[Any, ...]]:
    if session.get_bind().dialect.name != "postgresql":
        run = execute_committed if commit else execute_read
        return [tuple(row) for row in run(session, statement.statement, parameters)]
    if isinstance(session, RequestSession) and not session.in_database_transaction():
        return on_connection(session.get_bind(), statement, parameters)
    connection = session.connection()  # the session's transaction, begun if need be
    rows = _execute(connection, statement, parameters)
    if commit:
        session.commit()
    return rows


def on_connection(
    connection: Connection, statement: Statement, parameters: Mapping[str, Any]
) -> Sequence[tuple[Any, ...]]:
    """A statement on a connection outside any transaction of it, committed as it runs."""
    if connection.dialect.name != "postgresql":
        rows = run_autocommitted(connection, statement.statement, parameters)
        return [tuple(row) for row in rows]
    with autocommit(connection):
        return _execute(connection, statement, parameters)


def _execute(
    connection: Connection, statement: Statement, parameters: Mapping[str, Any]
) -> Sequence[tuple[Any, ...]]:
    driver: Any = connection.connection.driver_connection
    sql, constants = statement.postgresql()
    values = {**constants, **parameters}
    try:
        cursor = driver.execute(sql, values)
        # Whether it returned rows, decided as psycopg's `cursor.description` decides it, which
        # would also build an object for each of the result's columns (40 for a referral).
        result = cursor.pgresult
        returned_rows = result is not None and (result.nfields or result.status == _TUPLES_OK)
        return cursor.fetchall() if returned_rows else []
    except psycopg.Error as exc:
        dead = connection.dialect.is_disconnect(exc, driver, None)  # type: ignore[arg-type]
        if dead:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            sql, dict(values), exc, psycopg.Error, connection_invalidated=dead
        ) from exc


def load(
    session: Session, model: type[_Model], statement: Statement, parameters: Mapping[str, Any]
) -> _Model | None:
    """The table model a statement of all its table's columns (in table order) finds, as a query
    of it would give it: the session's own instance when it already holds that row, else one
    built from the row, held by the session from then on."""
    rows = fetch(session, statement, parameters)
    if not rows:
        return None
    values = rows[0]
    table: Table = model.__table__  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "postgresql":  # the driver's values, not SQLAlchemy's
        converted = list(values)
        for position, convert in _processors(table):
            if converted[position] is not None:
                converted[position] = convert(converted[position])
        values = tuple(converted)
    key = session.identity_key(model, tuple(values[i] for i in _key_positions(table)))
    held = session.identity_map.get(key)
    if isinstance(held, model):
        return held
    instance: _Model = class_mapper(model).class_manager.new_instance()
    instance_dict(instance).update(zip(_column_keys(table), values, strict=True))
    make_transient_to_detached(instance)
    session.add(instance)
    return instance


@cache
def _processors(table: Table) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """What SQLAlchemy does to a column's driver value when it reads one, where psycopg's value
    is not already the model's (an enum's string to its member, a timestamp to UTC; psycopg
    reads the other columns as the Python values SQLAlchemy would give): (position, function)."""
    found = []
    for position, column in enumerate(table.columns):
        if isinstance(column.type, SAEnum | TypeDecorator):
            convert = column.type.dialect_impl(_POSTGRESQL).result_processor(_POSTGRESQL, None)
            if convert is not None:
                found.append((position, convert))
    return tuple(found)


@cache
def _column_keys(table: Table) -> tuple[str, ...]:
    return tuple(column.key for column in table.columns)


@cache
def _key_positions(table: Table) -> tuple[int, ...]:
    keys = _column_keys(table)
    return tuple(keys.index(column.key) for column in table.primary_key.columns)
