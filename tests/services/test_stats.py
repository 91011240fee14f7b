"""Uptake statistics from the rollups, checked against hand-computed figures for referral
histories made through the real services (the QZZ test ICB, tests/stats_world.py)."""

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from app.core.config import settings
from app.core.errors import Forbidden, ValidationFailed
from app.models import stats_examples as examples
from app.models.enums import Pathway, ReferralSource, Role, Service
from app.models.organisation import Membership
from app.models.rollup import HOUR_EDGES, UptakeRollup
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
    UptakeRow,
)
from app.services import organisations, stats
from app.services.rollups import AREA, DAY, PRACTICE, month_start
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
    WEST,
    YEW,
    Clock,
    Referrals,
    at,
    build_world,
    install_clock,
)

ADMIN = caller(Role.ADMIN, "X26")
ANALYST = caller(Role.ICB_ANALYST, ICB)
JAN = (date(2026, 1, 1), date(2026, 1, 31))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return install_clock(monkeypatch)


@pytest.fixture
def history(session: Session, clock: Clock) -> Referrals:
    build_world(session)
    return Referrals(session, clock)


@pytest.fixture
def exact_analyst(monkeypatch: pytest.MonkeyPatch) -> None:
    """An analyst's scope (QZZ only) without suppression or rounding: suppress nothing (1 to 0),
    round to the nearest 1; the figures are then the exact ones of the test ICB alone."""
    monkeypatch.setattr(settings, "suppress_to", 0)
    monkeypatch.setattr(settings, "round_to", 1)


def uptake(
    session: Session, *, who: Any = ANALYST, dates: tuple[date, date] = JAN, **kwargs: Any
) -> UptakeReport:
    query = UptakeQuery(from_date=dates[0], to_date=dates[1], **kwargs)
    return stats.uptake(session=session, query=query, caller=who)


def row(report: UptakeReport, code: str, period: date | None = None, **match: Any) -> UptakeRow:
    found = [
        r
        for r in report.rows
        if r.group_code == code
        and (period is None or r.period_start == period)
        and all(getattr(r, k) == v for k, v in match.items())
        and (match or r.breakdown is None)
    ]
    assert len(found) == 1, (code, period, match, len(found))
    return found[0]


def total(report: UptakeReport, period: date | None = None, **match: Any) -> UptakeRow:
    found = [
        r
        for r in report.totals
        if (period is None or r.period_start == period)
        and all(getattr(r, k) == v for k, v in match.items())
        and (match or r.breakdown is None)
    ]
    assert len(found) == 1
    return found[0]


# ---- the uptake table ------------------------------------------------------------------------


@pytest.mark.usefixtures("exact_analyst")
def test_uptake_per_pcn_counts_outcomes_rates_times_and_population(history: Referrals) -> None:
    day = at(date(2026, 1, 10))
    completed, declined, cancelled = history.many(3, day, practice=ASH)
    history.complete(completed, day + timedelta(hours=1), day + timedelta(hours=5))
    history.decline(declined, day + timedelta(hours=2))
    history.cancel(cancelled, day + timedelta(hours=3))
    history.accept(history.make(at(date(2026, 1, 20)), practice=BIRCH), at(date(2026, 1, 21)))
    later = at(date(2026, 1, 15))
    slow, _ = history.many(2, later, practice=DOGWOOD)
    history.complete(slow, later + timedelta(hours=1), later + timedelta(hours=30))

    report = uptake(history.session)

    alder = row(report, ALDER)
    assert (alder.group_kind, alder.group_name) == (GroupBy.PCN, "Alder PCN")
    assert (alder.period_start, alder.period_end, alder.partial) == (*JAN, False)
    assert (alder.made, alder.accepted, alder.declined, alder.cancelled, alder.completed) == (
        4,
        2,
        1,
        1,
        1,
    )
    assert (alder.returned, alder.no_contact, alder.forwarded) == (0, 0, 0)
    assert alder.completion_rate == 0.25
    assert (alder.median_hours_to_completion, alder.p90_hours_to_completion) == (5.0, 5.8)
    assert alder.registered_patients == 15_000
    assert alder.per_1000_patients == round(4 / 15_000 * 1000, 3)
    assert alder.suppressed == []
    cedar = row(report, CEDAR)
    assert (cedar.made, cedar.completed, cedar.completion_rate) == (2, 1, 0.5)
    assert (cedar.median_hours_to_completion, cedar.p90_hours_to_completion) == (30.0, 34.8)
    assert (cedar.registered_patients, cedar.per_1000_patients) == (4_000, 0.5)
    for idle, patients in ((BEECH, 8_000), (DAMSON, 6_000)):
        assert (row(report, idle).made, row(report, idle).registered_patients) == (0, patients)
        assert row(report, idle).completion_rate is None
    everyone = total(report)
    assert (everyone.group_kind, everyone.group_code) == (None, "ALL")
    assert everyone.group_name == "All of Test Shire ICB"
    assert (everyone.made, everyone.completed, everyone.registered_patients) == (6, 2, 33_000)
    assert everyone.per_1000_patients == round(6 / 33_000 * 1000, 3)
    assert (everyone.median_hours_to_completion, everyone.p90_hours_to_completion) == (6.0, 33.6)
    assert {r.group_code for r in report.rows} == {ALDER, BEECH, CEDAR, DAMSON}


