"""The timeframe sweep: mark open referrals overdue once their due time passes, and close received
referrals as no-contact once the service's grace period after it has passed too.

| Rule        | Which referrals                                              | Change                      |
|-------------|--------------------------------------------------------------|-----------------------------|
| no-contact  | received, `due_at + no_contact_grace_hours[service] <= now`  | lifecycle transition to     |
|             | (a service missing from the setting is never closed)         | no-contact: version + 1,    |
|             |                                                              | event flagged for referrer  |
| overdue     | received or accepted, `due_at <= now`, `overdue_at` unset    | `overdue_at = now` and an   |
|             |                                                              | `overdue` event flagged for |
|             |                                                              | the referrer                |

Marking overdue keeps the version and `updated_at`: the public referral does not change, and a
pharmacist acting on the version they read must not get a 412 because the clock ticked.

Every event is recorded for the sweep as actor: subject `pharmref:sweep`, acting for the
referral's pharmacy in the pharmacy role (whose timeframe it is), so `actor_role` stays a role a
token can carry and no "system" role exists that a token could claim.

Several processes or hosts may sweep at once (each API worker runs one; `pharmref sweep` is
another). Each batch is one transaction: on PostgreSQL it claims its rows with
`SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent sweeps take disjoint rows and never wait for one
another; SQLite has no row locks and SQLAlchemy leaves the clause out there, but SQLite admits one
writer at a time. On both, every write is conditional on the row being as it was read (the version
compare-and-set, `overdue_at IS NULL`), so a row changed in between is skipped, never done twice.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from sqlalchemy import BindParameter, and_, bindparam, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from app.core.config import settings
from app.db import writes
from app.db.base import utc_now
from app.models.enums import ReferralStatus, Role
from app.models.referral import Referral
from app.models.user import User
from app.services import lifecycle

logger = logging.getLogger("pharmref.sweep")

SWEEP_SUBJECT = "pharmref:sweep"


@dataclass(frozen=True, slots=True)
class SweepResult:
    marked_overdue: int = 0
    closed_no_contact: int = 0

    @property
    def total(self) -> int:
        return self.marked_overdue + self.closed_no_contact

    def __add__(self, other: "SweepResult") -> "SweepResult":
        return SweepResult(
            marked_overdue=self.marked_overdue + other.marked_overdue,
            closed_no_contact=self.closed_no_contact + other.closed_no_contact,
        )


def sweep_actor(pharmacy_ods: str) -> User:
    return User(subject=SWEEP_SUBJECT, org=pharmacy_ods, role=Role.PHARMACY)


def _claim(query: SelectOfScalar[Referral], limit: int) -> SelectOfScalar[Referral]:
    """The oldest `limit` matching rows. PostgreSQL locks them for this transaction and skips
    rows another sweep holds; SQLAlchemy's SQLite dialect leaves FOR UPDATE out altogether
    (SQLite locks the whole database for a writer; tests/services/test_sweep.py checks both).
    populate_existing: a referral already in the session is read as it is now."""
    return (
        query.order_by(col(Referral.due_at), col(Referral.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )


def no_contact_query(*, now: datetime, limit: int) -> SelectOfScalar[Referral] | None:
    """Received referrals past their due time and grace period (None when no service has one)."""
    grace = settings.no_contact_grace_hours
    windows = [
        and_(col(Referral.service) == service, col(Referral.due_at) <= now - timedelta(hours=hours))
        for service, hours in grace.items()
    ]
    if not windows:
        return None
    # The shortest grace bounds them all: a range on the (status, due_at) index, so the claim
    # reads only received referrals past it, not every received referral.
    earliest = now - timedelta(hours=min(grace.values()))
    return _claim(
        select(Referral).where(
            Referral.status == ReferralStatus.RECEIVED,
            col(Referral.due_at) <= earliest,
            or_(*windows),
        ),
        limit,
    )


def overdue_query(*, now: datetime, limit: int) -> SelectOfScalar[Referral]:
    """Open referrals past their due time that are not yet marked overdue."""
    # The states as literals, so PostgreSQL can match the partial index
    # ix_referral_due_at_open_unmarked even in a generic plan of the prepared statement.
    open_states: BindParameter[list[str]] = bindparam(
        "open_states", sorted(lifecycle.OPEN), expanding=True, literal_execute=True
    )
    return _claim(
        select(Referral).where(
            col(Referral.status).in_(open_states),
            col(Referral.due_at) <= now,
            col(Referral.overdue_at).is_(None),
        ),
        limit,
    )


def _close_no_contact(*, session: Session, now: datetime, limit: int) -> tuple[int, int]:
    """(rows claimed, referrals closed)."""
    query = no_contact_query(now=now, limit=limit)
    if query is None:
        return 0, 0
    claimed = session.exec(query).all()
    closed = 0
    for referral in claimed:
        hours = settings.no_contact_grace_hours[referral.service]
        try:
            lifecycle.apply_transition(
                session=session,
                referral=referral,
                caller=sweep_actor(referral.pharmacy_ods),
                target=ReferralStatus.NO_CONTACT,
                expected_version=referral.version,
                action="no-contact",
                reason=f"The patient did not make contact within {hours} hours of the due time.",
                detail={"automatic": True, "due_at": referral.due_at.isoformat()},
            )
            # Each referral's change is written (and its version checked) before the next.
            writes.write_pending(session)
        except (lifecycle.PreconditionFailed, writes.StaleWrite):
            session.expire(referral)
            continue  # changed since it was read: the next sweep looks at it afresh
        closed += 1
        session.expire(referral)
    return len(claimed), closed


def _mark_overdue(*, session: Session, now: datetime, limit: int) -> int:
    claimed = session.exec(overdue_query(now=now, limit=limit)).all()
    marked = 0
    for referral in claimed:
        changed = session.execute(
            update(Referral)
            .where(
                col(Referral.id) == referral.id,
                col(Referral.version) == referral.version,
                col(Referral.overdue_at).is_(None),
            )
            .values(overdue_at=now)
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            continue
        lifecycle.record_event(
            session=session,
            referral_id=referral.id,
            caller=sweep_actor(referral.pharmacy_ods),
            action="overdue",
            version=referral.version,
            from_status=referral.status,
            to_status=referral.status,
            detail={"automatic": True, "due_at": referral.due_at.isoformat()},
            notify_referrer=True,
        )
        marked += 1
        session.expire(referral)
    return marked


def run_sweep(*, session: Session, now: datetime, limit: int) -> SweepResult:
    """One batch in one transaction: close up to `limit` unanswered referrals, then mark overdue
    as many as the rest of `limit` allows. Call again until it returns nothing to do."""
    claimed, closed = _close_no_contact(session=session, now=now, limit=limit)
    marked = (
        _mark_overdue(session=session, now=now, limit=limit - claimed) if claimed < limit else 0
    )
    session.commit()
    return SweepResult(marked_overdue=marked, closed_no_contact=closed)


def sweep_batch(*, bind: Engine, limit: int) -> SweepResult:
    """One batch in its own session, at the current time."""
    with Session(bind) as session:
        return run_sweep(session=session, now=utc_now(), limit=limit)


def drain(*, bind: Engine, limit: int) -> SweepResult:
    """Sweep batch after batch until one finds nothing to do."""
    swept = SweepResult()
    while (batch := sweep_batch(bind=bind, limit=limit)).total:
        swept += batch
    return swept


async def sweep_periodically(*, interval: float, batch: Callable[[], SweepResult]) -> None:
    """Drain now and every `interval` seconds until cancelled. Batches run in a worker thread
    (the sessions are synchronous); cancelling waits for the batch in hand to commit. A failure
    is logged and the sweep carries on at the next interval."""
    while True:
        swept = SweepResult()
        try:
            while (done := await anyio.to_thread.run_sync(batch)).total:
                swept += done
        except Exception:
            logger.exception("The sweep failed; trying again in %s seconds.", interval)
        if swept.total:
            logger.info(
                "Sweep: %d marked overdue, %d closed as no-contact.",
                swept.marked_overdue,
                swept.closed_no_contact,
            )
        await anyio.sleep(interval)
