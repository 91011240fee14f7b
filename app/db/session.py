"""The engine and the per-request session dependency.

On PostgreSQL the engine is set up so that a database that goes away costs a request a bounded
wait and a 503 (app/routers/errors.py), never a hang, and so that the process recovers by itself:

| Where a request can wait          | Bound                                                      |
|-----------------------------------|------------------------------------------------------------|
| opening a connection              | `PHARMREF_DB_CONNECT_TIMEOUT_SECONDS` (libpq connect_timeout) |
| waiting for a pooled connection   | `PHARMREF_DB_POOL_TIMEOUT_SECONDS`                          |
| a statement on the server         | `PHARMREF_DB_STATEMENT_TIMEOUT_SECONDS` (statement_timeout) |
| a server that vanished mid-query  | TCP keepalives: about KEEPALIVE_IDLE + INTERVAL x COUNT s    |

Recovery: the pool checks a pooled connection before handing it out, without a round trip (see
`_replace_if_closed`), and replaces it if the server restarted or dropped it; a disconnect seen on
any connection invalidates the whole pool, so the first requests after an outage open fresh
connections instead of failing on stale ones.
"""

import select
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends
from psycopg.pq import ConnStatus
from sqlalchemy import Executable, Result, event
from sqlalchemy.engine import Connection, CursorResult, Engine, Row
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, create_engine

from app.core.config import settings

KEEPALIVE_IDLE_SECONDS = 5
# Set in session.info while a read commits on its own: what is gathered for the request's write
# (app/db/writes.py) is not that commit's to write.
READING = "pharmref.reading"
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
    new_engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args=postgres_connect_args(),
    )
    event.listen(new_engine, "checkout", _replace_if_closed)
    return new_engine


def _replace_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """The pool's check of a connection it hands out, without a round trip: an idle connection
    has nothing to read, so a socket that is readable (the server's goodbye, or its end of the
    stream) or a connection libpq has given up on is replaced (DisconnectionError makes the pool
    drop it and take another). A server that vanished without a word is found by the first
    statement, bounded by the TCP keepalives, as a `SELECT 1` ping would be found."""
    pgconn = dbapi_connection.pgconn
    if dbapi_connection.closed or pgconn.status != ConnStatus.OK:
        raise DisconnectionError("connection closed")
    try:
        readable, _, _ = select.select([pgconn.socket], [], [], 0)
    except (OSError, ValueError) as exc:
        raise DisconnectionError("connection socket unusable") from exc
    if readable:
        raise DisconnectionError("the server closed the connection or sent an unprompted message")


engine = make_engine(settings.database_url)


class RequestSession(Session):
    """A request's session: it takes a pooled connection at its first statement and keeps it
    until it is closed, across commits. A request commits more than once (the rate limit's
    count, then its own work or the audit of its read), and a plain session hands its
    connection back at every commit, so each transaction paid a pool checkout again."""

    def __init__(self, bind: Engine, **kwargs: Any) -> None:
        super().__init__(bind=bind, **kwargs)
        self._pool = bind
        self._held: Connection | None = None

    def get_bind(self, *_args: Any, **_kwargs: Any) -> Connection:
        if self._held is None:
            self._held = self._pool.connect()
        return self._held

    def execute_autocommitted(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> Sequence[Row[Any]]:
        """Run one statement on its own, committed as it runs, and return its rows. On
        PostgreSQL in autocommit mode, so without a transaction's BEGIN and COMMIT round trips,
        then back to the default isolation level for what the request does next. Only between
        the session's transactions.

        A SELECT runs through the session, so a SELECT of table models loads them into the
        session as any query does; anything else runs on the connection, without an autoflush.
        Changes gathered for the request's write (app/db/writes.py) stay pending meanwhile."""
        if self.in_transaction():
            raise RuntimeError("execute_autocommitted inside a transaction")
        connection = self.get_bind()
        through_session = bool(getattr(statement, "is_select", False))
        if through_session and (self.new or self.dirty or self.deleted):
            raise RuntimeError("an autocommitted read would flush the session's ORM changes")
        if connection.dialect.name != "postgresql":
            self.info[READING] = True
            try:
                rows = _rows(self.execute(statement, parameters))
                self.commit()
            finally:
                self.info.pop(READING, None)
            return rows
        # psycopg's own switch, not SQLAlchemy's isolation-level option: setting a flag on an
        # idle connection, no statement and none of SQLAlchemy's characteristic bookkeeping.
        # SQLAlchemy's begin and commit around the statement are then no-ops at the server.
        driver: Any = connection.connection.driver_connection
        driver.autocommit = True
        try:
            if through_session:
                self.info[READING] = True
                rows = _rows(self.execute(statement, parameters))
                self.commit()  # ends the session's autobegun transaction: no round trip
            else:
                rows = _rows(connection.execute(statement, parameters))
                connection.commit()  # ends the Connection's autobegun scope: no round trip
        except BaseException:
            if through_session:
                self.rollback()
            else:
                connection.rollback()
            raise
        finally:
            self.info.pop(READING, None)
            if not driver.closed:
                driver.autocommit = False
        return rows

    def in_database_transaction(self) -> bool:
        """Whether its connection is inside a transaction (which closing it rolls back, a round
        trip); a session transaction that has run no statement holds none."""
        return self._held is not None and self._held.in_transaction()

    def close(self) -> None:
        try:
            super().close()
        finally:
            held, self._held = self._held, None
            if held is not None:
                held.close()


def _rows(result: Result[Any]) -> Sequence[Row[Any]]:
    if isinstance(result, CursorResult) and not result.returns_rows:
        return ()  # an INSERT or UPDATE without RETURNING
    return result.all()


def execute_committed(
    session: OrmSession, statement: Executable, parameters: Mapping[str, Any] | None = None
) -> Sequence[Row[Any]]:
    """One statement committed on its own (and all the session had pending with it), its rows
    returned. A request's session between transactions runs it in autocommit mode: one round
    trip instead of BEGIN, the statement and COMMIT."""
    if isinstance(session, RequestSession) and not session.in_transaction():
        return session.execute_autocommitted(statement, parameters or {})
    rows = _rows(session.execute(statement, parameters))
    session.commit()
    return rows


def execute_read(
    session: OrmSession, statement: Executable, parameters: Mapping[str, Any] | None = None
) -> Sequence[Row[Any]]:
    """One read statement's rows. A request's session between transactions runs it on its own
    in autocommit mode (one statement sees one snapshot either way), saving BEGIN's round trip;
    otherwise it runs in the session's transaction."""
    if isinstance(session, RequestSession) and not session.in_transaction():
        return session.execute_autocommitted(statement, parameters or {})
    return _rows(session.execute(statement, parameters))


def request_session(bind: Engine) -> RequestSession:
    return RequestSession(bind, expire_on_commit=False)


async def get_session() -> AsyncIterator[Session]:
    """A session for the request. Opening one does no I/O (it takes a connection at its first
    statement), so it is made on the event loop rather than through a worker thread; closing it
    goes to a thread only when its connection is inside a transaction (a read that never
    committed, or a failed request), since returning that connection to the pool rolls it back.
    An idle connection goes back without a round trip."""
    session = request_session(engine)
    try:
        yield session
    finally:
        if session.in_database_transaction():
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