@pytest.mark.usefixtures("exact_analyst")
def test_every_grouping_adds_up_to_the_same_total(history: Referrals) -> None:
    for practice in (ASH, BIRCH, CHERRY, DOGWOOD):
        history.make(at(date(2026, 1, 12)), practice=practice)

    made = {
        group_by: {r.group_code: r.made for r in uptake(history.session, group_by=group_by).rows}
        for group_by in (GroupBy.PRACTICE, GroupBy.PCN, GroupBy.PLACE, GroupBy.ICB)
    }

    assert made[GroupBy.PRACTICE] == {ASH: 1, BIRCH: 1, CHERRY: 1, DOGWOOD: 1, ELDER: 0}
    assert made[GroupBy.PCN] == {ALDER: 2, BEECH: 1, CEDAR: 1, DAMSON: 0}
    assert made[GroupBy.PLACE] == {WEST: 3, EAST: 1}
    assert made[GroupBy.ICB] == {ICB: 4}
    by_practice = uptake(history.session, group_by=GroupBy.PRACTICE)
    assert row(by_practice, ASH).group_name == "Ash Surgery"
    assert row(by_practice, ASH).registered_patients == 10_000


@pytest.mark.usefixtures("exact_analyst")
def test_a_practice_moving_pcn_counts_in_each_by_date(history: Referrals) -> None:
    history.make(at(date(2026, 1, 20)), practice=CHERRY)
    history.many(2, at(date(2026, 2, 5)), practice=CHERRY)
    feb = date(2026, 2, 1)

    monthly = uptake(history.session, dates=(JAN[0], date(2026, 2, 28)))

    assert (row(monthly, BEECH, JAN[0]).made, row(monthly, BEECH, JAN[0]).registered_patients) == (
        1,
        8_000,
    )
    assert [r.group_code for r in monthly.rows if r.period_start == feb].count(BEECH) == 0
    assert (row(monthly, CEDAR, JAN[0]).made, row(monthly, CEDAR, JAN[0]).registered_patients) == (
        0,
        4_000,
    )
    assert (row(monthly, CEDAR, feb).made, row(monthly, CEDAR, feb).registered_patients) == (
        2,
        12_000,
    )
    assert row(monthly, ALDER, feb).registered_patients == 15_200  # Ash's new list size

    whole = uptake(history.session, dates=(JAN[0], date(2026, 2, 28)), interval=Interval.NONE)

    # the mean list size in force over the 59 days, each practice where it was that day
    assert row(whole, BEECH).registered_patients == round(8_000 * 31 / 59)
    assert row(whole, CEDAR).registered_patients == round(4_000 + 8_000 * 28 / 59)
    assert row(whole, ALDER).registered_patients == round(
        10_000 * 31 / 59 + 10_200 * 28 / 59 + 5_000
    )
    assert (row(whole, BEECH).made, row(whole, CEDAR).made) == (1, 2)


def _members(session: Session, pcn: str, day: date) -> set[str]:
    return set(
        session.exec(
            select(Membership.member_ods).where(
                Membership.group_ods == pcn,
                col(Membership.start_date) <= day,
                (col(Membership.end_date).is_(None)) | (col(Membership.end_date) >= day),
            )
        ).all()
    )


