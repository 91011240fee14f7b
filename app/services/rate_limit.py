"""Per-client rate limiting shared by every API process and host: a fixed one-minute window
counted in the database with one atomic upsert per request (on PostgreSQL in an UNLOGGED table:
no WAL, no disk flush at commit).

The upsert either starts the client's count for the current window or adds one to it, and
returns the count, so concurrent requests on any number of processes are counted exactly. A
client may send up to twice the limit across a window boundary (the fixed-window trade-off for
one statement per request). Refused requests count too; the window still ends on time.
"""

import hashlib
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, bindparam, case, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Session, col

from app.db import raw
from app.db.session import run_autocommitted
from app.models.rate_limit import RateLimitCounter

WINDOW_SECONDS = 60
PURGE_EVERY_SECONDS = 600.0
_MAX_KEY = 200

_counter = RateLimitCounter.__table__  # type: ignore[attr-defined]
_last_purge = {"at": float("-inf")}  # per process: only when to tidy, never a count


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    count: int
    retry_after: int  # whole seconds until the window ends (at least 1)


def client_key(*, org: str | None = None, subject: str | None = None, ip: str | None = None) -> str:
    """`client:<org>:<subject>` for an authenticated caller, else `ip:<address>`; long keys are
    replaced by their SHA-256 so every key fits the column."""
    key = f"client:{org}:{subject}" if org is not None and subject is not None else f"ip:{ip}"
    if len(key) > _MAX_KEY:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def _upsert(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    window = bindparam("window", type_=Integer())
    statement = insert(_counter).values(client_key=bindparam("key"), window_index=window, hits=1)
    # A host whose clock runs a little behind keeps counting in the newer window it finds.
    current = _counter.c.window_index >= window
    return statement.on_conflict_do_update(
        index_elements=[_counter.c.client_key],
        set_={
            "hits": case((current, _counter.c.hits + 1), else_=1),
            "window_index": case((current, _counter.c.window_index), else_=window),
        },
    ).returning(_counter.c.hits, _counter.c.window_index)


# Built once (its construction cost more CPU than its round trip), one per dialect.
_UPSERTS = {dialect: raw.Statement(_upsert(dialect)) for dialect in ("postgresql", "sqlite")}


def hit(*, session: Session, key: str, limit: int, now: datetime) -> Decision:
    """Count one request for `key` and decide it (one statement, committed on its own)."""
    # On PostgreSQL the table is UNLOGGED (a counter lost in a crash costs nothing): the upsert
    # writes no WAL, so its commit waits for no disk flush. A request's session runs it in
    # autocommit mode: one round trip, no BEGIN or COMMIT.
    upsert = _UPSERTS[session.get_bind().dialect.name]
    (row,) = raw.commit(session, upsert, _parameters(key, now))
    return _decision(row, limit=limit, now=now)


def hit_on(*, connection: Connection, key: str, limit: int, now: datetime) -> Decision:
    """`hit` on a connection, outside any transaction of it (a request's first statement)."""
    upsert = _UPSERTS[connection.dialect.name]
    (row,) = raw.on_connection(connection, upsert, _parameters(key, now))
    return _decision(row, limit=limit, now=now)


def _parameters(key: str, now: datetime) -> dict[str, Any]:
    return {"key": key, "window": math.floor(now.timestamp() / WINDOW_SECONDS)}


def _decision(row: Any, *, limit: int, now: datetime) -> Decision:
    count, counted_window = row
    retry_after = max(1, math.ceil((counted_window + 1) * WINDOW_SECONDS - now.timestamp()))
    return Decision(allowed=count <= limit, limit=limit, count=count, retry_after=retry_after)


def purge_due() -> bool:
    """Whether this process should tidy the table now (at most every PURGE_EVERY_SECONDS)."""
    if time.monotonic() - _last_purge["at"] < PURGE_EVERY_SECONDS:
        return False
    _last_purge["at"] = time.monotonic()
    return True


def purge_stale(*, session: Session, now: datetime) -> int:
    """Delete the rows of clients not seen since before the previous window (they would only be
    reset). Its own transaction, after the request's count, so it never holds a counter while
    waiting for another."""
    result = session.execute(_stale(now))
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def purge_stale_on(*, connection: Connection, now: datetime) -> None:
    """`purge_stale` on a connection, outside any transaction of it."""
    run_autocommitted(connection, _stale(now), {})


def _stale(now: datetime) -> Any:
    window = math.floor(now.timestamp() / WINDOW_SECONDS)
    return delete(RateLimitCounter).where(col(RateLimitCounter.window_index) < window - 1)
