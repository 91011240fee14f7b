"""Builders for test data: plain typed functions (synthetic patients, 999 test-range NHS numbers)."""

import copy
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from sqlmodel import Session

from app.models.enums import Role, Service
from app.models.referral import Referral, ReferralCreate
from app.models.user import User
from app.services import referrals as referral_service

NHS_NUMBERS: Final = ("9990000018", "9990000026", "9990000034", "9990000042", "9990000050")
FAMILY_NAME: Final = "Quillfeather"
GIVEN_NAME: Final = "Marisol"
DMD_COC: Final = "17346711000001106"
DMD_FUROSEMIDE: Final = "317971007"


class _Omit:
    """Marks a key to leave out of a built body (e.g. ``patient={"nhs_number": OMIT}``)."""

    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = _Omit()


def today() -> date:
    """The date the service uses for age checks (UTC)."""
    return datetime.now(UTC).date()


def birth_date_for_age(years: int) -> date:
    """A birth date that makes the patient `years` old today, with the birthday a day behind."""
    now = today()
    try:
        anniversary = now.replace(year=now.year - years)
    except ValueError:  # today is 29 February and that year has none
        anniversary = date(now.year - years, 2, 28)
    return anniversary - timedelta(days=1)


def _patient(age: int, sex: str) -> dict[str, Any]:
    return {
        "nhs_number": NHS_NUMBERS[0],
        "family_name": FAMILY_NAME,
        "given_name": GIVEN_NAME,
        "birth_date": birth_date_for_age(age).isoformat(),
        "sex": sex,
        "phone": "07700900001",
    }


def _base(service: Service) -> dict[str, Any]:
    if service is Service.PHARMACY_FIRST:
        return {
            "service": "pharmacy-first",
            "pathway": "sore-throat",
            "pharmacy_ods": "FA001",
            "patient": _patient(34, "female"),
            "referrer": {"clinician_name": "Dr Sam Example", "clinician_id": "G1234567"},
            "reason": "Sore throat for 3 days, FeverPAIN 2",
        }
    if service is Service.BLOOD_PRESSURE:
        return {
            "service": "blood-pressure",
            "pharmacy_ods": "FA001",
            "patient": _patient(52, "male"),
            "referrer": {"clinician_name": "Dr Sam Example"},
            "reason": "Raised clinic reading; please arrange ABPM",
            "blood_pressure": {
                "systolic": 152,
                "diastolic": 94,
                "measured_at": "2026-11-20T09:30:00Z",
            },
            "abpm_requested": True,
        }
    if service is Service.CONTRACEPTION:
        return {
            "service": "contraception",
            "pharmacy_ods": "FA001",
            "patient": _patient(27, "female"),
            "referrer": {"clinician_name": "Nurse Jo Example"},
            "reason": "Ongoing supply of combined oral contraceptive",
            "bmi": 23.5,
            "blood_pressure": {"systolic": 118, "diastolic": 76},
            "current_contraceptive": {
                "type": "coc",
                "dmd_code": DMD_COC,
                "name": "Microgynon 30 tablets",
            },
        }
    return {
        "service": "dms",
        "pharmacy_ods": "FA001",
        "patient": _patient(78, "female"),
        "referrer": {"clinician_name": "Pharmacist Lee Example"},
        "reason": "Discharged after admission for heart failure; new loop diuretic",
        "discharged_at": "2026-11-21T16:00:00Z",
        "discharge_medicines": [
            {
                "name": "Furosemide 40mg tablets",
                "dmd_code": DMD_FUROSEMIDE,
                "dose": "One each morning",
                "change": "new",
            },
            {"name": "Ramipril 2.5mg capsules", "dose": "One daily", "change": "unchanged"},
        ],
    }


def json_referral(
    service: Service | str = Service.PHARMACY_FIRST, /, **overrides: Any
) -> dict[str, Any]:
    """A valid JSON intake body for `service`.

    Overrides replace top-level keys (``service=`` too, to send a value that is not a service);
    a dict given for ``patient`` or ``referrer`` is merged into
    the default one; ``OMIT`` removes a key at either level.
    """
    body = copy.deepcopy(_base(Service(service)))
    for key, value in overrides.items():
        if value is OMIT:
            body.pop(key, None)
        elif key in ("patient", "referrer") and isinstance(value, dict):
            for inner_key, inner_value in value.items():
                if inner_value is OMIT:
                    body[key].pop(inner_key, None)
                else:
                    body[key][inner_key] = inner_value
        else:
            body[key] = value
    return body


def caller(role: Role | str, org: str) -> User:
    return User(subject=f"test:{role}:{org}", org=org, role=Role(role))


def default_caller(service: Service | str) -> User:
    """The natural referrer: the trust RX1 for DMS, otherwise the GP practice A81001."""
    if Service(service) is Service.DMS:
        return caller(Role.TRUST, "RX1")
    return caller(Role.GP_PRACTICE, "A81001")


def make_referral(
    session: Session,
    *,
    service: Service | str = Service.PHARMACY_FIRST,
    referrer: User | None = None,
    idempotency_key: str | None = None,
    **overrides: Any,
) -> Referral:
    """A referral stored through the JSON intake use-case (so every business rule applies)."""
    referral_in = ReferralCreate.model_validate(json_referral(service, **overrides))
    result = referral_service.create_referral_from_json(
        session=session,
        referral_in=referral_in,
        caller=referrer or default_caller(service),
        idempotency_key=idempotency_key,
    )
    return result.referral
