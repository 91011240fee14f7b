"""Disclosure control proven on whole responses: random rollups for the test ICB, every
statistics question asked as an analyst, and for every published relation (a total is the sum of
its parts) an attacker's audit (tests/disclosure_audit.py) that no suppressed cell is pinned."""

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import insert
from sqlmodel import Session

from app.core.config import settings as app_settings
from app.models.enums import Role, Service
from app.models.rollup import COUNTERS, HOUR_COLUMNS, UptakeRollup
from app.models.stats import (
    Breakdown,
    ConcentrationQuery,
    ConcentrationReport,
    GroupBy,
    Interval,
    ServiceCountsQuery,
    TrendQuery,
    TrendReport,
    UptakeQuery,
)
from app.services import stats
from app.services.disclosure import Rule
from app.services.rollups import AREA, DAY, MONTH, PHARMACY, PRACTICE, month_start
from tests.disclosure_audit import Relation, assert_not_pinned
from tests.factories import caller
from tests.stats_world import (
    ALDER,
    ASH,
    BEECH,
    BIRCH,
    CEDAR,
    CHERRY,
    DAMSON,
    DOGWOOD,
    EAST,
    ELDER,
    HOLLY,
    ICB,
    MOVE,
    PCN_OF,
    WEST,
    YEW,
    build_world,
)

ANALYST = caller(Role.ICB_ANALYST, ICB)
RULE = Rule(exact=False, suppress_from=1, suppress_to=7, round_to=5)
FROM, TO = date(2026, 1, 1), date(2026, 2, 28)
DAYS = (date(2026, 1, 5), date(2026, 1, 20), date(2026, 1, 31), date(2026, 2, 3), date(2026, 2, 25))
KINDS = (
    ("pharmacy-first", "gp-practice", "sore-throat"),
    ("pharmacy-first", "nhs111", "sinusitis"),
    ("blood-pressure", "gp-practice", ""),
    ("dms", "trust", ""),
)
PLACE_OF = {ALDER: WEST, BEECH: WEST, CEDAR: EAST, DAMSON: EAST}
T = TypeVar("T", bound=BaseModel)


def _pcn(practice: str, day: date) -> str:
    if practice == CHERRY:
        return BEECH if day < MOVE else CEDAR
    return PCN_OF[practice]


small = st.one_of(st.integers(1, 7), st.integers(8, 30))


@st.composite
def activity(draw: st.DrawFn) -> dict[str, Any]:
    service, source, pathway = draw(st.sampled_from(KINDS))
    made = draw(small)
    accepted = draw(st.integers(0, made))
    completed = draw(st.integers(0, accepted))
    counts = {
        "made": made,
        "received": made,
        "accepted": accepted,
        "declined": draw(st.integers(0, made - accepted)),
        "completed": completed,
        draw(st.sampled_from(HOUR_COLUMNS)): completed,
    }
    if service == "blood-pressure":
        checked = draw(st.integers(0, made))
        abpm = draw(st.integers(0, checked))
        counts |= {
            "bp_checked": checked,
            "bp_abpm": abpm,
            "bp_hypertension_confirmed": draw(st.integers(0, abpm)),
        }
    if service == "dms":
        stage1 = draw(st.integers(0, made))
        counts |= {
            "dms_stage1": stage1,
            "dms_stage1_within_72h": draw(st.integers(0, stage1)),
            "dms_stage2": draw(st.integers(0, stage1)),
            "dms_stage3": draw(st.integers(0, stage1)),
        }
    return {
        "practice": draw(st.sampled_from((ASH, BIRCH, CHERRY, DOGWOOD, ELDER))),
        "pharmacy": draw(st.sampled_from((YEW, HOLLY))),
        "day": draw(st.sampled_from(DAYS)),
        "service": service,
        "source": source,
        "pathway": pathway,
        "counts": counts,
    }


