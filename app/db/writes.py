"""A use-case's writes, gathered in the session and sent at its commit: on PostgreSQL as one
statement.

Services add what a change writes (`insert`, `add_counts`, `compare_and_set`) and end the
use-case with `commit(session)`. On PostgreSQL everything goes as one statement of data-modifying
CTEs, autocommitted where the request's connection allows it (app/db/session.py): one round trip,
and the row locks it takes (above all the shared rollup counters every change adds to) are held
only while the server runs it and flushes the commit, never across a round trip to a busy client
process. Elsewhere (SQLite), the same rows are written one statement at a time in the session's
transaction, which then commits.

Either way a change is written whole or not at all:
- a compare-and-set (`UPDATE ... WHERE id = :id AND version = :expected`) gates the whole change:
  when it matches no row nothing is written and `commit` raises `StaleWrite`;
- a unique or foreign-key violation writes nothing and raises SQLAlchemy's `IntegrityError`
  (foreign keys are checked at the end of the statement, so rows may be added in any order on
  PostgreSQL; elsewhere they are written in the order they were added);
- counts added to one key within a change are summed, and the upsert takes its rows in key
  order, so two changes lock shared counter rows in the same order and cannot deadlock.

A change with more than one compare-and-set (the sweep's batches) is written statement by
statement in one transaction on every database: one statement cannot undo a guard that matched
when a later one fails.

A session committed some other way (`session.commit()`) still writes what is pending, statement
by statement, just before it commits; a rollback discards it.
"""

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, partial
from typing import Any, TypeVar

import orjson
from sqlalchemy import DateTime, Integer, Table, TypeDecorator, bindparam, event, text, update
from sqlalchemy import Enum as SAEnum
from sqlalchemy import insert as core_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, class_mapper
from sqlalchemy.orm.attributes import instance_dict
from sqlalchemy.sql.elements import TextClause
from sqlmodel import SQLModel

from app.db import raw
from app.db.session import READING

_PENDING = "pharmref.writes"
_Model = TypeVar("_Model", bound=SQLModel)


class StaleWrite(Exception):
    """A compare-and-set matched no row (another change got there first): nothing was written."""


@dataclass(frozen=True, slots=True)
class _Guard:
    table: Table
    key: Any
    version: int
    values: tuple[tuple[str, Any], ...]


@dataclass(slots=True)
class _Pending:
    guards: list[_Guard] = field(default_factory=list)
    inserts: list[tuple[Table, dict[str, Any]]] = field(default_factory=list)
    # table -> key values (in primary-key order) -> summed amounts
    counts: dict[Table, dict[tuple[Any, ...], Counter[str]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.guards or self.inserts or self.counts)


def _pending(session: Session) -> _Pending:
    found = session.info.get(_PENDING)
    if found is None:
        found = session.info[_PENDING] = _Pending()
    assert isinstance(found, _Pending)
    return found


def insert_row(session: Session, table: Table, row: Mapping[str, Any]) -> None:
    """INSERT `row` (column key -> value; a serial id left out is the database's to assign)."""
    _pending(session).inserts.append((table, dict(row)))


def insert(session: Session, model: SQLModel) -> None:
    """INSERT a built table model's row (its column values as they stand)."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    insert_row(session, table, row_of(model))


def construct(model: type[_Model], **values: Any) -> _Model:
    """A table model from its column values, built as a query builds one it loads (no per-field
    instrumentation or validation: a Referral cost 0.14 ms through its constructor); the columns
    not given take their defaults. For rows a change writes (which the database then checks)."""
    instance: _Model = class_mapper(model).class_manager.new_instance()
    state = instance_dict(instance)
    state.update(values)
    for name, declared in _defaults(model):
        if name not in values:
            if declared.is_required():
                raise TypeError(f"{model.__name__} needs a value for {name}")
            state[name] = declared.get_default(call_default_factory=True)
    return instance


@cache
def _defaults(model: type[SQLModel]) -> tuple[tuple[str, Any], ...]:
    table: Table = model.__table__  # type: ignore[attr-defined]
    fields = model.model_fields
    return tuple((column.key, fields[column.key]) for column in table.columns)


def row_of(model: SQLModel) -> dict[str, Any]:
    """The column values of a built table model; a serial id not yet assigned is left out, for
    the database to assign."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    row = {}
    for column in table.columns:
        value = getattr(model, column.key)
        if value is None and column.primary_key and column.autoincrement is not False:
            continue
        row[column.key] = value
    return row


def add_counts(
    session: Session, table: Table, key: Mapping[str, Any], amounts: Mapping[str, float]
) -> None:
    """Add `amounts` to the counter columns of the row whose primary key is `key`, creating it
    (with every other counter 0) when there is none."""
    names = _key_names(table)
    if len(key) != len(names) or not all(name in key for name in names):
        raise ValueError(f"a {table.name} key needs exactly {names}")
    add_counts_at(session, table, tuple(key[name] for name in names), amounts)


def add_counts_at(
    session: Session, table: Table, key: tuple[Any, ...], amounts: Mapping[str, float]
) -> None:
    """add_counts with the key as a tuple, in the primary key's column order."""
    by_key = _pending(session).counts.setdefault(table, {})
    by_key.setdefault(key, Counter()).update(amounts)


@cache
def _key_names(table: Table) -> tuple[str, ...]:
    return tuple(column.key for column in table.primary_key.columns)


def compare_and_set(
    session: Session, table: Table, *, key: Any, version: int, values: Mapping[str, Any]
) -> None:
    """Write `values` to the row with this `id` only if its `version` is still `version`; the
    whole change is written only if it is."""
    _pending(session).guards.append(_Guard(table, key, version, tuple(values.items())))


def pending(session: Session) -> bool:
    found = session.info.get(_PENDING)
    return bool(found)


def discard(session: Session) -> None:
    session.info.pop(_PENDING, None)


def commit(session: Session) -> None:
    """Write everything pending and commit (see the module docstring); raises StaleWrite or
    IntegrityError having written nothing."""
    work = session.info.pop(_PENDING, None) or _Pending()
    dialect = session.get_bind().dialect
    try:
        if dialect.name == "postgresql" and len(work.guards) <= 1 and work:
            statement, parameters = _one_statement(work)
            (row,) = raw.commit(session, statement, parameters)
            if work.guards and row[0] != 1:
                raise StaleWrite
            return
        _write_each(session.connection(), work)
        session.commit()
    except BaseException:
        session.rollback()
        raise


# ---- one statement (PostgreSQL) --------------------------------------------------------------
#
# Each table's rows travel as one JSON parameter that json_populate_recordset turns back into rows
# of the table's own type (PostgreSQL's input functions check each value against its column, as an
# INSERT of the values would), so a statement has a handful of parameters whatever the number of
# rows and columns. psycopg parses and caches a statement's placeholders only when it has at most
# 50 parameters and 4,096 bytes; one parameter per column of every row re-parsed a 5 kB statement
# on every request.


def _insert_groups(work: _Pending) -> dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]]:
    """The rows to insert, one group per table and set of columns, in the order first added:
    the sub-statements of one statement run in no set order, so rows that must get serial ids
    in order (a change's events) go in one multi-row INSERT, which takes them in order."""
    groups: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]] = {}
    for table, row in work.inserts:
        groups.setdefault((table, tuple(row)), []).append(row)
    return groups


