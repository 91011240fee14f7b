"""Uptake statistics: temporary stand-in, replaced by the stats branch.

A minimal `uptake()` with the agreed signature, so that the dashboard can be built and tested
before the real service lands. It sums the day rollups in SQL, folds them into periods, takes
populations from the directory's dated memberships and list sizes, and applies the default
small-number rule for icb-analysts (1 to 7 withheld, others rounded to the nearest 5, rates from
unrounded numbers but withheld with their numerator); admin sees exact counts; other roles are
refused. It does not guard totals against differencing, and answers neither pharmacy rows nor
breakdowns: the stats branch's service does all of that.
"""

from collections import Counter
from datetime import date, timedelta

from sqlalchemy import Table, and_, func, or_
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from app.core.errors import Forbidden, NotSupported
from app.models.enums import Role
from app.models.organisation import ListSize, Membership, Organisation
from app.models.rollup import HOUR_COLUMNS, HOUR_EDGES, UptakeRollup
from app.models.stats import Disclosure, GroupBy, Interval, UptakeQuery, UptakeReport, UptakeRow
from app.models.user import User

SUPPRESS_FROM, SUPPRESS_TO, ROUND_TO = 1, 7, 5
COUNTS = (
    "made",
    "accepted",
    "declined",
    "forwarded",
    "returned",
    "cancelled",
    "no_contact",
    "completed",
)
_GROUP_COLUMN = {
    GroupBy.PCN: "pcn_ods",
    GroupBy.PRACTICE: "org_ods",
    GroupBy.PLACE: "place_ods",
    GroupBy.ICB: "icb_ods",
}


def _periods(query: UptakeQuery) -> list[tuple[date, date]]:
    if query.interval is Interval.NONE:
        return [(query.from_date, query.to_date)]
    periods = []
    start = query.from_date
    while start <= query.to_date:
        if query.interval is Interval.MONTH:
            following = (start.replace(day=1) + timedelta(days=32)).replace(day=1)
        else:
            following = start + timedelta(days=7 - start.weekday())
        periods.append((start, min(following - timedelta(days=1), query.to_date)))
        start = following
    return periods


def _percentile(histogram: list[int], fraction: float) -> float | None:
    """Hours by linear interpolation inside the histogram bucket holding the fraction."""
    total = sum(histogram)
    if total == 0:
        return None
    wanted = fraction * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= wanted:
            low = HOUR_EDGES[index]
            if index + 1 == len(HOUR_EDGES):
                return float(low)
            return low + (HOUR_EDGES[index + 1] - low) * (wanted - seen) / count
        seen += count
    return float(HOUR_EDGES[-1])


def _populations(*, session: Session, on: date) -> dict[str, Counter[str]]:
    """Registered patients on a day, summed per practice, PCN, place and ICB."""
    in_force = and_(
        col(Membership.start_date) <= on,
        or_(col(Membership.end_date).is_(None), col(Membership.end_date) >= on),
    )
    group_of = dict(
        session.exec(select(Membership.member_ods, Membership.group_ods).where(in_force)).all()
    )
    latest = (
        select(ListSize.practice_ods, func.max(ListSize.effective_date).label("effective"))
        .where(col(ListSize.effective_date) <= on)
        .group_by(col(ListSize.practice_ods))
        .subquery()
    )
    sizes = session.exec(
        select(ListSize.practice_ods, ListSize.registered_patients).join(
            latest,
            and_(
                col(ListSize.practice_ods) == latest.c.practice_ods,
                col(ListSize.effective_date) == latest.c.effective,
            ),
        )
    ).all()
    totals: dict[str, Counter[str]] = {kind: Counter() for kind in GroupBy}
    for practice, patients in sizes:
        pcn = group_of.get(practice, "")
        place = group_of.get(pcn, "")
        icb = group_of.get(place, "")
        totals[GroupBy.PRACTICE][practice] += patients
        for kind, code in ((GroupBy.PCN, pcn), (GroupBy.PLACE, place), (GroupBy.ICB, icb)):
            if code:
                totals[kind][code] += patients
    return totals


