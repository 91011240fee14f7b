"""The database-backed fixed-window counter: exact counts across sessions (processes) and
threads, the window reset, Retry-After, clock skew between hosts, and tidying."""

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.db.session import request_session
from app.models.rate_limit import RateLimitCounter
from app.services import rate_limit

T0 = datetime(2026, 11, 22, 10, 15, 20, tzinfo=UTC)  # 40 seconds before its window ends


def test_counts_until_the_limit_then_refuses_with_seconds_to_the_window_end(
    session: Session,
) -> None:
    decisions = [
        rate_limit.hit(session=session, key="client:A:x", limit=3, now=T0 + timedelta(seconds=i))
        for i in range(5)
    ]

    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.count for d in decisions] == [1, 2, 3, 4, 5]
    assert [d.retry_after for d in decisions] == [40, 39, 38, 37, 36]


def test_next_window_starts_the_count_again(session: Session) -> None:
    for _ in range(4):
        rate_limit.hit(session=session, key="client:A:x", limit=3, now=T0)

    later = rate_limit.hit(
        session=session, key="client:A:x", limit=3, now=T0 + timedelta(seconds=40)
    )

    assert (later.allowed, later.count, later.retry_after) == (True, 1, 60)
    assert len(session.exec(select(RateLimitCounter)).all()) >= 1


def test_keys_are_counted_separately(session: Session) -> None:
    for _ in range(3):
        rate_limit.hit(session=session, key="client:A:x", limit=3, now=T0)

    other = rate_limit.hit(session=session, key="client:B:y", limit=3, now=T0)

    assert (other.allowed, other.count) == (True, 1)


def test_a_host_with_a_slow_clock_counts_in_the_newer_window(session: Session) -> None:
    rate_limit.hit(session=session, key="client:A:x", limit=3, now=T0)

    behind = rate_limit.hit(
        session=session, key="client:A:x", limit=3, now=T0 - timedelta(minutes=1)
    )

    assert behind.count == 2
    assert behind.retry_after == 100  # until the end of the newer window, by this host's clock


def test_long_keys_are_hashed_to_fit() -> None:
    key = rate_limit.client_key(org="A81001", subject="s" * 500)

    assert key.startswith("sha256:")
    assert len(key) <= 200
    assert rate_limit.client_key(org="A81001", subject="system-1") == "client:A81001:system-1"
    assert rate_limit.client_key(ip="203.0.113.9") == "ip:203.0.113.9"


def test_purge_removes_only_clients_not_seen_since_before_the_last_window(
    session: Session,
) -> None:
    rate_limit.hit(session=session, key="client:old:x", limit=3, now=T0 - timedelta(minutes=5))
    rate_limit.hit(session=session, key="client:last:x", limit=3, now=T0 - timedelta(minutes=1))
    rate_limit.hit(session=session, key="client:now:x", limit=3, now=T0)

    rate_limit.purge_stale(session=session, now=T0)

    keys = set(session.exec(select(RateLimitCounter.client_key)).all())
    assert {"client:last:x", "client:now:x"} <= keys
    assert "client:old:x" not in keys


# ---- committed: several processes and threads ----------------------------------------------------


@pytest.fixture
def key(engine: Engine) -> Iterator[str]:
    value = f"client:TEST:{uuid.uuid4()}"
    yield value
    with Session(engine) as session:
        session.execute(delete(RateLimitCounter).where(col(RateLimitCounter.client_key) == value))
        session.commit()


@pytest.mark.parametrize("make_session", [Session, request_session], ids=["session", "request"])
def test_sessions_of_different_processes_share_one_count(
    engine: Engine, key: str, make_session: Callable[[Engine], Session]
) -> None:
    """Also through a request's session, which counts outside any transaction (autocommit)."""
    with make_session(engine) as first, make_session(engine) as second:
        a = rate_limit.hit(session=first, key=key, limit=2, now=T0)
        b = rate_limit.hit(session=second, key=key, limit=2, now=T0)
        c = rate_limit.hit(session=first, key=key, limit=2, now=T0)

    assert [a.count, b.count, c.count] == [1, 2, 3]
    assert [a.allowed, b.allowed, c.allowed] == [True, True, False]


def test_concurrent_hits_are_counted_exactly(engine: Engine, key: str) -> None:
    threads, each, limit = 8, 10, 25
    decisions: list[rate_limit.Decision] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def client() -> None:
        start.wait()
        with Session(engine) as session:
            for _ in range(each):
                decision = rate_limit.hit(session=session, key=key, limit=limit, now=T0)
                with lock:
                    decisions.append(decision)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert sorted(d.count for d in decisions) == list(range(1, threads * each + 1))
    assert sum(d.allowed for d in decisions) == limit


def test_counters_are_unlogged_on_postgresql(engine: Engine) -> None:
    """Counting writes no WAL, so a request's count commits without a disk flush."""
    if engine.dialect.name != "postgresql":
        pytest.skip("UNLOGGED tables are PostgreSQL's")
    with engine.connect() as connection:
        persistence = connection.execute(
            text("SELECT relpersistence FROM pg_class WHERE relname = 'rate_limit_counter'")
        ).scalar_one()

    assert persistence == "u"