def _one_statement(work: _Pending) -> tuple[raw.Statement, dict[str, Any]]:
    guard = work.guards[0] if work.guards else None
    groups = _insert_groups(work)
    shape: _Shape = (
        None if guard is None else (guard.table, tuple(name for name, _ in guard.values)),
        tuple(groups),
        tuple(
            (table, tuple(sorted({name for amounts in by_key.values() for name in amounts})))
            for table, by_key in work.counts.items()
        ),
    )
    parameters: dict[str, Any] = {}
    if guard is not None:
        _check_row(guard.table, dict(guard.values))
        parameters["g_key"] = guard.key
        parameters["g_expected"] = guard.version
        parameters["g_values"] = _json(dict(guard.values))
    for index, ((table, _names), rows) in enumerate(groups.items()):
        for row in rows:
            _check_row(table, row)
        parameters[f"i{index}"] = _json(rows)
    for index, (table, by_key) in enumerate(work.counts.items()):
        parameters[f"c{index}"] = _json(_count_rows(table, by_key, zeros=False))
    return _statement(shape), parameters


_Shape = tuple[
    tuple[Table, tuple[str, ...]] | None,
    tuple[tuple[Table, tuple[str, ...]], ...],
    tuple[tuple[Table, tuple[str, ...]], ...],
]


@cache
def _statement(shape: _Shape) -> raw.Statement:
    """The statement for one shape of change (which columns of which tables), built once:
    SQLAlchemy and psycopg then cache it by its text, and PostgreSQL keeps it prepared."""
    guard, inserts, counted = shape
    ctes: list[str] = []
    gated = guard is not None
    where = " WHERE EXISTS (SELECT FROM g)" if gated else ""
    if guard is not None:
        table, names = guard
        sets = ", ".join(f"{name} = r.{name}" for name in names)
        ctes.append(
            f"g AS (UPDATE {table.name} AS t SET {sets} "
            f"FROM json_populate_record(NULL::{table.name}, :g_values) AS r "
            f"WHERE t.id = :g_key AND t.version = :g_expected RETURNING 1)"
        )
    for index, (table, names) in enumerate(inserts):
        rows = f"json_populate_recordset(NULL::{table.name}, :i{index}){where}"
        if names == tuple(column.key for column in table.columns):
            ctes.append(f"i{index} AS (INSERT INTO {table.name} SELECT * FROM {rows})")
        else:
            columns = ", ".join(names)
            ctes.append(
                f"i{index} AS (INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {rows})"
            )
    for index, (table, added) in enumerate(counted):
        keys = ", ".join(_key_names(table))
        sums = ", ".join(f"{name} = t.{name} + excluded.{name}" for name in added)
        # The rows carry their key and the counters the change adds to; json_populate_recordset
        # takes every other column from its first argument, a row of zeros.
        zeros = ", ".join("NULL" if column.primary_key else "0" for column in table.columns)
        ctes.append(
            f"c{index} AS (INSERT INTO {table.name} AS t SELECT * "
            f"FROM json_populate_recordset(ROW({zeros})::{table.name}, :c{index}){where} "
            f"ORDER BY {keys} ON CONFLICT ({keys}) DO UPDATE SET {sums})"
        )
    last = "SELECT count(*) FROM g" if gated else "SELECT 1"
    binds = [bindparam("g_key", type_=guard[0].c.id.type)] if guard is not None else []
    return raw.Statement(text(f"WITH {', '.join(ctes)} {last}").bindparams(*binds))


