"""The engine and the per-request session dependency.

On PostgreSQL the engine is set up so that a database that goes away costs a request a bounded
wait and a 503 (app/routers/errors.py), never a hang, and so that the process recovers by itself:

| Where a request can wait          | Bound                                                      |
|-----------------------------------|------------------------------------------------------------|
| opening a connection              | `PHARMREF_DB_CONNECT_TIMEOUT_SECONDS` (libpq connect_timeout) |
| waiting for a pooled connection   | `PHARMREF_DB_POOL_TIMEOUT_SECONDS`                          |
| a statement on the server         | `PHARMREF_DB_STATEMENT_TIMEOUT_SECONDS` (statement_timeout) |
| a server that vanished mid-query  | TCP keepalives: about KEEPALIVE_IDLE + INTERVAL x COUNT s    |

Recovery: `pool_pre_ping` tests a pooled connection before handing it out (and replaces it if the
server restarted), and a disconnect seen on any connection invalidates the whole pool, so the
first requests after an outage open fresh connections instead of failing on stale ones.
"""

from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from app.core.config import settings

KEEPALIVE_IDLE_SECONDS = 5
KEEPALIVE_INTERVAL_SECONDS = 2
KEEPALIVE_COUNT = 3


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def postgres_connect_args() -> dict[str, Any]:
    """libpq parameters for every pooled connection (see the module docstring)."""
    args: dict[str, Any] = {
        "connect_timeout": settings.db_connect_timeout_seconds,
        "application_name": "pharmref",
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
        "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
        "keepalives_count": KEEPALIVE_COUNT,
    }
    if settings.db_statement_timeout_seconds > 0:
        milliseconds = round(settings.db_statement_timeout_seconds * 1000)
        args["options"] = f"-c statement_timeout={milliseconds}"
    return args


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        new_engine = create_engine(
            url,
            connect_args={"check_same_thread": False},
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_seconds,
        )
        event.listen(new_engine, "connect", _sqlite_pragmas)
        return new_engine
    return create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args=postgres_connect_args(),
    )


engine = make_engine(settings.database_url)


async def get_session() -> AsyncIterator[Session]:
    """A session for the request. Opening one does no I/O (it takes a connection at its first
    statement), so it is made on the event loop rather than through a worker thread; closing it
    goes to a thread only when it still holds a connection (a read that never committed, or a
    failed request), since returning that connection to the pool rolls it back."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
    finally:
        if session.in_transaction():
            # Its own limiter, as FastAPI does for a sync dependency's exit: a close must never
            # wait for a worker thread held by a request that is waiting for this connection.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close, limiter=anyio.CapacityLimiter(1))
        else:
            session.close()


# At most one session per pooled connection in each process. FastAPI validates a sync route's
# response in a worker thread after the route returns, while its session (and, after a read,
# the connection) is still open. With more sessions than connections, a burst left every worker
# thread waiting for a connection held by a request waiting for a thread, until the pool timeout
# turned them all into 503s. Requests beyond the limit wait here without holding a thread.
SESSION_LIMIT = settings.db_pool_size + settings.db_max_overflow

SessionDep = Annotated[Session, Depends(get_session, max_concurrency=SESSION_LIMIT)]
