"""Uptake statistics for ICB analysts (JSON, or CSV with `Accept: text/csv`)."""

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import Response

from app.auth.deps import require_role
from app.db.session import SessionDep
from app.models.common import ErrorBody
from app.models.enums import Pathway, ReferralSource, Role, Service
from app.models.stats import (
    BloodPressureReport,
    Breakdown,
    ConcentrationQuery,
    ConcentrationReport,
    DmsReport,
    GroupBy,
    InactivePracticesQuery,
    InactivePracticesReport,
    Interval,
    ServiceCountsQuery,
    SourceScope,
    TrendQuery,
    TrendReport,
    UptakeQuery,
    UptakeReport,
)
from app.models.stats_examples import CSV_EXAMPLES
from app.models.user import User
from app.routers.errors import NotAcceptable
from app.routers.examples import error_responses
from app.services import stats as stats_service

router = APIRouter(prefix="/api/v1/stats", tags=["statistics"])

StatsReader = Annotated[User, Depends(require_role(Role.ICB_ANALYST, Role.ADMIN))]

CSV = "text/csv"
JSON = "application/json"


def response_format(
    accept: Annotated[
        str | None,
        Header(description="`text/csv` for CSV; JSON otherwise (`application/json`, `*/*`)"),
    ] = None,
) -> str:
    """JSON unless the caller prefers CSV (ties go to JSON); 406 when it accepts neither."""
    if not accept:
        return JSON
    ranges = []
    for item in accept.split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append((media, quality))

    def quality_of(offered: str) -> float:
        patterns = (offered, offered.split("/")[0] + "/*", "*/*")
        matches = [(patterns.index(m), q) for m, q in ranges if m in patterns]
        return min(matches)[1] if matches else 0.0

    as_json, as_csv = quality_of(JSON), quality_of(CSV)
    if as_json <= 0 and as_csv <= 0:
        raise NotAcceptable("Statistics are served as application/json or text/csv.")
    return CSV if as_csv > as_json else JSON


Format = Annotated[str, Depends(response_format)]
From = Annotated[date, Query(alias="from", description="First day, England local date (inclusive)")]
To = Annotated[date, Query(alias="to", description="Last day, England local date (inclusive)")]


def _answer(report: stats_service.Report, fmt: str, title: str) -> Response:
    """The report rendered once (a large table is not re-validated on the way out)."""
    if fmt == CSV:
        return Response(stats_service.to_csv(report, title=title), media_type=CSV)
    return Response(report.model_dump_json(), media_type=JSON)


def _responses(name: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": "JSON by default; CSV with `Accept: text/csv`",
            "content": {CSV: {"schema": {"type": "string"}, "example": CSV_EXAMPLES[name]}},
        },
        **error_responses(401, 403, 422),
        406: {"model": ErrorBody, "description": "Neither JSON nor CSV is acceptable"},
    }


def uptake_query(
    from_date: From,
    to_date: To,
    group_by: GroupBy = GroupBy.PCN,
    service: Service | None = None,
    source: ReferralSource | None = None,
    pathway: Pathway | None = None,
    interval: Interval = Interval.MONTH,
    breakdown: Annotated[
        Breakdown | None, Query(description="Also break each group down by source or pathway")
    ] = None,
) -> UptakeQuery:
    return UptakeQuery(
        group_by=group_by,
        service=service,
        source=source,
        pathway=pathway,
        from_date=from_date,
        to_date=to_date,
        interval=interval,
        breakdown=breakdown,
    )


@router.get("/uptake", response_model=UptakeReport, responses=_responses("uptake"))
def read_uptake(
    session: SessionDep,
    user: StatsReader,
    fmt: Format,
    query: Annotated[UptakeQuery, Depends(uptake_query)],
) -> Response:
    """Referrals made and their outcomes per group and period, per 1,000 registered patients."""
    report = stats_service.uptake(session=session, query=query, caller=user)
    return _answer(report, fmt, "pharmref uptake statistics")


def inactive_query(
    from_date: From,
    to_date: To,
    service: Service | None = None,
    source: Annotated[
        SourceScope,
        Query(description="gp-practice: referrals the practice made; all: any source"),
    ] = SourceScope.GP_PRACTICE,
) -> InactivePracticesQuery:
    return InactivePracticesQuery(
        service=service, source=source, from_date=from_date, to_date=to_date
    )


