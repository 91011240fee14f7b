"""The ICB uptake dashboard: filters from the query string, then the page's figures and charts,
all from the uptake report (app/services/stats.py) and the directory.

Figures the disclosure rule withholds arrive as None (named in the row's `suppressed`); they stay
None here, are left unranked and are drawn and tabulated as marked gaps, never as zero.

The report lists every PCN of the ICB in the directory, those that made no referrals too: an
analyst wants to see them. Their rate is a true, published 0 (the disclosure rule never withholds
a zero), so they are ranked, tied at the bottom of the ranking (below the PCNs whose figures are
withheld, which rest on at least one referral), and drawn as zero-height bars.
"""

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import ColumnElement, and_, or_
from sqlmodel import Session, col, select

from app.core.config import settings
from app.core.errors import ValidationFailed
from app.db.base import utc_now
from app.models.enums import OrgKind, ReferralSource, Role, Service
from app.models.organisation import Membership, Organisation
from app.models.stats import Disclosure, GroupBy, Interval, UptakeQuery, UptakeRow
from app.models.user import User
from app.services import charts
from app.services import stats as stats_service
from app.services.rollups import local_day

MAX_DAYS = 3 * 366
DAYS_PER_MONTH = 365.25 / 12

SERVICE_NAMES: dict[Service, str] = {
    Service.PHARMACY_FIRST: "Pharmacy First",
    Service.BLOOD_PRESSURE: "Blood Pressure Check",
    Service.CONTRACEPTION: "Contraception",
    Service.DMS: "Discharge Medicines Service",
}
SOURCE_NAMES: dict[ReferralSource, str] = {
    ReferralSource.GP_PRACTICE: "GP practice",
    ReferralSource.NHS111: "NHS 111",
    ReferralSource.URGENT_CARE: "Urgent care",
    ReferralSource.TRUST: "Trust",
    ReferralSource.SELF_REFERRAL: "Self-referral",
}


