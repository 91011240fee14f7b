"""The statistics service has faster ways to the same answers; each must give exactly the answer
of the plain one, on the same referral history (tests/stats_world.py):
- per-PCN, place and ICB questions read the area rollup rows (app/models/rollup.py): asked as the
  service answers them, and with the area rows never chosen;
- `uptake_by_service` reads once for several services: against `uptake` asked for each."""

from collections.abc import Callable
from datetime import date, timedelta
from functools import partial
from typing import Any

import pytest
from pydantic import BaseModel
from sqlmodel import Session

from app.models.enums import Pathway, ReferralSource, Role, Service
from app.models.stats import (
    Breakdown,
    GroupBy,
    Interval,
    ServiceCountsQuery,
    TrendQuery,
    UptakeQuery,
)
from app.models.user import User
from app.services import stats
from app.services.rollups import AREA, PHARMACY, PRACTICE
from tests.factories import caller
from tests.stats_world import (
    ASH,
    BIRCH,
    CHERRY,
    DOGWOOD,
    ELDER,
    HOLLY,
    ICB,
    YEW,
    Clock,
    Referrals,
    at,
    build_world,
    install_clock,
)

ADMIN = caller(Role.ADMIN, "X26")
ANALYST = caller(Role.ICB_ANALYST, ICB)
WHOLE_MONTHS = (date(2025, 12, 1), date(2026, 3, 31))
PARTIAL_EDGES = (date(2025, 12, 17), date(2026, 3, 9))  # day rows at both ends


@pytest.fixture
def history(session: Session, monkeypatch: pytest.MonkeyPatch) -> Referrals:
    """About 80 referrals from December 2025 to March 2026: every practice (Cherry moves PCN on
    1 February), four services, three sources, several pathways, and outcomes with times."""
    clock: Clock = install_clock(monkeypatch)
    build_world(session)
    made = Referrals(session, clock)
    practices = (ASH, BIRCH, CHERRY, DOGWOOD, ELDER)
    pathways = ("sore-throat", "sinusitis", "minor-illness", "shingles")
    day = date(2025, 12, 1)
    n = 0
    while day <= date(2026, 3, 31):
        practice = practices[n % len(practices)]
        when = at(day, 9 + n % 8)
        pharmacy = (YEW, HOLLY)[n % 2]
        kind = n % 6
        if kind in (0, 1, 2):
            source = ("gp-practice", "nhs111", "gp-practice")[kind]
            referral = made.make(
                when,
                practice=practice,
                pharmacy=pharmacy,
                source=source,
                pathway=pathways[n % len(pathways)],
            )
            if n % 3 == 0:
                made.complete(
                    referral, when + timedelta(hours=1), when + timedelta(hours=2 + 7 * (n % 9))
                )
            elif n % 3 == 1:
                made.decline(referral, when + timedelta(hours=3))
        elif kind == 3:
            made.make(when, practice=practice, pharmacy=pharmacy, service=Service.BLOOD_PRESSURE)
        elif kind == 4:
            made.make(
                when, practice=practice, pharmacy=pharmacy, service=Service.DMS, source="trust"
            )
        else:
            referral = made.make(when, practice=practice, pharmacy=pharmacy)
            made.forward(referral, when + timedelta(hours=2), to=HOLLY if pharmacy == YEW else YEW)
        day += timedelta(days=1 + n % 2)
        n += 1
    return made


