"""Query plans that matter at scale. The pharmacy inbox reads its page straight off the inbox
index, in order: no sort of every referral the pharmacy holds (at a million referrals, the sort
made the busiest inbox 8.8 ms). The sweep's claims read only the rows they may claim (at a
million, each read 30,000-40,000 rows a minute in every worker)."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlmodel import Session

from app.db.base import utc_now
from app.models.enums import ReferralStatus, Role
from app.services import referrals as referral_service
from app.services import sweep
from tests.factories import caller, make_referral

PHARMACY = caller(Role.PHARMACY, "FA001")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def inbox(session: Session) -> None:
    for i in range(12):
        referral = make_referral(session, priority="urgent" if i % 4 == 0 else "routine")
        referral.due_at = T0 + timedelta(minutes=17 * i)
        session.add(referral)
    session.commit()


def _sent(session: Session, run: Callable[[], Any]) -> tuple[str, Any]:
    """The last SQL statement on referral that `run` sends, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM referral" in statement:
            seen.append((statement, parameters))

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(connection, "before_cursor_execute", capture)
    return seen[-1]


def _captured(session: Session, **kwargs: Any) -> tuple[str, Any]:
    """The SQL and parameters list_referrals sends for `kwargs`."""

    def run() -> None:
        page, _ = referral_service.list_referrals(
            session=session,
            caller=PHARMACY,
            filters=referral_service.ReferralFilter(status=ReferralStatus.RECEIVED),
            cursor=None,
            limit=5,
            **kwargs,
        )
        assert len(page) == 5

    return _sent(session, run)


def _plan(session: Session, statement: str, parameters: Any, *, disable: str = "sort") -> str:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # A sort the index cannot spare is then still planned (at a prohibitive cost): no
        # Sort node in the plan means the index hands the rows over in the inbox's order.
        for method in disable.split(","):
            connection.execute(text(f"SET LOCAL enable_{method} = off"))
        rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).all()
        return "\n".join(row[0] for row in rows)
    rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return "\n".join(str(row[-1]) for row in rows)


@pytest.mark.usefixtures("inbox")
def test_the_inbox_page_comes_off_the_index_without_a_sort(session: Session) -> None:
    plan = _plan(session, *_captured(session, order=referral_service.ReferralOrder.URGENCY))

    assert "ix_referral_pharmacy_ods_status_priority_due_at" in plan, plan
    assert "Sort" not in plan, plan  # PostgreSQL
    assert "TEMP B-TREE" not in plan, plan  # SQLite


@pytest.mark.usefixtures("inbox")
def test_the_newest_order_still_sorts(session: Session) -> None:
    """The check can fail: an order the index does not hold is planned with a sort."""
    plan = _plan(session, *_captured(session, order=referral_service.ReferralOrder.NEWEST))

    assert "Sort" in plan or "TEMP B-TREE" in plan, plan


def test_the_overdue_claim_reads_only_open_unmarked_referrals(session: Session) -> None:
    """Its partial index, matched even by a generic plan (the states are literals)."""
    if session.connection().dialect.name != "postgresql":
        pytest.skip(
            "SQLite's planner, without statistics, prefers (status, due_at): fine at its size"
        )
    now = utc_now()
    statement, parameters = _sent(
        session, lambda: session.exec(sweep.overdue_query(now=now, limit=10)).all()
    )
    assert "'accepted'" in statement
    assert "'received'" in statement

    plan = _plan(session, statement, parameters, disable="seqscan,bitmapscan")

    assert "ix_referral_due_at_open_unmarked" in plan, plan


def test_the_no_contact_claim_reads_only_referrals_past_the_shortest_grace(
    session: Session,
) -> None:
    """A range on (status, due_at), not every received referral."""
    now = utc_now()
    query = sweep.no_contact_query(now=now, limit=10)
    assert query is not None
    statement, parameters = _sent(session, lambda: session.exec(query).all())

    plan = _plan(session, statement, parameters, disable="seqscan,bitmapscan")

    assert "ix_referral_status_due_at" in plan, plan
    if session.connection().dialect.name == "postgresql":
        condition = next(line for line in plan.splitlines() if "Index Cond" in line)
        assert "due_at <=" in condition, plan
    else:
        assert "due_at<?" in plan.replace(" ", ""), plan
