"""The dashboard's pure parts: filters, the default period, targets, ranking and figures."""

import math
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from app.core.config import settings
from app.models.enums import ReferralSource, Service
from app.models.stats import GroupBy, UptakeRow
from app.services import dashboard

PLACES = {"QXX01": "North Place"}
TODAY = date(2026, 11, 22)


def row(code: str, per_1000: float | None, *, suppressed: list[str] | None = None) -> UptakeRow:
    values: dict[str, Any] = dict.fromkeys(
        (
            "made",
            "accepted",
            "declined",
            "forwarded",
            "returned",
            "cancelled",
            "no_contact",
            "completed",
            "completion_rate",
            "median_hours_to_completion",
            "p90_hours_to_completion",
        )
    )
    return UptakeRow(
        group_kind=GroupBy.PCN,
        group_code=code,
        group_name=f"{code} PCN",
        period_start=date(2026, 1, 1),
        period_end=date(2026, 1, 31),
        registered_patients=10_000,
        per_1000_patients=per_1000,
        suppressed=suppressed or [],
        **values,
    )


@pytest.fixture
def target() -> Iterator[None]:
    saved = settings.target_per_1000
    yield
    settings.target_per_1000 = saved


@pytest.mark.parametrize(
    ("today", "start"),
    [
        (date(2026, 11, 22), date(2025, 12, 1)),
        (date(2026, 1, 1), date(2025, 2, 1)),
        (date(2024, 12, 31), date(2024, 1, 1)),
    ],
)
def test_default_period_is_twelve_calendar_months_to_today(today: date, start: date) -> None:
    assert dashboard.default_period(today) == (start, today)


def test_parse_filters_fills_in_the_default_period_and_reads_all_fields() -> None:
    filters, errors = dashboard.parse_filters(
        {"service": "dms", "source": "trust", "from": "", "to": "", "place": "qxx01"},
        places=PLACES,
        today=TODAY,
    )

    assert errors == []
    assert filters == dashboard.Filters(
        service=Service.DMS,
        source=ReferralSource.TRUST,
        from_date=date(2025, 12, 1),
        to_date=TODAY,
        place="QXX01",
    )


def test_parse_filters_collects_every_error() -> None:
    filters, errors = dashboard.parse_filters(
        {"service": "x", "from": "y"}, places=PLACES, today=TODAY
    )

    assert filters is None
    assert errors == [
        "From: enter a date as YYYY-MM-DD.",
        "Service: choose a service from the list.",
    ]


def test_parse_filters_accepts_a_period_up_to_the_limit() -> None:
    start = date(2024, 1, 1)
    end = date.fromordinal(start.toordinal() + dashboard.MAX_DAYS - 1)

    filters, errors = dashboard.parse_filters(
        {"from": start.isoformat(), "to": end.isoformat()}, places=PLACES, today=TODAY
    )
    assert errors == []
    assert filters is not None

    _, errors = dashboard.parse_filters(
        {"from": start.isoformat(), "to": date.fromordinal(end.toordinal() + 1).isoformat()},
        places=PLACES,
        today=TODAY,
    )
    assert errors == [f"From: choose a period of at most {dashboard.MAX_DAYS} days."]


@pytest.mark.usefixtures("target")
def test_monthly_target_from_one_value_or_per_service() -> None:
    settings.target_per_1000 = None
    assert dashboard.monthly_target(None) is None

    settings.target_per_1000 = 2.5
    assert dashboard.monthly_target(None) == 2.5
    assert dashboard.monthly_target(Service.DMS) == 2.5

    settings.target_per_1000 = {Service.PHARMACY_FIRST: 3.0, Service.DMS: 0.5}
    assert dashboard.monthly_target(None) == 3.5
    assert dashboard.monthly_target(Service.DMS) == 0.5
    assert dashboard.monthly_target(Service.CONTRACEPTION) is None


def test_rank_pcns_highest_first_with_unrated_last_and_unranked() -> None:
    rows = [
        row("U3", None, suppressed=["made", "per_1000_patients"]),
        row("U1", 2.0),
        row("U2", 5.0),
        row("U0", None),
    ]

    lines = dashboard.rank_pcns(rows, target=3.0)

    assert [(line.rank, line.row.group_code, line.against_target) for line in lines] == [
        (1, "U2", "above"),
        (2, "U1", "below"),
        (None, "U0", ""),
        (None, "U3", ""),
    ]


def test_rank_pcns_ties_share_a_rank_and_no_referrals_rank_last_below_withheld() -> None:
    def made(line: UptakeRow, count: int | None) -> UptakeRow:
        return line.model_copy(update={"made": count})

    rows = [
        made(row("U7", 0.0), 0),
        made(row("U6", None, suppressed=["made", "per_1000_patients"]), None),
        made(row("U5", 0.0), 0),
        made(row("U4", 1.0), 10),
        made(row("U3", 2.0), 20),
        made(row("U2", 2.0), 20),
        made(row("U8", None), 0),  # made none, but no list size: no rate
    ]

    lines = dashboard.rank_pcns(rows, target=1.5)

    assert [
        (line.rank, line.tied, line.row.group_code, line.against_target, line.no_referrals)
        for line in lines
    ] == [
        (1, True, "U2", "above", False),
        (1, True, "U3", "above", False),
        (3, False, "U4", "below", False),
        (None, False, "U6", "", False),  # withheld: at least one referral, so above the zeros
        (5, True, "U5", "below", True),
        (5, True, "U7", "below", True),
        (None, False, "U8", "", True),
    ]


def test_chart_value_keeps_suppressed_apart_from_missing_and_zero() -> None:
    suppressed = row("U1", None, suppressed=["per_1000_patients"])
    unknown = row("U2", None)

    assert dashboard.chart_value(suppressed, "per_1000_patients") is None
    assert math.isnan(dashboard.chart_value(unknown, "per_1000_patients") or 0.0)
    assert dashboard.chart_value(None, "per_1000_patients") == 0.0
    assert dashboard.chart_value(row("U3", 1.5), "per_1000_patients") == 1.5


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (12345, "count", "12,345"),
        (0.666, "percent", "67%"),
        (12.345, "rate", "12.35"),
        (0.0044, "rate", "0.0044"),
        (0.0, "rate", "0.00"),
        (5.0, "hours", "5.0"),
        (None, "count", "-"),
    ],
)
def test_format_figure(value: float | None, kind: str, text: str) -> None:
    assert dashboard.format_figure(value, kind) == text