def write_rollups(session: Session, activities: list[dict[str, Any]]) -> None:
    """Day rows and the month rows that agree with them, on every side."""
    rows: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for a in activities:
        pcn = _pcn(a["practice"], a["day"])
        dims = (a["service"], a["source"], a["pathway"])
        for grain, period in ((DAY, a["day"]), (MONTH, month_start(a["day"]))):
            for key in (
                (grain, period, PRACTICE, a["practice"], pcn, PLACE_OF[pcn], ICB, *dims),
                (grain, period, PHARMACY, a["pharmacy"], "", "", "", *dims),
                (grain, period, AREA, "", pcn, PLACE_OF[pcn], ICB, a["service"], "", ""),
            ):
                for name, value in a["counts"].items():
                    rows[key][name] += value
    names = (
        "grain",
        "period_start",
        "side",
        "org_ods",
        "pcn_ods",
        "place_ods",
        "icb_ods",
        "service",
        "source",
        "pathway",
    )
    if rows:
        session.execute(
            insert(UptakeRollup.__table__),  # type: ignore[attr-defined]
            [
                dict(zip(names, key, strict=True))
                | dict.fromkeys(COUNTERS, 0)
                | {"completion_hours_sum": 0.0}
                | dict(counts)
                for key, counts in rows.items()
            ],
        )


@contextmanager
def exact_rule() -> Iterator[None]:
    """The analyst's scope with nothing suppressed or rounded: the true figures."""
    saved = app_settings.suppress_to, app_settings.round_to
    app_settings.suppress_to, app_settings.round_to = 0, 1
    try:
        yield
    finally:
        app_settings.suppress_to, app_settings.round_to = saved


def both(ask: Callable[[], T]) -> tuple[T, T]:
    """(as published to the analyst, the truth)."""
    published = ask()
    with exact_rule():
        truth = ask()
    return published, truth


# ---- auditing a grouped table ------------------------------------------------------------------

Cell = tuple[Any, ...]


@dataclass
class Published:
    values: dict[Cell, int]  # true values
    suppressed: set[Cell]
    relations: list[Relation[Cell]]


def _key(row: BaseModel) -> tuple[Any, ...]:
    part = getattr(row, "source", None) or getattr(row, "pathway", None)
    breakdown = getattr(row, "breakdown", None)
    return (row.period_start, row.group_code, breakdown, part)  # type: ignore[attr-defined]


def audit_grouped(published: Any, truth: Any, columns: tuple[str, ...]) -> None:
    """Every count published as the rule says, rates hidden with their counts, and no suppressed
    cell recoverable from the totals, the groups and the breakdown rows."""
    shown = {_key(r): r for r in [*published.rows, *published.totals]}
    true = {_key(r): r for r in [*truth.rows, *truth.totals]}
    assert shown.keys() == true.keys()
    values: dict[Cell, int] = {}
    hidden: set[Cell] = set()
    for key, row in shown.items():
        for column in columns:
            value = getattr(true[key], column)
            assert value is not None
            values[(*key, column)] = value
            if getattr(row, column) is None:
                assert column in row.suppressed
                hidden.add((*key, column))
            else:
                assert not RULE.sensitive(value), (key, column, value)
                assert getattr(row, column) == RULE.rounded(value)
        _audit_rates(row, true[key])
    relations: list[Relation[Cell]] = []
    for column in columns:
        by_total: dict[tuple[Any, ...], list[Cell]] = defaultdict(list)
        by_group: dict[tuple[Any, ...], list[Cell]] = defaultdict(list)
        for period, group, breakdown, part in shown:
            cell = (period, group, breakdown, part, column)
            if group != stats.TOTAL_CODE:
                by_total[(period, "ALL", breakdown, part, column)].append(cell)
            if breakdown is not None:
                by_group[(period, group, None, None, column)].append(cell)
        relations += [(total, parts) for total, parts in {**by_total, **by_group}.items()]
    for total, parts in relations:
        assert values[total] == sum(values[p] for p in parts), "the relation does not hold"
    assert_not_pinned(values, hidden, relations, rule=RULE)


