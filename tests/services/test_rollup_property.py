"""Property: whatever sequence of referrals and changes the services make, every uptake rollup
figure they keep equals the direct aggregate of the referral, referral_event and consultation
tables (app/services/rollup_rebuild.py).

The rollups are compared row for row on every side: practice, pharmacy and the area rows summed
over practices, sources and pathways.

Each example makes referrals at chosen instants (England's clock changes, month ends, the days
practices changed PCN) through the JSON intake service, then changes them through the lifecycle,
consultation and sweep services at chosen delays (exactly on completion-time bucket edges among
them). The rollups the services wrote, and the direct aggregate, are read before and after; their
changes must be the same (other tests' committed rows are in both and cancel out).
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, col, select

from app.models.consultation import (
    AbpmIn,
    BloodPressureConsultationIn,
    ClinicReadingIn,
    ContraceptionConsultationIn,
    ContraceptiveProductIn,
    DmsStageIn,
    PharmacyFirstConsultationIn,
)
from app.models.enums import (
    ContraceptiveType,
    Pathway,
    ReferralSource,
    ReferralStatus,
    Role,
    Service,
)
from app.models.organisation import PharmacyService
from app.models.referral import Referral, ReferralCreate
from app.models.user import User
from app.services import clinical_rules as rules
from app.services import consultations as consultation_service
from app.services import lifecycle, sweep
from app.services import referrals as referral_service
from app.services.rollups import AREA, PHARMACY, PRACTICE
from tests.factories import OMIT, birth_date_for_age, caller, json_referral
from tests.services.rollup_check import (
    Clock,
    delta,
    differences,
    direct_figures,
    figures,
    use_clock,
)

# A81001 stays in U00001; M84327, N84896 and P85558 change PCN on 1 April 2026, 1 July 2026 and
# 1 July 2025 (app/demo/memberships.csv).
PRACTICES = ("A81001", "M84327", "N84896", "P85558")
PHARMACIES = ("FA001", "FA002", "FA010", "FA043")
TRUSTS = ("RX1", "RX2")
INSTANTS = (
    datetime(2025, 6, 30, 23, 30, tzinfo=UTC),  # 00:30 BST on 1 July 2025: P85558's new PCN
    datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC),  # GMT: still 31 January
    datetime(2026, 3, 29, 0, 30, tzinfo=UTC),  # 00:30 GMT on the day BST starts
    datetime(2026, 3, 29, 23, 30, tzinfo=UTC),  # 00:30 BST on 30 March
    datetime(2026, 3, 31, 22, 30, tzinfo=UTC),  # 23:30 BST on 31 March: M84327 in U00021
    datetime(2026, 3, 31, 23, 30, tzinfo=UTC),  # 00:30 BST on 1 April: M84327 in U00006
    datetime(2026, 6, 30, 23, 0, tzinfo=UTC),  # 00:00 BST on 1 July: N84896's new PCN
    datetime(2026, 10, 24, 23, 30, tzinfo=UTC),  # 00:30 BST on 25 October, the day BST ends
    datetime(2026, 10, 25, 1, 30, tzinfo=UTC),  # 01:30 GMT, after the clocks went back
    datetime(2026, 12, 31, 23, 59, tzinfo=UTC),  # GMT: the last minute of the year
)
# Delays from creation: exactly on histogram edges (1 h, 24 h, 72 h), just before them, beyond.
DELAYS = (
    timedelta(minutes=59, seconds=59, microseconds=999_999),
    timedelta(hours=1),
    timedelta(hours=23, minutes=59, seconds=59),
    timedelta(hours=24),
    timedelta(hours=72),
    timedelta(hours=72, microseconds=1),
    timedelta(days=8),
    timedelta(days=45),
)
CLINICIAN = {"clinician_name": "Priya Example", "gphc_number": "2099999"}
ROLE_OF_SOURCE = {
    ReferralSource.GP_PRACTICE: Role.GP_PRACTICE,
    ReferralSource.NHS111: Role.NHS111,
    ReferralSource.URGENT_CARE: Role.TRUST,
    ReferralSource.TRUST: Role.TRUST,
    ReferralSource.SELF_REFERRAL: Role.PHARMACY,
}
PATIENTS: dict[Pathway | Service, dict[str, str]] = {
    Pathway.ACUTE_OTITIS_MEDIA: {"birth_date": birth_date_for_age(8).isoformat(), "sex": "male"},
    Pathway.UNCOMPLICATED_UTI: {"birth_date": birth_date_for_age(30).isoformat(), "sex": "female"},
    Service.DMS: {"birth_date": birth_date_for_age(78).isoformat(), "sex": "female"},
}


@dataclass
class World:
    session: Session
    clock: Clock
    draw: st.DataObject
    providers: dict[Service, list[str]]
    referrals: list[Referral] = field(default_factory=list)
    abpm_fitted: dict[Any, date] = field(default_factory=dict)
    dms_stages: dict[Any, int] = field(default_factory=dict)

    def pick(self, options: Any, label: str) -> Any:
        return self.draw.draw(st.sampled_from(list(options)), label=label)

    def at_delay_after(self, referral: Referral) -> None:
        """Move the clock to a chosen delay after the referral was made, or shortly after its
        last change if it changed later than that."""
        after = [
            referral.created_at + d for d in DELAYS if referral.created_at + d > referral.updated_at
        ]
        self.clock.now = self.pick(after or [referral.updated_at + timedelta(minutes=7)], "when")


def create(world: World) -> None:
    service = world.pick(Service, "service")
    if service is Service.DMS:
        source = ReferralSource.TRUST
    else:
        source = world.pick(
            [ReferralSource.GP_PRACTICE, ReferralSource.NHS111, ReferralSource.URGENT_CARE, ReferralSource.SELF_REFERRAL],
            "source",
        )  # fmt: skip
    pharmacy = world.pick(world.providers[service], "pharmacy")
    practice = world.pick((*PRACTICES, None), "practice")
    body: dict[str, Any] = {"pharmacy_ods": pharmacy, "source": source.value}
    patient: dict[str, Any] = {"registered_practice_ods": practice or OMIT}
    pathway = None
    if service is Service.PHARMACY_FIRST:
        pathway = world.pick(Pathway, "pathway")
        body["pathway"] = pathway.value
        body["reason"] = f"Referral for {pathway.value}"
    patient |= PATIENTS.get(pathway or service, {})
    if source is ReferralSource.GP_PRACTICE:
        org = practice or "A81001"
        patient["registered_practice_ods"] = OMIT  # a GP refers its own patient
    elif source is ReferralSource.NHS111:
        org = "NHS11"
    elif source is ReferralSource.SELF_REFERRAL:
        org = pharmacy
    else:
        org = world.pick(TRUSTS, "trust")
    world.clock.now = world.pick(INSTANTS, "created") + world.pick(
        (timedelta(0), timedelta(minutes=20)), "created later"
    )
    result = referral_service.create_referral_from_json(
        session=world.session,
        referral_in=ReferralCreate.model_validate(json_referral(service, patient=patient, **body)),
        caller=caller(ROLE_OF_SOURCE[source], org),
        idempotency_key=None,
    )
    world.referrals.append(result.referral)


def pharmacy_of(referral: Referral) -> User:
    return caller(Role.PHARMACY, referral.pharmacy_ods)


def consultation(world: World, referral: Referral) -> Any:
    service = referral.service
    if service is Service.PHARMACY_FIRST:
        clinical = referral.pathway is not Pathway.MINOR_ILLNESS
        return PharmacyFirstConsultationIn(
            service="pharmacy-first",
            pathway=referral.pathway or Pathway.MINOR_ILLNESS,
            gateway_criteria_met=True if clinical else None,
            outcome=world.pick(("advice-self-care", "otc-product", "signposted"), "pf outcome"),
            **CLINICIAN,
        )
    if service is Service.CONTRACEPTION:
        supplied = world.pick((True, False), "supplied")
        return ContraceptionConsultationIn(
            service="contraception",
            supply_type="ongoing",
            pill=ContraceptiveType.POP,
            product=ContraceptiveProductIn(dmd_code="17346711000001106", name="Desogestrel")
            if supplied
            else None,
            months_supplied=6 if supplied else None,
            outcome="supplied" if supplied else "not-supplied-referred",
            reason_not_supplied=None if supplied else "Prefers to see the GP",
            **CLINICIAN,
        )
    if service is Service.DMS:
        stage = world.dms_stages.get(referral.id, 0) + 1
        ended = world.pick((False, False, True), "dms ended early")
        checks = {1: "reconciled", 2: "prescription_checked", 3: "patient_consulted"}
        return DmsStageIn(
            service="dms",
            stage=stage,
            completed_on=world.clock.now.date(),
            could_not_complete_reason="Readmitted" if ended else None,
            **({} if ended else {checks[stage]: True}),
            **CLINICIAN,
        )
    return blood_pressure(world, referral)


def blood_pressure(world: World, referral: Referral) -> BloodPressureConsultationIn:
    fitted = world.abpm_fitted.get(referral.id)
    systolic, diastolic = world.pick(((126, 82), (150, 95), (85, 55), (185, 122)), "reading")
    readings = [ClinicReadingIn(systolic=systolic, diastolic=diastolic)]
    abpm = None
    if fitted is not None or (systolic, diastolic) == (150, 95):
        plan = "returned" if fitted is not None else world.pick(("none", "fitted", "both"), "abpm")
        offered = fitted or world.clock.now.date()
        if plan == "fitted":
            abpm = AbpmIn(offered_on=offered, fitted_on=offered)
        elif plan in ("returned", "both"):
            count, average = world.pick(((10, (141, 88)), (26, (141, 88)), (26, (128, 80))), "abpm result")  # fmt: skip
            abpm = AbpmIn(
                offered_on=offered,
                fitted_on=offered,
                returned_on=world.clock.now.date(),
                daytime_readings=count,
                daytime_average_systolic=average[0],
                daytime_average_diastolic=average[1],
            )
    result = None
    if abpm is not None and abpm.returned_on is not None:
        assert abpm.daytime_readings is not None
        assert abpm.daytime_average_systolic is not None
        assert abpm.daytime_average_diastolic is not None
        result = rules.abpm_result(
            daytime_readings=abpm.daytime_readings,
            average=rules.Reading(abpm.daytime_average_systolic, abpm.daytime_average_diastolic),
        )
    outcome = rules.bp_recommended_outcome(
        category=rules.bp_category(rules.Reading(systolic, diastolic)),
        irregular_pulse=False,
        abpm=result,
        abpm_pending=abpm is not None and abpm.returned_on is None,
    )
    return BloodPressureConsultationIn(
        service="blood-pressure", clinic_readings=readings, abpm=abpm, outcome=outcome, **CLINICIAN
    )


def consult(world: World, referral: Referral) -> None:
    made = consultation(world, referral)
    recorded, _ = consultation_service.record_consultation(
        session=world.session,
        referral=referral,
        caller=pharmacy_of(referral),
        consultation_in=made,
        version=referral.version,
    )
    if recorded.service is Service.BLOOD_PRESSURE and recorded.derived.get("abpm_pending"):
        world.abpm_fitted[referral.id] = world.clock.now.date()
    if recorded.service is Service.DMS:
        world.dms_stages[referral.id] = recorded.stage


RECEIVED_ACTIONS = ("accept", "accept", "accept", "decline", "forward", "return", "cancel", "no-contact", "wait")  # fmt: skip
ACCEPTED_ACTIONS = ("consult", "consult", "consult", "forward", "return", "cancel", "no-contact", "wait")  # fmt: skip


def live(world: World, referral: Referral) -> None:
    """Change the referral through the services until it closes or is left waiting: each change
    at a chosen delay after it was made (accepting soon, so completions can land on bucket edges)."""
    while referral.status in (ReferralStatus.RECEIVED, ReferralStatus.ACCEPTED):
        received = referral.status is ReferralStatus.RECEIVED
        action = world.pick(RECEIVED_ACTIONS if received else ACCEPTED_ACTIONS, "action")
        event(f"action {action}")
        if action == "wait":
            return
        if action == "accept":
            soon = (timedelta(0), timedelta(minutes=10), timedelta(minutes=59, seconds=59))
            world.clock.now = referral.created_at + world.pick(soon, "accepted after")
        else:
            world.at_delay_after(referral)
        act(world, referral, action)


def act(world: World, referral: Referral, action: str) -> None:
    session, version, pharmacy = world.session, referral.version, pharmacy_of(referral)
    others = [p for p in world.providers[referral.service] if p != referral.pharmacy_ods]
    if action == "accept":
        lifecycle.accept_referral(
            session=session, referral=referral, caller=pharmacy, version=version
        )
    elif action == "decline":
        lifecycle.decline_referral(
            session=session, referral=referral, caller=pharmacy, version=version,
            reason_code="no-capacity", reason=None,
        )  # fmt: skip
    elif action == "consult":
        consult(world, referral)
    elif action == "forward":
        forwarded = lifecycle.forward_referral(
            session=session, referral=referral, caller=pharmacy, version=version,
            pharmacy_ods=world.pick(others, "to pharmacy"), reason=None,
        )  # fmt: skip
        world.referrals.append(forwarded.forwarded)
    elif action == "return":
        lifecycle.return_referral(
            session=session, referral=referral, caller=pharmacy, version=version, reason="See GP"
        )
    elif action == "cancel":
        referrer = caller(ROLE_OF_SOURCE[referral.source], referral.referrer_ods)
        lifecycle.cancel_by_referrer(
            session=session,
            referral=referral,
            caller=referrer,
            version=version,
            reason="Not needed",
        )
    else:
        lifecycle.record_no_contact(
            session=session, referral=referral, caller=pharmacy, version=version, reason=None
        )


def run_sweep(world: World) -> None:
    """The timeframe sweep, some days after the latest referral: it closes unanswered ones as
    no-contact through the lifecycle (and marks others overdue, which counts nothing)."""
    latest = max(r.created_at for r in world.referrals)
    world.clock.now = latest + world.pick((timedelta(hours=30), timedelta(days=3), timedelta(days=9)), "sweep")  # fmt: skip
    sweep.run_sweep(session=world.session, now=world.clock.now, limit=10_000)


def providers(session: Session) -> dict[Service, list[str]]:
    rows = session.exec(
        select(PharmacyService.pharmacy_ods, PharmacyService.service).where(
            col(PharmacyService.pharmacy_ods).in_(PHARMACIES)
        )
    ).all()
    found: dict[Service, list[str]] = {service: [] for service in Service}
    for ods, service in rows:
        found[Service(service)].append(ods)
    return {service: sorted(codes) for service, codes in found.items()}


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(draw=st.data())
def test_incremental_rollups_equal_the_direct_aggregate(
    session: Session, monkeypatch: pytest.MonkeyPatch, draw: st.DataObject
) -> None:
    clock = Clock(INSTANTS[0])
    use_clock(monkeypatch, clock)
    world = World(session=session, clock=clock, draw=draw, providers=providers(session))
    incremental_before = figures(session)
    direct_before = direct_figures(session)

    for _ in range(draw.draw(st.integers(min_value=1, max_value=6), label="referrals")):
        create(world)
        # the new referral, then any forwarded copies it leads to
        index = len(world.referrals) - 1
        while index < len(world.referrals):
            live(world, world.referrals[index])
            index += 1
        if draw.draw(st.booleans(), label="sweep"):
            run_sweep(world)
    for referral in world.referrals:
        live(world, referral)  # what the sweep left open may change again
    for referral in world.referrals:
        event(f"status {referral.status}")
        if referral.status is ReferralStatus.COMPLETED:
            hours = (referral.updated_at - referral.created_at).total_seconds() / 3600
            event(f"completed after {hours:g} h")
    incremental = delta(figures(session), incremental_before)
    direct = delta(direct_figures(session), direct_before)
    assert incremental, "the example changed no rollup"
    assert {key[2] for key in incremental} >= {PRACTICE, PHARMACY, AREA}
    assert differences(incremental, direct) == []
