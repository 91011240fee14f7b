"""Uptake statistics for ICB analysts, answered from the rollups only (never the referral table).

Reading the rollups (app/models/rollup.py). A question names England local dates [from, to]
and an interval. Calendar months lying wholly inside [from, to] are read from the month rows, the
days of the partial months at either edge (and every day, for ISO weeks) from the day rows; one
SQL statement maps each rollup row to its reporting period (a CASE on period_start) and sums the
counters with GROUP BY, so a 12-month per-PCN table reads about twelve rows per practice and
service mix, whatever the number of referrals. Counts are by cohort: a referral and everything
that happened to it count in the period the referral was made.

Figures:
- made: referrals made (forwarded copies excluded); on pharmacy rows, referrals received
  (forwarded copies included), since a pharmacy's activity is what it was sent;
- completion_rate = completed / made (on pharmacy rows completed / received). Outcomes of a
  forwarded copy count in the copy's period, so a small group can pass 1 near a period edge;
- median and 90th percentile hours from referral to completion are estimated from the
  completion-time histogram (HOUR_EDGES): the rank q x completed is found in the cumulative
  counts and interpolated linearly inside its bucket, i.e. completions are taken as spread evenly
  across each bucket. The error is at most the width of that bucket: under 1 hour up to 4 hours,
  2 h up to 8 h, 4 h up to 24 h, 12 h up to 48 h, 24 h up to 120 h, then 48, 72, 96, 168 and
  216 h up to 720 h. The last bucket (720 h and over) is open: a quantile falling in it is
  reported as 720, a lower bound;
- registered_patients: the mean over the period's days of the list size in force on each day
  (the latest ListSize effective on or before it), each practice counted in the PCN, place and
  ICB it belonged to on that day, which is how the rollups place the practice's referrals too.
  A practice moving PCN mid-period counts in each for the days it was a member. With the
  directory's changes on month starts, a month's figure is the list size in force on its first
  day. Practices with no list size in force count nothing. Pharmacy rows carry none;
- per_1000_patients = made / registered_patients x 1000, from unrounded figures.

Groups with no referrals are listed where the directory says they exist in the period: practices
and their PCNs, places and ICBs (for an analyst, those in its ICB), and for pharmacy rows the
pharmacies registered for the service asked about (any service when none is). The group ''
holds referrals of patients with no registered practice (or a practice in no PCN): admin only,
since an analyst's figures are those of its ICB's practices.

Disclosure control is app/services/disclosure.py: each period's table (groups x breakdown values,
with the all-groups totals and each group's whole row as margins) is protected column by column.
"""

import bisect
import csv
import dataclasses
import io
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import Enum
from typing import Any, get_args

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Table, and_, case, func, literal, or_, select
from sqlmodel import Session, col

from app.core.config import settings
from app.core.errors import Forbidden, Issue, ValidationFailed
from app.models.enums import OrgKind, Pathway, ReferralSource, Service
from app.models.organisation import ListSize, Membership, Organisation, PharmacyService
from app.models.rollup import HOUR_COLUMNS, HOUR_EDGES, UptakeRollup
from app.models.stats import (
    BloodPressureReport,
    BloodPressureRow,
    Breakdown,
    ConcentrationQuery,
    ConcentrationReport,
    ConcentrationRow,
    DmsReport,
    DmsRow,
    GroupBy,
    InactivePractice,
    InactivePracticesQuery,
    InactivePracticesReport,
    Interval,
    ServiceCountsQuery,
    SourceScope,
    TrendQuery,
    TrendReport,
    TrendRow,
    UptakeQuery,
    UptakeReport,
    UptakeRow,
)
from app.models.user import User
from app.services import disclosure
from app.services.disclosure import Rule
from app.services.rollups import AREA, DAY, MONTH, PHARMACY, PRACTICE, month_start

TOTAL_CODE = "ALL"
RATE_DIGITS = 4
PER_1000_DIGITS = 3
HOURS_DIGITS = 1

OUTCOMES = ("accepted", "declined", "forwarded", "returned", "cancelled", "no_contact", "completed")
UPTAKE_COUNTS = ("made", *OUTCOMES)
BP_COUNTS = ("made", "bp_checked", "bp_abpm", "bp_hypertension_confirmed")
DMS_COUNTS = ("made", "dms_stage1", "dms_stage1_within_72h", "dms_stage2", "dms_stage3")

_GROUP_COLUMN = {
    GroupBy.PRACTICE: "org_ods",
    GroupBy.PCN: "pcn_ods",
    GroupBy.PLACE: "place_ods",
    GroupBy.ICB: "icb_ods",
    GroupBy.PHARMACY: "org_ods",
}
_NO_GROUP = {
    GroupBy.PRACTICE: "No registered practice",
    GroupBy.PCN: "No PCN",
    GroupBy.PLACE: "No place",
    GroupBy.ICB: "No ICB",
    GroupBy.PHARMACY: "No pharmacy",
}


# ---- periods ---------------------------------------------------------------------------------


