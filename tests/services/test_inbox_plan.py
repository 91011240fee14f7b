"""The pharmacy inbox reads its page straight off the inbox index, in order: no sort of every
referral the pharmacy holds (at a million referrals, the sort made the busiest inbox 8.8 ms)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlmodel import Session

from app.models.enums import ReferralStatus, Role
from app.services import referrals as referral_service
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


def _captured(session: Session, **kwargs: Any) -> tuple[str, Any]:
    """The SQL and parameters list_referrals sends for `kwargs`."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM referral" in statement:
            seen.append((statement, parameters))

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", capture)
    try:
        page, _ = referral_service.list_referrals(
            session=session,
            caller=PHARMACY,
            filters=referral_service.ReferralFilter(status=ReferralStatus.RECEIVED),
            cursor=None,
            limit=5,
            **kwargs,
        )
    finally:
        event.remove(connection, "before_cursor_execute", capture)
    assert len(page) == 5
    return seen[-1]


def _plan(session: Session, statement: str, parameters: Any) -> str:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # A sort the index cannot spare is then still planned (at a prohibitive cost): no
        # Sort node in the plan means the index hands the rows over in the inbox's order.
        connection.execute(text("SET LOCAL enable_sort = off"))
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