class FilterForm(BaseModel):
    """The filter form's GET parameters; an empty field means "all" (or the default period)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    service: Service | None = None
    source: ReferralSource | None = None
    from_date: date | None = PydanticField(default=None, alias="from")
    to_date: date | None = PydanticField(default=None, alias="to")
    place: str | None = PydanticField(default=None, max_length=10, pattern=r"^[A-Za-z0-9]+$")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


@dataclass(frozen=True, slots=True)
class Filters:
    service: Service | None
    source: ReferralSource | None
    from_date: date
    to_date: date
    place: str | None


@dataclass(frozen=True, slots=True)
class PcnLine:
    rank: int | None  # None: no rate to rank by (suppressed or no population)
    row: UptakeRow
    against_target: str  # "above", "below", "on target", or "" (no target or no rate)
    tied: bool = False  # another PCN has the same rate, so the same rank

    @property
    def no_referrals(self) -> bool:
        """The PCN made no referrals under the filters (a published zero, never a withheld one)."""
        return self.row.made == 0


@dataclass(frozen=True, slots=True)
class TrendLine:
    service: Service
    name: str
    rows: list[UptakeRow | None]  # one per month; None: no referrals that month


@dataclass
class DashboardPage:
    caller: User
    form: dict[str, str]
    services: dict[Service, str] = field(default_factory=lambda: dict(SERVICE_NAMES))
    sources: dict[ReferralSource, str] = field(default_factory=lambda: dict(SOURCE_NAMES))
    places: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    filters: Filters | None = None
    scope: str = ""
    disclosure: Disclosure | None = None
    headline: UptakeRow | None = None
    monthly_target: float | None = None
    period_target: float | None = None
    pcns: list[PcnLine] = field(default_factory=list)
    months: list[tuple[date, date]] = field(default_factory=list)
    trend: list[TrendLine] = field(default_factory=list)
    bar_chart: str = ""
    trend_chart: str = ""


def default_period(today: date) -> tuple[date, date]:
    """The twelve calendar months up to today: from the first of the month eleven months back."""
    start = today.replace(day=1)
    for _ in range(11):
        start = (start - timedelta(days=1)).replace(day=1)
    return start, today


def monthly_target(service: Service | None) -> float | None:
    """The configured target per 1,000 a month for a service, or for all services (the sum of the
    per-service targets, or the single configured value)."""
    target = settings.target_per_1000
    if target is None or isinstance(target, float | int):
        return target
    if service is None:
        return sum(target.values()) if target else None
    return target.get(service)


def _places(*, session: Session, caller: User, on: date) -> dict[str, str]:
    """The places the caller may filter by: those in their ICB today (admin: every place)."""
    statement = select(Organisation.ods_code, Organisation.name).where(
        Organisation.kind == OrgKind.PLACE
    )
    if caller.role is not Role.ADMIN:
        statement = statement.join(
            Membership, col(Membership.member_ods) == col(Organisation.ods_code)
        ).where(Membership.group_ods == caller.org, _in_force(on))
    return dict(session.exec(statement.order_by(col(Organisation.name))).all())


def _in_force(on: date) -> ColumnElement[bool]:
    return and_(
        col(Membership.start_date) <= on,
        or_(col(Membership.end_date).is_(None), col(Membership.end_date) >= on),
    )


def _pcns_in_place(*, session: Session, place: str, on: date) -> set[str]:
    return set(
        session.exec(
            select(Membership.member_ods).where(Membership.group_ods == place, _in_force(on))
        ).all()
    )


def parse_filters(
    params: Mapping[str, str], *, places: Mapping[str, str], today: date
) -> tuple[Filters | None, list[str]]:
    """The filters asked for, or the reasons they cannot be used."""
    try:
        form = FilterForm.model_validate(dict(params))
    except ValidationError as exc:
        return None, sorted({_FIELD_ERRORS[str(error["loc"][0])] for error in exc.errors()})
    start, end = default_period(today)
    filters = Filters(
        service=form.service,
        source=form.source,
        from_date=form.from_date or start,
        to_date=form.to_date or end,
        place=form.place.upper() if form.place else None,
    )
    errors = []
    if filters.from_date > filters.to_date:
        errors.append("From: the first day must not be after the last day.")
    elif (filters.to_date - filters.from_date).days >= MAX_DAYS:
        errors.append(f"From: choose a period of at most {MAX_DAYS} days.")
    if filters.place is not None and filters.place not in places:
        errors.append("Place: choose a place from the list.")
    return (None, errors) if errors else (filters, [])


def _query(filters: Filters, **overrides: object) -> UptakeQuery:
    values: dict[str, object] = {
        "group_by": GroupBy.PCN,
        "service": filters.service,
        "source": filters.source,
        "from_date": filters.from_date,
        "to_date": filters.to_date,
        "interval": Interval.NONE,
    }
    values.update(overrides)
    return UptakeQuery.model_validate(values)


def rank_pcns(rows: Sequence[UptakeRow], *, target: float | None) -> list[PcnLine]:
    """PCNs by referrals per 1,000 patients, highest first, ties by name sharing a rank ("1, 2,
    2, 4"). Then the PCNs without a rate (withheld, or no list size) but with referrals, unranked
    by name: a withheld figure rests on at least one referral (the disclosure rule never withholds
    a zero), so they stand above the PCNs that made none. Those come last, tied at the bottom
    rank, followed by any that made none and have no list size (unranked)."""

    def block(row: UptakeRow) -> int:
        rate = row.per_1000_patients
        if rate is None:
            return 3 if row.made == 0 else 1
        return 0 if rate > 0 else 2

    ordered = sorted(
        rows, key=lambda row: (block(row), -(row.per_1000_patients or 0.0), row.group_name)
    )
    ties = Counter(row.per_1000_patients for row in ordered if block(row) in (0, 2))
    lines = []
    rank = 0
    previous: float | None = None
    for position, row in enumerate(ordered, start=1):
        rate = row.per_1000_patients
        if rate is None:
            lines.append(PcnLine(rank=None, row=row, against_target=""))
            continue
        if rate != previous:
            rank, previous = position, rate
        against = ""
        if target is not None:
            difference = rate - target
            against = "above" if difference > 0 else "below" if difference < 0 else "on target"
        lines.append(PcnLine(rank=rank, row=row, against_target=against, tied=ties[rate] > 1))
    return lines


def chart_value(row: UptakeRow | None, name: str) -> float | None:
    """A figure for a chart: None when suppressed, NaN when there is no figure, 0 for no row."""
    if row is None:
        return 0.0
    value = getattr(row, name)
    if value is None:
        return None if name in row.suppressed else math.nan
    return float(value)


def month_label(start: date) -> str:
    return start.strftime("%b %Y")


def month_end(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1) - timedelta(days=1)


def long_date(day: date) -> str:
    return f"{day.day} {day:%B %Y}"


def format_figure(value: float | None, kind: str) -> str:
    """A published figure as text: counts with thousands separators, rates per 1,000 to two
    decimal places, hours to one, completion rates as whole percentages."""
    if value is None:
        return "-"
    if kind == "count":
        return f"{value:,.0f}"
    if kind == "percent":
        return f"{value:.0%}"
    if kind == "rate":
        if value == 0 or abs(value) >= 0.1:
            return f"{value:,.2f}"
        return f"{value:.2g}"  # two significant figures: a small rate never reads as zero
    return f"{value:,.1f}"


def build_page(
    *, session: Session, caller: User, params: Mapping[str, str], today: date | None = None
) -> DashboardPage:
    """Everything the dashboard shows for the caller and the filters asked for (raises Forbidden
    when the statistics service refuses the caller)."""
    today = today or local_day(utc_now())
    page = DashboardPage(caller=caller, form={k: params.get(k, "") for k in _FORM_FIELDS})
    page.places = _places(session=session, caller=caller, on=today)
    filters, page.errors = parse_filters(params, places=page.places, today=today)
    if filters is None:
        return page
    page.filters = filters
    page.form = {
        "service": str(filters.service or ""),
        "source": str(filters.source or ""),
        "from": filters.from_date.isoformat(),
        "to": filters.to_date.isoformat(),
        "place": filters.place or "",
    }
    page.scope = page.places[filters.place] if filters.place else _scope_name(session, caller)
    try:
        _fill(page, session=session, caller=caller, filters=filters)
    except ValidationFailed as error:  # e.g. more rows than the statistics service gives at once
        page.filters = None
        page.errors = [error.detail]
    return page


def _fill(page: DashboardPage, *, session: Session, caller: User, filters: Filters) -> None:
    """The figures and charts for valid filters. The statistics service raises Forbidden for a
    caller it refuses (e.g. an icb-analyst token naming no ICB in the directory)."""
    report = stats_service.uptake(session=session, query=_query(filters), caller=caller)
    page.disclosure = report.disclosure
    rows = report.rows
    if filters.place:
        members = _pcns_in_place(session=session, place=filters.place, on=filters.to_date)
        rows = [row for row in rows if row.group_code in members]
    else:
        page.headline = report.totals[0] if report.totals else None
    page.monthly_target = monthly_target(filters.service)
    days = (filters.to_date - filters.from_date).days + 1
    if page.monthly_target is not None:
        page.period_target = page.monthly_target * days / DAYS_PER_MONTH
    page.pcns = rank_pcns(rows, target=page.period_target)
    page.trend, page.months = _trend(session=session, caller=caller, filters=filters)
    page.bar_chart = _bar_chart(page)
    page.trend_chart = _trend_chart(page)


_FORM_FIELDS = ("service", "source", "from", "to", "place")
_FIELD_ERRORS = {
    "service": "Service: choose a service from the list.",
    "source": "Source: choose a source from the list.",
    "from": "From: enter a date as YYYY-MM-DD.",
    "to": "To: enter a date as YYYY-MM-DD.",
    "place": "Place: choose a place from the list.",
}


def _scope_name(session: Session, caller: User) -> str:
    if caller.role is Role.ADMIN:
        return "all ICBs"
    organisation = session.get(Organisation, caller.org)
    return organisation.name if organisation else caller.org


def _trend(
    *, session: Session, caller: User, filters: Filters
) -> tuple[list[TrendLine], list[tuple[date, date]]]:
    """Monthly figures per service for the ICB (or the chosen place)."""
    services = [filters.service] if filters.service else list(Service)
    lines = []
    months: list[tuple[date, date]] = []
    query = _query(
        filters, group_by=GroupBy.PLACE if filters.place else GroupBy.ICB, interval=Interval.MONTH
    )
    reports = stats_service.uptake_by_service(
        session=session, query=query, caller=caller, services=services
    )
    for service in services:
        report = reports[service]
        months = [(row.period_start, row.period_end) for row in report.totals]
        found = (
            [row for row in report.rows if row.group_code == filters.place]
            if filters.place
            else report.totals
        )
        by_start = {row.period_start: row for row in found}
        lines.append(
            TrendLine(
                service=service,
                name=SERVICE_NAMES[service],
                rows=[by_start.get(start) for start, _ in months],
            )
        )
    return lines, months


def _bar_chart(page: DashboardPage) -> str:
    assert page.filters is not None
    service = SERVICE_NAMES[page.filters.service] if page.filters.service else "All services"
    shown = [line for line in page.pcns if line.row.per_1000_patients is not None]
    none = [line for line in page.pcns if line.no_referrals]
    description = (
        f"{service}: referrals per 1,000 registered patients for each of {len(page.pcns)} PCNs "
        f"in {page.scope}, {page.filters.from_date:%d %B %Y} to {page.filters.to_date:%d %B %Y}, "
        f"highest first. {len(shown)} PCNs have a figure"
    )
    if none:
        description += f"; {len(none)} made no referrals (bars of zero height, at the end)"
    if page.period_target is not None:
        description += (
            f"; the ICB target for the period is {charts.format_number(page.period_target)}"
        )
    description += ". The table after the chart gives every figure."
    return charts.bar_chart(
        chart_id="pcn-rate-chart",
        title=f"Referrals per 1,000 patients by PCN: {service}",
        description=description,
        bars=[
            charts.Bar(
                label=line.row.group_code,
                name=line.row.group_name,
                value=chart_value(line.row, "per_1000_patients"),
            )
            for line in page.pcns
        ],
        y_label="Referrals per 1,000 registered patients",
        x_label="Primary care network (PCN), ranked",
        target=page.period_target,
        target_label="ICB target for the period",
        decimals=2,
    )


def _trend_chart(page: DashboardPage) -> str:
    assert page.filters is not None
    return charts.line_chart(
        chart_id="service-trend-chart",
        title=f"Monthly referrals per 1,000 patients by service: {page.scope}",
        description=(
            f"One line per service ({', '.join(line.name for line in page.trend)}) over "
            f"{len(page.months)} months. The table after the chart gives every figure."
        ),
        x_labels=[month_label(start) for start, _ in page.months],
        series=[
            charts.Series(
                name=line.name,
                values=[chart_value(row, "per_1000_patients") for row in line.rows],
            )
            for line in page.trend
        ],
        y_label="Referrals per 1,000 registered patients",
        x_label="Month",
        decimals=2,
    )