RATES = {
    "completion_rate": ("completed", "made"),
    "per_1000_patients": ("made", None),
    "median_hours_to_completion": ("completed", None),
    "p90_hours_to_completion": ("completed", None),
    "abpm_rate": ("bp_abpm", "bp_checked"),
    "hypertension_rate": ("bp_hypertension_confirmed", "bp_checked"),
    "hypertension_of_abpm_rate": ("bp_hypertension_confirmed", "bp_abpm"),
    "stage1_within_72h_rate": ("dms_stage1_within_72h", "dms_stage1"),
    "stage3_rate": ("dms_stage3", "made"),
}


def _audit_rates(row: BaseModel, truth: BaseModel) -> None:
    hidden = set(row.suppressed)  # type: ignore[attr-defined]
    for rate, counts in RATES.items():
        if not hasattr(row, rate):
            continue
        if any(c in hidden for c in counts if c):
            assert getattr(row, rate) is None
            assert rate in hidden
        else:
            assert getattr(row, rate) == getattr(truth, rate)  # from the unrounded counts


# ---- the responses ---------------------------------------------------------------------------


@pytest.fixture
def icb(session: Session) -> Session:
    build_world(session)
    session.flush()
    return session


examples = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
activities = st.lists(activity(), min_size=1, max_size=14)

UPTAKE = ("made", *stats.OUTCOMES)


@contextmanager
def rollups(session: Session, generated: list[dict[str, Any]]) -> Iterator[None]:
    savepoint = session.begin_nested()
    try:
        write_rollups(session, generated)
        yield
    finally:
        savepoint.rollback()


@examples
@given(activities)
def test_uptake_tables_protect_every_suppressed_cell(
    icb: Session, generated: list[dict[str, Any]]
) -> None:
    with rollups(icb, generated):
        for query in (
            UptakeQuery(from_date=FROM, to_date=TO),
            UptakeQuery(
                from_date=FROM, to_date=TO, group_by=GroupBy.PRACTICE, interval=Interval.NONE
            ),
            UptakeQuery(from_date=FROM, to_date=TO, group_by=GroupBy.PLACE, interval=Interval.WEEK),
        ):
            published, truth = both(partial(stats.uptake, session=icb, query=query, caller=ANALYST))
            audit_grouped(published, truth, UPTAKE)


@examples
@given(activities)
def test_breakdowns_protect_the_group_rows_and_the_totals(
    icb: Session, generated: list[dict[str, Any]]
) -> None:
    with rollups(icb, generated):
        for query in (
            UptakeQuery(
                from_date=FROM, to_date=TO, breakdown=Breakdown.SOURCE, interval=Interval.NONE
            ),
            UptakeQuery(
                from_date=FROM,
                to_date=TO,
                group_by=GroupBy.PRACTICE,
                breakdown=Breakdown.PATHWAY,
                service=Service.PHARMACY_FIRST,
            ),
            UptakeQuery(
                from_date=FROM,
                to_date=TO,
                group_by=GroupBy.PHARMACY,
                breakdown=Breakdown.SOURCE,
                service=Service.DMS,
                interval=Interval.NONE,
            ),
        ):
            published, truth = both(partial(stats.uptake, session=icb, query=query, caller=ANALYST))
            audit_grouped(published, truth, UPTAKE)


@examples
@given(activities)
def test_blood_pressure_and_dms_tables_protect_every_suppressed_cell(
    icb: Session, generated: list[dict[str, Any]]
) -> None:
    query = ServiceCountsQuery(from_date=FROM, to_date=TO, group_by=GroupBy.PRACTICE)
    with rollups(icb, generated):
        published, truth = both(
            lambda: stats.blood_pressure(session=icb, query=query, caller=ANALYST)
        )
        audit_grouped(published, truth, stats.BP_COUNTS)
        published_dms, truth_dms = both(lambda: stats.dms(session=icb, query=query, caller=ANALYST))
        audit_grouped(published_dms, truth_dms, stats.DMS_COUNTS)


