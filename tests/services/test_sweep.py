"""The timeframe sweep: overdue marks, no-contact closures, batching, concurrent sweeps and the
periodic task."""

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import anyio
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, func, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.core.config import settings
from app.db.base import utc_now
from app.main import app
from app.models.enums import ReferralStatus, Role, Service
from app.models.event import ReferralEvent
from app.models.referral import InboundMessage, Referral
from app.models.rollup import UptakeRollup
from app.services import sweep
from app.services.sweep import SweepResult, run_sweep
from tests.factories import make_referral
from tests.helpers import auth

GRACE = timedelta(hours=settings.no_contact_grace_hours[Service.PHARMACY_FIRST])


def _events(session: Session, referral: Referral, action: str | None = None) -> list[ReferralEvent]:
    query = select(ReferralEvent).where(ReferralEvent.referral_id == referral.id)
    if action is not None:
        query = query.where(ReferralEvent.action == action)
    return list(session.exec(query.order_by(col(ReferralEvent.id))).all())


def _set_status(session: Session, referral: Referral, status: ReferralStatus) -> None:
    referral.status = status
    session.add(referral)
    session.commit()


def test_overdue_is_marked_once_with_an_event_for_the_referrer(session: Session) -> None:
    referral = make_referral(session)
    updated_at = referral.updated_at
    now = referral.due_at + timedelta(minutes=1)

    first = run_sweep(session=session, now=now, limit=10)
    second = run_sweep(session=session, now=now + timedelta(hours=1), limit=10)

    assert first == SweepResult(marked_overdue=1, closed_no_contact=0)
    assert second == SweepResult()
    assert referral.overdue_at == now
    assert (referral.status, referral.version) == (ReferralStatus.RECEIVED, 1)
    assert referral.updated_at == updated_at
    [event] = _events(session, referral, "overdue")
    assert event.notify_referrer is True
    assert (event.actor_subject, event.actor_org, event.actor_role) == (
        "pharmref:sweep",
        "FA001",
        Role.PHARMACY,
    )
    assert (event.from_status, event.to_status, event.version) == (
        ReferralStatus.RECEIVED,
        ReferralStatus.RECEIVED,
        1,
    )
    assert event.detail == {"automatic": True, "due_at": referral.due_at.isoformat()}


def test_nothing_happens_before_the_due_time(session: Session) -> None:
    referral = make_referral(session)

    assert run_sweep(session=session, now=referral.due_at - timedelta(seconds=1), limit=10) == (
        SweepResult()
    )
    assert referral.overdue_at is None
    assert _events(session, referral, "overdue") == []


def test_received_referral_is_closed_as_no_contact_after_the_grace_period(
    session: Session,
) -> None:
    referral = make_referral(session)
    run_sweep(session=session, now=referral.due_at + timedelta(minutes=1), limit=10)

    within = run_sweep(
        session=session, now=referral.due_at + GRACE - timedelta(minutes=1), limit=10
    )
    after = run_sweep(session=session, now=referral.due_at + GRACE, limit=10)

    assert within == SweepResult()
    assert after == SweepResult(marked_overdue=0, closed_no_contact=1)
    assert (referral.status, referral.version) == (ReferralStatus.NO_CONTACT, 2)
    assert referral.status_reason == (
        f"The patient did not make contact within {GRACE.total_seconds() / 3600:.0f} hours "
        "of the due time."
    )
    assert [e.action for e in _events(session, referral)] == ["created", "overdue", "no-contact"]
    closed = _events(session, referral, "no-contact")[0]
    assert (closed.from_status, closed.to_status, closed.version) == (
        ReferralStatus.RECEIVED,
        ReferralStatus.NO_CONTACT,
        2,
    )
    assert closed.notify_referrer is True
    assert closed.actor_subject == "pharmref:sweep"
    assert closed.detail is not None
    assert closed.detail["automatic"] is True


def test_closing_takes_precedence_when_both_timeframes_have_passed(session: Session) -> None:
    referral = make_referral(session)

    result = run_sweep(session=session, now=referral.due_at + GRACE + timedelta(days=1), limit=10)

    assert result == SweepResult(marked_overdue=0, closed_no_contact=1)
    assert referral.status is ReferralStatus.NO_CONTACT
    assert _events(session, referral, "overdue") == []


