"""Uptake rollups are written in the same transaction as the referral changes they count."""

import uuid
from datetime import UTC, date, datetime

import pytest
from sqlmodel import Session, col, select

from app.models.consultation import Consultation
from app.models.enums import ReferralStatus, Role, Service
from app.models.referral import Referral
from app.models.rollup import HOUR_COLUMNS, UptakeRollup
from app.services import lifecycle, rollups
from tests.factories import caller, make_referral

PHARMACIST = caller(Role.PHARMACY, "FA001")


Counts = dict[tuple[str, str, str], tuple[int, ...]]
FIELDS = ("made", "received", "accepted", "forwarded", "returned", "completed")


def counts(session: Session, referral: Referral) -> Counts:
    """The referral's cohort rows, by (grain, side, organisation): the FIELDS counters."""
    day = rollups.local_day(referral.created_at)
    found = session.exec(
        select(UptakeRollup).where(
            col(UptakeRollup.period_start).in_([day, rollups.month_start(day)]),
            UptakeRollup.service == str(referral.service),
            UptakeRollup.pathway == str(referral.pathway or ""),
        )
    ).all()
    return {
        (r.grain, r.side, r.org_ods): tuple(getattr(r, f) for f in FIELDS)
        for r in found
        if r.org_ods in ("A81001", "FA001", "FA002")
    }


def delta(after: Counts, before: Counts) -> Counts:
    zero = (0,) * len(FIELDS)
    return {
        key: change
        for key, values in after.items()
        if any(change := tuple(a - b for a, b in zip(values, before.get(key, zero), strict=True)))
    }


def both_grains(side: str, org: str, values: tuple[int, ...]) -> Counts:
    return {(grain, side, org): values for grain in (rollups.DAY, rollups.MONTH)}


def test_a_new_referral_counts_on_both_sides_at_both_grains(session: Session) -> None:
    probe = make_referral(session)
    before = counts(session, probe)

    referral = make_referral(session)

    assert delta(counts(session, referral), before) == both_grains(
        rollups.PRACTICE, "A81001", (1, 1, 0, 0, 0, 0)
    ) | both_grains(rollups.PHARMACY, "FA001", (1, 1, 0, 0, 0, 0))
    (practice,) = session.exec(
        select(UptakeRollup).where(
            UptakeRollup.grain == rollups.DAY,
            UptakeRollup.side == rollups.PRACTICE,
            UptakeRollup.org_ods == "A81001",
            UptakeRollup.period_start == rollups.local_day(referral.created_at),
            UptakeRollup.service == str(referral.service),
            UptakeRollup.pathway == str(referral.pathway or ""),
            UptakeRollup.source == str(referral.source),
        )
    ).all()
    where = rollups.placement(
        session=session, practice_ods="A81001", day=rollups.local_day(referral.created_at)
    )
    assert where.pcn_ods.startswith("U")
    assert where.place_ods.startswith("QXX0")
    assert where.icb_ods == "QXX"
    assert (practice.pcn_ods, practice.place_ods, practice.icb_ods) == (
        where.pcn_ods,
        where.place_ods,
        where.icb_ods,
    )


def test_outcomes_count_in_the_referrals_cohort(session: Session) -> None:
    referral = make_referral(session)
    before = counts(session, referral)

    lifecycle.accept_referral(session=session, referral=referral, caller=PHARMACIST, version=1)
    lifecycle.return_referral(
        session=session, referral=referral, caller=PHARMACIST, version=2, reason="See the GP"
    )

    changed = (0, 0, 1, 0, 1, 0)
    assert delta(counts(session, referral), before) == both_grains(
        rollups.PRACTICE, "A81001", changed
    ) | both_grains(rollups.PHARMACY, "FA001", changed)


