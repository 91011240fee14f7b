"""A small ICB of its own for the statistics tests (QZZ), so figures do not depend on what other
tests leave in the demo directory's rollups, and a clock to date referrals in the past.

QZZ Test Shire ICB
  QZZ01 West Place: U90001 Alder PCN (Z00001 Ash 10,000 then 10,200 from 2026-02-01;
                                      Z00002 Birch 5,000)
                    U90002 Beech PCN (Z00003 Cherry 8,000, until 2026-01-31)
  QZZ02 East Place: U90003 Cedar PCN (Z00004 Dogwood 4,000; Z00003 Cherry from 2026-02-01)
                    U90004 Damson PCN (Z00005 Elder 6,000)
Pharmacies FZ001 Yew and FZ002 Holly provide every service.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter
from sqlmodel import Session

from app.models.consultation import ConsultationIn
from app.models.enums import OrgKind, Role, Service
from app.models.organisation import ListSize, Membership, Organisation, PharmacyService
from app.models.referral import Referral
from app.services import consultations, lifecycle, referrals
from tests.factories import caller, make_referral

ICB = "QZZ"
WEST, EAST = "QZZ01", "QZZ02"
ALDER, BEECH, CEDAR, DAMSON = "U90001", "U90002", "U90003", "U90004"
ASH, BIRCH, CHERRY, DOGWOOD, ELDER = "Z00001", "Z00002", "Z00003", "Z00004", "Z00005"
YEW, HOLLY = "FZ001", "FZ002"
START = date(2020, 1, 1)
MOVE = date(2026, 2, 1)  # Cherry moves from Beech to Cedar

ORGANISATIONS = [
    (ICB, OrgKind.ICB, "Test Shire ICB"),
    (WEST, OrgKind.PLACE, "West Place"),
    (EAST, OrgKind.PLACE, "East Place"),
    (ALDER, OrgKind.PCN, "Alder PCN"),
    (BEECH, OrgKind.PCN, "Beech PCN"),
    (CEDAR, OrgKind.PCN, "Cedar PCN"),
    (DAMSON, OrgKind.PCN, "Damson PCN"),
    (ASH, OrgKind.GP_PRACTICE, "Ash Surgery"),
    (BIRCH, OrgKind.GP_PRACTICE, "Birch Surgery"),
    (CHERRY, OrgKind.GP_PRACTICE, "Cherry Surgery"),
    (DOGWOOD, OrgKind.GP_PRACTICE, "Dogwood Surgery"),
    (ELDER, OrgKind.GP_PRACTICE, "Elder Surgery"),
    (YEW, OrgKind.PHARMACY, "Yew Pharmacy"),
    (HOLLY, OrgKind.PHARMACY, "Holly Pharmacy"),
]
MEMBERSHIPS: list[tuple[str, str, date, date | None]] = [
    (WEST, ICB, START, None),
    (EAST, ICB, START, None),
    (ALDER, WEST, START, None),
    (BEECH, WEST, START, None),
    (CEDAR, EAST, START, None),
    (DAMSON, EAST, START, None),
    (ASH, ALDER, START, None),
    (BIRCH, ALDER, START, None),
    (CHERRY, BEECH, START, MOVE - timedelta(days=1)),
    (CHERRY, CEDAR, MOVE, None),
    (DOGWOOD, CEDAR, START, None),
    (ELDER, DAMSON, START, None),
]
LIST_SIZES = [
    (ASH, date(2025, 10, 1), 10_000),
    (ASH, MOVE, 10_200),
    (BIRCH, date(2025, 10, 1), 5_000),
    (CHERRY, date(2025, 10, 1), 8_000),
    (DOGWOOD, date(2025, 10, 1), 4_000),
    (ELDER, date(2025, 10, 1), 6_000),
]
PCN_OF = {ASH: ALDER, BIRCH: ALDER, DOGWOOD: CEDAR, ELDER: DAMSON}


def build_world(session: Session) -> None:
    """The QZZ directory, inside the test's transaction."""
    session.add_all(Organisation(ods_code=c, kind=k, name=n) for c, k, n in ORGANISATIONS)
    session.flush()
    session.add_all(
        Membership(member_ods=m, group_ods=g, start_date=s, end_date=e)
        for m, g, s, e in MEMBERSHIPS
    )
    session.add_all(
        ListSize(practice_ods=p, effective_date=d, registered_patients=n) for p, d, n in LIST_SIZES
    )
    session.add_all(
        PharmacyService(pharmacy_ods=pharmacy, service=service)
        for pharmacy in (YEW, HOLLY)
        for service in Service
    )
    session.flush()