def test_accepted_referral_is_only_marked_overdue(session: Session) -> None:
    referral = make_referral(session)
    _set_status(session, referral, ReferralStatus.ACCEPTED)
    late = referral.due_at + GRACE + timedelta(days=30)

    first = run_sweep(session=session, now=late, limit=10)
    second = run_sweep(session=session, now=late + timedelta(days=1), limit=10)

    assert (first, second) == (SweepResult(marked_overdue=1), SweepResult())
    assert (referral.status, referral.overdue_at) == (ReferralStatus.ACCEPTED, late)


@pytest.mark.parametrize(
    "status",
    [s for s in ReferralStatus if s not in (ReferralStatus.RECEIVED, ReferralStatus.ACCEPTED)],
)
def test_closed_referrals_are_left_alone(session: Session, status: ReferralStatus) -> None:
    referral = make_referral(session)
    _set_status(session, referral, status)

    result = run_sweep(session=session, now=referral.due_at + GRACE + timedelta(days=1), limit=10)

    assert result == SweepResult()
    assert (referral.status, referral.overdue_at, referral.version) == (status, None, 1)


def test_grace_period_is_per_service(session: Session) -> None:
    pharmacy_first = make_referral(session)
    blood_pressure = make_referral(session, service=Service.BLOOD_PRESSURE)
    blood_pressure.due_at = pharmacy_first.due_at
    session.add(blood_pressure)
    session.commit()

    result = run_sweep(session=session, now=pharmacy_first.due_at + GRACE, limit=10)

    assert result == SweepResult(marked_overdue=1, closed_no_contact=1)
    assert pharmacy_first.status is ReferralStatus.NO_CONTACT
    assert blood_pressure.status is ReferralStatus.RECEIVED
    assert blood_pressure.overdue_at is not None


def test_service_without_a_grace_period_is_never_closed(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "no_contact_grace_hours", {})
    referral = make_referral(session)

    result = run_sweep(session=session, now=referral.due_at + timedelta(days=365), limit=10)

    assert result == SweepResult(marked_overdue=1)
    assert referral.status is ReferralStatus.RECEIVED


def test_batches_respect_the_limit(session: Session) -> None:
    closable = [make_referral(session) for _ in range(2)]
    overdue = [make_referral(session) for _ in range(3)]
    now = max(r.due_at for r in closable + overdue) + GRACE
    for referral in overdue:
        _set_status(session, referral, ReferralStatus.ACCEPTED)

    batches = []
    while (batch := run_sweep(session=session, now=now, limit=3)).total:
        batches.append(batch)

    assert batches == [
        SweepResult(marked_overdue=1, closed_no_contact=2),
        SweepResult(marked_overdue=2),
    ]
    assert all(r.status is ReferralStatus.NO_CONTACT for r in closable)
    assert all(r.overdue_at == now for r in overdue)


def test_overdue_mark_keeps_the_pharmacists_etag_valid(
    client: TestClient, session: Session
) -> None:
    referral = make_referral(session)
    headers = auth(Role.PHARMACY, "FA001")
    etag = client.get(f"/api/v1/referrals/{referral.id}", headers=headers).headers["ETag"]
    run_sweep(session=session, now=referral.due_at + timedelta(minutes=1), limit=10)

    response = client.post(
        f"/api/v1/referrals/{referral.id}/accept", headers={**headers, "If-Match": etag}
    )

    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2


def test_rows_are_claimed_with_skip_locked_on_postgresql_only() -> None:
    query = sweep.overdue_query(now=utc_now(), limit=5)
    on_postgresql = create_engine("postgresql+psycopg://nobody@localhost/none").dialect
    on_sqlite = create_engine("sqlite://").dialect

    assert "FOR UPDATE SKIP LOCKED" in str(query.compile(dialect=on_postgresql))
    assert "FOR UPDATE" not in str(query.compile(dialect=on_sqlite))


# ---- committed rows: several sessions at once ------------------------------------------------


@pytest.fixture
def committed(engine: Engine) -> Iterator[list[uuid.UUID]]:
    """Ids of referrals a test commits for real (the per-test rollback cannot span threads);
    they, their events and their intake messages are deleted afterwards."""
    ids: list[uuid.UUID] = []
    yield ids
    with Session(engine) as session:
        session.execute(delete(ReferralEvent).where(col(ReferralEvent.referral_id).in_(ids)))
        session.execute(delete(InboundMessage).where(col(InboundMessage.referral_id).in_(ids)))
        session.execute(delete(Referral).where(col(Referral.id).in_(ids)))
        session.execute(delete(UptakeRollup))
        session.commit()


