"""The request session: one pooled connection for the whole request, across its commits, and
single statements run outside any transaction (autocommit on PostgreSQL): the rate limit's
count, the inbox page's read and the audit of that read."""

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import delete, event, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, create_engine
from sqlmodel import select as sqlmodel_select
from starlette.requests import Request

from app.db import session as db_session
from app.db.session import (
    REQUEST_SESSIONS,
    RequestSession,
    close_request_sessions,
    execute_committed,
    execute_read,
    get_session,
    make_engine,
    request_session,
)
from app.models.organisation import Organisation
from app.models.rate_limit import RateLimitCounter

_counter = RateLimitCounter.__table__  # type: ignore[attr-defined]


@pytest.fixture
def pooled(engine: Engine) -> Iterator[Engine]:
    """An engine of its own on the test database, so its checkouts can be counted."""
    own = create_engine(engine.url.render_as_string(hide_password=False))
    yield own
    own.dispose()


@pytest.fixture
def keys(engine: Engine) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    with Session(engine) as session:
        session.execute(delete(RateLimitCounter).where(col(RateLimitCounter.client_key).in_(made)))
        session.commit()


def _new_key(keys: list[str]) -> str:
    keys.append(f"client:TEST:{uuid.uuid4()}")
    return keys[-1]


def _stored(engine: Engine, key: str) -> int | None:
    """The key's hits as another connection sees them (committed data only)."""
    with engine.connect() as other:
        return other.execute(
            select(_counter.c.hits).where(_counter.c.client_key == key)
        ).scalar_one_or_none()


def _add(key: str) -> Any:
    return insert(_counter).values(client_key=key, window_index=1, hits=1)


def test_one_checkout_for_a_request_that_commits_twice(
    pooled: Engine, engine: Engine, keys: list[str]
) -> None:
    checkouts: list[int] = []
    event.listen(pooled, "checkout", lambda *_: checkouts.append(1))
    first, second = _new_key(keys), _new_key(keys)

    with request_session(pooled) as session:
        session.execute(_add(first))
        session.commit()
        session.execute(_add(second))
        session.commit()

    assert len(checkouts) == 1
    assert _stored(engine, first) == 1
    assert _stored(engine, second) == 1
    assert pooled.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_autocommitted_statement_is_committed_before_the_session_commits(
    pooled: Engine, engine: Engine, keys: list[str]
) -> None:
    key = _new_key(keys)
    with request_session(pooled) as session:
        rows = session.execute_autocommitted(_add(key).returning(_counter.c.hits), {})

        assert [row.hits for row in rows] == [1]
        assert not session.in_transaction()
        assert _stored(engine, key) == 1


def test_what_follows_an_autocommitted_statement_is_a_transaction_again(
    pooled: Engine, engine: Engine, keys: list[str]
) -> None:
    counted, pending = _new_key(keys), _new_key(keys)
    with request_session(pooled) as session:
        session.execute_autocommitted(_add(counted), {})
        session.execute(_add(pending))

        assert _stored(engine, pending) is None  # not yet committed: a transaction
        session.rollback()

    assert _stored(engine, pending) is None
    assert _stored(engine, counted) == 1


def test_a_failed_autocommitted_statement_leaves_the_session_usable(
    pooled: Engine, engine: Engine, keys: list[str]
) -> None:
    key = _new_key(keys)
    with request_session(pooled) as session:
        with pytest.raises(DBAPIError):
            session.execute_autocommitted(text("SELECT * FROM no_such_table"), {})
        session.execute(_add(key))
        assert _stored(engine, key) is None
        session.commit()

    assert _stored(engine, key) == 1


def test_autocommitted_statement_is_refused_inside_a_transaction(
    pooled: Engine, keys: list[str]
) -> None:
    with request_session(pooled) as session:
        session.execute(_add(_new_key(keys)))
        with pytest.raises(RuntimeError):
            session.execute_autocommitted(_add(_new_key(keys)), {})
        session.rollback()


def test_a_read_between_transactions_opens_none(pooled: Engine, keys: list[str]) -> None:
    key = _new_key(keys)
    with request_session(pooled) as session:
        session.execute_autocommitted(_add(key), {})
        query = select(_counter.c.hits).where(_counter.c.client_key == key)

        assert [row.hits for row in execute_read(session, query)] == [1]
        assert not session.in_transaction()


def test_a_read_inside_a_transaction_sees_its_writes(pooled: Engine, keys: list[str]) -> None:
    key = _new_key(keys)
    with request_session(pooled) as session:
        session.execute(_add(key))
        query = select(_counter.c.hits).where(_counter.c.client_key == key)

        assert [row.hits for row in execute_read(session, query)] == [1]
        assert session.in_transaction()
        session.rollback()


