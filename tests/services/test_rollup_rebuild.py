"""Rebuilding the uptake rollups by direct aggregation (app/services/rollup_rebuild.py)."""

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from sqlmodel import Session

from app.models.consultation import (
    AbpmIn,
    BloodPressureConsultationIn,
    ClinicReadingIn,
    DmsStageIn,
    PharmacyFirstConsultationIn,
)
from app.models.enums import Pathway, ReferralStatus, Role, Service
from app.models.referral import Referral
from app.services import consultations as consultation_service
from app.services import lifecycle, rollup_rebuild
from app.services.rollup_rebuild import ROLLUP
from tests.factories import caller, make_referral
from tests.services.rollup_check import (
    Clock,
    Figures,
    delta,
    differences,
    direct_figures,
    figures,
    limit_statements_as_for_requests,
    row,
    statement_timeout,
    use_clock,
)

PHARMACIST = caller(Role.PHARMACY, "FA001")
CLINICIAN = {"clinician_name": "Priya Example", "gphc_number": "2099999"}


def accept(session: Session, referral: Referral) -> None:
    lifecycle.accept_referral(
        session=session, referral=referral, caller=PHARMACIST, version=referral.version
    )


def consult(
    session: Session,
    referral: Referral,
    consultation: PharmacyFirstConsultationIn | BloodPressureConsultationIn | DmsStageIn,
) -> None:
    consultation_service.record_consultation(
        session=session,
        referral=referral,
        caller=PHARMACIST,
        consultation_in=consultation,
        version=referral.version,
    )


def sore_throat_advice() -> PharmacyFirstConsultationIn:
    return PharmacyFirstConsultationIn(
        service="pharmacy-first",
        pathway=Pathway.SORE_THROAT,
        gateway_criteria_met=True,
        outcome="advice-self-care",
        **CLINICIAN,
    )


def keys(
    *, day: date, practice: tuple[str, str, str, str], service: str, source: str, pathway: str
) -> list[tuple[str, ...]]:
    """The six rows a referral counts in: day and month, practice, pharmacy (FA001) and area side
    (the practice's PCN, place and ICB and the service only)."""
    found: list[tuple[str, ...]] = []
    for grain, start in (("day", day), ("month", day.replace(day=1))):
        found.append((grain, str(start), "practice", *practice, service, source, pathway))
        found.append((grain, str(start), "pharmacy", "FA001", "", "", "", service, source, pathway))
        found.append((grain, str(start), "area", "", *practice[1:], service, "", ""))
    return found