def _row(
    *,
    kind: GroupBy | None,
    code: str,
    name: str,
    period: tuple[date, date],
    counts: Counter[str],
    patients: int | None,
    exact: bool,
) -> UptakeRow:
    values: dict[str, int | None] = {count: int(counts[count]) for count in COUNTS}
    suppressed: list[str] = []
    if not exact:
        for count in COUNTS:
            value = values[count]
            assert value is not None
            if SUPPRESS_FROM <= value <= SUPPRESS_TO:
                values[count] = None
                suppressed.append(count)
            else:
                values[count] = ROUND_TO * int(value / ROUND_TO + 0.5)
    made, completed = int(counts["made"]), int(counts["completed"])
    histogram = [int(counts[column]) for column in HOUR_COLUMNS]
    hidden_completion = "completed" in suppressed or "made" in suppressed
    rates: dict[str, float | None] = {
        "completion_rate": completed / made if made and not hidden_completion else None,
        "median_hours_to_completion": None
        if "completed" in suppressed
        else _percentile(histogram, 0.5),
        "p90_hours_to_completion": None
        if "completed" in suppressed
        else _percentile(histogram, 0.9),
        "per_1000_patients": made * 1000 / patients
        if patients and "made" not in suppressed
        else None,
    }
    if hidden_completion:
        suppressed.append("completion_rate")
    if "completed" in suppressed:
        suppressed += ["median_hours_to_completion", "p90_hours_to_completion"]
    if "made" in suppressed:
        suppressed.append("per_1000_patients")
    return UptakeRow(
        group_kind=kind,
        group_code=code,
        group_name=name,
        period_start=period[0],
        period_end=period[1],
        registered_patients=patients,
        suppressed=sorted(set(suppressed)),
        **values,
        **rates,
    )


def uptake(*, session: Session, query: UptakeQuery, caller: User) -> UptakeReport:
    """Temporary stand-in: the uptake report from the day rollups (see the module docstring)."""
    if caller.role not in (Role.ICB_ANALYST, Role.ADMIN):
        raise Forbidden(f"The {caller.role} role may not read statistics.")
    if query.group_by is GroupBy.PHARMACY or query.breakdown is not None:
        raise NotSupported("Pharmacy rows and breakdowns are not available yet.")
    exact = caller.role is Role.ADMIN
    table: Table = UptakeRollup.__table__  # type: ignore[attr-defined]
    group = table.c[_GROUP_COLUMN[query.group_by]]
    sums = [func.sum(table.c[name]) for name in (*COUNTS, *HOUR_COLUMNS)]
    statement = (
        sql_select(group, table.c.period_start, *sums)
        .where(
            table.c.grain == "day",
            table.c.side == "practice",
            table.c.period_start >= query.from_date,
            table.c.period_start <= query.to_date,
            group != "",
        )
        .group_by(group, table.c.period_start)
    )
    for name in ("service", "source", "pathway"):
        value = getattr(query, name)
        if value is not None:
            statement = statement.where(table.c[name] == str(value))
    if not exact:
        statement = statement.where(table.c.icb_ods == caller.org)
    periods = _periods(query)
    by_group: dict[tuple[str, int], Counter[str]] = {}
    for code, day, *figures in session.execute(statement).all():
        index = next(i for i, (start, end) in enumerate(periods) if start <= day <= end)
        counter = by_group.setdefault((code, index), Counter())
        counter.update(dict(zip((*COUNTS, *HOUR_COLUMNS), figures, strict=True)))
    names = dict(
        session.exec(
            select(Organisation.ods_code, Organisation.name).where(
                col(Organisation.ods_code).in_({code for code, _ in by_group})
            )
        ).all()
    )
    populations = [_populations(session=session, on=start) for start, _ in periods]
    rows = [
        _row(
            kind=query.group_by,
            code=code,
            name=names.get(code, code),
            period=periods[index],
            counts=counts,
            patients=populations[index][query.group_by].get(code),
            exact=exact,
        )
        for (code, index), counts in sorted(
            by_group.items(), key=lambda item: (item[0][1], item[0][0])
        )
    ]
    totals = []
    for index, period in enumerate(periods):
        counts = sum((c for (_, i), c in by_group.items() if i == index), Counter[str]())
        patients = (
            sum(populations[index][GroupBy.ICB].values())
            if exact
            else populations[index][GroupBy.ICB].get(caller.org)
        )
        totals.append(
            _row(
                kind=None,
                code="all",
                name="All",
                period=period,
                counts=counts,
                patients=patients,
                exact=exact,
            )
        )
    disclosure = Disclosure(
        exact=exact,
        suppress_from=SUPPRESS_FROM,
        suppress_to=SUPPRESS_TO,
        round_to=ROUND_TO,
        description="Exact counts (admin)."
        if exact
        else f"Counts from {SUPPRESS_FROM} to {SUPPRESS_TO} are suppressed and others rounded to "
        f"the nearest {ROUND_TO}; rates use unrounded counts and are suppressed with their "
        "numerator.",
    )
    return UptakeReport(query=query, disclosure=disclosure, rows=rows, totals=totals)