@pytest.mark.parametrize("make_session", [Session, request_session], ids=["session", "request"])
def test_execute_committed_commits_on_any_session(
    pooled: Engine, engine: Engine, keys: list[str], make_session: Callable[[Engine], Session]
) -> None:
    key = _new_key(keys)
    with make_session(pooled) as session:
        rows = execute_committed(session, _add(key).returning(_counter.c.hits))

        assert [row.hits for row in rows] == [1]
        assert not session.in_transaction()
        assert _stored(engine, key) == 1


def test_an_entity_read_between_transactions_opens_none(pooled: Engine) -> None:
    with request_session(pooled) as session:
        rows = execute_read(
            session, sqlmodel_select(Organisation).where(col(Organisation.ods_code) == "FA001")
        )

        organisation = rows[0][0]
        assert isinstance(organisation, Organisation)
        assert organisation in session  # loaded into the session as any query loads it
        assert not session.in_transaction()


def test_a_connection_the_server_dropped_is_replaced_at_checkout_without_a_ping(
    engine: Engine,
) -> None:
    """The pool checks a connection it hands out without a round trip (no `SELECT 1`): one the
    server has closed since it was last used is replaced, and the request never sees it."""
    if engine.dialect.name != "postgresql":
        pytest.skip("needs a PostgreSQL server to drop the connection")
    own = make_engine(engine.url.render_as_string(hide_password=False))
    statements: list[str] = []
    event.listen(own, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        with request_session(own) as session:
            (row,) = execute_read(session, text("SELECT pg_backend_pid()"))
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": row[0]})
        time.sleep(0.2)  # the server's goodbye reaches the pooled connection's socket
        statements.clear()
        with request_session(own) as session:
            (again,) = execute_read(session, text("SELECT pg_backend_pid()"))
    finally:
        own.dispose()

    assert again[0] != row[0]
    assert statements == ["SELECT pg_backend_pid()"]


# ---- the request's sessions: opened by get_session, closed by the middleware ----------------------


def _request(scope_extra: dict[str, Any]) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], **scope_extra})


def test_sessions_beyond_the_limit_wait_for_one_to_be_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At most SESSION_LIMIT sessions at once in a worker: the next request waits (on the event
    loop, holding no thread) until a request's sessions are closed, then gets its own."""
    monkeypatch.setattr(db_session, "SESSION_LIMIT", 2)

    async def scenario() -> list[str]:
        scopes: list[dict[str, Any]] = [{REQUEST_SESSIONS: []} for _ in range(3)]
        first = await get_session(_request(scopes[0]))
        second = await get_session(_request(scopes[1]))
        third = asyncio.ensure_future(get_session(_request(scopes[2])))
        await asyncio.sleep(0.05)
        seen = [f"waiting={not third.done()}"]
        await close_request_sessions(scopes[0])
        opened = await asyncio.wait_for(third, timeout=5)
        seen += [f"opened={opened is not first and opened is not second}"]
        for scope in scopes[1:]:
            await close_request_sessions(scope)
        return seen

    assert asyncio.run(scenario()) == ["waiting=True", "opened=True"]


def test_a_request_session_is_closed_and_its_connection_returned(pooled: Engine) -> None:
    """The middleware's close hands the connection back to the pool (rolled back if the request
    left a transaction open) and forgets the session."""
    scope: dict[str, Any] = {REQUEST_SESSIONS: []}

    async def scenario() -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(db_session, "engine", pooled)
            session = await get_session(_request(scope))
        assert isinstance(session, RequestSession)
        session.execute(select(1))  # autobegins: the connection is inside a transaction
        assert session.in_database_transaction()
        await close_request_sessions(scope)

    asyncio.run(scenario())
    assert REQUEST_SESSIONS not in scope
    assert pooled.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_get_session_refuses_a_request_no_middleware_will_close() -> None:
    with pytest.raises(RuntimeError, match="RequestContextMiddleware"):
        asyncio.run(get_session(_request({})))


def test_a_failing_close_still_closes_the_other_sessions_and_frees_every_slot(
    pooled: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_session, "engine", pooled)
    monkeypatch.setattr(db_session, "SESSION_LIMIT", 2)
    scope: dict[str, Any] = {REQUEST_SESSIONS: []}

    async def scenario() -> list[str]:
        broken = await get_session(_request(scope))
        other = await get_session(_request(scope))
        other.execute(select(1))  # holds a connection, inside a transaction
        monkeypatch.setattr(broken, "close", _raise_closing_failed)
        with pytest.raises(RuntimeError, match="closing failed"):
            await close_request_sessions(scope)
        # Both slots are free again: two more sessions open at once without waiting.
        again: dict[str, Any] = {REQUEST_SESSIONS: []}
        await asyncio.wait_for(get_session(_request(again)), timeout=1)
        await asyncio.wait_for(get_session(_request(again)), timeout=1)
        await close_request_sessions(again)
        return [f"checked out={pooled.pool.checkedout()}"]  # type: ignore[attr-defined]

    assert asyncio.run(scenario()) == ["checked out=0"]


def _raise_closing_failed() -> None:
    raise RuntimeError("closing failed")
