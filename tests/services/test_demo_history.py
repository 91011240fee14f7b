"""Synthetic referral history (app/services/demo_history.py): every seeded referral is one the
services could have recorded, and the whole is uneven and seasonal like real referrals. Runs on
both databases: PostgreSQL replays recorded lives as COPY text (simulating only the most recent
referrals afresh), SQLite simulates every referral."""

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session, col, func, select

from app.core.config import settings
from app.models.consultation import Consultation
from app.models.enums import OrgKind, Pathway, ReferralSource, ReferralStatus, Service, Sex
from app.models.event import ReferralEvent
from app.models.organisation import Organisation
from app.models.referral import Referral
from app.services import clinical_rules as rules
from app.services import demo_history, rollup_rebuild
from app.services.lifecycle import TRANSITIONS
from app.services.rollup_rebuild import rebuild_rollups
from app.services.rollups import LONDON, local_day
from app.services.validation import nhs_number_is_valid
from tests.services.rollup_check import (
    delta,
    differences,
    direct_figures,
    figures,
    limit_statements_as_for_requests,
    statement_timeout,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@dataclass
class Seeded:
    summary: demo_history.HistorySummary
    referrals: list[Referral]
    events: dict[Any, list[ReferralEvent]]
    consultations: dict[Any, list[Consultation]]


def seed(
    session: Session, *, referrals: int, months: int, seed: int = 7, lean: bool = False
) -> Seeded:
    before = set(session.exec(select(Referral.id)).all())
    summary = demo_history.seed_history(
        session=session, referrals=referrals, months=months, seed=seed, now=NOW, lean=lean
    )
    made = [r for r in session.exec(select(Referral)).all() if r.id not in before]
    ids = [r.id for r in made]
    events: dict[Any, list[ReferralEvent]] = defaultdict(list)
    consultations: dict[Any, list[Consultation]] = defaultdict(list)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for event in session.exec(
            select(ReferralEvent)
            .where(col(ReferralEvent.referral_id).in_(chunk))
            .order_by(col(ReferralEvent.id))
        ).all():
            events[event.referral_id].append(event)
        for consultation in session.exec(
            select(Consultation).where(col(Consultation.referral_id).in_(chunk))
        ).all():
            consultations[consultation.referral_id].append(consultation)
    return Seeded(summary=summary, referrals=made, events=events, consultations=consultations)


@pytest.fixture
def history(session: Session) -> Seeded:
    return seed(session, referrals=800, months=3)


def check_lifecycle(referral: Referral, events: list[ReferralEvent]) -> None:
    """The events replay to the referral's status, version and last change, by allowed steps."""
    first = events[0]
    opening = "received-by-forwarding" if referral.forwarded_from_id else "created"
    assert (first.action, first.to_status, first.version, first.at) == (
        opening,
        ReferralStatus.RECEIVED,
        1,
        referral.created_at,
    )
    status, version, changed = ReferralStatus.RECEIVED, 1, referral.created_at
    marked = None
    for event in events[1:]:
        assert event.at >= changed
        if event.action == "overdue":
            assert (event.from_status, event.to_status, event.version) == (status, status, version)
            assert marked is None
            marked = event.at
            continue
        if event.action == "consultation-recorded":
            assert (event.from_status, event.to_status) == (status, ReferralStatus.ACCEPTED)
            assert status is ReferralStatus.ACCEPTED
        else:
            assert event.from_status is status
            assert event.to_status in TRANSITIONS[status], (status, event.to_status)
            status = ReferralStatus(event.to_status)
        version += 1
        assert event.version == version
        changed = event.at
    assert (referral.status, referral.version, referral.updated_at) == (status, version, changed)
    if marked is not None:
        assert referral.overdue_at == marked
    elif referral.forwarded_from_id is None:
        assert referral.overdue_at is None


def test_every_referral_follows_the_lifecycle(history: Seeded) -> None:
    assert history.summary.referrals == len(history.referrals) == 800
    assert history.summary.events == sum(len(e) for e in history.events.values())
    assert history.summary.consultations == sum(len(c) for c in history.consultations.values())
    for referral in history.referrals:
        check_lifecycle(referral, history.events[referral.id])


def test_consultations_match_what_completed_each_referral(history: Seeded) -> None:
    for referral in history.referrals:
        consulted = sorted(history.consultations[referral.id], key=lambda c: c.stage)
        stages = [c.stage for c in consulted]
        if referral.status is ReferralStatus.COMPLETED:
            last = consulted[-1]
            assert last.recorded_at == referral.updated_at
            if referral.service is Service.DMS:
                assert stages == list(range(1, len(stages) + 1))
                assert last.stage == 3 or last.derived["ended_early"]
            elif referral.service is Service.BLOOD_PRESSURE:
                assert stages in ([0], [1, 2])
            else:
                assert stages == [0]
        elif referral.status is ReferralStatus.ACCEPTED:
            assert referral.service in (Service.DMS, Service.BLOOD_PRESSURE) or not stages
        else:
            assert not stages


def test_patients_and_referrers_are_eligible(session: Session, history: Seeded) -> None:
    kinds = dict(session.exec(select(Organisation.ods_code, Organisation.kind)).all())
    referrer_kind = {
        ReferralSource.GP_PRACTICE: "gp-practice",
        ReferralSource.NHS111: "nhs111",
        ReferralSource.URGENT_CARE: "trust",
        ReferralSource.TRUST: "trust",
        ReferralSource.SELF_REFERRAL: "pharmacy",
    }
    for referral in history.referrals:
        number = referral.patient_nhs_number
        assert number is None or (number.startswith("999") and nhs_number_is_valid(number))
        assert kinds[referral.referrer_ods] == referrer_kind[referral.source]
        assert kinds[referral.pharmacy_ods] == "pharmacy"
        assert (referral.service is Service.DMS) == (referral.source is ReferralSource.TRUST)
        if referral.source is ReferralSource.GP_PRACTICE:
            assert referral.patient_practice_ods == referral.referrer_ods
        if referral.source is ReferralSource.SELF_REFERRAL and not referral.forwarded_from_id:
            assert referral.referrer_ods == referral.pharmacy_ods
        age = rules.age_on(referral.patient_birth_date, local_day(referral.created_at))
        if referral.service is Service.PHARMACY_FIRST:
            assert referral.pathway is not None
            band = rules.PATHWAY_BANDS[referral.pathway]
            assert band is None or rules.in_band(band, age=age, sex=referral.patient_sex), (
                referral.pathway,
                age,
                referral.patient_sex,
            )
        else:
            assert referral.pathway is None
        if referral.service is Service.BLOOD_PRESSURE:
            assert age >= 18
            assert referral.bp_systolic is not None
        if referral.service is Service.CONTRACEPTION:
            assert referral.patient_sex is Sex.FEMALE
            assert referral.contraceptive_type is not None
            assert age <= rules.CONTRACEPTIVE_MAX_AGE[referral.contraceptive_type]
        if referral.service is Service.DMS:
            assert referral.discharge_medicines


def test_history_spans_the_months_and_ends_now(history: Seeded) -> None:
    days = {local_day(r.created_at) for r in history.referrals}
    assert history.summary.first_day == date(2026, 8, 23)
    assert min(days) >= history.summary.first_day
    assert max(days) <= history.summary.last_day == date(2026, 11, 22)
    assert len({(d.year, d.month) for d in days}) == 4
    for referral in history.referrals:
        assert referral.updated_at <= NOW
        if referral.status is ReferralStatus.RECEIVED:
            # the sweep closes a referral left received past its due time plus grace
            grace = timedelta(hours=settings.no_contact_grace_hours[referral.service])
            deadline = max(referral.due_at + grace, referral.created_at) + timedelta(minutes=1)
            assert deadline > NOW
    statuses = Counter(r.status for r in history.referrals)
    assert statuses[ReferralStatus.COMPLETED] > 0.7 * len(history.referrals)
    for closed in ("declined", "returned", "cancelled", "no-contact", "forwarded"):
        assert statuses[ReferralStatus(closed)] > 0
    copies = [r for r in history.referrals if r.forwarded_from_id is not None]
    originals = {r.id: r for r in history.referrals}
    assert len(copies) == statuses[ReferralStatus.FORWARDED]
    for copy in copies:
        assert copy.forwarded_from_id is not None
        original = originals[copy.forwarded_from_id]
        assert original.status is ReferralStatus.FORWARDED
        assert copy.created_at == original.updated_at
        assert copy.pharmacy_ods != original.pharmacy_ods


def test_referrals_are_uneven_across_practices_and_seasonal(session: Session) -> None:
    seeded = seed(session, referrals=3000, months=12, seed=11)
    by_practice = Counter(
        r.referrer_ods for r in seeded.referrals if r.source is ReferralSource.GP_PRACTICE
    )
    practices = session.exec(
        select(func.count())
        .select_from(Organisation)
        .where(Organisation.kind == OrgKind.GP_PRACTICE)
    ).one()
    top = sorted(by_practice.values(), reverse=True)[: round(practices * 0.07)]
    assert 0.6 < sum(top) / sum(by_practice.values()) < 0.8
    services = Counter(r.service for r in seeded.referrals)
    assert 0.6 < services[Service.PHARMACY_FIRST] / len(seeded.referrals) < 0.8
    assert all(services[service] for service in Service)
    sources = Counter(r.source for r in seeded.referrals)
    assert sources.most_common(1)[0][0] is ReferralSource.GP_PRACTICE
    assert all(sources[source] for source in ReferralSource)

    def in_months(pathway: Pathway, months: tuple[int, ...]) -> int:
        return sum(
            1
            for r in seeded.referrals
            if r.pathway is pathway and local_day(r.created_at).month in months
        )

    winter, summer = (12, 1, 2), (6, 7, 8)
    assert in_months(Pathway.SORE_THROAT, winter) > in_months(Pathway.SORE_THROAT, summer)
    assert in_months(Pathway.INFECTED_INSECT_BITE, summer) > in_months(
        Pathway.INFECTED_INSECT_BITE, winter
    )
    hours = Counter(
        r.created_at.astimezone(LONDON).hour
        for r in seeded.referrals
        if r.source is ReferralSource.GP_PRACTICE
    )
    assert sum(hours[h] for h in range(8, 19)) > 0.95 * sum(hours.values())


@pytest.fixture
def consistent_rollups(session: Session) -> None:
    """Start from rollups equal to the direct aggregate of what is committed (tests that commit
    referrals delete them afterwards but leave their rollup rows), as a rebuild leaves them."""
    rebuild_rollups(session=session)


@pytest.mark.usefixtures("consistent_rollups")
def test_seeding_builds_the_rollups(session: Session) -> None:
    before = figures(session)
    seeded = seed(session, referrals=400, months=2, seed=3)
    changed = delta(figures(session), before)
    made = sum(
        counts[0]
        for key, (counts, _) in changed.items()
        if key[0] == "month" and key[2] == "practice"
    )
    assert made == sum(1 for r in seeded.referrals if r.forwarded_from_id is None)
    assert differences(delta(direct_figures(session), before), changed) == []


@pytest.mark.usefixtures("consistent_rollups")
def test_a_lean_history_has_the_same_statistics(session: Session) -> None:
    before = figures(session)
    seed(session, referrals=300, months=2, seed=9)
    full = figures(session)
    lean = seed(session, referrals=300, months=2, seed=9, lean=True)

    assert differences(delta(figures(session), full), delta(full, before)) == []
    assert {e.action for events in lean.events.values() for e in events} == {"accepted"}
    assert {c.service for cs in lean.consultations.values() for c in cs} == {
        Service.BLOOD_PRESSURE,
        Service.DMS,
    }


def test_seeding_is_repeatable(session: Session) -> None:
    first = seed(session, referrals=200, months=1, seed=5)
    second = seed(session, referrals=200, months=1, seed=5)

    def shape(seeded: Seeded) -> list[tuple[Any, ...]]:
        return sorted(
            (r.created_at, r.service, r.pathway, r.status, r.patient_birth_date, r.updated_at)
            for r in seeded.referrals
        )

    assert shape(first) == shape(second)
    assert {r.reference for r in first.referrals}.isdisjoint(r.reference for r in second.referrals)


@pytest.mark.postgres_only
def test_bulk_load_puts_back_every_index_and_constraint(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("the bulk load without indexes is PostgreSQL's")

    def definitions() -> list[tuple[str, ...]]:
        query = (
            "SELECT indexdef FROM pg_indexes WHERE tablename IN ('referral', 'referral_event', "
            "'consultation') UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE conrelid::regclass::text IN ('referral', 'referral_event', "
            "'consultation') ORDER BY 1"
        )
        return [tuple(row) for row in session.execute(text(query)).all()]

    before = definitions()
    monkeypatch.setattr(demo_history, "BULK_THRESHOLD", 1)

    seeded = seed(session, referrals=300, months=2)

    assert definitions() == before
    assert len(seeded.referrals) == 300


def test_seeding_runs_without_the_request_statement_limit(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading millions of rows and aggregating them takes longer than the limit pooled
    connections carry for requests (PHARMREF_DB_STATEMENT_TIMEOUT_SECONDS)."""
    limit_statements_as_for_requests(session)
    seen: list[str] = []

    def rebuild_rollups(*, session: Session) -> int:
        seen.append(statement_timeout(session))
        return 0

    monkeypatch.setattr(rollup_rebuild, "rebuild_rollups", rebuild_rollups)
    seed(session, referrals=20, months=1, seed=5)

    assert seen == ["0"]
