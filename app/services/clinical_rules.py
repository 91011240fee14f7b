"""Clinical and eligibility rules from the national service specifications, in one place.

Sources: ../shared/reference/nhs-interop.md section 5 (Pharmacy First pathway ages, Blood Pressure
Check Service, Pharmacy Contraception Service, Discharge Medicines Service).
Every rule reports the logical field it concerns (e.g. ``patient.birth_date``); the caller maps
that to the JSON field or FHIRPath expression of its own payload.
"""

from dataclasses import dataclass
from datetime import date

from app.models.enums import ContraceptiveType, Pathway, Service, Sex


@dataclass(frozen=True, slots=True)
class RuleBreach:
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class AgeBand:
    minimum: int | None
    maximum: int | None  # inclusive
    sex: Sex | None = None

    def describe(self) -> str:
        who = "women" if self.sex is Sex.FEMALE else "patients"
        if self.minimum is not None and self.maximum is not None:
            return f"{who} aged {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"{who} aged {self.minimum} and over"
        return f"{who} aged up to {self.maximum}"


PATHWAY_BANDS: dict[Pathway, AgeBand | None] = {
    Pathway.MINOR_ILLNESS: None,
    Pathway.SINUSITIS: AgeBand(12, None),
    Pathway.SORE_THROAT: AgeBand(5, None),
    Pathway.ACUTE_OTITIS_MEDIA: AgeBand(1, 17),
    Pathway.INFECTED_INSECT_BITE: AgeBand(1, None),
    Pathway.IMPETIGO: AgeBand(1, None),
    Pathway.SHINGLES: AgeBand(18, None),
    Pathway.UNCOMPLICATED_UTI: AgeBand(16, 64, Sex.FEMALE),
}

BLOOD_PRESSURE_MIN_AGE = 18
CONTRACEPTIVE_MAX_AGE: dict[ContraceptiveType, int] = {
    ContraceptiveType.COC: 49,
    ContraceptiveType.POP: 54,
}


def age_on(birth_date: date, on: date) -> int:
    """Completed years on a date (a birthday on 29 February counts from 1 March in other years)."""
    years = on.year - birth_date.year
    if (on.month, on.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


def in_band(band: AgeBand, *, age: int, sex: Sex) -> bool:
    if band.minimum is not None and age < band.minimum:
        return False
    if band.maximum is not None and age > band.maximum:
        return False
    return band.sex is None or band.sex is sex


def referral_eligibility(
    *,
    service: Service,
    pathway: Pathway | None,
    birth_date: date,
    sex: Sex,
    contraceptive: ContraceptiveType | None,
    has_blood_pressure: bool,
    has_discharge_medicines: bool,
    on: date,
) -> list[RuleBreach]:
    """Why a referral cannot be made to this service for this patient (empty when it can)."""
    if birth_date > on:
        return [RuleBreach("patient.birth_date", "Birth date is in the future.")]
    age = age_on(birth_date, on)
    breaches: list[RuleBreach] = []
    if service is Service.PHARMACY_FIRST:
        band = PATHWAY_BANDS[pathway or Pathway.MINOR_ILLNESS]
        if band is not None and not in_band(band, age=age, sex=sex):
            breaches.append(
                RuleBreach("patient", f"The {pathway} pathway is for {band.describe()}.")
            )
    elif pathway is not None:
        breaches.append(
            RuleBreach("pathway", "A pathway applies to Pharmacy First referrals only.")
        )
    if service is Service.BLOOD_PRESSURE:
        if age < BLOOD_PRESSURE_MIN_AGE:
            breaches.append(
                RuleBreach(
                    "patient.birth_date",
                    "The Blood Pressure Check Service is for adults (18 and over).",
                )
            )
        if not has_blood_pressure:
            breaches.append(
                RuleBreach(
                    "blood_pressure", "A blood pressure referral must carry the latest reading."
                )
            )
    if service is Service.CONTRACEPTION and contraceptive is not None:
        limit = CONTRACEPTIVE_MAX_AGE[contraceptive]
        if age > limit:
            breaches.append(
                RuleBreach(
                    "patient.birth_date",
                    f"{contraceptive.upper()} is supplied by the service up to and including age {limit}.",
                )
            )
    if service is Service.DMS and not has_discharge_medicines:
        breaches.append(
            RuleBreach("discharge_medicines", "A DMS referral must list the discharge medicines.")
        )
    return breaches