def _list_sizes(session: Session, practices: set[str], day: date) -> int:
    return sum(
        organisations.list_size_on(session=session, practice_ods=p, on=day) or 0 for p in practices
    )


def test_demo_practice_m84327_counts_in_u00021_until_it_left(
    session: Session, clock: Clock
) -> None:
    # M84327 left PCN U00021 on 2026-03-31 for U00006 (app/demo/memberships.csv). Other tests
    # may have committed demo rollups, so this compares before and after.
    demo = Referrals(session, clock)
    march, april = date(2026, 3, 1), date(2026, 4, 1)
    dates = (march, date(2026, 4, 30))

    def made() -> dict[tuple[str, date], int | None]:
        report = uptake(session, who=ADMIN, dates=dates)
        return {(r.group_code, r.period_start): r.made for r in report.rows}

    before = made()
    demo.make(at(date(2026, 3, 31), 22), practice="M84327", pharmacy="FA001")
    demo.make(at(date(2026, 4, 1), 9), practice="M84327", pharmacy="FA001")
    after = made()

    changed = {key: (after[key] or 0) - (before.get(key) or 0) for key in after}
    assert {key: n for key, n in changed.items() if n} == {
        ("U00021", march): 1,
        ("U00006", april): 1,
    }
    assert "M84327" in _members(session, "U00021", march) - _members(session, "U00021", april)
    assert "M84327" in _members(session, "U00006", april) - _members(session, "U00006", march)
    report = uptake(session, who=ADMIN, dates=dates)
    for pcn in ("U00021", "U00006"):
        for month in (march, april):
            # the demo directory changes on month starts: the mean is the first day's figure
            assert row(report, pcn, month).registered_patients == _list_sizes(
                session, _members(session, pcn, month), month
            )


@pytest.mark.usefixtures("exact_analyst")
def test_partial_months_are_read_from_day_rows_and_whole_months_from_month_rows(
    history: Referrals,
) -> None:
    for day in (date(2026, 1, 31), date(2026, 2, 1), date(2026, 2, 28), date(2026, 3, 1)):
        history.make(at(day), practice=ASH)
    history.make(at(date(2026, 3, 15)), practice=ASH)
    dates = (date(2026, 1, 31), date(2026, 3, 1))
    # A day row that disagrees with its month row: whole months must come from month rows. (The
    # same on the area side, which per-PCN questions read, as on the practice side.)
    for side, org, source, pathway in (
        (PRACTICE, ASH, "gp-practice", "sore-throat"),
        (AREA, "", "", ""),
    ):
        history.session.add(
            UptakeRollup(
                grain=DAY,
                period_start=date(2026, 2, 14),
                side=side,
                org_ods=org,
                pcn_ods=ALDER,
                place_ods=WEST,
                icb_ods=ICB,
                service="pharmacy-first",
                source=source,
                pathway=pathway,
                made=100,
            )
        )
    history.session.flush()

    monthly = uptake(history.session, dates=dates)
    whole = uptake(history.session, dates=dates, interval=Interval.NONE)
    weekly = uptake(history.session, dates=dates, interval=Interval.WEEK)

    alder = [r for r in monthly.rows if r.group_code == ALDER]
    assert [(r.period_start, r.period_end, r.partial, r.made) for r in alder] == [
        (date(2026, 1, 31), date(2026, 1, 31), True, 1),
        (date(2026, 2, 1), date(2026, 2, 28), False, 2),
        (date(2026, 3, 1), date(2026, 3, 1), True, 1),
    ]
    assert row(whole, ALDER).made == 4
    assert sum(r.made or 0 for r in weekly.rows if r.group_code == ALDER) == 104
    window = stats.make_window(*dates, Interval.MONTH)
    assert window.months == (date(2026, 2, 1), date(2026, 2, 1))
    assert window.days == (
        (date(2026, 1, 31), date(2026, 1, 31)),
        (date(2026, 3, 1), date(2026, 3, 1)),
    )