class Clock:
    """Stands in for utc_now in the services that stamp referrals and their changes."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 10, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when


def install_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    for module in (referrals, lifecycle, consultations):
        monkeypatch.setattr(module, "utc_now", fake)
    return fake


def at(day: date, hour: int = 10, minute: int = 0) -> datetime:
    """10:00 on an England date in winter (UTC); use explicit datetimes across summer time."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


@dataclass
class Referrals:
    session: Session
    clock: Clock

    def make(
        self,
        when: datetime,
        *,
        practice: str = ASH,
        service: Service = Service.PHARMACY_FIRST,
        pharmacy: str = YEW,
        source: str = "gp-practice",
        **overrides: Any,
    ) -> Referral:
        self.clock.set(when)
        referrer = {
            "gp-practice": caller(Role.GP_PRACTICE, practice),
            "nhs111": caller(Role.NHS111, "NHS11"),
            "trust": caller(Role.TRUST, "RX1"),
        }[source]
        extra: dict[str, Any] = {"pharmacy_ods": pharmacy}
        if source != "gp-practice":
            extra["patient"] = {"registered_practice_ods": practice}
        if service is Service.BLOOD_PRESSURE:
            extra["blood_pressure"] = {
                "systolic": 152,
                "diastolic": 94,
                "measured_at": (when - timedelta(days=2)).isoformat(),
            }
        if service is Service.DMS:
            extra["discharged_at"] = (when - timedelta(hours=6)).isoformat()
        return make_referral(
            self.session, service=service, referrer=referrer, **(extra | overrides)
        )

    def many(self, count: int, when: datetime, **kwargs: Any) -> list[Referral]:
        return [self.make(when, **kwargs) for _ in range(count)]

    def _pharmacist(self, referral: Referral) -> Any:
        return caller(Role.PHARMACY, referral.pharmacy_ods)

    def accept(self, referral: Referral, when: datetime) -> Referral:
        self.clock.set(when)
        return lifecycle.accept_referral(
            session=self.session,
            referral=referral,
            caller=self._pharmacist(referral),
            version=referral.version,
        )

    def decline(self, referral: Referral, when: datetime) -> Referral:
        self.clock.set(when)
        return lifecycle.decline_referral(
            session=self.session,
            referral=referral,
            caller=self._pharmacist(referral),
            version=referral.version,
            reason_code="no-capacity",
            reason=None,
        )

    def cancel(self, referral: Referral, when: datetime) -> Referral:
        self.clock.set(when)
        return lifecycle.cancel_by_referrer(
            session=self.session,
            referral=referral,
            caller=caller(Role.GP_PRACTICE, referral.referrer_ods),
            version=referral.version,
            reason="Patient recovered",
        )

    def forward(self, referral: Referral, when: datetime, to: str) -> Referral:
        self.clock.set(when)
        return lifecycle.forward_referral(
            session=self.session,
            referral=referral,
            caller=self._pharmacist(referral),
            version=referral.version,
            pharmacy_ods=to,
            reason=None,
        ).forwarded

    def consult(self, referral: Referral, when: datetime, body: dict[str, Any]) -> Referral:
        self.clock.set(when)
        payload = {
            "clinician_name": "Priya Example",
            "gphc_number": "2099999",
            "version": referral.version,
            **body,
        }
        _, updated = consultations.record_consultation(
            session=self.session,
            referral=referral,
            caller=self._pharmacist(referral),
            consultation_in=_CONSULTATION.validate_python(payload),
            version=referral.version,
        )
        return updated

    def complete(self, referral: Referral, accepted: datetime, done: datetime) -> Referral:
        """Accept, then record a Pharmacy First consultation that completes the referral."""
        self.accept(referral, accepted)
        return self.consult(
            referral,
            done,
            {"service": "pharmacy-first", "pathway": "minor-illness", "outcome": "signposted"},
        )


_CONSULTATION: TypeAdapter[Any] = TypeAdapter(ConsultationIn)