def both_paths(
    monkeypatch: pytest.MonkeyPatch, ask: Callable[[], BaseModel]
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(the answer as given, the answer from the practice rows, the sides read for the first)."""
    chosen: list[str] = []
    choose = stats.rows_side

    def recording(**kwargs: Any) -> str:
        side = choose(**kwargs)
        chosen.append(side)
        return side

    monkeypatch.setattr(stats, "rows_side", recording)
    coarse = ask().model_dump()
    monkeypatch.setattr(stats, "rows_side", lambda **question: question["side"])
    fine = ask().model_dump()
    monkeypatch.setattr(stats, "rows_side", choose)
    return coarse, fine, chosen


def ask_uptake(history: Referrals, query: UptakeQuery, who: User) -> BaseModel:
    return stats.uptake(session=history.session, query=query, caller=who)


@pytest.mark.parametrize("who", [ANALYST, ADMIN], ids=["analyst", "admin"])
@pytest.mark.parametrize("interval", list(Interval))
@pytest.mark.parametrize("dates", [WHOLE_MONTHS, PARTIAL_EDGES], ids=["whole", "partial"])
def test_uptake_by_area_is_the_same_from_area_rows(
    history: Referrals,
    monkeypatch: pytest.MonkeyPatch,
    who: User,
    interval: Interval,
    dates: tuple[date, date],
) -> None:
    for group_by in (GroupBy.PCN, GroupBy.PLACE, GroupBy.ICB):
        for service in (None, Service.PHARMACY_FIRST, Service.DMS):
            query = UptakeQuery(
                group_by=group_by,
                service=service,
                from_date=dates[0],
                to_date=dates[1],
                interval=interval,
            )
            coarse, fine, sides = both_paths(monkeypatch, partial(ask_uptake, history, query, who))
            assert sides == [AREA]
            assert coarse == fine, (group_by, service)
            assert any(row["made"] != 0 for row in coarse["rows"])  # made, or withheld


@pytest.mark.parametrize("who", [ANALYST, ADMIN], ids=["analyst", "admin"])
def test_service_tables_and_trend_by_area_are_the_same_from_area_rows(
    history: Referrals, monkeypatch: pytest.MonkeyPatch, who: User
) -> None:
    session = history.session
    counts = ServiceCountsQuery(
        from_date=PARTIAL_EDGES[0], to_date=PARTIAL_EDGES[1], group_by=GroupBy.PCN
    )
    trend = TrendQuery(from_date=WHOLE_MONTHS[0], to_date=WHOLE_MONTHS[1], group_by=GroupBy.PLACE)
    asks: list[Callable[[], BaseModel]] = [
        lambda: stats.blood_pressure(session=session, query=counts, caller=who),
        lambda: stats.dms(session=session, query=counts, caller=who),
        lambda: stats.trend(session=session, query=trend, caller=who),
    ]
    for ask in asks:
        coarse, fine, sides = both_paths(monkeypatch, ask)
        assert sides == [AREA]
        assert coarse == fine


@pytest.mark.parametrize(
    ("group_by", "filters", "side"),
    [
        (GroupBy.PCN, {"source": ReferralSource.NHS111}, PRACTICE),
        (GroupBy.PCN, {"pathway": Pathway.SINUSITIS}, PRACTICE),
        (GroupBy.ICB, {"breakdown": Breakdown.SOURCE}, PRACTICE),
        (GroupBy.PLACE, {"breakdown": Breakdown.PATHWAY}, PRACTICE),
        (GroupBy.PRACTICE, {}, PRACTICE),
        (GroupBy.PHARMACY, {}, PHARMACY),
    ],
)
def test_questions_the_area_rows_cannot_answer_read_the_finer_rows(
    history: Referrals,
    monkeypatch: pytest.MonkeyPatch,
    group_by: GroupBy,
    filters: dict[str, Any],
    side: str,
) -> None:
    query = UptakeQuery(
        group_by=group_by,
        from_date=PARTIAL_EDGES[0],
        to_date=PARTIAL_EDGES[1],
        interval=Interval.MONTH,
        **filters,
    )
    _, _, sides = both_paths(
        monkeypatch,
        lambda: stats.uptake(session=history.session, query=query, caller=ADMIN),
    )
    assert sides == [side]


@pytest.mark.parametrize("who", [ANALYST, ADMIN], ids=["analyst", "admin"])
@pytest.mark.parametrize(
    ("group_by", "interval", "extra"),
    [
        (GroupBy.ICB, Interval.MONTH, {}),
        (GroupBy.PLACE, Interval.MONTH, {}),
        (GroupBy.PCN, Interval.NONE, {"source": ReferralSource.GP_PRACTICE}),
        (GroupBy.PRACTICE, Interval.WEEK, {"breakdown": Breakdown.PATHWAY}),
        (GroupBy.PCN, Interval.MONTH, {"breakdown": Breakdown.SOURCE}),
        (GroupBy.PHARMACY, Interval.MONTH, {}),
    ],
)
def test_uptake_by_service_is_uptake_asked_for_each_service(
    history: Referrals, who: User, group_by: GroupBy, interval: Interval, extra: dict[str, Any]
) -> None:
    query = UptakeQuery(
        group_by=group_by,
        from_date=PARTIAL_EDGES[0],
        to_date=PARTIAL_EDGES[1],
        interval=interval,
        **extra,
    )
    services = [*Service]

    together = stats.uptake_by_service(
        session=history.session, query=query, caller=who, services=services
    )

    assert list(together) == services
    for service in services:
        alone = stats.uptake(
            session=history.session,
            query=query.model_copy(update={"service": service}),
            caller=who,
        )
        assert together[service].model_dump() == alone.model_dump(), service
    assert any(r.made != 0 for s in services for r in together[s].rows)