@pytest.mark.usefixtures("exact_analyst")
def test_iso_weeks_start_on_monday_and_are_cut_at_the_edges(history: Referrals) -> None:
    for day in (date(2026, 1, 5), date(2026, 1, 11), date(2026, 1, 12)):
        history.make(at(day, 12), practice=ASH)

    weekly = uptake(
        history.session, dates=(date(2026, 1, 1), date(2026, 1, 14)), interval=Interval.WEEK
    )

    alder = [r for r in weekly.rows if r.group_code == ALDER]
    assert [(r.period_start, r.period_end, r.partial, r.made) for r in alder] == [
        (date(2026, 1, 1), date(2026, 1, 4), True, 0),
        (date(2026, 1, 5), date(2026, 1, 11), False, 2),
        (date(2026, 1, 12), date(2026, 1, 14), True, 1),
    ]
    assert [t.made for t in weekly.totals] == [0, 2, 1]


@pytest.mark.usefixtures("exact_analyst")
def test_periods_are_england_local_dates(history: Referrals) -> None:
    history.make(datetime(2026, 6, 30, 23, 30, tzinfo=UTC), practice=ASH)  # 00:30 BST, 1 July

    report = uptake(history.session, dates=(date(2026, 6, 1), date(2026, 7, 31)))

    assert [r.made for r in report.rows if r.group_code == ALDER] == [0, 1]


@pytest.mark.usefixtures("exact_analyst")
def test_breakdown_by_source_and_by_pathway(history: Referrals) -> None:
    day = at(date(2026, 1, 12))
    history.many(2, day, practice=ASH)
    history.make(day, practice=ASH, source="nhs111", pathway="sinusitis")
    history.make(day, practice=BIRCH, source="nhs111")
    history.make(day, practice=DOGWOOD, service=Service.BLOOD_PRESSURE)

    by_source = uptake(history.session, breakdown=Breakdown.SOURCE)

    assert row(by_source, ALDER).made == 4
    assert row(by_source, ALDER, source=ReferralSource.GP_PRACTICE).made == 2
    assert row(by_source, ALDER, source=ReferralSource.NHS111).made == 2
    assert row(by_source, ALDER, source=ReferralSource.TRUST).made == 0
    assert row(by_source, ALDER, source=ReferralSource.NHS111).breakdown is Breakdown.SOURCE
    assert len([r for r in by_source.rows if r.group_code == ALDER]) == 1 + len(ReferralSource)
    assert total(by_source).made == 5
    assert total(by_source, source=ReferralSource.GP_PRACTICE).made == 3
    assert total(by_source, source=ReferralSource.NHS111).made == 2

    first = uptake(history.session, breakdown=Breakdown.PATHWAY, service=Service.PHARMACY_FIRST)

    assert row(first, ALDER, pathway=Pathway.SORE_THROAT).made == 3
    assert row(first, ALDER, pathway=Pathway.SINUSITIS).made == 1
    assert total(first, pathway=Pathway.SHINGLES).made == 0
    assert total(first).made == 4
    every = uptake(history.session, breakdown=Breakdown.PATHWAY)
    none = [t for t in every.totals if t.breakdown is Breakdown.PATHWAY and t.pathway is None]
    assert [t.made for t in none] == [1]  # the blood pressure referral has no pathway
    assert len(every.totals) == 1 + len(Pathway) + 1


def test_pharmacy_rows_count_what_each_pharmacy_received(history: Referrals) -> None:
    day = at(date(2026, 1, 12))
    referral = history.make(day, practice=ASH, pharmacy=YEW)
    history.forward(referral, day + timedelta(hours=1), to=HOLLY)

    pharmacies = uptake(history.session, who=ADMIN, group_by=GroupBy.PHARMACY)
    practices = uptake(
        history.session, who=ADMIN, group_by=GroupBy.PRACTICE, service=Service.PHARMACY_FIRST
    )

    yew, holly = row(pharmacies, YEW), row(pharmacies, HOLLY)
    assert (yew.made, yew.forwarded, holly.made, holly.forwarded) == (1, 1, 1, 0)
    assert (yew.group_name, yew.group_kind) == ("Yew Pharmacy", GroupBy.PHARMACY)
    assert (yew.registered_patients, yew.per_1000_patients) == (None, None)
    assert "FA001" in {r.group_code for r in pharmacies.rows}  # pharmacies with none are listed
    assert (row(practices, ASH).made, row(practices, ASH).forwarded) == (1, 1)