def _commit_overdue(engine: Engine, ids: list[uuid.UUID], count: int) -> None:
    """`count` referrals due an hour ago (overdue, but within every grace period)."""
    with Session(engine) as session:
        for _ in range(count):
            referral = make_referral(session)
            ids.append(referral.id)
            referral.due_at = utc_now() - timedelta(hours=1)
            session.add(referral)
        session.commit()


def _overdue_events(engine: Engine, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    with Session(engine) as session:
        rows = session.exec(
            select(ReferralEvent.referral_id, func.count())
            .where(ReferralEvent.action == "overdue", col(ReferralEvent.referral_id).in_(ids))
            .group_by(col(ReferralEvent.referral_id))
        ).all()
    return dict(rows)


def test_drain_sweeps_batch_after_batch(engine: Engine, committed: list[uuid.UUID]) -> None:
    _commit_overdue(engine, committed, 5)

    assert sweep.drain(bind=engine, limit=2) == SweepResult(marked_overdue=5)
    assert sweep.drain(bind=engine, limit=2) == SweepResult()
    assert _overdue_events(engine, committed) == dict.fromkeys(committed, 1)


@pytest.mark.postgres_only
def test_concurrent_sweeps_mark_each_referral_once(
    engine: Engine, committed: list[uuid.UUID]
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: concurrent sweeps need PostgreSQL")
    _commit_overdue(engine, committed, 50)
    start = threading.Barrier(2)

    def sweeper() -> list[SweepResult]:
        start.wait(timeout=10)
        results = []
        with Session(engine) as session:
            while (batch := run_sweep(session=session, now=utc_now(), limit=3)).total:
                results.append(batch)
        return results

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [f.result(timeout=60) for f in [pool.submit(sweeper), pool.submit(sweeper)]]

    assert sum(b.marked_overdue for run in runs for b in run) == 50
    assert _overdue_events(engine, committed) == dict.fromkeys(committed, 1)


@pytest.mark.postgres_only
def test_a_sweep_skips_rows_another_sweep_holds(engine: Engine, committed: list[uuid.UUID]) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no row locks: SKIP LOCKED needs PostgreSQL")
    _commit_overdue(engine, committed, 6)
    with Session(engine) as holder, Session(engine) as other:
        held = holder.exec(sweep.overdue_query(now=utc_now(), limit=2)).all()
        other.execute(
            text("SET LOCAL lock_timeout = '5s'")
        )  # waiting instead of skipping would fail

        skipped = run_sweep(session=other, now=utc_now(), limit=10)
        holder.commit()
        rest = run_sweep(session=other, now=utc_now(), limit=10)

    assert len(held) == 2
    assert (skipped, rest) == (SweepResult(marked_overdue=4), SweepResult(marked_overdue=2))
    assert _overdue_events(engine, committed) == dict.fromkeys(committed, 1)


# ---- the periodic task -----------------------------------------------------------------------


def test_periodic_sweep_survives_errors(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def batch() -> SweepResult:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return SweepResult(marked_overdue=1) if len(calls) == 2 else SweepResult()

    async def main() -> None:
        with anyio.move_on_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(lambda: sweep.sweep_periodically(interval=0.01, batch=batch))
                while len(calls) < 4:
                    await anyio.sleep(0.01)
                tasks.cancel_scope.cancel()

    with caplog.at_level(logging.INFO, logger="pharmref.sweep"):
        anyio.run(main)

    assert len(calls) >= 4
    messages = [r.getMessage() for r in caplog.records]
    assert "The sweep failed; trying again in 0.01 seconds." in messages
    assert "Sweep: 1 marked overdue, 0 closed as no-contact." in messages


def test_app_runs_the_sweep_while_up_and_stops_it_on_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def batch(*, bind: Engine, limit: int) -> SweepResult:
        assert limit == settings.sweep_batch_size
        assert bind is not None
        calls.append(1)
        return SweepResult()

    monkeypatch.setattr(settings, "sweep_interval_seconds", 0.01)
    monkeypatch.setattr(sweep, "sweep_batch", batch)

    with TestClient(app):
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    stopped_at = len(calls)
    time.sleep(0.05)

    assert stopped_at >= 3
    assert len(calls) == stopped_at


def test_app_without_an_interval_runs_no_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(settings, "sweep_interval_seconds", 0)
    monkeypatch.setattr(sweep, "sweep_batch", lambda **_: calls.append(1))

    with TestClient(app):
        time.sleep(0.05)

    assert calls == []