@router.get(
    "/practices-without-referrals",
    response_model=InactivePracticesReport,
    responses=_responses("practices-without-referrals"),
)
def read_practices_without_referrals(
    session: SessionDep,
    user: StatsReader,
    fmt: Format,
    query: Annotated[InactivePracticesQuery, Depends(inactive_query)],
) -> Response:
    """Practices that made no referral (to a service) in the period."""
    report = stats_service.inactive_practices(session=session, query=query, caller=user)
    return _answer(report, fmt, "pharmref practices without referrals")


def concentration_query(
    from_date: From,
    to_date: To,
    service: Service | None = None,
    source: Annotated[
        SourceScope,
        Query(description="gp-practice: referrals the practice made; all: any source"),
    ] = SourceScope.GP_PRACTICE,
    top_percent: Annotated[
        float, Query(gt=0, le=100, description="The top share of practices to measure")
    ] = 10.0,
    share_percent: Annotated[
        float, Query(gt=0, le=100, description="The share of referrals to find practices for")
    ] = 50.0,
) -> ConcentrationQuery:
    return ConcentrationQuery(
        service=service,
        source=source,
        from_date=from_date,
        to_date=to_date,
        top_percent=top_percent,
        share_percent=share_percent,
    )


@router.get(
    "/concentration", response_model=ConcentrationReport, responses=_responses("concentration")
)
def read_concentration(
    session: SessionDep,
    user: StatsReader,
    fmt: Format,
    query: Annotated[ConcentrationQuery, Depends(concentration_query)],
) -> Response:
    """Share of referrals from the top practices, per service and place."""
    report = stats_service.concentration(session=session, query=query, caller=user)
    return _answer(report, fmt, "pharmref referral concentration")


def trend_query(
    from_date: From,
    to_date: To,
    group_by: GroupBy = GroupBy.PCN,
    service: Service | None = None,
    source: ReferralSource | None = None,
    pathway: Pathway | None = None,
) -> TrendQuery:
    return TrendQuery(
        group_by=group_by,
        service=service,
        source=source,
        pathway=pathway,
        from_date=from_date,
        to_date=to_date,
    )


@router.get("/month-on-month", response_model=TrendReport, responses=_responses("month-on-month"))
def read_month_on_month(
    session: SessionDep,
    user: StatsReader,
    fmt: Format,
    query: Annotated[TrendQuery, Depends(trend_query)],
) -> Response:
    """Each group's referrals per calendar month against the month before (per PCN by default)."""
    report = stats_service.trend(session=session, query=query, caller=user)
    return _answer(report, fmt, "pharmref month-on-month change")


def service_counts_query(
    from_date: From,
    to_date: To,
    group_by: GroupBy = GroupBy.PCN,
    source: ReferralSource | None = None,
    interval: Interval = Interval.MONTH,
) -> ServiceCountsQuery:
    return ServiceCountsQuery(
        group_by=group_by, source=source, from_date=from_date, to_date=to_date, interval=interval
    )


@router.get(
    "/blood-pressure", response_model=BloodPressureReport, responses=_responses("blood-pressure")
)
def read_blood_pressure(
    session: SessionDep,
    user: StatsReader,
    fmt: Format,
    query: Annotated[ServiceCountsQuery, Depends(service_counts_query)],
) -> Response:
    """Blood pressure checks converted to ambulatory monitoring and to confirmed hypertension."""
    report = stats_service.blood_pressure(session=session, query=query, caller=user)
    return _answer(report, fmt, "pharmref blood pressure check outcomes")


@router.get("/dms", response_model=DmsReport, responses=_responses("dms"))
def read_dms(
    session: SessionDep,
    user: StatsReader,
    fmt: Format,
    query: Annotated[ServiceCountsQuery, Depends(service_counts_query)],
) -> Response:
    """Discharge Medicines Service stages completed, stage 1 within 72 hours."""
    report = stats_service.dms(session=session, query=query, caller=user)
    return _answer(report, fmt, "pharmref DMS stage completion")