def test_a_referral_counts_on_its_england_day_with_the_pcn_of_that_day(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 23:30 UTC on 31 March 2026 is 00:30 on 1 April in England (BST), the day practice M84327
    # moved from PCN U00021 to U00006 (app/demo/memberships.csv)
    clock = Clock(datetime(2026, 3, 31, 23, 30, tzinfo=UTC))
    use_clock(monkeypatch, clock)
    before = direct_figures(session)
    created = clock.now
    referral = make_referral(session, referrer=caller(Role.GP_PRACTICE, "M84327"))
    clock.now = created + timedelta(hours=1)
    accept(session, referral)
    clock.now = created + timedelta(hours=24)
    consult(session, referral, sore_throat_advice())

    rollup_rebuild.rebuild_rollups(session=session)

    counted = row(made=1, received=1, accepted=1, completed=1, completed_h024=1, completion_hours_sum=24.0)  # fmt: skip
    expected: Figures = dict.fromkeys(
        keys(
            day=date(2026, 4, 1),
            practice=("M84327", "U00006", "QXX03", "QXX"),
            service="pharmacy-first",
            source="gp-practice",
            pathway="sore-throat",
        ),
        counted,
    )
    assert differences(delta(figures(session), before), expected) == []


def test_the_day_before_the_move_counts_in_the_old_pcn(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(datetime(2026, 3, 31, 22, 30, tzinfo=UTC))  # 23:30 BST on 31 March
    use_clock(monkeypatch, clock)
    before = direct_figures(session)
    make_referral(session, referrer=caller(Role.GP_PRACTICE, "M84327"))

    rollup_rebuild.rebuild_rollups(session=session)

    expected: Figures = dict.fromkeys(
        keys(
            day=date(2026, 3, 31),
            practice=("M84327", "U00021", "QXX03", "QXX"),
            service="pharmacy-first",
            source="gp-practice",
            pathway="sore-throat",
        ),
        row(made=1, received=1),
    )
    assert differences(delta(figures(session), before), expected) == []


def test_blood_pressure_and_dms_counters_come_from_the_consultations(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(datetime(2026, 7, 14, 9, 0, tzinfo=UTC))
    use_clock(monkeypatch, clock)
    before = direct_figures(session)
    bp = make_referral(session, service=Service.BLOOD_PRESSURE)
    accept(session, bp)
    fitted = clock.now.date()
    high = [
        ClinicReadingIn(systolic=152, diastolic=96),
        ClinicReadingIn(systolic=150, diastolic=95),
    ]
    consult(
        session,
        bp,
        BloodPressureConsultationIn(
            service="blood-pressure", clinic_readings=high, abpm=AbpmIn(offered_on=fitted, fitted_on=fitted),
            outcome="abpm-fitted", **CLINICIAN,
        ),
    )  # fmt: skip
    assert bp.status is ReferralStatus.ACCEPTED
    clock.now += timedelta(days=1, hours=2)
    consult(
        session,
        bp,
        BloodPressureConsultationIn(
            service="blood-pressure", clinic_readings=high,
            abpm=AbpmIn(offered_on=fitted, fitted_on=fitted, returned_on=clock.now.date(), daytime_readings=26,
                        daytime_average_systolic=141, daytime_average_diastolic=88),
            outcome="referred-gp-hypertension", **CLINICIAN,
        ),
    )  # fmt: skip
    dms = make_referral(session, service=Service.DMS)
    accept(session, dms)
    for stage, check in ((1, "reconciled"), (2, "prescription_checked"), (3, "patient_consulted")):
        clock.now += timedelta(hours=30)
        consult(
            session,
            dms,
            DmsStageIn(service="dms", stage=stage, completed_on=clock.now.date(), **{check: True}, **CLINICIAN),
        )  # fmt: skip

    rollup_rebuild.rebuild_rollups(session=session)

    bp_hours = (bp.updated_at - bp.created_at).total_seconds() / 3600
    dms_hours = (dms.updated_at - dms.created_at).total_seconds() / 3600
    assert (bp_hours, dms_hours) == (26.0, 90.0)
    bp_row = row(made=1, received=1, accepted=1, completed=1, bp_checked=1, bp_abpm=1,
                  bp_hypertension_confirmed=1, completed_h024=1, completion_hours_sum=26.0)  # fmt: skip
    dms_row = row(made=1, received=1, accepted=1, completed=1, dms_stage1=1, dms_stage1_within_72h=1,
                  dms_stage2=1, dms_stage3=1, completed_h072=1, completion_hours_sum=90.0)  # fmt: skip
    practice = ("A81001", "U00001", "QXX01", "QXX")
    expected: Figures = {
        **dict.fromkeys(keys(day=date(2026, 7, 14), practice=practice, service="blood-pressure", source="gp-practice", pathway=""), bp_row),
        # the DMS patient has no registered practice: the trust's referral names none
        **dict.fromkeys(keys(day=date(2026, 7, 15), practice=("", "", "", ""), service="dms", source="trust", pathway=""), dms_row),
    }  # fmt: skip
    assert differences(delta(figures(session), before), expected) == []


def test_rebuild_replaces_every_row_with_the_direct_aggregate(session: Session) -> None:
    make_referral(session)
    stale: dict[str, object] = dict.fromkeys((c.name for c in ROLLUP.columns), 0)
    stale |= {"grain": "day", "period_start": date(2001, 1, 1), "side": "pharmacy", "org_ods": "ZZ999",
              "pcn_ods": "", "place_ods": "", "icb_ods": "", "service": "dms", "source": "trust",
              "pathway": "", "made": 5, "completion_hours_sum": 0.0}  # fmt: skip
    session.execute(insert(ROLLUP).values(stale))
    direct = direct_figures(session)

    written = rollup_rebuild.rebuild_rollups(session=session)

    rebuilt = figures(session)
    assert differences(rebuilt, direct) == []
    assert written == len(rebuilt)
    assert not any(key[3] == "ZZ999" for key in rebuilt)


def test_rollups_missing_only_when_referrals_have_none(session: Session) -> None:
    make_referral(session)
    assert not rollup_rebuild.rollups_missing(session=session)
    session.execute(ROLLUP.delete())
    assert rollup_rebuild.rollups_missing(session=session)
    rollup_rebuild.rebuild_rollups(session=session)
    assert session.execute(select(ROLLUP.c.grain).limit(1)).first() is not None


def test_rebuild_runs_without_the_request_statement_limit(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aggregate over millions of referrals must not be cut off by the limit pooled
    connections carry for requests (PHARMREF_DB_STATEMENT_TIMEOUT_SECONDS)."""
    limit_statements_as_for_requests(session)
    seen: list[str] = []

    def aggregate_into(*, session: Session, target: object) -> None:  # noqa: ARG001
        seen.append(statement_timeout(session))

    monkeypatch.setattr(rollup_rebuild, "aggregate_into", aggregate_into)
    rollup_rebuild.rebuild_rollups(session=session)

    assert seen == ["0"]
