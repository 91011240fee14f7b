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

import asyncio
import logging
import select
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar
from fastapi import Depends, Request
from psycopg.pq import ConnStatus
from sqlalchemy import Executable, Result, event
from sqlalchemy.engine import Connection, CursorResult, Engine, Row
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, create_engine

from app.core.config import settings

logger = logging.getLogger("pharmref.db")

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
        self._first: Callable[[Connection], None] | None = None

    def get_bind(self, *_args: Any, **_kwargs: Any) -> Connection:
        if self._held is None:
            self._held = self._pool.connect()
            first, self._first = self._first, None
            if first is not None:
                first(self._held)
        return self._held

    def before_first_statement(self, work: Callable[[Connection], None]) -> None:
        """Run `work` on the request's connection just before its first statement, in the
        worker thread that runs it (the rate limit's count: no thread hand-off of its own);
        at once if the session is already connected. A request that makes no statement has
        it run when the session closes."""
        if self._held is not None:
            work(self._held)
        else:
            self._first = work

    @property
    def has_pending_first_statement(self) -> bool:
        return self._first is not None

    def execute_autocommitted(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> Sequence[Row[Any]]:
        """Run one statement on its own, committed as it runs, and return its rows. On
        PostgreSQL in autocommit mode, so without a transaction's BEGIN and COMMIT round trips,
        then back to transactions for what the request does next. Only between the session's
        transactions.

        A SELECT of table models runs through the session, which loads them as any query does;
        anything else runs on the connection, without an autoflush. Changes gathered for the
        request's write (app/db/writes.py) stay pending meanwhile."""
        if self.in_database_transaction():
            raise RuntimeError("execute_autocommitted inside a transaction")
        connection = self.get_bind()
        if not _loads_entities(statement):
            return run_autocommitted(connection, statement, parameters)
        if self.new or self.dirty or self.deleted:
            raise RuntimeError("an autocommitted read would flush the session's ORM changes")
        with autocommit(connection):
            self.info[READING] = True
            try:
                rows = _rows(self.execute(statement, parameters))
                self.commit()  # ends the session's autobegun transaction: no round trip
            except BaseException:
                self.rollback()
                raise
            finally:
                self.info.pop(READING, None)
        return rows

    def in_database_transaction(self) -> bool:
        """Whether its connection is inside a transaction (which closing it rolls back, a round
        trip). A session transaction that has run no statement holds none: adding an object
        begins one without a statement, and reads between transactions stay autocommitted."""
        return self._held is not None and self._held.in_transaction()

    def close(self) -> None:
        """Close; run what waits for the first statement if none was made (its outcome no
        longer changes the answer, which has been given)."""
        if self._first is not None:
            try:
                self.get_bind()
            except Exception:
                logger.warning(
                    "work deferred to the first statement failed at close", exc_info=True
                )
        try:
            super().close()
        finally:
            held, self._held = self._held, None
            if held is not None:
                held.close()


def run_autocommitted(
    connection: Connection, statement: Executable, parameters: Mapping[str, Any]
) -> Sequence[Row[Any]]:
    """One statement on the connection, committed as it runs: on PostgreSQL in autocommit mode
    (no BEGIN or COMMIT round trip), elsewhere in a transaction of its own."""
    with autocommit(connection):
        try:
            rows = _rows(connection.execute(statement, parameters))
            connection.commit()  # ends the Connection's autobegun scope: no round trip
        except BaseException:
            connection.rollback()
            raise
    return rows


@contextmanager
def autocommit(connection: Connection) -> Iterator[None]:
    """psycopg's own autocommit switch for the span, not SQLAlchemy's isolation-level option:
    a flag set on an idle connection, no statement and none of SQLAlchemy's bookkeeping.
    SQLAlchemy's begin and commit around the statement are then no-ops at the server."""
    if connection.dialect.name != "postgresql":
        yield
        return
    driver: Any = connection.connection.driver_connection
    driver.autocommit = True
    try:
        yield
    finally:
        if not driver.closed:
            driver.autocommit = False


def _loads_entities(statement: Executable) -> bool:
    """Whether a statement selects whole table models (which only the session can load)."""
    if not getattr(statement, "is_select", False):
        return False
    descriptions = getattr(statement, "column_descriptions", ())
    return any(
        d.get("entity") is not None and d.get("expr") is d.get("entity") for d in descriptions
    )


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
    if isinstance(session, RequestSession) and not session.in_database_transaction():
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
    if isinstance(session, RequestSession) and not session.in_database_transaction():
        return session.execute_autocommitted(statement, parameters or {})
    return _rows(session.execute(statement, parameters))


def request_session(bind: Engine) -> RequestSession:
    return RequestSession(bind, expire_on_commit=False)


# At most one session per pooled connection in each worker process (each has one event loop).
# FastAPI validates a sync route's response in a worker thread after the route returns, while its
# session (and, after a read, the connection) is still open. With more sessions than connections,
# a burst left every worker thread waiting for a connection held by a request waiting for a
# thread, until the pool timeout turned them all into 503s. Requests beyond the limit wait here,
# on the event loop, without holding a thread.
SESSION_LIMIT = settings.db_pool_size + settings.db_max_overflow
_session_slots: RunVar[asyncio.Semaphore] = RunVar("pharmref_session_slots")
# Where a request's open sessions are kept until RequestContextMiddleware closes them.
REQUEST_SESSIONS = "pharmref.sessions"


def _slots() -> asyncio.Semaphore:
    try:
        return _session_slots.get()
    except LookupError:
        slots = asyncio.Semaphore(SESSION_LIMIT)
        _session_slots.set(slots)
        return slots


async def get_session(request: Request) -> Session:
    """A session for the request, closed by `close_request_sessions` once the response is sent
    (RequestContextMiddleware). Opening one does no I/O (it takes a connection at its first
    statement), so it is made on the event loop.

    A plain dependency rather than a `yield` one: FastAPI runs a generator dependency inside
    context managers, cancel scopes and a semaphore of its own, which cost a JSON referral about
    2 % of its instructions (`bench/profile_intake.py` under cachegrind)."""
    sessions = request.scope.get(REQUEST_SESSIONS)
    if sessions is None:
        raise RuntimeError("get_session needs RequestContextMiddleware, which closes the session")
    slots = _slots()
    await slots.acquire()
    try:
        session = request_session(engine)
    except BaseException:
        slots.release()
        raise
    sessions.append((session, slots))
    return session


async def close_request_sessions(scope: MutableMapping[str, Any]) -> None:
    """Close the sessions a request opened and give back their slots. Closing goes to a worker
    thread only when a session's connection is inside a transaction (a read that never committed,
    or a failed request), since returning that connection to the pool rolls it back, or when its
    first statement is still pending (the rate limit's count); an idle connection goes back
    without a round trip."""
    failed: BaseException | None = None
    for session, slots in scope.pop(REQUEST_SESSIONS, ()):
        try:
            await _close(session)
        except BaseException as exc:  # the other sessions are still closed, then it is raised
            failed = failed or exc
        finally:
            slots.release()
    if failed is not None:
        raise failed


async def _close(session: RequestSession) -> None:
    if session.in_database_transaction() or session.has_pending_first_statement:
        # Its own limiter: a close must never wait for a worker thread held by a request that is
        # waiting for this connection.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(session.close, limiter=anyio.CapacityLimiter(1))
    else:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]