def audit_concentration(published: ConcentrationReport, truth: ConcentrationReport) -> None:
    shown = {(r.service, r.place_code): r for r in published.rows}
    true = {(r.service, r.place_code): r for r in truth.rows}
    values: dict[Cell, int] = {}
    hidden: set[Cell] = set()
    for key, row in shown.items():
        exact = true[key]
        assert exact.referrals is not None
        assert exact.top_referrals is not None
        values[key] = exact.referrals
        if row.referrals is None:
            hidden.add(key)
            assert {"referrals", "top_referrals", "practices_for_share"} <= set(row.suppressed)
            assert (row.top_referrals, row.top_share, row.practices_for_share) == (None, None, None)
        else:
            assert not RULE.sensitive(exact.referrals)
            assert row.referrals == RULE.rounded(exact.referrals)
        if RULE.sensitive(exact.top_referrals):
            assert row.top_referrals is None
            assert row.top_share is None
    services = {s for s, _ in shown}
    places = {p for _, p in shown}
    relations: list[Relation[Cell]] = [
        ((s, None), [(s, p) for p in places if p is not None]) for s in services
    ]
    if None in services and len(services) > 1:
        relations += [((None, p), [(s, p) for s in services if s is not None]) for p in places]
    assert_not_pinned(values, hidden, relations, rule=RULE)


@examples
@given(activities)
def test_concentration_protects_places_and_services(
    icb: Session, generated: list[dict[str, Any]]
) -> None:
    with rollups(icb, generated):
        for service in (None, Service.PHARMACY_FIRST):
            query = ConcentrationQuery(from_date=FROM, to_date=TO, service=service)
            published, truth = both(
                partial(stats.concentration, session=icb, query=query, caller=ANALYST)
            )
            audit_concentration(published, truth)


def audit_trend(published: TrendReport, truth: TrendReport) -> None:
    values: dict[Cell, int] = {}
    hidden: set[Cell] = set()
    true = {(r.period_start, r.group_code): r for r in [*truth.rows, *truth.totals]}
    for row in [*published.rows, *published.totals]:
        exact = true[(row.period_start, row.group_code)]
        before = month_start(row.period_start - timedelta(days=1))
        for key, shown_value, value, name in (
            ((row.period_start, row.group_code), row.made, exact.made, "made"),
            ((before, row.group_code), row.previous_made, exact.previous_made, "previous_made"),
        ):
            if value is None:
                continue
            values[key] = value
            if shown_value is None:
                hidden.add(key)
                assert name in row.suppressed
            else:
                assert shown_value == RULE.rounded(value)
        if row.made is not None and row.previous_made is not None:
            assert row.change == row.made - row.previous_made
        else:
            assert (row.change, row.change_percent) == (None, None)
    relations: list[Relation[Cell]] = []
    unknown: set[Cell] = set()
    for period in {p for p, _ in values}:
        parts = [k for k in values if k[0] == period and k[1] != stats.TOTAL_CODE]
        # a group with no row in the later month (its practices moved away) is not published:
        # the attacker knows only that it is not negative
        unpublished = (period, "unpublished")
        values[unpublished] = values[(period, stats.TOTAL_CODE)] - sum(values[k] for k in parts)
        assert values[unpublished] >= 0
        unknown.add(unpublished)
        relations.append(((period, stats.TOTAL_CODE), [*parts, unpublished]))
    assert_not_pinned(values, hidden, relations, rule=RULE, unknown=frozenset(unknown))


@examples
@given(activities)
def test_month_on_month_protects_both_months(icb: Session, generated: list[dict[str, Any]]) -> None:
    query = TrendQuery(from_date=date(2026, 2, 1), to_date=TO)
    with rollups(icb, generated):
        published, truth = both(lambda: stats.trend(session=icb, query=query, caller=ANALYST))
        audit_trend(published, truth)