def test_an_analyst_sees_its_own_icb_only(history: Referrals) -> None:
    history.many(9, at(date(2026, 1, 12)), practice=ASH)

    own = uptake(history.session)
    other = uptake(history.session, who=caller(Role.ICB_ANALYST, "QXX"))

    assert {r.group_code for r in own.rows} == {ALDER, BEECH, CEDAR, DAMSON}
    assert not {r.group_code for r in other.rows} & {ALDER, BEECH, CEDAR, DAMSON}
    assert other.totals[0].group_name == "All of NHS Example Integrated Care Board"
    with pytest.raises(Forbidden):
        uptake(history.session, who=caller(Role.ICB_ANALYST, ASH))
    for role in (Role.GP_PRACTICE, Role.PHARMACY):
        with pytest.raises(Forbidden):
            uptake(history.session, who=caller(role, ASH))


def test_an_analyst_sees_small_numbers_suppressed_and_others_rounded(history: Referrals) -> None:
    day = at(date(2026, 1, 12))
    history.many(3, day, practice=ASH)
    history.many(12, day, practice=DOGWOOD)
    history.many(9, day, practice=ELDER)

    report = uptake(history.session)
    exact = uptake(history.session, who=ADMIN)

    alder = row(report, ALDER)
    assert (alder.made, alder.per_1000_patients, alder.completion_rate) == (None, None, None)
    assert {"made", "per_1000_patients", "completion_rate"} <= set(alder.suppressed)
    damson = row(report, DAMSON)  # 9: the smallest other part, suppressed with it
    assert (damson.made, "made" in damson.suppressed) == (None, True)
    assert row(report, CEDAR).made == 10  # 12 rounded
    assert row(report, CEDAR).per_1000_patients == round(12 / 4_000 * 1000, 3)  # unrounded
    assert row(report, BEECH).made == 0
    assert (total(report).made, total(report).suppressed) == (25, [])  # 24 rounded
    assert report.disclosure.exact is False
    assert "from 1 to 7" in report.disclosure.description
    assert (row(exact, ALDER).made, exact.disclosure.exact) == (3, True)


# ---- the questions -------------------------------------------------------------------------


@pytest.mark.usefixtures("exact_analyst")
def test_practices_without_referrals(history: Referrals) -> None:
    day = at(date(2026, 1, 12))
    history.make(day, practice=ASH)
    history.make(day, practice=BIRCH, source="nhs111")

    def idle(source: SourceScope, service: Service | None = None, end: date = JAN[1]) -> list[str]:
        query = InactivePracticesQuery(
            service=service, source=source, from_date=JAN[0], to_date=end
        )
        report = stats.inactive_practices(session=history.session, query=query, caller=ANALYST)
        assert report.practices_in_scope == 5
        assert report.count == len(report.rows)
        return [r.practice_code for r in report.rows]

    assert idle(SourceScope.GP_PRACTICE) == [BIRCH, CHERRY, DOGWOOD, ELDER]
    assert idle(SourceScope.ALL) == [CHERRY, DOGWOOD, ELDER]
    assert idle(SourceScope.ALL, Service.BLOOD_PRESSURE) == [ASH, BIRCH, CHERRY, DOGWOOD, ELDER]
    query = InactivePracticesQuery(from_date=JAN[0], to_date=date(2026, 2, 28))
    report = stats.inactive_practices(session=history.session, query=query, caller=ANALYST)
    cherry = next(r for r in report.rows if r.practice_code == CHERRY)
    assert (cherry.pcn_code, cherry.pcn_name, cherry.place_code) == (CEDAR, "Cedar PCN", EAST)
    assert cherry.registered_patients == 8_000


