"""Clinical and eligibility rules from the national service specifications, in one place.

Sources: ../shared/reference/nhs-interop.md section 5 (Pharmacy First pathway ages, Blood Pressure
Check Service, Pharmacy Contraception Service, Discharge Medicines Service).
Every rule reports the logical field it concerns (e.g. ``patient.birth_date``); the caller maps
that to the JSON field or FHIRPath expression of its own payload.
"""

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

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


# ---- Blood Pressure Check Service -------------------------------------------------------------


class BpCategory(StrEnum):
    LOW = "low"  # below 90/60: advice
    NORMAL = "normal"  # 90/60 up to 139/89: healthy-behaviour advice
    HIGH = "high"  # 140/90 to 179/119: offer ABPM
    VERY_HIGH = "very-high"  # 180/120 or above: same-day GP


class AbpmResult(StrEnum):
    TOO_FEW_READINGS = "too-few-readings"  # under 14 daytime readings: not a valid result
    HYPERTENSION_CONFIRMED = "hypertension-confirmed"  # daytime average 135/85 or above
    NOT_CONFIRMED = "not-confirmed"


ABPM_MIN_DAYTIME_READINGS = 14


@dataclass(frozen=True, slots=True)
class Reading:
    systolic: int
    diastolic: int


def bp_category(reading: Reading) -> BpCategory:
    """Clinic blood pressure category (NICE NG136 thresholds as used by the service)."""
    if reading.systolic >= 180 or reading.diastolic >= 120:
        return BpCategory.VERY_HIGH
    if reading.systolic >= 140 or reading.diastolic >= 90:
        return BpCategory.HIGH
    if reading.systolic < 90 or reading.diastolic < 60:
        return BpCategory.LOW
    return BpCategory.NORMAL


def clinic_reading(readings: list[Reading]) -> Reading:
    """The clinic blood pressure: the lower (by systolic) of the last two readings (NICE NG136)."""
    if not readings:
        raise ValueError("at least one reading is needed")
    return min(readings[-2:], key=lambda r: (r.systolic, r.diastolic))


def abpm_result(*, daytime_readings: int, average: Reading) -> AbpmResult:
    if daytime_readings < ABPM_MIN_DAYTIME_READINGS:
        return AbpmResult.TOO_FEW_READINGS
    if average.systolic >= 135 or average.diastolic >= 85:
        return AbpmResult.HYPERTENSION_CONFIRMED
    return AbpmResult.NOT_CONFIRMED


def bp_recommended_outcome(
    *, category: BpCategory, irregular_pulse: bool, abpm: AbpmResult | None, abpm_pending: bool
) -> str:
    """What the service specification says should happen next, from the derived results."""
    if category is BpCategory.VERY_HIGH:
        return "referred-gp-same-day"
    if irregular_pulse:
        return "referred-gp-irregular-pulse"
    if abpm is AbpmResult.HYPERTENSION_CONFIRMED:
        return "referred-gp-hypertension"
    if abpm is AbpmResult.TOO_FEW_READINGS:
        return "abpm-repeat"
    if abpm is AbpmResult.NOT_CONFIRMED:
        return "advice-no-hypertension"
    if abpm_pending:
        return "abpm-fitted"
    if category is BpCategory.HIGH:
        return "abpm-offered"
    if category is BpCategory.LOW:
        return "advice-low-bp"
    return "advice-normal-bp"


def needs_urgent_escalation(*, category: BpCategory, irregular_pulse: bool) -> bool:
    return category is BpCategory.VERY_HIGH or irregular_pulse


# ---- Pharmacy Contraception Service -------------------------------------------------------------

COC_MAX_SYSTOLIC = (
    139  # 140/90 or above: no COC under the PGD (GP Connect example 2: 142/90, no supply)
)
COC_MAX_DIASTOLIC = 89
COC_MAX_BMI = 34.9  # BMI 35 or above: no COC under the PGD (UKMEC 3)


def coc_supply_breaches(*, reading: Reading | None, bmi: float | None) -> list[RuleBreach]:
    """Why combined oral contraception may not be supplied (empty when it may)."""
    breaches = []
    if reading is None:
        breaches.append(RuleBreach("blood_pressure", "COC supply needs a blood pressure reading."))
    elif reading.systolic > COC_MAX_SYSTOLIC or reading.diastolic > COC_MAX_DIASTOLIC:
        breaches.append(
            RuleBreach("blood_pressure", "Blood pressure 140/90 or above: COC is not supplied.")
        )
    if bmi is None:
        breaches.append(RuleBreach("bmi", "COC supply needs a BMI."))
    elif bmi > COC_MAX_BMI:
        breaches.append(RuleBreach("bmi", "BMI 35 or above: COC is not supplied."))
    return breaches