def month_end(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def _next_month(day: date) -> date:
    return month_end(day) + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Period:
    start: date
    end: date
    partial: bool

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


@dataclass(frozen=True, slots=True)
class Window:
    """The periods of a question and which rollup rows cover them."""

    start: date
    end: date
    periods: tuple[Period, ...]
    months: tuple[date, date] | None  # first and last month start read from month rows
    days: tuple[tuple[date, date], ...]  # day-row ranges (inclusive)

    def rows(self, table: Table) -> ColumnElement[bool]:
        parts = [
            and_(table.c.grain == DAY, table.c.period_start >= a, table.c.period_start <= b)
            for a, b in self.days
        ]
        if self.months is not None:
            first, last = self.months
            parts.append(
                and_(
                    table.c.grain == MONTH,
                    table.c.period_start >= first,
                    table.c.period_start <= last,
                )
            )
        return or_(*parts)

    def period_index(self, column: Any, first: int = 0, last: int | None = None) -> Any:
        """The index of the period holding `column`'s day: a balanced CASE (a binary search,
        about log2(periods) comparisons a row, which matters for 53 weeks of day rows)."""
        last = len(self.periods) - 1 if last is None else last
        if first == last:
            return literal(first)
        middle = (first + last + 1) // 2
        return case(
            (column < self.periods[middle].start, self.period_index(column, first, middle - 1)),
            else_=self.period_index(column, middle, last),
        )

    def index_of(self, day: date) -> int:
        return bisect.bisect_right([p.start for p in self.periods], day) - 1


def _periods(start: date, end: date, interval: Interval) -> list[Period]:
    if interval is Interval.NONE:
        return [Period(start, end, partial=False)]
    periods = []
    if interval is Interval.MONTH:
        first = month_start(start)
        while first <= end:
            last = month_end(first)
            periods.append(
                Period(max(first, start), min(last, end), partial=first < start or last > end)
            )
            first = last + timedelta(days=1)
        return periods
    first = start - timedelta(days=start.weekday())
    while first <= end:
        last = first + timedelta(days=6)
        periods.append(
            Period(max(first, start), min(last, end), partial=first < start or last > end)
        )
        first = last + timedelta(days=1)
    return periods


def make_window(start: date, end: date, interval: Interval) -> Window:
    """Periods for [start, end], read from month rows for whole months (not for ISO weeks) and
    from day rows for the rest."""
    periods = tuple(_periods(start, end, interval))
    if interval is Interval.WEEK:
        return Window(start, end, periods, months=None, days=((start, end),))
    first = start if start.day == 1 else _next_month(start)
    last_end = end if end == month_end(end) else month_start(end) - timedelta(days=1)
    if first > last_end:
        return Window(start, end, periods, months=None, days=((start, end),))
    days = tuple(
        (a, b)
        for a, b in ((start, first - timedelta(days=1)), (last_end + timedelta(days=1), end))
        if a <= b
    )
    return Window(start, end, periods, months=(first, month_start(last_end)), days=days)


def check_dates(from_date: date, to_date: date) -> None:
    if from_date > to_date:
        raise ValidationFailed(
            "The period is empty: from is after to.",
            issues=[Issue("invalid", "Must be on or before to.", "from")],
        )
    days = (to_date - from_date).days + 1
    if days > settings.stats_max_days:
        raise ValidationFailed(
            f"The period is {days} days; at most {settings.stats_max_days} may be asked at once.",
            issues=[Issue("invalid", f"At most {settings.stats_max_days} days after from.", "to")],
        )


# ---- the caller ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    rule: Rule
    icb: str | None  # None: every ICB (admin)


def _scope(*, session: Session, caller: User) -> Scope:
    rule = disclosure.rule_for(
        caller,
        suppress_from=settings.suppress_from,
        suppress_to=settings.suppress_to,
        round_to=settings.round_to,
    )
    icb = disclosure.icb_scope(caller)
    if icb is not None:
        organisation = session.get(Organisation, icb)
        if organisation is None or organisation.kind is not OrgKind.ICB:
            raise Forbidden("An icb-analyst token must name an ICB in the directory.")
    return Scope(rule=rule, icb=icb)


# ---- the directory over time -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """Days [first, last] over which a practice sat in one PCN, place and ICB with one list size."""

    practice: str
    pcn: str
    place: str
    icb: str
    size: int | None
    first: date
    last: date

    def group(self, group_by: GroupBy) -> str:
        if group_by is GroupBy.PCN:
            return self.pcn
        if group_by is GroupBy.PLACE:
            return self.place
        if group_by is GroupBy.ICB:
            return self.icb
        return self.practice


Spans = list[tuple[str, date, date | None]]  # (group, first day, last day or None)


def _in_force(spans: Spans, day: date) -> str:
    """The group with the latest start in force on `day` (as rollups.placement() picks it)."""
    best: tuple[date, str] | None = None
    for group, first, last in spans:
        if first <= day and (last is None or last >= day) and (best is None or first > best[0]):
            best = (first, group)
    return best[1] if best else ""


_OUTER_SIZE = ListSize.__table__.alias("outer_size")  # type: ignore[attr-defined]


def directory_segments(
    *, session: Session, start: date, end: date, icb: str | None = None
) -> list[Segment]:
    """Every practice's placement and list size over [start, end], as constant segments
    (limited to the days a practice sat in `icb`, when given)."""
    practices: Sequence[str] = (
        session.execute(
            select(col(Organisation.ods_code)).where(col(Organisation.kind) == OrgKind.GP_PRACTICE)
        )
        .scalars()
        .all()
    )
    spans: dict[str, Spans] = defaultdict(list)
    for member, group, first, last in session.execute(
        select(
            col(Membership.member_ods),
            col(Membership.group_ods),
            col(Membership.start_date),
            col(Membership.end_date),
        ).where(
            col(Membership.start_date) <= end,
            or_(col(Membership.end_date).is_(None), col(Membership.end_date) >= start),
        )
    ).all():
        spans[member].append((group, first, last))
    outer = _OUTER_SIZE
    in_force_at_start = (
        select(func.max(col(ListSize.effective_date)))
        .where(
            col(ListSize.practice_ods) == outer.c.practice_ods,
            col(ListSize.effective_date) <= start,
        )
        .correlate(outer)
        .scalar_subquery()
    )
    sizes: dict[str, tuple[list[date], list[int]]] = defaultdict(lambda: ([], []))
    for practice, effective, size in session.execute(
        select(outer.c.practice_ods, outer.c.effective_date, outer.c.registered_patients)
        .where(
            outer.c.effective_date <= end,
            outer.c.effective_date >= func.coalesce(in_force_at_start, start),
        )
        .order_by(outer.c.practice_ods, outer.c.effective_date)
    ).all():
        sizes[practice][0].append(effective)
        sizes[practice][1].append(size)

    def changes(chain: Spans) -> set[date]:
        found = set()
        for _, first, last in chain:
            found.add(max(first, start))
            if last is not None and last < end:
                found.add(last + timedelta(days=1))
        return found

    # where each PCN sat (place, ICB) changes on these days
    pcn_changes: dict[str, set[date]] = {}
    for pcn in {group for p in practices for group, _, _ in spans.get(p, ())}:
        places = spans.get(pcn, [])
        pcn_changes[pcn] = changes(places).union(
            *(changes(spans.get(place, [])) for place, _, _ in places)
        )
    stop = end + timedelta(days=1)
    segments: list[Segment] = []
    for practice in practices:
        pcns = spans.get(practice, [])
        dates, counts = sizes.get(practice, ([], []))
        cuts = {start, stop} | changes(pcns)
        for pcn, _, _ in pcns:
            cuts |= pcn_changes[pcn]
        cuts.update(day for day in dates if day > start)
        bounds = sorted(day for day in cuts if start <= day <= stop)
        previous: tuple[str, str, str, int | None] | None = None
        for a, b in itertools.pairwise(bounds):
            pcn = _in_force(pcns, a)
            place = _in_force(spans.get(pcn, []), a) if pcn else ""
            icb_code = _in_force(spans.get(place, []), a) if place else ""
            if icb is not None and icb_code != icb:
                previous = None
                continue
            index = bisect.bisect_right(dates, a) - 1
            state = (pcn, place, icb_code, counts[index] if index >= 0 else None)
            if state == previous:  # the same as the day before: extend it
                segments[-1] = dataclasses.replace(segments[-1], last=b - timedelta(days=1))
            else:
                segments.append(Segment(practice, *state, a, b - timedelta(days=1)))
            previous = state
    return segments


@dataclass
class Population:
    """Per period: the groups that existed and their mean registered patients."""

    groups: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    person_days: dict[tuple[int, str], float] = field(default_factory=lambda: defaultdict(float))
    counted: dict[tuple[int, str], bool] = field(default_factory=lambda: defaultdict(bool))

    totals: dict[int, float] = field(default_factory=dict)

    def patients(self, window: Window, period: int, group: str | None) -> float | None:
        """The mean registered patients of a group (None: all groups) over a period."""
        days = window.periods[period].days
        if group is None:
            if not self.totals:
                for (n, _), person_days in self.person_days.items():
                    self.totals[n] = self.totals.get(n, 0.0) + person_days
            return self.totals[period] / days if period in self.totals else None
        if not self.counted.get((period, group)):
            return None
        return self.person_days[(period, group)] / days


def population(*, segments: Iterable[Segment], window: Window, group_by: GroupBy) -> Population:
    found = Population()
    starts = [p.start for p in window.periods]
    for segment in segments:
        group = segment.group(group_by)
        n = max(bisect.bisect_right(starts, segment.first) - 1, 0)
        while n < len(window.periods) and window.periods[n].start <= segment.last:
            period = window.periods[n]
            overlap = (min(period.end, segment.last) - max(period.start, segment.first)).days + 1
            if overlap > 0:
                found.groups[n].add(group)
                if segment.size is not None:
                    found.person_days[(n, group)] += segment.size * overlap
                    found.counted[(n, group)] = True
            n += 1
    return found


def _names(*, session: Session, codes: Iterable[str]) -> dict[str, str]:
    wanted = sorted({c for c in codes if c})
    names: dict[str, str] = {}
    for chunk in range(0, len(wanted), 900):
        rows = session.execute(
            select(col(Organisation.ods_code), col(Organisation.name)).where(
                col(Organisation.ods_code).in_(wanted[chunk : chunk + 900])
            )
        )
        names.update((code, name) for code, name in rows)
    return names


def _pharmacies(*, session: Session, service: Service | None) -> dict[str, str]:
    query = select(col(Organisation.ods_code), col(Organisation.name)).where(
        col(Organisation.kind) == OrgKind.PHARMACY
    )
    if service is not None:
        query = query.where(
            col(Organisation.ods_code).in_(
                select(col(PharmacyService.pharmacy_ods)).where(
                    col(PharmacyService.service) == service
                )
            )
        )
    return dict(session.execute(query).all())


# ---- reading the rollups ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    service: Service | None = None
    source: ReferralSource | None = None
    pathway: Pathway | None = None


def _rollup() -> Table:
    return UptakeRollup.__table__  # type: ignore[attr-defined, no-any-return]


# What the area rows keep of the practice side's key (app/models/rollup.py).
_AREA_KEYS = frozenset({"pcn_ods", "place_ods", "icb_ods", "service"})


def rows_side(*, side: str, keys: Iterable[str], filters: Filters) -> str:
    """The side whose rows answer the question exactly and are the fewest: the area rows for a
    practice-side question grouped (and filtered) only by PCN, place, ICB and service; otherwise
    the side asked about."""
    if (
        side == PRACTICE
        and filters.source is None
        and filters.pathway is None
        and _AREA_KEYS.issuperset(keys)
    ):
        return AREA
    return side


def read_sums(
    *,
    session: Session,
    side: str,
    keys: Sequence[str],
    columns: Mapping[str, str],
    window: Window,
    filters: Filters,
    icb: str | None,
) -> dict[tuple[Any, ...], list[int]]:
    """{(period index, *key values): [sum of each column]} over the window's rollup rows.
    `columns` maps each output name to its rollup column. The area rows are read in place of the
    practice rows when they hold the same sums (rows_side)."""
    table = _rollup()
    where = [table.c.side == rows_side(side=side, keys=keys, filters=filters), window.rows(table)]
    for name, value in (
        ("service", filters.service),
        ("source", filters.source),
        ("pathway", filters.pathway),
    ):
        if value is not None:
            where.append(table.c[name] == str(value))
    if icb is not None and side == PRACTICE:  # the area rows carry the ICB too
        where.append(table.c.icb_ods == icb)
    names = list(columns)
    inner = (
        select(
            window.period_index(table.c.period_start).label("period"),
            *[table.c[key].label(f"key_{n}") for n, key in enumerate(keys)],
            *[table.c[columns[name]].label(name) for name in names],
        )
        .where(*where)
        .subquery()
    )
    group = [inner.c.period, *[inner.c[f"key_{n}"] for n in range(len(keys))]]
    statement = select(*group, *[func.sum(inner.c[name]) for name in names]).group_by(*group)
    return {
        tuple(row[: len(group)]): [int(v or 0) for v in row[len(group) :]]
        for row in session.execute(statement).all()
    }


# ---- a protected table ---------------------------------------------------------------------


Key = tuple[int, str | None, str | None]  # (period, group or None for the total, part or None)


@dataclass
class CountTable:
    """Counts per (period, group, breakdown part) with their margins, and what is suppressed."""

    columns: tuple[str, ...]
    counts: dict[Key, dict[str, int]]
    suppressed: dict[Key, set[str]]

    def protect(self, rule: Rule) -> None:
        """Protect each period's table, column by column."""
        if rule.exact:
            return
        tables: dict[int, dict[tuple[str | None, str | None], dict[str, int]]] = defaultdict(dict)
        for (period, group, part), values in self.counts.items():
            tables[period][(group, part)] = values
        for period, table in tables.items():
            for column in self.columns:
                cells = {key: values[column] for key, values in table.items()}
                for group, part in disclosure.protect(cells, rule):
                    self.suppressed[(period, group, part)].add(column)


def build_table(
    *,
    sums: Mapping[tuple[Any, ...], list[int]],
    columns: Sequence[str],
    groups: Mapping[int, set[str]],
    parts: Sequence[str] | None,
    periods: int,
) -> CountTable:
    """Fill the grid of every period: each group x part (zeros where the rollups hold none), each
    group's whole row, the all-groups rows."""
    counts: dict[Key, dict[str, int]] = {}
    zero = dict.fromkeys(columns, 0)
    for key, sums_of_key in sums.items():
        period, group = key[0], key[1]
        part = key[2] if parts is not None else None
        cell = counts.setdefault((period, group, part), dict(zero))
        for name, value in zip(columns, sums_of_key, strict=True):
            cell[name] += value
    for period in range(periods):
        names = groups.get(period, set()) | {
            g for (n, g, _) in counts if n == period and g is not None
        }
        for group in names:
            for part in parts if parts is not None else [None]:
                counts.setdefault((period, group, part), dict(zero))
    inner = list(counts.items())
    margins: dict[Key, dict[str, int]] = {}
    for (period, group, part), values in inner:
        targets: list[Key] = [(period, None, part)]
        if parts is not None:
            targets += [(period, group, None), (period, None, None)]
        for target in targets:
            cell = margins.setdefault(target, dict(zero))
            for name in columns:
                cell[name] += values[name]
    for period in range(periods):
        margins.setdefault((period, None, None), dict(zero))
        for part in parts or []:
            margins.setdefault((period, None, part), dict(zero))
    counts.update(margins)
    return CountTable(tuple(columns), counts, defaultdict(set))


class Published:
    """One row's figures as published: counts rounded or suppressed, derived figures with them."""

    def __init__(self, counts: Mapping[str, int], suppressed: set[str], rule: Rule) -> None:
        self.counts = counts
        self.suppressed = set(suppressed)
        self.rule = rule

    def count(self, name: str) -> int | None:
        return disclosure.publish(
            self.counts[name], suppressed=name in self.suppressed, rule=self.rule
        )

    def ratio(
        self,
        name: str,
        numerator: str,
        denominator: str | float | None,
        *,
        scale: float = 1.0,
        digits: int = RATE_DIGITS,
    ) -> float | None:
        """numerator / denominator x scale; the denominator a count's name or a figure."""
        hidden = numerator in self.suppressed or (
            isinstance(denominator, str) and denominator in self.suppressed
        )
        if hidden:
            self.suppressed.add(name)
            return None
        value = self.counts[denominator] if isinstance(denominator, str) else denominator
        if not value:
            return None
        return round(self.counts[numerator] / value * scale, digits)

    def names(self, order: Sequence[str]) -> list[str]:
        return [name for name in order if name in self.suppressed]


def histogram_quantile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile of durations binned at HOUR_EDGES, interpolated linearly in its bucket
    (the open last bucket gives its lower edge)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(counts):
        if count > 0 and below + count >= rank:
            lower = HOUR_EDGES[index]
            if index + 1 == len(HOUR_EDGES):
                return float(lower)
            upper = HOUR_EDGES[index + 1]
            return lower + (rank - below) / count * (upper - lower)
        below += count
    return float(HOUR_EDGES[-1])


# ---- the grouped tables (uptake, blood pressure, DMS, trend) --------------------------------


@dataclass
class Grouped:
    """A protected table of groups x periods (x parts), ready to be rendered as rows."""

    window: Window
    group_by: GroupBy
    breakdown: Breakdown | None
    table: CountTable
    population: Population | None
    names: dict[str, str]
    rule: Rule
    icb: str | None

    def ordered_keys(self) -> list[Key]:
        def order(key: Key) -> tuple[Any, ...]:
            period, group, part = key
            return (period, group is None, group == "", group or "", part is not None, part or "")

        return sorted(self.table.counts, key=order)

    def published(self, key: Key) -> Published:
        return Published(self.table.counts[key], self.table.suppressed[key], self.rule)

    def patients(self, key: Key) -> float | None:
        if self.population is None:
            return None
        return self.population.patients(self.window, key[0], key[1])

    def head(self, key: Key) -> dict[str, Any]:
        period, group, _ = key
        span = self.window.periods[period]
        if group is None:
            name = f"All of {self.names.get(self.icb, self.icb)}" if self.icb else "All groups"
        else:
            name = self.names.get(group, _NO_GROUP[self.group_by] if group == "" else group)
        return {
            "group_kind": None if group is None else self.group_by,
            "group_code": TOTAL_CODE if group is None else group,
            "group_name": name,
            "period_start": span.start,
            "period_end": span.end,
            "partial": span.partial,
        }


def _parts(breakdown: Breakdown | None, filters: Filters) -> list[str] | None:
    """The breakdown values listed for every group (None: no breakdown)."""
    if breakdown is Breakdown.SOURCE:
        return [str(s) for s in ReferralSource if filters.source in (None, s)]
    if breakdown is Breakdown.PATHWAY:
        parts = [str(p) for p in Pathway if filters.pathway in (None, p)]
        if filters.service is not Service.PHARMACY_FIRST and filters.pathway is None:
            parts = ([] if filters.service is not None else parts) + [""]
        return parts
    return None


def grouped(
    *,
    session: Session,
    scope: Scope,
    group_by: GroupBy,
    window: Window,
    filters: Filters,
    columns: Mapping[str, str],
    hist: bool = False,
    breakdown: Breakdown | None = None,
) -> Grouped:
    return grouped_each(
        session=session,
        scope=scope,
        group_by=group_by,
        window=window,
        filters=filters,
        columns=columns,
        hist=hist,
        breakdown=breakdown,
    )[filters.service]


def grouped_each(
    *,
    session: Session,
    scope: Scope,
    group_by: GroupBy,
    window: Window,
    filters: Filters,
    columns: Mapping[str, str],
    hist: bool = False,
    breakdown: Breakdown | None = None,
    services: Sequence[Service] | None = None,
) -> dict[Service | None, Grouped]:
    """The table of `filters`, or with `services` one table per service in place of
    filters.service, each the same as asked alone; the rollups, the directory and the names are
    read once for all of them."""
    side = PHARMACY if group_by is GroupBy.PHARMACY else PRACTICE
    keys = [_GROUP_COLUMN[group_by]]
    if breakdown is Breakdown.SOURCE:
        keys.append("source")
    elif breakdown is Breakdown.PATHWAY:
        keys.append("pathway")
    each: list[Service | None] = [filters.service] if services is None else list(services)
    if services is not None:
        keys.append("service")
    read = dict(columns) | ({h: h for h in HOUR_COLUMNS} if hist else {})
    sums = read_sums(
        session=session,
        side=side,
        keys=keys,
        columns=read,
        window=window,
        filters=filters if services is None else dataclasses.replace(filters, service=None),
        icb=scope.icb,
    )
    people: Population | None = None
    if side == PRACTICE:
        segments = directory_segments(
            session=session, start=window.start, end=window.end, icb=scope.icb
        )
        people = population(segments=segments, window=window, group_by=group_by)
    tables: dict[Service | None, CountTable] = {}
    for service in each:
        own = sums
        if services is not None:
            own = {key[:-1]: values for key, values in sums.items() if key[-1] == str(service)}
        groups: dict[int, set[str]]
        if people is None:
            pharmacies = _pharmacies(session=session, service=service)
            groups = {n: set(pharmacies) for n in range(len(window.periods))}
        else:
            groups = people.groups
        table = build_table(
            sums=own,
            columns=list(read),
            groups=groups,
            parts=_parts(breakdown, dataclasses.replace(filters, service=service)),
            periods=len(window.periods),
        )
        if len(table.counts) > settings.stats_max_rows:
            raise ValidationFailed(
                f"The answer would have {len(table.counts):,} rows; at most "
                f"{settings.stats_max_rows:,} are given at once. Ask for a shorter period, a "
                "longer interval, a coarser grouping or no breakdown.",
                issues=[Issue("too-costly", "Too many rows for one answer.", "interval")],
            )
        table.columns = tuple(columns)
        table.protect(scope.rule)
        tables[service] = table
    codes = {k[1] for t in tables.values() for k in t.counts if k[1]}
    names = _names(session=session, codes=codes | ({scope.icb} if scope.icb else set()))
    return {
        service: Grouped(
            window=window,
            group_by=group_by,
            breakdown=breakdown,
            table=table,
            population=people,
            names=names,
            rule=scope.rule,
            icb=scope.icb,
        )
        for service, table in tables.items()
    }


_UPTAKE_ORDER = (
    *UPTAKE_COUNTS,
    "completion_rate",
    "median_hours_to_completion",
    "p90_hours_to_completion",
    "per_1000_patients",
)


def _uptake_row(data: Grouped, key: Key) -> UptakeRow:
    figures = data.published(key)
    part = key[2]
    patients = data.patients(key)
    median = p90 = None
    if "completed" in figures.suppressed:
        figures.suppressed |= {"median_hours_to_completion", "p90_hours_to_completion"}
    elif figures.counts["completed"]:
        histogram = [figures.counts[h] for h in HOUR_COLUMNS]
        median = _hours(histogram_quantile(histogram, 0.5))
        p90 = _hours(histogram_quantile(histogram, 0.9))
    completion = figures.ratio("completion_rate", "completed", "made")
    per_1000 = figures.ratio(
        "per_1000_patients", "made", patients, scale=1000, digits=PER_1000_DIGITS
    )
    breakdown_values: dict[str, Any] = {}
    if part is not None and data.breakdown is Breakdown.SOURCE:
        breakdown_values = {"source": ReferralSource(part), "breakdown": Breakdown.SOURCE}
    elif part is not None and data.breakdown is Breakdown.PATHWAY:
        breakdown_values = {
            "pathway": Pathway(part) if part else None,
            "breakdown": Breakdown.PATHWAY,
        }
    values: dict[str, Any] = {
        **data.head(key),
        **breakdown_values,
        **{name: figures.count(name) for name in UPTAKE_COUNTS},
        "completion_rate": completion,
        "median_hours_to_completion": median,
        "p90_hours_to_completion": p90,
        "registered_patients": None if patients is None else round(patients),
        "per_1000_patients": per_1000,
        "suppressed": figures.names(_UPTAKE_ORDER),
    }
    # validated: pydantic-core's validation of these typed values is faster than model_construct
    # (about 2.4 against 6.8 microseconds a row; a 12-month practice table is thousands of rows)
    return UptakeRow.model_validate(values)


def _hours(value: float | None) -> float | None:
    return None if value is None else round(value, HOURS_DIGITS)


def uptake(*, session: Session, query: UptakeQuery, caller: User) -> UptakeReport:
    """The uptake table: per group and period (and breakdown value), with a totals row per
    period (and breakdown value), under the caller's disclosure rule."""
    return _uptake_each(session=session, query=query, caller=caller, services=None)[query.service]


def uptake_by_service(
    *, session: Session, query: UptakeQuery, caller: User, services: Sequence[Service]
) -> dict[Service, UptakeReport]:
    """For each of `services`, the uptake table `uptake` gives for the query with that service
    (query.service is not read); the rollups and the directory are read once for all."""
    reports = _uptake_each(session=session, query=query, caller=caller, services=services)
    return {service: reports[service] for service in services}


def _uptake_each(
    *, session: Session, query: UptakeQuery, caller: User, services: Sequence[Service] | None
) -> dict[Service | None, UptakeReport]:
    scope = _scope(session=session, caller=caller)
    check_dates(query.from_date, query.to_date)
    columns = {name: name for name in UPTAKE_COUNTS}
    if query.group_by is GroupBy.PHARMACY:
        columns["made"] = "received"
    tables = grouped_each(
        session=session,
        scope=scope,
        group_by=query.group_by,
        window=make_window(query.from_date, query.to_date, query.interval),
        filters=Filters(query.service, query.source, query.pathway),
        columns=columns,
        hist=True,
        breakdown=query.breakdown,
        services=services,
    )
    reports = {}
    for service, data in tables.items():
        rows = [_uptake_row(data, key) for key in data.ordered_keys()]
        reports[service] = UptakeReport(
            query=query if services is None else query.model_copy(update={"service": service}),
            disclosure=scope.rule.public(),
            rows=[r for r in rows if r.group_kind is not None],
            totals=[r for r in rows if r.group_kind is None],
        )
    return reports


def _service_rows(
    *,
    session: Session,
    query: ServiceCountsQuery,
    caller: User,
    service: Service,
    counts: Sequence[str],
) -> Grouped:
    scope = _scope(session=session, caller=caller)
    check_dates(query.from_date, query.to_date)
    columns = {name: name for name in counts}
    if query.group_by is GroupBy.PHARMACY:
        columns["made"] = "received"
    return grouped(
        session=session,
        scope=scope,
        group_by=query.group_by,
        window=make_window(query.from_date, query.to_date, query.interval),
        filters=Filters(service=service, source=query.source),
        columns=columns,
    )


def blood_pressure(
    *, session: Session, query: ServiceCountsQuery, caller: User
) -> BloodPressureReport:
    """Blood Pressure Check referrals, checks done, converted to ABPM and confirmed hypertension."""
    data = _service_rows(
        session=session,
        query=query,
        caller=caller,
        service=Service.BLOOD_PRESSURE,
        counts=BP_COUNTS,
    )
    order = (*BP_COUNTS, "abpm_rate", "hypertension_rate", "hypertension_of_abpm_rate")
    rows = []
    for key in data.ordered_keys():
        figures = data.published(key)
        rows.append(
            BloodPressureRow(
                **data.head(key),
                **{name: figures.count(name) for name in BP_COUNTS},
                abpm_rate=figures.ratio("abpm_rate", "bp_abpm", "bp_checked"),
                hypertension_rate=figures.ratio(
                    "hypertension_rate", "bp_hypertension_confirmed", "bp_checked"
                ),
                hypertension_of_abpm_rate=figures.ratio(
                    "hypertension_of_abpm_rate", "bp_hypertension_confirmed", "bp_abpm"
                ),
                suppressed=figures.names(order),
            )
        )
    return BloodPressureReport(
        query=query,
        disclosure=data.rule.public(),
        rows=[r for r in rows if r.group_kind is not None],
        totals=[r for r in rows if r.group_kind is None],
    )


def dms(*, session: Session, query: ServiceCountsQuery, caller: User) -> DmsReport:
    """Discharge Medicines Service referrals and the stages completed (stage 1 within 72 hours)."""
    data = _service_rows(
        session=session, query=query, caller=caller, service=Service.DMS, counts=DMS_COUNTS
    )
    order = (*DMS_COUNTS, "stage1_within_72h_rate", "stage3_rate")
    rows = []
    for key in data.ordered_keys():
        figures = data.published(key)
        rows.append(
            DmsRow(
                **data.head(key),
                **{name: figures.count(name) for name in DMS_COUNTS},
                stage1_within_72h_rate=figures.ratio(
                    "stage1_within_72h_rate", "dms_stage1_within_72h", "dms_stage1"
                ),
                stage3_rate=figures.ratio("stage3_rate", "dms_stage3", "made"),
                suppressed=figures.names(order),
            )
        )
    return DmsReport(
        query=query,
        disclosure=data.rule.public(),
        rows=[r for r in rows if r.group_kind is not None],
        totals=[r for r in rows if r.group_kind is None],
    )


def trend(*, session: Session, query: TrendQuery, caller: User) -> TrendReport:
    """Month on month: each group's whole calendar months from the month of `from` to the month
    of `to`, each against the month before."""
    scope = _scope(session=session, caller=caller)
    check_dates(query.from_date, query.to_date)
    first = month_start(query.from_date)
    window = make_window(
        month_start(first - timedelta(days=1)), month_end(query.to_date), Interval.MONTH
    )
    columns = {"made": "received" if query.group_by is GroupBy.PHARMACY else "made"}
    data = grouped(
        session=session,
        scope=scope,
        group_by=query.group_by,
        window=window,
        filters=Filters(query.service, query.source, query.pathway),
        columns=columns,
    )
    order = (
        "made",
        "previous_made",
        "change",
        "change_percent",
        "per_1000_patients",
        "previous_per_1000_patients",
        "per_1000_change",
    )
    rows = []
    for key in data.ordered_keys():
        period, group, _ = key
        if period == 0:
            continue
        now = data.published(key)
        before_key = (period - 1, group, None)
        before = data.published(before_key) if before_key in data.table.counts else None
        made = now.count("made")
        per_1000 = now.ratio(
            "per_1000_patients", "made", data.patients(key), scale=1000, digits=PER_1000_DIGITS
        )
        previous_made = previous_rate = change_percent = None
        change = per_1000_change = None
        if before is not None:
            previous_made = before.count("made")
            if previous_made is None:
                now.suppressed.add("previous_made")
            previous_rate = before.ratio(
                "per_1000_patients",
                "made",
                data.patients(before_key),
                scale=1000,
                digits=PER_1000_DIGITS,
            )
            if previous_rate is None and "made" in before.suppressed:
                now.suppressed.add("previous_per_1000_patients")
            if made is not None and previous_made is not None:
                change = made - previous_made
                if before.counts["made"]:
                    change_percent = round(
                        (now.counts["made"] - before.counts["made"]) / before.counts["made"] * 100,
                        2,
                    )
            else:
                now.suppressed.update({"change", "change_percent"})
            if per_1000 is not None and previous_rate is not None:
                per_1000_change = round(per_1000 - previous_rate, PER_1000_DIGITS)
            elif (
                "per_1000_patients" in now.suppressed
                or "previous_per_1000_patients" in now.suppressed
            ):
                now.suppressed.add("per_1000_change")
        patients = data.patients(key)
        head = data.head(key)
        rows.append(
            TrendRow(
                **head,
                made=made,
                previous_made=previous_made,
                change=change,
                change_percent=change_percent,
                registered_patients=None if patients is None else round(patients),
                per_1000_patients=per_1000,
                previous_per_1000_patients=previous_rate,
                per_1000_change=per_1000_change,
                suppressed=now.names(order),
            )
        )
    return TrendReport(
        query=query,
        disclosure=scope.rule.public(),
        rows=[r for r in rows if r.group_kind is not None],
        totals=[r for r in rows if r.group_kind is None],
    )


# ---- practices and concentration --------------------------------------------------------------


def _practice_made(
    *,
    session: Session,
    scope: Scope,
    window: Window,
    service: Service | None,
    source: SourceScope,
    keys: Sequence[str],
) -> dict[tuple[Any, ...], int]:
    sums = read_sums(
        session=session,
        side=PRACTICE,
        keys=keys,
        columns={"made": "made"},
        window=window,
        filters=Filters(
            service=service,
            source=ReferralSource.GP_PRACTICE if source is SourceScope.GP_PRACTICE else None,
        ),
        icb=scope.icb,
    )
    return {key[1:]: values[0] for key, values in sums.items()}


def inactive_practices(
    *, session: Session, query: InactivePracticesQuery, caller: User
) -> InactivePracticesReport:
    """Practices in scope that made no referral (to the service, when one is named) in the
    period: by default none they made themselves (source gp-practice); with source=all, none for
    their registered patients from any source."""
    scope = _scope(session=session, caller=caller)
    check_dates(query.from_date, query.to_date)
    window = make_window(query.from_date, query.to_date, Interval.NONE)
    made = _practice_made(
        session=session,
        scope=scope,
        window=window,
        service=query.service,
        source=query.source,
        keys=["org_ods"],
    )
    segments = directory_segments(
        session=session, start=query.from_date, end=query.to_date, icb=scope.icb
    )
    people = population(segments=segments, window=window, group_by=GroupBy.PRACTICE)
    last: dict[str, Segment] = {}
    for segment in segments:
        if segment.practice not in last or segment.last > last[segment.practice].last:
            last[segment.practice] = segment
    idle = sorted(p for p in last if not made.get((p,), 0))
    names = _names(
        session=session,
        codes=[c for p in idle for c in (p, last[p].pcn, last[p].place)],
    )
    rows = []
    for practice in idle:
        where = last[practice]
        patients = people.patients(window, 0, practice)
        rows.append(
            InactivePractice(
                practice_code=practice,
                practice_name=names.get(practice, practice),
                pcn_code=where.pcn or None,
                pcn_name=names.get(where.pcn) if where.pcn else None,
                place_code=where.place or None,
                place_name=names.get(where.place) if where.place else None,
                registered_patients=None if patients is None else round(patients),
            )
        )
    return InactivePracticesReport(
        query=query,
        disclosure=scope.rule.public(),
        practices_in_scope=len(last),
        count=len(rows),
        rows=rows,
    )


@dataclass(frozen=True, slots=True)
class Spread:
    practices: int
    with_referrals: int
    referrals: int
    top_practices: int
    top_referrals: int
    for_share: int | None


def spread(made: Sequence[int], *, top_percent: float, share_percent: float) -> Spread:
    """How concentrated the referrals of `made` (one count per practice, zeros included) are."""
    ranked = sorted(made, reverse=True)
    total = sum(ranked)
    top = math.ceil(len(ranked) * top_percent / 100 - 1e-9) if ranked else 0
    top = max(top, 1) if ranked else 0
    needed = None
    if total > 0:
        target = total * share_percent / 100
        running = 0
        for n, value in enumerate(ranked, start=1):
            running += value
            if running >= target - 1e-9:
                needed = n
                break
    return Spread(
        practices=len(ranked),
        with_referrals=sum(1 for v in ranked if v > 0),
        referrals=total,
        top_practices=top,
        top_referrals=sum(ranked[:top]),
        for_share=needed,
    )


def concentration(
    *, session: Session, query: ConcentrationQuery, caller: User
) -> ConcentrationReport:
    """The share of referrals made by the top practices, per service and place, and the fewest
    practices that made a given share."""
    scope = _scope(session=session, caller=caller)
    check_dates(query.from_date, query.to_date)
    window = make_window(query.from_date, query.to_date, Interval.NONE)
    made = _practice_made(
        session=session,
        scope=scope,
        window=window,
        service=query.service,
        source=query.source,
        keys=["service", "place_ods", "org_ods"],
    )
    segments = directory_segments(
        session=session, start=query.from_date, end=query.to_date, icb=scope.icb
    )
    members: dict[str | None, set[str]] = defaultdict(set)
    for segment in segments:
        members[segment.place].add(segment.practice)
        members[None].add(segment.practice)
    for (_, place, practice), _count in made.items():
        members[place].add(practice)
        members[None].add(practice)
    services: list[Service | None] = (
        [query.service] if query.service is not None else [*Service, None]
    )
    places: list[str | None] = sorted(
        (p for p in members if p is not None), key=lambda p: (p == "", p)
    )
    places.append(None)
    per_practice: dict[tuple[Service | None, str | None], dict[str, int]] = defaultdict(dict)
    for (service_code, place, practice), count in made.items():
        for s in {Service(service_code), None} if query.service is None else {query.service}:
            for p in (place, None):
                bucket = per_practice[(s, p)]
                bucket[practice] = bucket.get(practice, 0) + count
    figures = {
        (s, p): spread(
            [per_practice[(s, p)].get(practice, 0) for practice in sorted(members[p])],
            top_percent=query.top_percent,
            share_percent=query.share_percent,
        )
        for s in services
        for p in places
    }
    hidden = disclosure.protect(
        {(p, s if query.service is None else None): f.referrals for (s, p), f in figures.items()},
        scope.rule,
    )
    names = _names(
        session=session, codes=[p for p in places if p] + ([scope.icb] if scope.icb else [])
    )
    all_places = f"All of {names.get(scope.icb, scope.icb)}" if scope.icb else "All places"
    rows = []
    for (s, p), f in figures.items():
        suppressed: list[str] = []
        referrals: int | None = scope.rule.rounded(f.referrals)
        top_referrals: int | None = scope.rule.rounded(f.top_referrals)
        if (p, s if query.service is None else None) in hidden:
            referrals = top_referrals = None
            suppressed += ["referrals", "top_referrals"]
        elif scope.rule.sensitive(f.top_referrals):
            top_referrals = None
            suppressed.append("top_referrals")
        share = for_share = for_share_percent = None
        if referrals is None:
            suppressed += ["practices_for_share", "practices_for_share_percent"]
        elif f.for_share is not None:
            for_share = f.for_share
            for_share_percent = round(f.for_share / f.practices * 100, 2)
        if top_referrals is None:
            suppressed.append("top_share")
        elif f.referrals:
            share = round(f.top_referrals / f.referrals, RATE_DIGITS)
        rows.append(
            ConcentrationRow(
                service=s,
                place_code=p,
                place_name=all_places
                if p is None
                else names.get(p, _NO_GROUP[GroupBy.PLACE] if p == "" else p),
                practices=f.practices,
                practices_with_referrals=f.with_referrals,
                referrals=referrals,
                top_practices=f.top_practices,
                top_referrals=top_referrals,
                top_share=share,
                practices_for_share=for_share,
                practices_for_share_percent=for_share_percent,
                suppressed=suppressed,
            )
        )
    return ConcentrationReport(query=query, disclosure=scope.rule.public(), rows=rows)


# ---- CSV ---------------------------------------------------------------------------------------


Report = (
    UptakeReport
    | InactivePracticesReport
    | ConcentrationReport
    | TrendReport
    | BloodPressureReport
    | DmsReport
)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def to_csv(report: Report, *, title: str) -> str:
    """A report as CSV: '#' comment lines stating the question, period, filters and disclosure
    rule, then one header line and one line per row ("row" is group, total or practice);
    "[c]" marks a suppressed value and an empty cell a figure that does not apply."""
    query: BaseModel = report.query
    rule = report.disclosure
    asked = query.model_dump()
    lines = io.StringIO()
    comments = [
        title,
        f"period: {asked.pop('from_date')} to {asked.pop('to_date')} "
        "(England local dates, inclusive)",
        "filters: "
        + "; ".join(
            f"{k}={_cell(v) or ('none' if k == 'breakdown' else 'all')}" for k, v in asked.items()
        ),
        f"disclosure: {rule.description}",
        *(
            f"{name}: {_cell(value)}"
            for name, value in report
            if name not in ("query", "disclosure") and not isinstance(value, list)
        ),
    ]
    lines.writelines(f"# {line}\n" for line in comments)
    writer = csv.writer(lines, lineterminator="\n")
    (row_type,) = get_args(type(report).model_fields["rows"].annotation)
    fields = [f for f in row_type.model_fields if f != "suppressed"]
    writer.writerow(["row", *fields])
    kind = {InactivePractice: "practice", ConcentrationRow: "place"}.get(row_type, "group")
    for section, rows in (("rows", report.rows), ("totals", getattr(report, "totals", []))):
        for row in rows:
            hidden = set(getattr(row, "suppressed", []))
            writer.writerow(
                ["total" if section == "totals" else kind]
                + [
                    disclosure.SUPPRESSED_MARK
                    if f in hidden and getattr(row, f) is None
                    else _cell(getattr(row, f))
                    for f in fields
                ]
            )
    return lines.getvalue()