@pytest.mark.usefixtures("exact_analyst")
def test_concentration_of_referrals_among_practices(history: Referrals) -> None:
    day = at(date(2026, 1, 12))
    history.many(6, day, practice=ASH)
    history.many(2, day, practice=BIRCH)
    history.make(day, practice=DOGWOOD)
    history.make(day, practice=ELDER, source="nhs111")  # not a GP referral

    query = ConcentrationQuery(from_date=JAN[0], to_date=JAN[1])
    report = stats.concentration(session=history.session, query=query, caller=ANALYST)

    rows = {(r.service, r.place_code): r for r in report.rows}
    assert len(rows) == (len(Service) + 1) * 3
    icb = rows[(Service.PHARMACY_FIRST, None)]
    assert (icb.place_name, icb.practices, icb.practices_with_referrals, icb.referrals) == (
        "All of Test Shire ICB",
        5,
        3,
        9,
    )
    assert (icb.top_practices, icb.top_referrals, icb.top_share) == (1, 6, round(6 / 9, 4))
    assert (icb.practices_for_share, icb.practices_for_share_percent) == (1, 20.0)
    west = rows[(Service.PHARMACY_FIRST, WEST)]
    assert (west.practices, west.referrals, west.top_share) == (3, 8, 0.75)
    east = rows[(Service.PHARMACY_FIRST, EAST)]
    assert (east.practices, east.referrals, east.top_share, east.practices_for_share) == (
        2,
        1,
        1.0,
        1,
    )
    assert rows[(None, None)].referrals == 9
    assert rows[(Service.DMS, None)].referrals == 0
    assert rows[(Service.DMS, None)].top_share is None
    every = ConcentrationQuery(from_date=JAN[0], to_date=JAN[1], source=SourceScope.ALL)
    assert {
        (r.service, r.place_code): r.referrals
        for r in stats.concentration(session=history.session, query=every, caller=ANALYST).rows
    }[(Service.PHARMACY_FIRST, EAST)] == 2


def test_concentration_is_suppressed_for_an_analyst(history: Referrals) -> None:
    day = at(date(2026, 1, 12))
    history.many(6, day, practice=ASH)
    history.many(2, day, practice=BIRCH)
    history.make(day, practice=DOGWOOD)
    query = ConcentrationQuery(
        from_date=JAN[0], to_date=JAN[1], service=Service.PHARMACY_FIRST, top_percent=20
    )

    report = stats.concentration(session=history.session, query=query, caller=ANALYST)

    rows = {r.place_code: r for r in report.rows}
    assert (rows[EAST].referrals, rows[EAST].top_share) == (None, None)
    assert rows[WEST].referrals is None  # the only other place, so it goes too
    assert (rows[None].referrals, rows[None].top_referrals) == (
        10,
        None,
    )  # 9; the top practice made 6
    assert "top_share" in rows[None].suppressed


@pytest.mark.usefixtures("exact_analyst")
def test_month_on_month_change_per_pcn(history: Referrals) -> None:
    history.many(2, at(date(2026, 1, 12)), practice=ASH)
    history.many(3, at(date(2026, 2, 12)), practice=BIRCH)
    history.make(at(date(2026, 2, 13)), practice=CHERRY)

    query = TrendQuery(from_date=date(2026, 2, 10), to_date=date(2026, 2, 20))
    report = stats.trend(session=history.session, query=query, caller=ANALYST)

    rows = {r.group_code: r for r in report.rows}
    assert set(rows) == {ALDER, CEDAR, DAMSON}  # Beech has no practice in February
    alder = rows[ALDER]
    assert (alder.period_start, alder.period_end) == (date(2026, 2, 1), date(2026, 2, 28))
    assert (alder.made, alder.previous_made, alder.change, alder.change_percent) == (3, 2, 1, 50.0)
    assert alder.per_1000_patients == round(3 / 15_200 * 1000, 3)
    assert alder.previous_per_1000_patients == round(2 / 15_000 * 1000, 3)
    assert alder.per_1000_change == round(
        round(3 / 15_200 * 1000, 3) - round(2 / 15_000 * 1000, 3), 3
    )
    assert (rows[CEDAR].made, rows[CEDAR].previous_made, rows[CEDAR].change_percent) == (
        1,
        0,
        None,
    )
    (everyone,) = report.totals
    assert (everyone.made, everyone.previous_made, everyone.change) == (4, 2, 2)


BP_FITTED = {"service": "blood-pressure", "outcome": "abpm-fitted"}


def _bp(readings: list[tuple[int, int]], outcome: str, **extra: Any) -> dict[str, Any]:
    return {
        "service": "blood-pressure",
        "clinic_readings": [{"systolic": s, "diastolic": d, "pulse": 70} for s, d in readings],
        "outcome": outcome,
        **extra,
    }