def _json(value: Any) -> str:
    """Rows as JSON: UUIDs, aware datetimes (with their offset), dates and StrEnums (their
    values) as orjson writes them."""
    return orjson.dumps(value).decode()


def _check_row(table: Table, row: Mapping[str, Any]) -> None:
    """What the columns' own types check when SQLAlchemy binds a value, and JSON cannot carry:
    a timestamp must know its time zone, and an enum column takes only its members' values."""
    checks = _checks(table)
    for name, value in row.items():
        check = checks.get(name)
        if check is not None and value is not None:
            check(value)


@cache
def _checks(table: Table) -> dict[str, Callable[[Any], None]]:
    checks: dict[str, Callable[[Any], None]] = {}
    for column in table.columns:
        type_ = column.type
        if isinstance(type_, TypeDecorator) and isinstance(type_.impl, DateTime):
            checks[column.key] = _aware
        elif isinstance(type_, SAEnum):
            checks[column.key] = partial(_member, column.key, frozenset(type_.enums))
    return checks


def _aware(value: Any) -> None:
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")


def _member(name: str, allowed: frozenset[str], value: Any) -> None:
    if str(value) not in allowed:
        raise ValueError(f"{value!r} is not a valid value of {name}")


def _amounts(table: Table, amounts: Mapping[str, float]) -> dict[str, float]:
    """The amounts to add, whole numbers for the integer counters."""
    integers = _integer_columns(table)
    return {name: int(value) if name in integers else value for name, value in amounts.items()}


@cache
def _integer_columns(table: Table) -> frozenset[str]:
    return frozenset(c.key for c in table.columns if isinstance(c.type, Integer))


# ---- statement by statement (SQLite, several guards, a plain session.commit()) ---------------


def _write_each(connection: Connection, work: _Pending) -> None:
    for guard in work.guards:
        table = guard.table
        changed = connection.execute(
            update(table)
            .where(table.c.id == guard.key, table.c.version == guard.version)
            .values(dict(guard.values))
        )
        if changed.rowcount != 1:
            raise StaleWrite
    for table, row in work.inserts:
        connection.execute(core_insert(table), row)
    for table, by_key in work.counts.items():
        _upsert_each(connection, table, by_key)


def _upsert_each(
    connection: Connection, table: Table, by_key: Mapping[tuple[Any, ...], Counter[str]]
) -> None:
    connection.execute(_upsert_statement(table), _count_rows(table, by_key, zeros=True))


def _count_rows(
    table: Table, by_key: Mapping[tuple[Any, ...], Counter[str]], *, zeros: bool
) -> list[dict[str, Any]]:
    """The counter rows, in key order: each its key and the amounts added, and with `zeros` every
    other counter as 0 (whole rows, for a statement that names every column)."""
    names = _key_names(table)
    base = _zero_counters(table) if zeros else {}
    # Primary key values are never NULL, and each column's are of one type: tuples compare.
    return [
        dict(zip(names, key, strict=True)) | base | _amounts(table, amounts)
        for key, amounts in sorted(by_key.items())
    ]


@cache
def _counter_names(table: Table) -> tuple[str, ...]:
    """Every column outside the primary key: the counters, in table order."""
    return tuple(c.key for c in table.columns if not c.primary_key)


@cache
def _zero_counters(table: Table) -> dict[str, int]:
    return dict.fromkeys(_counter_names(table), 0)


@cache
def _upsert_statement(table: Table) -> TextClause:
    """INSERT ... ON CONFLICT DO UPDATE adding every counter (one row's text: an executemany)."""
    keys = _key_names(table)
    counters = _counter_names(table)
    names = [*keys, *counters]
    sums = ", ".join(f"{name} = t.{name} + excluded.{name}" for name in counters)
    return text(
        f"INSERT INTO {table.name} AS t ({', '.join(names)}) "
        f"VALUES ({', '.join(':' + name for name in names)}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sums}"
    ).bindparams(*(bindparam(name, type_=table.c[name].type) for name in names))


def write_pending(session: Session) -> None:
    """Write what is pending into the session's transaction without committing (for a caller that
    commits itself)."""
    work = session.info.pop(_PENDING, None)
    if work:
        _write_each(session.connection(), work)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    if not session.info.get(READING):
        write_pending(session)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, _previous: Any) -> None:
    discard(session)