def test_a_forwarded_copy_is_received_but_not_made_again(session: Session) -> None:
    referral = make_referral(session)
    before = counts(session, referral)

    lifecycle.forward_referral(
        session=session,
        referral=referral,
        caller=PHARMACIST,
        version=1,
        pharmacy_ods="FA002",
        reason=None,
    )

    # the copy's cohort is today, as the original's (made in this test)
    assert delta(counts(session, referral), before) == (
        both_grains(rollups.PRACTICE, "A81001", (0, 1, 0, 1, 0, 0))
        | both_grains(rollups.PHARMACY, "FA001", (0, 0, 0, 1, 0, 0))
        | both_grains(rollups.PHARMACY, "FA002", (0, 1, 0, 0, 0, 0))
    )


def test_a_rolled_back_change_counts_nothing(session: Session) -> None:
    referral = make_referral(session)
    before = counts(session, referral)
    lifecycle.apply_transition(
        session=session,
        referral=referral,
        caller=PHARMACIST,
        target=ReferralStatus.ACCEPTED,
        expected_version=1,
        action="accepted",
    )
    session.rollback()

    assert counts(session, referral) == before


@pytest.mark.parametrize(
    ("hours", "column"),
    [(-1.0, "completed_h000"), (0.5, "completed_h000"), (1.0, "completed_h001"),
     (23.9, "completed_h016"), (24.0, "completed_h024"), (5000.0, "completed_h720")],
)  # fmt: skip
def test_hour_buckets(hours: float, column: str) -> None:
    assert rollups.hour_column(hours) == column
    assert column in HOUR_COLUMNS


def test_days_are_england_local_dates() -> None:
    assert rollups.local_day(datetime(2026, 6, 30, 23, 30, tzinfo=UTC)) == date(2026, 7, 1)
    assert rollups.local_day(datetime(2026, 12, 31, 23, 30, tzinfo=UTC)) == date(2026, 12, 31)


def test_practice_placement_follows_dated_memberships(session: Session) -> None:
    # demo directory: M84327 left PCN U00021 on 2026-03-31 (app/demo/memberships.csv)
    before = rollups.placement(session=session, practice_ods="M84327", day=date(2026, 3, 31))
    after = rollups.placement(session=session, practice_ods="M84327", day=date(2026, 4, 1))
    assert before.pcn_ods == "U00021"
    assert after.pcn_ods not in ("", "U00021")
    assert rollups.placement(session=session, practice_ods="", day=date(2026, 4, 1)).pcn_ods == ""


def consultation(service: Service, stage: int, **derived: object) -> Consultation:
    return Consultation(
        referral_id=uuid.uuid4(),
        service=service,
        stage=stage,
        outcome="x",
        clinician_name="A",
        gphc_number="2099999",
        record={},
        derived=derived,
        recorded_by_org="FA001",
        recorded_by_subject="s",
    )


@pytest.mark.parametrize(
    ("made", "counts"),
    [
        (consultation(Service.BLOOD_PRESSURE, 0, abpm_pending=False, abpm_result=None),
         {"bp_checked": 1.0}),
        (consultation(Service.BLOOD_PRESSURE, 1, abpm_pending=True, abpm_result=None),
         {"bp_checked": 1.0, "bp_abpm": 1.0}),
        (consultation(Service.BLOOD_PRESSURE, 2, abpm_pending=False,
                      abpm_result="hypertension-confirmed"),
         {"bp_hypertension_confirmed": 1.0}),
        (consultation(Service.BLOOD_PRESSURE, 0, abpm_pending=False,
                      abpm_result="not-confirmed"),
         {"bp_checked": 1.0, "bp_abpm": 1.0}),
        (consultation(Service.DMS, 1, ended_early=False, stage1_within_72_hours=True),
         {"dms_stage1": 1.0, "dms_stage1_within_72h": 1.0}),
        (consultation(Service.DMS, 1, ended_early=False, stage1_within_72_hours=False),
         {"dms_stage1": 1.0}),
        (consultation(Service.DMS, 2, ended_early=True), {}),
        (consultation(Service.PHARMACY_FIRST, 0), {}),
    ],
)  # fmt: skip
def test_consultation_counters(made: Consultation, counts: dict[str, float]) -> None:
    assert rollups.consultation_counts(made) == counts