@pytest.mark.usefixtures("exact_analyst")
def test_blood_pressure_checks_converted_to_abpm_and_hypertension(history: Referrals) -> None:
    day = at(date(2026, 1, 12))
    monitored, normal = history.many(2, day, practice=ASH, service=Service.BLOOD_PRESSURE)
    fitted = date(2026, 1, 13).isoformat()
    history.accept(monitored, day + timedelta(hours=1))
    history.consult(
        monitored,
        day + timedelta(days=1),
        _bp(
            [(152, 96), (148, 94)],
            "abpm-fitted",
            abpm={"offered_on": fitted, "fitted_on": fitted},
        ),
    )
    history.consult(
        monitored,
        day + timedelta(days=8),
        _bp(
            [(152, 96), (148, 94)],
            "referred-gp-hypertension",
            abpm={
                "fitted_on": fitted,
                "returned_on": date(2026, 1, 20).isoformat(),
                "daytime_readings": 14,
                "daytime_average_systolic": 135,
                "daytime_average_diastolic": 80,
            },
        ),
    )
    history.accept(normal, day + timedelta(hours=1))
    history.consult(
        normal, day + timedelta(hours=3), _bp([(132, 84), (128, 82)], "advice-normal-bp")
    )

    query = ServiceCountsQuery(from_date=JAN[0], to_date=JAN[1])
    report = stats.blood_pressure(session=history.session, query=query, caller=ANALYST)

    alder = next(r for r in report.rows if r.group_code == ALDER)
    assert (alder.made, alder.bp_checked, alder.bp_abpm, alder.bp_hypertension_confirmed) == (
        2,
        2,
        1,
        1,
    )
    assert (alder.abpm_rate, alder.hypertension_rate, alder.hypertension_of_abpm_rate) == (
        0.5,
        0.5,
        1.0,
    )
    assert report.totals[0].bp_checked == 2


def _dms(stage: int, day: date) -> dict[str, Any]:
    check = {1: "reconciled", 2: "prescription_checked", 3: "patient_consulted"}[stage]
    return {"service": "dms", "stage": stage, "completed_on": day.isoformat(), check: True}


@pytest.mark.usefixtures("exact_analyst")
def test_dms_stages_and_stage_one_within_72_hours(history: Referrals) -> None:
    day = at(date(2026, 1, 12))
    quick, slow = history.many(2, day, practice=DOGWOOD, service=Service.DMS, source="trust")
    history.accept(quick, day + timedelta(hours=1))
    for stage, after in ((1, 24), (2, 100), (3, 200)):
        history.consult(quick, day + timedelta(hours=after), _dms(stage, date(2026, 1, 13)))
    history.accept(slow, day + timedelta(hours=1))
    history.consult(slow, day + timedelta(hours=100), _dms(1, date(2026, 1, 16)))

    query = ServiceCountsQuery(from_date=JAN[0], to_date=JAN[1], group_by=GroupBy.PRACTICE)
    report = stats.dms(session=history.session, query=query, caller=ANALYST)

    dogwood = next(r for r in report.rows if r.group_code == DOGWOOD)
    assert (dogwood.made, dogwood.dms_stage1, dogwood.dms_stage1_within_72h) == (2, 2, 1)
    assert (dogwood.dms_stage2, dogwood.dms_stage3) == (1, 1)
    assert (dogwood.stage1_within_72h_rate, dogwood.stage3_rate) == (0.5, 0.5)


# ---- validation, formats and the building blocks --------------------------------------------


@pytest.mark.parametrize(
    ("dates", "field"),
    [((date(2026, 2, 1), date(2026, 1, 1)), "from"), ((date(2022, 1, 1), date(2026, 1, 1)), "to")],
)
def test_a_period_must_be_ordered_and_not_too_long(
    session: Session, dates: tuple[date, date], field: str
) -> None:
    with pytest.raises(ValidationFailed) as failed:
        uptake(session, who=ADMIN, dates=dates)

    assert [issue.expression for issue in failed.value.issues] == [field]


