"""Referral history for the dashboard tests, made through the services (so the rollups are the
real ones) with the services' clock moved back to spread referrals over past months."""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from unittest.mock import patch

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from app.models.consultation import Consultation, PharmacyFirstConsultationIn
from app.models.delivery import OutboxMessage
from app.models.enums import Role, Service
from app.models.event import ReferralEvent
from app.models.referral import InboundMessage, Referral
from app.models.rollup import UptakeRollup
from app.services import consultations, lifecycle
from tests.factories import caller, make_referral

PHARMACIST = caller(Role.PHARMACY, "FA001")
# Practices of the demo ICB QXX and their PCNs (places: U00001 QXX01, U00002 QXX02, U00003 QXX03).
PRACTICE_PCN = {
    "A81001": "U00001",
    "A81002": "U00001",
    "M86194": "U00002",
    "A89273": "U00003",
}


@dataclass(frozen=True, slots=True)
class Planned:
    practice: str
    at: datetime
    service: Service = Service.PHARMACY_FIRST
    completed_after: timedelta | None = None


@contextmanager
def clock(at: datetime) -> Iterator[None]:
    """The services' `utc_now` returns `at` inside the block."""
    with ExitStack() as stack:
        for module in ("referrals", "lifecycle", "consultations"):
            stack.enter_context(patch(f"app.services.{module}.utc_now", lambda: at))
        yield


def make_history(session: Session, plan: list[Planned]) -> list[Referral]:
    """Each planned referral made by its practice at its time (and completed, if planned, by the
    pharmacy after the given delay with a Pharmacy First consultation)."""
    # Rollup rows other tests committed (and left behind with their referrals' deletion) would
    # count into these exact figures.
    session.execute(delete(UptakeRollup))
    session.commit()
    made = []
    for item in plan:
        with clock(item.at):
            referral = make_referral(
                session, service=item.service, referrer=caller(Role.GP_PRACTICE, item.practice)
            )
        if item.completed_after is not None:
            assert item.service is Service.PHARMACY_FIRST
            with clock(item.at + item.completed_after):
                lifecycle.accept_referral(
                    session=session, referral=referral, caller=PHARMACIST, version=1
                )
                consultations.record_consultation(
                    session=session,
                    referral=referral,
                    caller=PHARMACIST,
                    consultation_in=PharmacyFirstConsultationIn(
                        service="pharmacy-first",
                        clinician_name="Priya Example",
                        gphc_number="2099999",
                        pathway="minor-illness",
                        outcome="signposted",
                    ),
                    version=2,
                )
        made.append(referral)
    return made


def remove_history(engine: Engine, referrals: list[Referral]) -> None:
    """Delete committed referrals, everything hanging off them, and the rollups."""
    ids = [referral.id for referral in referrals]
    with Session(engine) as session:
        for table in (OutboxMessage, Consultation, ReferralEvent, InboundMessage):
            session.execute(delete(table).where(col(table.referral_id).in_(ids)))
        session.execute(delete(Referral).where(col(Referral.id).in_(ids)))
        session.execute(delete(UptakeRollup))
        session.commit()
