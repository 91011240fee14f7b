"""Reading rollup tables as comparable figures, and the direct aggregate beside the live table.

Other tests may have committed referrals and rollups, so comparisons are of changes: the figures
after a test's own steps minus the figures before them.
"""

import math
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, Table, delete, select, text
from sqlmodel import Session

from app.models.rollup import COUNTERS, KEY_COLUMNS
from app.services import consultations as consultation_service
from app.services import lifecycle, rollup_rebuild
from app.services import referrals as referral_service
from app.services.rollup_rebuild import ROLLUP

Key = tuple[str, ...]
Figures = dict[Key, tuple[tuple[int, ...], float]]

_CHECK_TABLE = "tests.rollup_check.table"


def figures(session: Session, table: Table = ROLLUP) -> Figures:
    """Every row of a rollup-shaped table: key -> (counters, completion_hours_sum)."""
    rows = session.execute(select(table)).mappings().all()
    return {
        tuple(str(row[name]) for name in KEY_COLUMNS): (
            tuple(int(row[name]) for name in COUNTERS),
            float(row["completion_hours_sum"]),
        )
        for row in rows
    }


def _check_table(session: Session) -> Table:
    table: Table | None = session.info.get(_CHECK_TABLE)
    if table is None:
        table = Table(
            "uptake_rollup_check",
            MetaData(),
            *(
                Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                for c in ROLLUP.columns
            ),
            prefixes=["TEMPORARY"],
        )
        table.create(session.connection())
        session.commit()
        session.info[_CHECK_TABLE] = table
    return table


def direct_figures(session: Session) -> Figures:
    """The direct aggregate of the referral, event and consultation tables, computed into a
    temporary table (the live rollup table is left alone)."""
    table = _check_table(session)
    session.execute(delete(table))
    rollup_rebuild.aggregate_into(session=session, target=table)
    return figures(session, table)


def delta(after: Figures, before: Figures) -> Figures:
    """What changed, row by row (rows that did not change are left out)."""
    zero: tuple[tuple[int, ...], float] = ((0,) * len(COUNTERS), 0.0)
    changed: Figures = {}
    for key in after.keys() | before.keys():
        (counts_after, hours_after) = after.get(key, zero)
        (counts_before, hours_before) = before.get(key, zero)
        counts = tuple(a - b for a, b in zip(counts_after, counts_before, strict=True))
        hours = hours_after - hours_before
        if any(counts) or not math.isclose(hours, 0.0, abs_tol=1e-6):
            changed[key] = (counts, hours)
    return changed


def differences(actual: Figures, expected: Figures) -> list[str]:
    """Human-readable differences: counters must match exactly, hour sums to within a microsecond
    per completion (they are float sums added in a different order)."""
    found: list[str] = []
    zero: tuple[tuple[int, ...], float] = ((0,) * len(COUNTERS), 0.0)
    for key in sorted(actual.keys() | expected.keys()):
        (counts_a, hours_a) = actual.get(key, zero)
        (counts_e, hours_e) = expected.get(key, zero)
        wrong: dict[str, Any] = {
            name: (a, e) for name, a, e in zip(COUNTERS, counts_a, counts_e, strict=True) if a != e
        }
        if not math.isclose(hours_a, hours_e, rel_tol=1e-9, abs_tol=1e-6):
            wrong["completion_hours_sum"] = (hours_a, hours_e)
        if wrong:
            found.append(f"{key}: {wrong}")
    return found


class Clock:
    """Stands in for utc_now in the services, so tests choose when each change happens."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def use_clock(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    for module in (referral_service, lifecycle, consultation_service):
        monkeypatch.setattr(module, "utc_now", clock)


def row(**counts: float) -> tuple[tuple[int, ...], float]:
    """Expected figures: the named counters (others 0) and completion_hours_sum."""
    hours = float(counts.pop("completion_hours_sum", 0.0))
    unknown = set(counts) - set(COUNTERS)
    assert not unknown, unknown
    return tuple(int(counts.get(name, 0)) for name in COUNTERS), hours


def limit_statements_as_for_requests(session: Session) -> None:
    """On PostgreSQL, give the test's transaction a statement limit like the one pooled
    connections carry for requests (PHARMREF_DB_STATEMENT_TIMEOUT_SECONDS); skip on SQLite."""
    if session.connection().dialect.name != "postgresql":
        pytest.skip("statement_timeout is PostgreSQL's")
    session.execute(text("SET LOCAL statement_timeout = '2s'"))


def statement_timeout(session: Session) -> str:
    return str(session.execute(text("SHOW statement_timeout")).scalar_one())