def test_csv_states_the_question_and_marks_suppressed_cells(history: Referrals) -> None:
    history.many(3, at(date(2026, 1, 12)), practice=ASH)
    history.many(12, at(date(2026, 1, 12)), practice=DOGWOOD)

    text = stats.to_csv(uptake(history.session), title="pharmref uptake statistics")

    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert comments[:2] == [
        "# pharmref uptake statistics",
        "# period: 2026-01-01 to 2026-01-31 (England local dates, inclusive)",
    ]
    assert comments[2].startswith("# filters: group_by=pcn; service=all; source=all")
    assert comments[3].startswith("# disclosure: Counts from 1 to 7 are suppressed")
    body = [line for line in text.splitlines() if not line.startswith("#")]
    table = list(csv.DictReader(io.StringIO("\n".join(body))))
    alder = next(r for r in table if r["group_code"] == ALDER)
    assert (alder["row"], alder["made"], alder["per_1000_patients"]) == ("group", "[c]", "[c]")
    assert alder["median_hours_to_completion"] == ""  # no completions: not applicable
    totals = [r for r in table if r["row"] == "total"]
    assert [(t["group_code"], t["made"]) for t in totals] == [("ALL", "15")]


def test_histogram_quantiles_interpolate_within_buckets() -> None:
    counts = [0] * len(HOUR_EDGES)
    assert stats.histogram_quantile(counts, 0.5) is None
    counts[0] = 1  # [0, 1)
    counts[1] = 1  # [1, 2)
    counts[4] = 1  # [4, 6)
    counts[9] = 1  # [24, 36)
    assert stats.histogram_quantile(counts, 0.5) == 2.0
    assert stats.histogram_quantile(counts, 0.9) == pytest.approx(24 + 0.6 * 12)
    last = [0] * len(HOUR_EDGES)
    last[-1] = 3
    assert stats.histogram_quantile(last, 0.5) == HOUR_EDGES[-1]  # open bucket: lower edge


def test_spread_of_referrals_across_practices() -> None:
    figures = stats.spread([0, 30, 2, 1, 0, 0, 5, 0, 0, 62], top_percent=10, share_percent=69)

    assert (figures.practices, figures.with_referrals, figures.referrals) == (10, 5, 100)
    assert (figures.top_practices, figures.top_referrals) == (1, 62)
    assert figures.for_share == 2  # 62 < 69 <= 92
    assert stats.spread([], top_percent=10, share_percent=50).for_share is None


def test_windows_and_periods() -> None:
    window = stats.make_window(date(2026, 1, 1), date(2026, 12, 31), Interval.MONTH)
    assert window.months == (date(2026, 1, 1), date(2026, 12, 1))
    assert window.days == ()
    assert len(window.periods) == 12
    inside = stats.make_window(date(2026, 1, 5), date(2026, 1, 20), Interval.MONTH)
    assert (inside.months, inside.days) == (None, ((date(2026, 1, 5), date(2026, 1, 20)),))
    weeks = stats.make_window(date(2026, 1, 1), date(2026, 3, 31), Interval.WEEK)
    assert weeks.months is None
    assert all(p.start.weekday() == 0 for p in weeks.periods[1:])
    assert weeks.index_of(date(2026, 1, 4)) == 0
    assert month_start(date(2026, 2, 17)) == stats.month_end(date(2026, 1, 3)) + timedelta(days=1)


@pytest.mark.parametrize(
    ("model", "example", "csv_name"),
    [
        (UptakeReport, examples.UPTAKE_REPORT_EXAMPLE, "uptake"),
        (
            InactivePracticesReport,
            examples.INACTIVE_PRACTICES_EXAMPLE,
            "practices-without-referrals",
        ),
        (ConcentrationReport, examples.CONCENTRATION_REPORT_EXAMPLE, "concentration"),
        (TrendReport, examples.TREND_REPORT_EXAMPLE, "month-on-month"),
        (BloodPressureReport, examples.SERVICE_COUNTS_REPORT_EXAMPLE, "blood-pressure"),
        (DmsReport, examples.DMS_REPORT_EXAMPLE, "dms"),
    ],
)
def test_documented_examples_are_valid_reports(
    model: type[stats.Report], example: dict[str, Any], csv_name: str
) -> None:
    report = model.model_validate(example)

    rendered = stats.to_csv(report, title="x").splitlines()
    documented = examples.CSV_EXAMPLES[csv_name].splitlines()
    assert rendered[1:] == documented[1:]
