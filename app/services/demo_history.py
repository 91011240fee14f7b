"""Synthetic referral history for demos and scale tests (`pharmref seed-demo --referrals N`).

Each referral is simulated as the running service would have recorded it: its referral row, its
audit events (created, accepted, the outcome, consultation stages, the sweep's overdue marks and
no-contact closures) and its consultation records, with times that follow the lifecycle rules
(the sweep closes a referral left `received` past its due time plus grace; forwarding makes a new
referral the other pharmacy receives; a blood pressure check with an ABPM monitor fitted stays
open until it comes back; DMS completes at stage 3). Rows are bulk-loaded (PostgreSQL: `COPY`;
SQLite: batched executemany) in one transaction, and the rollups are then rebuilt from them
(app/services/rollup_rebuild.py).

The model, by design rather than from real data:

| Aspect | How it is drawn |
|---|---|
| When | the last `months` months up to now; by day with service and pathway seasonality (winter for sore throat, sinusitis and otitis media, summer for insect bites), weekday patterns by source (GP practices on weekdays, NHS 111 heavier at weekends), Pharmacy First growing over the period, and hours of the day by source |
| What | Pharmacy First ~70% (minor illness and the seven clinical pathways), Blood Pressure Check ~13%, Contraception ~8%, DMS ~9% |
| Who refers | GP practices most, then NHS 111, urgent care (a trust), self-referral at the pharmacy; DMS only from trusts |
| Which practice | GP referrals: practice activity is heavy-tailed (log-normal, calibrated so the top 7% of practices make 69% of GP referrals); other sources: in proportion to list size; 8% of non-GP patients have no registered practice on the referral |
| Which pharmacy | one of about ten pharmacies near the patient's practice, registered for the service on that day (by its start date), weighted by pharmacy popularity |
| Patients | ages and sexes inside each pathway's band (UTI women 16-64, otitis media 1-17, ...), adults for BP, women up to 54 for contraception (COC up to 49), older patients for DMS; synthetic names; NHS numbers from the 999 test range with a valid modulus 11 check digit |
| Outcomes | mostly completed; some declined, returned, forwarded, cancelled and no-contact (most closed by the sweep); the most recent referrals still open |
| Times | log-normal delays: acceptance within hours, Pharmacy First completed within a day, BP checks and contraception within days, ABPM back a day or two later, DMS stage 1 mostly within 72 hours and stages 2 and 3 over the following weeks |

Not simulated: inbound messages (raw intake bodies), outbox deliveries and urgent escalations.
"""

import bisect
import math
import random
import re
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import orjson
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.core.config import settings
from app.db.base import utc_now
from app.db.bulk import lift_statement_timeout
from app.models.enums import OrgKind, Pathway, ReferralSource, Role, Service
from app.models.organisation import ListSize, Organisation, PharmacyService
from app.models.referral import Referral
from app.services import clinical_rules as rules
from app.services import rollup_rebuild
from app.services.references import REFERENCE_PREFIX
from app.services.rollups import LONDON

_T = TypeVar("_T")

DEFAULT_MONTHS = 12
# Above this many referrals, PostgreSQL loads without the secondary indexes and foreign keys of
# the three tables and builds them afterwards (much faster than maintaining them row by row).
BULK_THRESHOLD = 200_000
BATCH = 20_000

HOUR = 3600
DAY_SECONDS = 86400

# ---- the mix -------------------------------------------------------------------------------------

PF = Service.PHARMACY_FIRST
BP = Service.BLOOD_PRESSURE
PC = Service.CONTRACEPTION
DMS = Service.DMS

SERVICE_SHARE: dict[Service, float] = {PF: 0.70, BP: 0.13, PC: 0.08, DMS: 0.09}
PATHWAY_SHARE: dict[Pathway, float] = {
    Pathway.MINOR_ILLNESS: 0.35,
    Pathway.SORE_THROAT: 0.17,
    Pathway.UNCOMPLICATED_UTI: 0.17,
    Pathway.SINUSITIS: 0.12,
    Pathway.ACUTE_OTITIS_MEDIA: 0.06,
    Pathway.INFECTED_INSECT_BITE: 0.06,
    Pathway.SHINGLES: 0.04,
    Pathway.IMPETIGO: 0.03,
}
GP = ReferralSource.GP_PRACTICE
NHS111 = ReferralSource.NHS111
URGENT = ReferralSource.URGENT_CARE
TRUST = ReferralSource.TRUST
SELF = ReferralSource.SELF_REFERRAL
SOURCE_SHARE: dict[Service, dict[ReferralSource, float]] = {
    PF: {GP: 0.55, NHS111: 0.30, URGENT: 0.07, SELF: 0.08},
    BP: {GP: 0.70, SELF: 0.28, URGENT: 0.02},
    PC: {GP: 0.45, SELF: 0.50, NHS111: 0.05},
    DMS: {TRUST: 1.0},
}

# Month multipliers, January first.
_WINTER = (1.35, 1.25, 1.1, 0.95, 0.85, 0.75, 0.7, 0.7, 0.9, 1.05, 1.2, 1.3)
_SUMMER = (0.3, 0.3, 0.5, 0.8, 1.3, 1.8, 2.2, 2.0, 1.3, 0.6, 0.4, 0.3)
_MILD_SUMMER = (0.8, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.2, 1.0, 0.9, 0.8, 0.8)
_FLAT = (1.0,) * 12
_HOLIDAY_DIP = (1.1, 1.1, 1.05, 1.0, 1.0, 0.95, 0.85, 0.8, 1.0, 1.1, 1.1, 0.85)
_HOSPITAL_WINTER = (1.15, 1.1, 1.05, 1.0, 0.95, 0.9, 0.9, 0.9, 0.95, 1.0, 1.05, 1.15)
PATHWAY_SEASON: dict[Pathway, tuple[float, ...]] = {
    Pathway.MINOR_ILLNESS: _WINTER,
    Pathway.SORE_THROAT: _WINTER,
    Pathway.SINUSITIS: _WINTER,
    Pathway.ACUTE_OTITIS_MEDIA: _WINTER,
    Pathway.INFECTED_INSECT_BITE: _SUMMER,
    Pathway.IMPETIGO: _MILD_SUMMER,
    Pathway.SHINGLES: _FLAT,
    Pathway.UNCOMPLICATED_UTI: _FLAT,
}
SERVICE_SEASON: dict[Service, tuple[float, ...]] = {
    BP: _HOLIDAY_DIP,
    PC: _HOLIDAY_DIP,
    DMS: _HOSPITAL_WINTER,
}
# Day-of-week multipliers, Monday first.
WEEKDAY: dict[ReferralSource, tuple[float, ...]] = {
    GP: (1.3, 1.15, 1.1, 1.05, 1.0, 0.08, 0.03),
    NHS111: (0.9, 0.8, 0.8, 0.8, 0.9, 1.6, 1.7),
    URGENT: (1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.1),
    TRUST: (1.05, 1.1, 1.1, 1.1, 1.15, 0.6, 0.5),
    SELF: (1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.3),
}
# Local hour-of-day weights, midnight first.
_OFFICE = (
    0, 0, 0, 0, 0, 0, 0, 0.2, 1.2, 1.6, 1.5, 1.3, 1.0, 1.1, 1.3, 1.3, 1.2, 1.0, 0.5, 0.1, 0, 0, 0, 0,
)  # fmt: skip
_ROUND_THE_CLOCK = (
    0.5, 0.3, 0.2, 0.2, 0.2, 0.3, 0.5, 0.8, 1.0, 1.1, 1.1, 1.1,
    1.1, 1.0, 1.0, 1.0, 1.1, 1.3, 1.5, 1.6, 1.5, 1.3, 1.0, 0.7,
)  # fmt: skip
_SHOP = (
    0, 0, 0, 0, 0, 0, 0, 0, 0.5, 1.2, 1.3, 1.2, 1.1, 1.1, 1.1, 1.0, 1.0, 0.9, 0.6, 0.2, 0, 0, 0, 0,
)  # fmt: skip
_WARDS = (
    0.1, 0.1, 0, 0, 0, 0, 0, 0.1, 0.3, 0.6, 1.0, 1.3, 1.4, 1.5, 1.6, 1.6, 1.5, 1.3, 1.0, 0.7, 0.4,
    0.2, 0.1, 0.1,
)  # fmt: skip
HOURS: dict[ReferralSource, tuple[float, ...]] = {
    GP: _OFFICE,
    NHS111: _ROUND_THE_CLOCK,
    URGENT: _ROUND_THE_CLOCK,
    TRUST: _WARDS,
    SELF: _SHOP,
}
PF_GROWTH = 0.4  # Pharmacy First grows by this fraction across the seeded period

# Outcomes of an original referral; a forwarded copy is not forwarded again.
COMPLETED, DECLINED, FORWARDED, RETURNED, CANCELLED, NO_CONTACT = (
    "completed",
    "declined",
    "forwarded",
    "returned",
    "cancelled",
    "no-contact",
)
OUTCOME_SHARE: dict[Service, dict[str, float]] = {
    PF: {COMPLETED: 0.83, DECLINED: 0.025, FORWARDED: 0.025, RETURNED: 0.03, CANCELLED: 0.015, NO_CONTACT: 0.075},
    BP: {COMPLETED: 0.82, DECLINED: 0.02, FORWARDED: 0.02, RETURNED: 0.02, CANCELLED: 0.02, NO_CONTACT: 0.10},
    PC: {COMPLETED: 0.85, DECLINED: 0.02, FORWARDED: 0.02, RETURNED: 0.02, CANCELLED: 0.02, NO_CONTACT: 0.07},
    DMS: {COMPLETED: 0.88, DECLINED: 0.01, FORWARDED: 0.02, RETURNED: 0.02, CANCELLED: 0.01, NO_CONTACT: 0.06},
}  # fmt: skip
NO_PRACTICE_SHARE = 0.08  # non-GP referrals whose patient has no registered practice recorded
TOP_PRACTICE_SHARE = 0.07  # ... of practices make
TOP_PRACTICE_REFERRALS = 0.69  # ... of GP referrals
LOCAL_PHARMACIES = 10

# Median delays in hours and the log-normal spread.
ACCEPT_HOURS: dict[Service, tuple[float, float]] = {
    PF: (1.5, 1.0),
    BP: (6.0, 1.0),
    PC: (6.0, 1.0),
    DMS: (4.0, 0.8),
}
CONSULT_HOURS: dict[Service, tuple[float, float]] = {
    PF: (3.0, 0.9),
    BP: (40.0, 0.8),
    PC: (36.0, 0.8),
}
DMS_STAGE_HOURS = ((30.0, 0.6), (7 * 24.0, 0.5), (4 * 24.0, 0.5))
ABPM_BACK_HOURS = (30.0, 0.3)
SWEEP_LAG = 45  # seconds between a deadline passing and the sweep acting on it

# ---- synthetic people ------------------------------------------------------------------------------

GIVEN_FEMALE = (
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Freya", "Florence", "Grace",
    "Sophie", "Emily", "Ella", "Evie", "Poppy", "Charlotte", "Ruby", "Alice", "Zara", "Maya",
    "Hannah", "Chloe", "Megan", "Rebecca", "Sarah", "Laura", "Claire", "Helen", "Karen", "Susan",
    "Margaret", "Patricia", "Jean", "Joan", "Priya", "Aisha", "Fatima", "Nia", "Siobhan", "Eilidh",
)  # fmt: skip
GIVEN_MALE = (
    "Oliver", "George", "Noah", "Arthur", "Leo", "Muhammad", "Harry", "Oscar", "Jack", "Henry",
    "Charlie", "Freddie", "Alfie", "Theo", "Thomas", "James", "William", "Joshua", "Daniel", "Ryan",
    "Matthew", "Adam", "Samuel", "Ben", "David", "Michael", "Paul", "Andrew", "Mark", "Peter",
    "John", "Robert", "Brian", "Kenneth", "Arjun", "Omar", "Tariq", "Kwame", "Rhys", "Callum",
)  # fmt: skip
FAMILY = (
    "Ashdown", "Blackwood", "Brackley", "Carrow", "Cheswick", "Denholm", "Eastfield", "Fairbairn",
    "Fenwick", "Garside", "Halloran", "Hartwell", "Ingleby", "Kirkham", "Lamberton", "Langstone",
    "Marchbank", "Merriman", "Northcote", "Oakley", "Pemberton", "Quarrie", "Radcliffe", "Redmayne",
    "Rowntree", "Saltmarsh", "Sheringham", "Stanway", "Thackray", "Thornbury", "Underhill",
    "Wakefield", "Whitlock", "Wickham", "Yardley", "Ahmed", "Begum", "Chowdhury", "Khan", "Patel",
    "Okafor", "Mensah", "Nowak", "Kowalski", "Silva", "Murphy", "O'Connell", "MacLeod", "Evans",
    "Pritchard", "Llewellyn", "Baptiste", "Campbell", "Nguyen", "Tran", "Rossi", "Costa", "Dubois",
)  # fmt: skip
PHARMACISTS = (
    "Priya Example", "Tom Pestle", "Aisha Mortar", "Rhys Dispenser", "Grace Tablet",
    "Omar Capsule", "Helen Syrup", "Daniel Lozenge", "Nia Blister", "Callum Vial",
)  # fmt: skip
GP_CLINICIANS = (
    "Dr Sam Example",
    "Dr Jo Sample",
    "Dr Alex Specimen",
    "Nurse Kim Example",
    "Dr Chris Trial",
)
NHS111_CLINICIANS = ("Call adviser 111", "Clinical adviser 111")
TRUST_CLINICIANS = ("Pharmacist Lee Example", "Dr Ward Example", "Nurse Bay Example")

REASONS: dict[Any, str] = {
    Pathway.MINOR_ILLNESS: "Minor illness: advice and treatment from the pharmacy",
    Pathway.SORE_THROAT: "Sore throat for 3 days, FeverPAIN 2",
    Pathway.SINUSITIS: "Facial pain and nasal discharge for 10 days",
    Pathway.ACUTE_OTITIS_MEDIA: "Earache for 2 days, mild fever",
    Pathway.INFECTED_INSECT_BITE: "Red, warm swelling around an insect bite",
    Pathway.IMPETIGO: "Crusted sores around the mouth",
    Pathway.SHINGLES: "Painful blistering rash on one side of the chest",
    Pathway.UNCOMPLICATED_UTI: "Dysuria and frequency for 2 days, no red flags",
    BP: "Raised clinic reading; please check and arrange ABPM if indicated",
    PC: "Ongoing supply of oral contraception",
    DMS: "Discharged after admission; medicines changed, please reconcile",
}
DISCHARGE_MEDICINES = (
    {"name": "Furosemide 40mg tablets", "dmd_code": "317971007", "dose": "One each morning", "change": "new"},
    {"name": "Ramipril 2.5mg capsules", "dmd_code": "318873009", "dose": "One daily", "change": "changed"},
    {"name": "Bisoprolol 2.5mg tablets", "dmd_code": "318590006", "dose": "One daily", "change": "unchanged"},
    {"name": "Apixaban 5mg tablets", "dmd_code": "703907006", "dose": "One twice a day", "change": "new"},
    {"name": "Atorvastatin 20mg tablets", "dmd_code": "320029006", "dose": "One at night", "change": "unchanged"},
    {"name": "Amoxicillin 500mg capsules", "dmd_code": "323509004", "dose": "One three times a day", "change": "new"},
    {"name": "Metformin 500mg tablets", "dmd_code": "325278007", "dose": "One twice a day", "change": "stopped"},
)  # fmt: skip
PGD_MEDICINES: dict[Pathway, dict[str, Any]] = {
    Pathway.SORE_THROAT: {"dmd_code": "39695211000001102", "name": "Phenoxymethylpenicillin 250mg tablets", "dose": "Two tablets four times a day for 5 days", "quantity": 40, "unit": "tablet"},
    Pathway.SINUSITIS: {"dmd_code": "39695211000001102", "name": "Phenoxymethylpenicillin 250mg tablets", "dose": "Two tablets four times a day for 5 days", "quantity": 40, "unit": "tablet"},
    Pathway.ACUTE_OTITIS_MEDIA: {"dmd_code": "41958311000001102", "name": "Amoxicillin 250mg/5ml oral suspension", "dose": "5ml three times a day for 5 days", "quantity": 100, "unit": "ml"},
    Pathway.INFECTED_INSECT_BITE: {"dmd_code": "39732311000001104", "name": "Flucloxacillin 500mg capsules", "dose": "One four times a day for 5 days", "quantity": 20, "unit": "capsule"},
    Pathway.IMPETIGO: {"dmd_code": "4819811000001107", "name": "Hydrogen peroxide 1% cream", "dose": "Apply two to three times a day for 5 days", "quantity": 25, "unit": "gram"},
    Pathway.SHINGLES: {"dmd_code": "41962011000001105", "name": "Aciclovir 800mg tablets", "dose": "One five times a day for 7 days", "quantity": 35, "unit": "tablet"},
    Pathway.UNCOMPLICATED_UTI: {"dmd_code": "42109011000001102", "name": "Nitrofurantoin 100mg modified-release capsules", "dose": "One twice a day for 3 days", "quantity": 6, "unit": "capsule"},
}  # fmt: skip
COC_PRODUCT = {"dmd_code": "17346711000001106", "name": "Rigevidon tablets"}
POP_PRODUCT = {"dmd_code": "16687211000001100", "name": "Desogestrel 75microgram tablets"}
DECLINE_REASONS = (
    "no-capacity",
    "service-unavailable",
    "patient-not-eligible",
    "clinically-inappropriate",
)
RETURN_REASONS = (
    "Needs a GP examination",
    "Symptoms outside the pathway: red flags found",
    "Patient needs a face-to-face GP review",
)
CANCEL_REASONS = ("No longer needed", "Patient seen elsewhere", "Referred in error")
FORWARD_REASONS = ("Closer to the patient", None, "Pharmacist unavailable today")

# Ages 0 to 100 by weight, as (first age, last age, weight) pieces.
AGE_PIECES: dict[Any, tuple[tuple[int, int, float], ...]] = {
    Pathway.MINOR_ILLNESS: ((0, 12, 1.3), (13, 64, 1.0), (65, 100, 0.5)),
    Pathway.SORE_THROAT: ((5, 15, 2.0), (16, 40, 1.5), (41, 100, 0.4)),
    Pathway.SINUSITIS: ((12, 17, 0.6), (18, 64, 1.2), (65, 100, 0.5)),
    Pathway.ACUTE_OTITIS_MEDIA: ((1, 5, 3.0), (6, 10, 2.0), (11, 17, 0.7)),
    Pathway.INFECTED_INSECT_BITE: ((1, 80, 1.0), (81, 100, 0.3)),
    Pathway.IMPETIGO: ((1, 10, 3.0), (11, 100, 0.4)),
    Pathway.SHINGLES: ((18, 49, 0.5), (50, 90, 2.0), (91, 100, 0.5)),
    Pathway.UNCOMPLICATED_UTI: ((16, 64, 1.0),),
    BP: ((18, 39, 0.3), (40, 79, 1.5), (80, 95, 0.6)),
    PC: ((16, 25, 2.0), (26, 35, 1.5), (36, 49, 0.8), (50, 54, 0.3)),
    DMS: ((18, 64, 0.5), (65, 95, 2.0), (96, 100, 0.3)),
}
FEMALE_SHARE: dict[Any, float] = {Pathway.UNCOMPLICATED_UTI: 1.0, PC: 1.0, BP: 0.52, DMS: 0.53}

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MASK50 = (1 << 50) - 1


# ---- the rows ----------------------------------------------------------------------------------

REFERRAL_COLUMNS = (
    "id", "reference", "service", "pathway", "status", "status_reason", "source", "intake",
    "priority", "referrer_ods", "pharmacy_ods", "patient_practice_ods", "clinician_name",
    "clinician_id", "patient_nhs_number", "patient_family_name", "patient_given_name",
    "patient_birth_date", "patient_sex", "patient_phone", "reason", "notes", "bp_systolic",
    "bp_diastolic", "bp_measured_at", "bmi", "abpm_requested", "contraceptive_type",
    "contraceptive_dmd_code", "contraceptive_name", "discharged_at", "discharge_medicines",
    "forwarded_from_id", "bars_bundle_id", "correlation_id", "authored_at", "due_at",
    "overdue_at", "escalated_at", "version", "created_at", "updated_at",
)  # fmt: skip
EVENT_COLUMNS = (
    "referral_id", "action", "from_status", "to_status", "version", "actor_subject", "actor_org",
    "actor_role", "notify_referrer", "detail", "at",
)  # fmt: skip
CONSULTATION_COLUMNS = (
    "id", "referral_id", "service", "stage", "outcome", "clinician_name", "gphc_number", "record",
    "derived", "override", "recorded_by_org", "recorded_by_subject", "recorded_at",
)  # fmt: skip
# How each column's value is carried: uuids as 128-bit ints, instants as Unix seconds.
UUID_COLUMNS = frozenset({"id", "referral_id", "forwarded_from_id"})
INSTANT_COLUMNS = frozenset(
    {"bp_measured_at", "discharged_at", "authored_at", "due_at", "overdue_at", "escalated_at",
     "created_at", "updated_at", "at", "recorded_at"}
)  # fmt: skip
JSON_COLUMNS = frozenset({"discharge_medicines", "detail", "record", "derived", "override"})
BOOL_COLUMNS = frozenset({"abpm_requested", "notify_referrer"})


@dataclass
class Batch:
    referrals: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    consultations: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HistorySummary:
    referrals: int
    events: int
    consultations: int
    rollup_rows: int
    first_day: date
    last_day: date
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase

    def __str__(self) -> str:
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.phases.items())
        return (
            f"history: {self.referrals} referrals ({self.first_day} to {self.last_day}), "
            f"{self.events} events, {self.consultations} consultations, "
            f"{self.rollup_rows} rollup rows, in {self.seconds:.1f} s ({phases})"
        )


# ---- the directory as the generator sees it ----------------------------------------------------


class _Picker:
    """Weighted choice among items whose start day has come (items sorted by start day)."""

    __slots__ = ("cumulative", "items", "starts")

    def __init__(self, entries: Sequence[tuple[int, str, float]]) -> None:
        ordered = sorted(entries)
        self.starts = [start for start, _, _ in ordered]
        self.items = [item for _, item, _ in ordered]
        self.cumulative: list[float] = []
        total = 0.0
        for _, _, weight in ordered:
            total += weight
            self.cumulative.append(total)

    def pick(self, rng: random.Random, day: int, avoid: str | None = None) -> str | None:
        available = bisect.bisect_right(self.starts, day)
        if not available or (available == 1 and self.items[0] == avoid):
            return None
        for _ in range(4):
            index = bisect.bisect_right(
                self.cumulative, rng.random() * self.cumulative[available - 1]
            )
            item = self.items[min(index, available - 1)]
            if item != avoid:
                return item
        return None


@dataclass
class _Directory:
    practices: list[str]
    list_sizes: list[float]
    gp_weights: list[float]
    pharmacies: dict[Service, _Picker]
    local: dict[tuple[str, Service], _Picker]
    trusts: list[str]
    nhs111: list[str]


def _latest_list_sizes(session: Session, practices: list[str], on: date) -> dict[str, int]:
    rows = session.execute(
        select(ListSize.practice_ods, ListSize.registered_patients)  # type: ignore[call-overload]
        .where(ListSize.effective_date <= on)
        .order_by(ListSize.practice_ods, ListSize.effective_date)
    ).all()
    latest: dict[str, int] = dict(rows)
    return {ods: latest.get(ods, 5000) for ods in practices}


def _calibrated_activity(rng: random.Random, sizes: list[float]) -> list[float]:
    """Per-practice GP referral weights: list size times a log-normal activity, with the spread
    chosen so the top TOP_PRACTICE_SHARE of practices carry TOP_PRACTICE_REFERRALS of the weight."""
    count = len(sizes)
    normal = statistics.NormalDist()
    quantiles = [normal.inv_cdf((rank + 0.5) / count) for rank in range(count)]
    rng.shuffle(quantiles)
    top = max(1, round(count * TOP_PRACTICE_SHARE))

    def weights(sigma: float) -> list[float]:
        return [size * math.exp(sigma * z) for size, z in zip(sizes, quantiles, strict=True)]

    def top_share(sigma: float) -> float:
        values = sorted(weights(sigma), reverse=True)
        return sum(values[:top]) / sum(values)

    low, high = 0.0, 6.0
    if count > top:
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (
                (middle, high) if top_share(middle) < TOP_PRACTICE_REFERRALS else (low, middle)
            )
    return weights((low + high) / 2)


def _load_directory(session: Session, rng: random.Random, first_day: date) -> _Directory:
    organisations = session.execute(
        select(Organisation.ods_code, Organisation.kind)  # type: ignore[call-overload]
        .where(Organisation.active)
        .order_by(Organisation.ods_code)
    ).all()
    by_kind: dict[OrgKind, list[str]] = {}
    for ods, kind in organisations:
        by_kind.setdefault(OrgKind(kind), []).append(ods)
    practices = by_kind.get(OrgKind.GP_PRACTICE, [])
    pharmacy_codes = set(by_kind.get(OrgKind.PHARMACY, []))
    if not practices or not pharmacy_codes:
        raise ValueError("The directory has no practices or pharmacies: load it first.")
    sizes_by_practice = _latest_list_sizes(session, practices, first_day + timedelta(days=366))
    sizes = [float(sizes_by_practice[ods]) for ods in practices]

    popularity = {ods: rng.lognormvariate(0, 0.6) for ods in sorted(pharmacy_codes)}
    registrations = session.execute(
        select(
            PharmacyService.pharmacy_ods, PharmacyService.service, PharmacyService.start_date
        ).order_by(PharmacyService.pharmacy_ods, PharmacyService.service)  # type: ignore[call-overload]
    ).all()
    provides: dict[Service, list[tuple[int, str, float]]] = {service: [] for service in Service}
    for ods, service, start in registrations:
        if ods in pharmacy_codes:
            day = start.toordinal() if start is not None else 0
            provides[Service(service)].append((day, ods, popularity[ods]))
    pharmacies = {service: _Picker(entries) for service, entries in provides.items()}
    local: dict[tuple[str, Service], _Picker] = {}
    ordered = sorted(pharmacy_codes)
    for practice in practices:
        nearby = set(rng.sample(ordered, min(LOCAL_PHARMACIES, len(ordered))))
        for service, entries in provides.items():
            local[(practice, service)] = _Picker([e for e in entries if e[1] in nearby])
    return _Directory(
        practices=practices,
        list_sizes=sizes,
        gp_weights=_calibrated_activity(rng, sizes),
        pharmacies=pharmacies,
        local=local,
        trusts=by_kind.get(OrgKind.TRUST, []),
        nhs111=by_kind.get(OrgKind.NHS111, []),
    )


# ---- when: days, streams and hours ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stream:
    service: Service
    pathway: Pathway | None
    source: ReferralSource


def _streams(directory: _Directory) -> list[tuple[_Stream, float]]:
    streams = []
    for service, share in SERVICE_SHARE.items():
        pathways: list[tuple[Pathway | None, float]] = [(None, 1.0)]
        if service is PF:
            pathways = list(PATHWAY_SHARE.items())
        for pathway, pathway_share in pathways:
            for source, source_share in SOURCE_SHARE[service].items():
                if source in (TRUST, URGENT) and not directory.trusts:
                    continue
                if source is NHS111 and not directory.nhs111:
                    continue
                streams.append(
                    (_Stream(service, pathway, source), share * pathway_share * source_share)
                )
    return streams


class _Calendar:
    """Days of the period with, per day, the weight of every stream and the Unix time of each
    local hour (England: 23 or 25 hours on the clock-change days are handled by the zone)."""

    def __init__(self, first: date, last: date, streams: list[tuple[_Stream, float]]) -> None:
        self.days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        self.streams = [stream for stream, _ in streams]
        span = max(len(self.days) - 1, 1)
        cumulative = []
        total = 0.0
        for index, day in enumerate(self.days):
            month, weekday = day.month - 1, day.weekday()
            growth = 1 + PF_GROWTH * index / span
            for stream, share in streams:
                season = (
                    PATHWAY_SEASON[stream.pathway]
                    if stream.pathway is not None
                    else SERVICE_SEASON[stream.service]
                )
                weight = share * season[month] * WEEKDAY[stream.source][weekday]
                if stream.service is PF:
                    weight *= growth
                total += weight
                cumulative.append(total)
        self.cumulative = cumulative
        self.hour_starts = [
            [
                int(datetime(day.year, day.month, day.day, hour, tzinfo=LONDON).timestamp())
                for hour in range(24)
            ]
            for day in self.days
        ]
        self.hour_cumulative: dict[ReferralSource, list[float]] = {}
        for source, weights in HOURS.items():
            running, acc = [], 0.0
            for weight in weights:
                acc += weight
                running.append(acc)
            self.hour_cumulative[source] = running

    def draw(self, rng: random.Random, count: int) -> list[tuple[int, _Stream]]:
        picks = rng.choices(range(len(self.cumulative)), cum_weights=self.cumulative, k=count)
        width = len(self.streams)
        return [(pick // width, self.streams[pick % width]) for pick in picks]

    def instant(self, rng: random.Random, day_index: int, source: ReferralSource) -> int:
        hours = self.hour_cumulative[source]
        hour = bisect.bisect_right(hours, rng.random() * hours[-1])
        return self.hour_starts[day_index][min(hour, 23)] + rng.randrange(HOUR)


# ---- ids, references, patients ---------------------------------------------------------------


def _uuid4(rng: random.Random) -> int:
    value = rng.getrandbits(128)
    return (value & ~(0xF << 76) & ~(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)


def _scramble(n: int) -> int:
    """A bijection on 50-bit integers, so consecutive numbers give unrelated-looking references."""
    n &= _MASK50
    n ^= n >> 23
    n = (n * 0x2545F4914F6CD) & _MASK50
    n ^= n >> 27
    n = (n * 0x1B873593ECAB5) & _MASK50
    n ^= n >> 25
    return n


def _reference(service: Service, number: int) -> str:
    value = _scramble(number)
    chars = "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(45, -5, -5))
    return f"{REFERENCE_PREFIX[service]}-{chars[:5]}-{chars[5:]}"


# NHS number weights are 10 down to 2: the fixed "999" contributes 9 * (10 + 9 + 8); each half
# of the six free digits contributes a table entry.
_NHS_PREFIX_SUM = 9 * (10 + 9 + 8)
_NHS_HIGH = [
    sum(int(d) * w for d, w in zip(f"{n:03d}", (7, 6, 5), strict=True)) for n in range(1000)
]
_NHS_LOW = [
    sum(int(d) * w for d, w in zip(f"{n:03d}", (4, 3, 2), strict=True)) for n in range(1000)
]


def _pick(rng: random.Random, items: Sequence[str]) -> str:
    return items[int(rng.random() * len(items))]


def _nhs_number(rng: random.Random) -> str:
    """A random 999-range NHS number with a valid modulus 11 check digit."""
    while True:
        n = int(rng.random() * 1_000_000)
        high, low = divmod(n, 1000)
        check = (11 - (_NHS_PREFIX_SUM + _NHS_HIGH[high] + _NHS_LOW[low]) % 11) % 11
        if check != 10:
            return f"999{n:06d}{check}"


def _age_table(pieces: tuple[tuple[int, int, float], ...]) -> tuple[list[int], list[float]]:
    ages, cumulative, total = [], [], 0.0
    for first, last, weight in pieces:
        for age in range(first, last + 1):
            total += weight
            ages.append(age)
            cumulative.append(total)
    return ages, cumulative


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a year without one
        return day.replace(year=day.year - years, day=28)


def _birth_date(rng: random.Random, on: date, age: int) -> date:
    """A birth date that makes the patient exactly `age` on `on`."""
    latest = _years_before(on, age)
    earliest = _years_before(on, age + 1) + timedelta(days=1)
    born = earliest + timedelta(days=rng.randrange((latest - earliest).days + 1))
    while rules.age_on(born, on) > age:
        born += timedelta(days=1)
    while rules.age_on(born, on) < age:
        born -= timedelta(days=1)
    return born


def _delay(rng: random.Random, median_hours: float, sigma: float) -> int:
    return max(60, int(rng.lognormvariate(math.log(median_hours * HOUR), sigma)))


# ---- one referral's life -------------------------------------------------------------------------


class _Life:
    """A referral's timeline, cut off at `now`: each step writes its event, and the sweep's
    overdue mark is written when the referral was open at its due time."""

    def __init__(self, sim: "_Simulator", ref: dict[str, Any]) -> None:
        self.sim = sim
        self.ref = ref
        self.status = "received"
        self.version = 1
        self.stopped = False
        self.due: int = ref["due_at"]

    def _mark_overdue_before(self, at: int) -> None:
        # the sweep's next run after the due time (a forwarded copy keeps its original's due time)
        mark = max(self.due, self.ref["created_at"]) + SWEEP_LAG
        if (
            self.ref["overdue_at"] is None
            and self.status in ("received", "accepted")
            and mark <= min(at, self.sim.now)
        ):
            self.ref["overdue_at"] = mark
            self.sim.event(
                self.ref["id"], "overdue", self.status, self.status, self.version,
                self.sim.sweep_actor(self.ref["pharmacy_ods"]), True,
                {"automatic": True, "due_at": self.sim.iso(self.due)}, mark,
            )  # fmt: skip

    def step(
        self,
        at: int,
        action: str,
        to_status: str,
        actor: tuple[str, str, str],
        detail: dict[str, Any] | None = None,
        notify: bool = False,
    ) -> bool:
        """Make one change at `at`; False (and nothing more happens) if `at` is after now."""
        if self.stopped or at > self.sim.now:
            self.stopped = True
            return False
        self._mark_overdue_before(at)
        self.version += 1
        self.sim.event(
            self.ref["id"], action, self.status, to_status, self.version, actor, notify, detail, at
        )
        self.status = to_status
        self.ref["status"] = to_status
        self.ref["version"] = self.version
        self.ref["updated_at"] = at
        return True

    def finish(self) -> None:
        self._mark_overdue_before(self.sim.now)


@dataclass(frozen=True, slots=True)
class _Patient:
    age: int
    sex: str
    birth_date: Any
    given: str
    family: str
    nhs_number: str | None
    phone: str


class _Simulator:
    """Plays out referrals from receipt to now, writing Python values into `batch`. The hooks
    (ids, references, patients, dates as text, ...) are overridden by `_Recorder`, which plays a
    referral once with placeholders so that it can be replayed at any time (`_Prototype`)."""

    def __init__(
        self, *, rng: random.Random, directory: _Directory, now: int, lean: bool = False
    ) -> None:
        self.rng = rng
        self.lean = lean
        # ids come from the system's randomness: the same seed gives the same history, and
        # seeding twice never repeats an id
        self.id_rng = random.Random()
        self.directory = directory
        self.now = now
        self.number = 0
        self.batch = Batch()
        self.ages = {key: _age_table(pieces) for key, pieces in AGE_PIECES.items()}
        self.outcomes = {
            service: (list(shares), _running(shares.values()))
            for service, shares in OUTCOME_SHARE.items()
        }
        self.due_hours = {service: settings.due_hours[service] for service in Service}
        self.grace_hours = dict(settings.no_contact_grace_hours)
        self.size_cumulative = _running(directory.list_sizes)
        self.gp_cumulative = _running(directory.gp_weights)

    # -- hooks

    def new_id(self) -> Any:
        return _uuid4(self.id_rng)

    def uuid_text(self, value: Any) -> str:
        return str(uuid.UUID(int=value))

    def iso(self, at: int) -> str:
        return datetime.fromtimestamp(at, UTC).isoformat()

    def date_text(self, at: int) -> str:
        return datetime.fromtimestamp(at, LONDON).date().isoformat()

    def reference(self, service: Service) -> str:
        self.number += 1
        return _reference(service, self.number)

    def patient(self, key: Any, on: date) -> _Patient:
        rng = self.rng
        age, female, sex = self._age_and_sex(key)
        return _Patient(
            age=age,
            sex=sex,
            birth_date=_birth_date(rng, on, age),
            given=rng.choice(GIVEN_FEMALE if female else GIVEN_MALE),
            family=rng.choice(FAMILY),
            nhs_number=_nhs_number(rng) if rng.random() < 0.985 else None,
            phone=f"07700 900{rng.randrange(1000):03d}",
        )

    def referrer(self, source: ReferralSource, practice: str | None, pharmacy: str) -> str:
        if source is GP:
            assert practice is not None
            return practice
        if source is NHS111:
            return self.rng.choice(self.directory.nhs111)
        if source in (TRUST, URGENT):
            trusts = self.directory.trusts
            return trusts[0] if self.rng.random() < 0.7 else self.rng.choice(trusts)
        return pharmacy

    def message_id(self) -> str:
        return str(uuid.UUID(int=_uuid4(self.id_rng)))

    def forward_target(self, ref: dict[str, Any], at: int) -> str | None:
        day = datetime.fromtimestamp(at, LONDON).date().toordinal()
        return self.pharmacy_for(
            ref["patient_practice_ods"], Service(ref["service"]), day, avoid=ref["pharmacy_ods"]
        )

    def abpm_due(self, fitted_at: int) -> tuple[int, Any]:
        """The new due time once an ABPM monitor is fitted: (for the timeline, for the row)."""
        due = _abpm_due(fitted_at)
        return due, due

    # -- choices

    def _age_and_sex(self, key: Any) -> tuple[int, bool, str]:
        rng = self.rng
        ages, cumulative = self.ages[key]
        age = ages[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]
        female = rng.random() < FEMALE_SHARE.get(key, 0.58)
        sex = "female" if female else ("male" if rng.random() > 0.004 else "unknown")
        return age, female, sex

    def practice_for(self, source: ReferralSource, *, always: bool = False) -> str | None:
        """The patient's registered practice (None: not recorded, for some non-GP referrals)."""
        rng = self.rng
        if not always and source is not GP and rng.random() < NO_PRACTICE_SHARE:
            return None
        cumulative = self.gp_cumulative if source is GP else self.size_cumulative
        index = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
        return self.directory.practices[min(index, len(cumulative) - 1)]

    def pharmacy_for(
        self, practice: str | None, service: Service, day: int, avoid: str | None = None
    ) -> str | None:
        if practice is not None:
            found = self.directory.local[(practice, service)].pick(self.rng, day, avoid)
            if found is not None:
                return found
        return self.directory.pharmacies[service].pick(self.rng, day, avoid)

    # -- rows

    def event(
        self,
        referral_id: Any,
        action: str,
        from_status: str | None,
        to_status: str | None,
        version: int,
        actor: tuple[str, str, str],
        notify: bool,
        detail: dict[str, Any] | None,
        at: int,
    ) -> None:
        if self.lean and action != "accepted":
            return
        subject, org, role = actor
        self.batch.events.append(
            (referral_id, action, from_status, to_status, version, subject, org, role, notify, detail, at)
        )  # fmt: skip

    @staticmethod
    def sweep_actor(pharmacy: str) -> tuple[str, str, str]:
        return ("pharmref:sweep", pharmacy, Role.PHARMACY.value)

    @staticmethod
    def pharmacy_actor(pharmacy: str) -> tuple[str, str, str]:
        return (f"pharmacy:{pharmacy}", pharmacy, Role.PHARMACY.value)

    # -- one referral

    def original(
        self,
        *,
        created: int,
        day: date,
        stream: _Stream,
        practice: str | None,
        pharmacy: str,
        room: int,
    ) -> None:
        """A referral made at `created` and everything that happened to it up to now (`room`:
        how many referral rows may still be written; forwarding writes two)."""
        rng = self.rng
        service, source = stream.service, stream.source
        key: Any = stream.pathway if service is PF else service
        patient = self.patient(key, day)
        referrer = self.referrer(source, practice, pharmacy)
        intake = "fhir" if rng.random() < 0.6 else "json"
        ref: dict[str, Any] = {
            "id": self.new_id(),
            "reference": self.reference(service),
            "service": service.value,
            "pathway": stream.pathway.value if stream.pathway else None,
            "status": "received",
            "status_reason": None,
            "source": source.value,
            "intake": intake,
            "priority": "urgent"
            if rng.random() < (0.08 if source is NHS111 else 0.03)
            else "routine",
            "referrer_ods": referrer,
            "pharmacy_ods": pharmacy,
            "patient_practice_ods": practice,
            "clinician_name": rng.choice(_CLINICIANS[source]),
            "clinician_id": f"G{rng.randrange(10**7):07d}" if source is GP else None,
            "patient_nhs_number": patient.nhs_number,
            "patient_family_name": patient.family,
            "patient_given_name": patient.given,
            "patient_birth_date": patient.birth_date,
            "patient_sex": patient.sex,
            "patient_phone": patient.phone,
            "reason": REASONS[key],
            "notes": "Patient prefers a morning call." if rng.random() < 0.1 else None,
            "bp_systolic": None,
            "bp_diastolic": None,
            "bp_measured_at": None,
            "bmi": None,
            "abpm_requested": False,
            "contraceptive_type": None,
            "contraceptive_dmd_code": None,
            "contraceptive_name": None,
            "discharged_at": None,
            "discharge_medicines": None,
            "forwarded_from_id": None,
            "bars_bundle_id": self.message_id() if intake == "fhir" else None,
            "correlation_id": self.message_id() if intake == "fhir" else None,
            "authored_at": created - rng.randrange(30, 1800),
            "due_at": created + self.due_hours[service] * HOUR,
            "overdue_at": None,
            "escalated_at": None,
            "version": 1,
            "created_at": created,
            "updated_at": created,
        }
        self._clinical_details(ref, service, source, patient.age, created)
        self.batch.referrals.append(ref)
        role = _ROLE_OF_SOURCE[source.value]
        self.event(
            ref["id"], "created", None, "received", 1,
            (f"{role}:{referrer}", referrer, role), False, {"intake": intake}, created,
        )  # fmt: skip
        outcome = self._outcome(service)
        if outcome == FORWARDED and room < 2:
            outcome = COMPLETED
        self._live(ref, outcome)

    def _outcome(self, service: Service, *, forwarding: bool = True) -> str:
        names, cumulative = self.outcomes[service]
        while True:
            outcome = names[bisect.bisect_right(cumulative, self.rng.random() * cumulative[-1])]
            if forwarding or outcome != FORWARDED:
                return outcome

    def _clinical_details(
        self, ref: dict[str, Any], service: Service, source: ReferralSource, age: int, created: int
    ) -> None:
        rng = self.rng
        if service is BP:
            raised = source is GP
            ref["bp_systolic"] = rng.randint(138, 176) if raised else rng.randint(105, 165)
            ref["bp_diastolic"] = rng.randint(82, 104) if raised else rng.randint(65, 98)
            ref["bp_measured_at"] = created - rng.randrange(HOUR, 10 * DAY_SECONDS)
            ref["abpm_requested"] = raised and rng.random() < 0.5
        elif service is PC:
            pill = "coc" if age <= 49 and rng.random() < 0.6 else "pop"
            product = COC_PRODUCT if pill == "coc" else POP_PRODUCT
            ref["contraceptive_type"] = pill
            ref["contraceptive_dmd_code"] = product["dmd_code"]
            ref["contraceptive_name"] = product["name"]
            ref["bmi"] = round(rng.uniform(18.5, 33.0), 1)
        elif service is DMS:
            ref["discharged_at"] = created - rng.randrange(HOUR, 12 * HOUR)
            ref["discharge_medicines"] = rng.sample(DISCHARGE_MEDICINES, rng.randint(2, 5))

    def _live(self, ref: dict[str, Any], outcome: str) -> None:
        """Play out the referral's outcome from receipt, up to now."""
        rng = self.rng
        service = Service(ref["service"])
        pharmacy = ref["pharmacy_ods"]
        actor = self.pharmacy_actor(pharmacy)
        role = _ROLE_OF_SOURCE[ref["source"]]
        referrer_actor = (f"{role}:{ref['referrer_ods']}", ref["referrer_ods"], role)
        life = _Life(self, ref)
        created = ref["created_at"]
        grace = self.grace_hours.get(service)
        deadline = (
            max(ref["due_at"] + grace * HOUR, created) + SWEEP_LAG if grace is not None else None
        )
        first = created + _delay(rng, *ACCEPT_HOURS[service])
        accepted_first = outcome in (COMPLETED, RETURNED) or (
            outcome in (FORWARDED, CANCELLED, NO_CONTACT) and rng.random() < 0.3
        )
        if deadline is not None and first > deadline:
            # still received when the sweep's grace ran out: closed as no-contact
            accepted_first, outcome, first = False, NO_CONTACT, deadline
        if outcome == NO_CONTACT and not accepted_first:
            if deadline is not None:
                reason = f"The patient did not make contact within {grace} hours of the due time."
                detail = {"reason": reason, "automatic": True, "due_at": self.iso(ref["due_at"])}
                if life.step(
                    deadline, "no-contact", "no-contact", self.sweep_actor(pharmacy), detail, True
                ):
                    ref["status_reason"] = reason
            life.finish()
            return
        at = first
        if accepted_first:
            if not life.step(at, "accepted", "accepted", actor):
                life.finish()
                return
            at += _delay(rng, 6.0, 1.2)
        if outcome == DECLINED:
            code = rng.choice(DECLINE_REASONS)
            life.step(at, "declined", "declined", actor, {"reason_code": code}, True)
        elif outcome == RETURNED:
            reason = rng.choice(RETURN_REASONS)
            if life.step(at, "returned", "returned", actor, {"reason": reason}, True):
                ref["status_reason"] = reason
        elif outcome == CANCELLED:
            reason = rng.choice(CANCEL_REASONS)
            if life.step(at, "cancelled", "cancelled", referrer_actor, {"reason": reason}):
                ref["status_reason"] = reason
        elif outcome == NO_CONTACT:
            reason = "The patient did not make contact."
            if life.step(
                at + DAY_SECONDS, "no-contact", "no-contact", actor, {"reason": reason}, True
            ):
                ref["status_reason"] = reason
        elif outcome == FORWARDED:
            self._forward(life, at, actor)
        else:
            self._consult(life, service, actor)
        life.finish()

    def _forward(self, life: _Life, at: int, actor: tuple[str, str, str]) -> None:
        ref = life.ref
        if at > self.now:
            return
        target = self.forward_target(ref, at)
        if target is None:
            return
        copy_id = self.new_id()
        reason = self.rng.choice(FORWARD_REASONS)
        detail = {"to_pharmacy_ods": target, "to_referral_id": self.uuid_text(copy_id)}
        if reason is not None:
            detail = {"reason": reason, **detail}
        if not life.step(at, "forwarded", "forwarded", actor, detail, True):
            return
        ref["status_reason"] = reason
        copy = dict(ref)
        copy.update(
            id=copy_id,
            reference=self.reference(Service(ref["service"])),
            status="received",
            status_reason=None,
            version=1,
            pharmacy_ods=target,
            forwarded_from_id=ref["id"],
            created_at=at,
            updated_at=at,
        )
        self.batch.referrals.append(copy)
        detail = {
            "from_pharmacy_ods": ref["pharmacy_ods"],
            "from_referral_id": self.uuid_text(ref["id"]),
        }
        self.event(copy_id, "received-by-forwarding", None, "received", 1, actor, False, detail, at)
        self._live(copy, self._outcome(Service(ref["service"]), forwarding=False))

    # -- consultations

    def _consultation(
        self,
        life: _Life,
        at: int,
        stage: int,
        outcome: str,
        record: dict[str, Any],
        derived: dict[str, Any],
        completes: bool,
        actor: tuple[str, str, str],
    ) -> bool:
        consultation_id = self.new_id()
        detail = {
            "consultation_id": self.uuid_text(consultation_id),
            "stage": stage,
            "outcome": outcome,
        }
        if completes:
            done = life.step(at, "completed", "completed", actor, detail)
        else:
            done = life.step(at, "consultation-recorded", "accepted", actor, detail)
        if done and not (self.lean and life.ref["service"] in _UNCOUNTED):
            ref = life.ref
            self.batch.consultations.append(
                (consultation_id, ref["id"], ref["service"], stage, outcome, record["clinician_name"],
                 record["gphc_number"], record, derived, None, ref["pharmacy_ods"], actor[0], at)
            )  # fmt: skip
        return done

    def _clinician(self) -> dict[str, Any]:
        return {
            "clinician_name": self.rng.choice(PHARMACISTS),
            "gphc_number": f"20{self.rng.randrange(10**5):05d}",
            "consulted_at": None,
            "notes": None,
        }

    def _consult(self, life: _Life, service: Service, actor: tuple[str, str, str]) -> None:
        if service is DMS:
            self._dms(life, actor)
            return
        rng = self.rng
        ref = life.ref
        at = ref["updated_at"] + _delay(rng, *CONSULT_HOURS[service])
        base = {"service": service.value, **self._clinician()}
        if service is BP:
            self._blood_pressure(life, at, base, actor)
        elif service is PF:
            pathway = Pathway(ref["pathway"])
            clinical = pathway is not Pathway.MINOR_ILLNESS
            outcomes, weights = PF_OUTCOMES[clinical]
            outcome = rng.choices(outcomes, weights)[0]
            record = {
                **base,
                "pathway": pathway.value,
                "gateway_criteria_met": (outcome == "pgd-supply" or rng.random() < 0.5)
                if clinical
                else None,
                "outcome": outcome,
                "medicine": PGD_MEDICINES[pathway] if outcome == "pgd-supply" else None,
            }
            derived = {"pathway_age_band_met": True, "clinical_pathway": clinical}
            self._consultation(life, at, 0, outcome, record, derived, True, actor)
        else:
            supplied = rng.random() < 0.9
            pill = ref["contraceptive_type"]
            reading = {"systolic": rng.randint(100, 135), "diastolic": rng.randint(60, 85)}
            record = {
                **base,
                "supply_type": "ongoing" if rng.random() < 0.7 else "initiation",
                "pill": pill,
                "product": (COC_PRODUCT if pill == "coc" else POP_PRODUCT) if supplied else None,
                "months_supplied": rng.choice((3, 6, 12)) if supplied else None,
                "blood_pressure": reading,
                "bmi": ref["bmi"],
                "outcome": "supplied" if supplied else "not-supplied-referred",
                "reason_not_supplied": None if supplied else "Patient prefers a GP review",
            }
            facts: dict[str, Any] = {
                "bp_category": rules.bp_category(rules.Reading(**reading)).value,
                "coc_safe": True,
                "coc_exclusions": [],
                "age_within_limit": True,
            }
            self._consultation(life, at, 0, record["outcome"], record, facts, True, actor)

    def _blood_pressure(
        self, life: _Life, at: int, base: dict[str, Any], actor: tuple[str, str, str]
    ) -> None:
        rng = self.rng
        ref = life.ref
        systolic = min(179, max(80, int(rng.gauss(ref["bp_systolic"] - 4, 9))))
        diastolic = min(
            119, max(50, min(systolic - 20, int(rng.gauss(ref["bp_diastolic"] - 2, 6))))
        )
        readings: list[dict[str, Any]] = [
            {"systolic": systolic + rng.randint(0, 8), "diastolic": diastolic + rng.randint(0, 4), "pulse": rng.randint(58, 95), "irregular_pulse": False, "measured_at": None},
            {"systolic": systolic, "diastolic": diastolic, "pulse": rng.randint(58, 95), "irregular_pulse": False, "measured_at": None},
        ]  # fmt: skip
        clinic = rules.clinic_reading(
            [rules.Reading(r["systolic"], r["diastolic"]) for r in readings]
        )
        category = rules.bp_category(clinic)

        def derived(pending: bool, result: rules.AbpmResult | None) -> dict[str, Any]:
            return {
                "clinic_reading": {"systolic": clinic.systolic, "diastolic": clinic.diastolic},
                "category": category.value,
                "irregular_pulse": False,
                "abpm_pending": pending,
                "abpm_result": result.value if result else None,
                "recommended_outcome": rules.bp_recommended_outcome(
                    category=category, irregular_pulse=False, abpm=result, abpm_pending=pending
                ),
                "urgent_escalation": False,
            }

        if category is not rules.BpCategory.HIGH or rng.random() >= 0.6:
            facts = derived(False, None)
            record = {
                **base,
                "clinic_readings": readings,
                "abpm": None,
                "outcome": facts["recommended_outcome"],
            }
            self._consultation(
                life, at, 0, facts["recommended_outcome"], record, facts, True, actor
            )
            return
        fitted = self.date_text(at)
        facts = derived(True, None)
        abpm: dict[str, Any] = {
            "offered_on": fitted, "fitted_on": fitted, "returned_on": None, "daytime_readings": None,
            "daytime_average_systolic": None, "daytime_average_diastolic": None,
        }  # fmt: skip
        record = {
            **base,
            "clinic_readings": readings,
            "abpm": abpm,
            "outcome": facts["recommended_outcome"],
        }
        if not self._consultation(
            life, at, 1, facts["recommended_outcome"], record, facts, False, actor
        ):
            return
        life.due, ref["due_at"] = self.abpm_due(at)
        back = at + _delay(rng, *ABPM_BACK_HOURS)
        count = rng.randint(10, 30) if rng.random() < 0.06 else rng.randint(18, 30)
        average = rules.Reading(
            max(100, int(rng.gauss(clinic.systolic - 8, 7))),
            max(60, int(rng.gauss(clinic.diastolic - 5, 5))),
        )
        result = rules.abpm_result(daytime_readings=count, average=average)
        facts = derived(False, result)
        abpm = {**abpm, "returned_on": self.date_text(back), "daytime_readings": count,
                "daytime_average_systolic": average.systolic, "daytime_average_diastolic": average.diastolic}  # fmt: skip
        record = {**base, **self._clinician(), "clinic_readings": readings, "abpm": abpm, "outcome": facts["recommended_outcome"]}  # fmt: skip
        self._consultation(life, back, 2, facts["recommended_outcome"], record, facts, True, actor)

    def _dms(self, life: _Life, actor: tuple[str, str, str]) -> None:
        rng = self.rng
        ref = life.ref
        at = ref["updated_at"]
        checks = {1: "reconciled", 2: "prescription_checked", 3: "patient_consulted"}
        for stage, (median, sigma) in enumerate(DMS_STAGE_HOURS, start=1):
            at += _delay(rng, median, sigma)
            ended = rng.random() < 0.04
            issues = (
                ["Dose differs from pre-admission: confirmed with the ward"]
                if rng.random() < 0.2
                else []
            )
            record = {
                "service": "dms", **self._clinician(), "stage": stage, "completed_on": self.date_text(at),
                "reconciled": None, "prescription_checked": None, "patient_consulted": None,
                "issues_found": issues, "could_not_complete_reason": "Patient readmitted" if ended else None,
            }  # fmt: skip
            if not ended:
                record[checks[stage]] = True
            derived: dict[str, Any] = {"issues_found": len(issues), "ended_early": ended}
            if stage == 1:
                hours = (at - ref["created_at"]) / HOUR
                derived["hours_from_receipt"] = round(hours, 1)
                derived["stage1_within_72_hours"] = hours <= 72
            outcome = "ended-early" if ended else f"stage-{stage}-complete"
            completes = ended or stage == 3
            if not self._consultation(life, at, stage, outcome, record, derived, completes, actor):
                return
            if completes:
                return

    # -- batches

    def referrals(self, calendar: _Calendar, count: int) -> Batch:
        """Up to `count` referral rows (with their copies, events and consultations)."""
        self.batch = Batch()
        for day_index, stream in calendar.draw(self.rng, count):
            room = count - len(self.batch.referrals)
            if room <= 0:
                break
            self.drawn(calendar, day_index, stream, room)
        return self.batch

    def drawn(self, calendar: _Calendar, day_index: int, stream: _Stream, room: int) -> None:
        """One referral on a drawn day and stream (skipped when no pharmacy offered the service)."""
        created = calendar.instant(self.rng, day_index, stream.source)
        if created > self.now:
            return
        day = calendar.days[day_index]
        practice = self.practice_for(stream.source)
        pharmacy = self.pharmacy_for(practice, stream.service, day.toordinal())
        if pharmacy is None:
            return
        self.original(
            created=created, day=day, stream=stream, practice=practice, pharmacy=pharmacy, room=room
        )


def _abpm_due(fitted_at: int) -> int:
    """23:59 UTC on the (England) day the monitor was fitted, plus the ABPM return days."""
    fitted = datetime.fromtimestamp(fitted_at, LONDON).date()
    end_of_day = datetime(fitted.year, fitted.month, fitted.day, 23, 59, tzinfo=UTC)
    return int(end_of_day.timestamp()) + settings.abpm_return_days * DAY_SECONDS


# Services whose consultations add to no statistics counter (left out of a lean history).
_UNCOUNTED = frozenset({PF.value, PC.value})
_CLINICIANS: dict[ReferralSource, tuple[str, ...]] = {
    GP: GP_CLINICIANS,
    NHS111: NHS111_CLINICIANS,
    URGENT: TRUST_CLINICIANS,
    TRUST: TRUST_CLINICIANS,
    SELF: PHARMACISTS,
}
_ROLE_OF_SOURCE = {
    GP.value: Role.GP_PRACTICE.value,
    NHS111.value: Role.NHS111.value,
    URGENT.value: Role.TRUST.value,
    TRUST.value: Role.TRUST.value,
    SELF.value: Role.PHARMACY.value,
}
PF_OUTCOMES: dict[bool, tuple[tuple[str, ...], tuple[float, ...]]] = {
    True: (
        ("pgd-supply", "advice-self-care", "otc-product", "referred-gp-routine", "referred-gp-urgent", "signposted"),
        (0.55, 0.2, 0.12, 0.08, 0.02, 0.03),
    ),
    False: (("advice-self-care", "otc-product", "signposted", "referred-gp-routine"), (0.5, 0.4, 0.05, 0.05)),
}  # fmt: skip


def _running(values: Any) -> list[float]:
    total, out = 0.0, []
    for value in values:
        total += value
        out.append(total)
    return out


# ---- replaying recorded referrals (PostgreSQL) --------------------------------------------------

# A placeholder inside a recorded value: "\ue000name\ue001" becomes "%(name)s" in a template.
# (Private-use characters: JSON and COPY leave them alone, and no real value contains them.)
_OPEN, _CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_OPEN}([A-Za-z0-9_]+){_CLOSE}")
_T0 = int(datetime(2001, 1, 1, tzinfo=UTC).timestamp())  # recorded lives start here


def _slot(name: str) -> str:
    return f"{_OPEN}{name}{_CLOSE}"


def _offset_name(prefix: str, at: int) -> str:
    offset = at - _T0
    return f"{prefix}{offset}" if offset >= 0 else f"{prefix}m{-offset}"


@dataclass
class _Prototype:
    """A referral's life recorded once, as COPY-text templates: its rows (and a forwarded copy's)
    with placeholders for the ids, people, places and instants of each replay."""

    stream: _Stream
    span: int  # seconds from creation to its last change
    female: bool
    age: int
    has_nhs_number: bool
    has_practice: bool
    forward_offset: int | None  # when it was forwarded, if it was
    referrals: str
    events: str
    consultations: str
    counts: tuple[int, int, int]
    instants: list[tuple[str, int]]  # (placeholder, offset) pairs
    dates: list[tuple[str, int]]
    isos: list[tuple[str, int]]
    abpm_dues: list[tuple[str, int]]
    ids: list[tuple[str, str | None]]  # placeholders for each new id: as hex, as UUID text
    message_ids: bool


class _Recorder(_Simulator):
    """Plays one referral per call from `_T0` with nothing cut off, writing placeholders where a
    replay needs its own values."""

    def __init__(self, *, rng: random.Random, directory: _Directory, lean: bool) -> None:
        super().__init__(rng=rng, directory=directory, now=_T0 + 10 * 366 * DAY_SECONDS, lean=lean)
        self.ids = 0
        self.references = 0
        self.last_patient: tuple[int, bool, bool] = (0, False, False)

    def new_id(self) -> Any:
        self.ids += 1
        return self.ids

    def uuid_text(self, value: Any) -> str:
        return _slot(f"X{value}")

    def iso(self, at: int) -> str:
        return _slot(_offset_name("z", at))

    def date_text(self, at: int) -> str:
        return _slot(_offset_name("d", at))

    def reference(self, service: Service) -> str:  # noqa: ARG002
        self.references += 1
        return _slot("reference" if self.references == 1 else "copy_reference")

    def patient(self, key: Any, on: date) -> _Patient:  # noqa: ARG002
        age, female, sex = self._age_and_sex(key)
        has_nhs_number = self.rng.random() < 0.985
        self.last_patient = (age, female, has_nhs_number)
        return _Patient(
            age=age,
            sex=sex,
            birth_date=_slot("birth_date"),
            given=_slot("given"),
            family=_slot("family"),
            nhs_number=_slot("nhs_number") if has_nhs_number else None,
            phone=_slot("phone"),
        )

    def referrer(self, source: ReferralSource, practice: str | None, pharmacy: str) -> str:
        if source is GP:
            assert practice is not None
            return practice
        if source is NHS111:
            return _slot("nhs111")
        if source in (TRUST, URGENT):
            return _slot("trust")
        return pharmacy

    def message_id(self) -> str:
        return _slot("message_id") if self.references == 1 else _slot("correlation_id")

    def forward_target(self, ref: dict[str, Any], at: int) -> str | None:  # noqa: ARG002
        return _slot("copy_pharmacy")

    def abpm_due(self, fitted_at: int) -> tuple[int, Any]:
        return _abpm_due(fitted_at), _slot(_offset_name("a", fitted_at))

    def record(self, stream: _Stream) -> _Prototype:
        self.batch = Batch()
        self.ids = self.references = 0
        practice: str | None = _slot("practice")
        if stream.source is not GP and self.rng.random() < NO_PRACTICE_SHARE:
            practice = None
        self.original(
            created=_T0,
            day=datetime.fromtimestamp(_T0, LONDON).date(),
            stream=stream,
            practice=practice,
            pharmacy=_slot("pharmacy"),
            room=2,
        )
        batch = self.batch
        referrals, events, consultations = _rows(batch)
        templates = [
            _template(rows, _recording_formatters(columns))
            for rows, columns in (
                (referrals, REFERRAL_COLUMNS),
                (events, EVENT_COLUMNS),
                (consultations, CONSULTATION_COLUMNS),
            )
        ]
        names: set[str] = set()
        for template in templates:
            names.update(re.findall(r"%\(([A-Za-z0-9_]+)\)s", template))

        last = max(
            [ref["updated_at"] for ref in batch.referrals]
            + [ref["overdue_at"] or _T0 for ref in batch.referrals]
            + [row[-1] for row in batch.events]
            + [row[-1] for row in batch.consultations]
            + [ref["created_at"] for ref in batch.referrals]
        )
        forwarded = [ref["created_at"] for ref in batch.referrals[1:]]
        age, female, has_nhs_number = self.last_patient
        offsets = _offsets(names)
        return _Prototype(
            stream=stream,
            span=last - _T0,
            female=female,
            age=age,
            has_nhs_number=has_nhs_number,
            has_practice=practice is not None,
            forward_offset=forwarded[0] - _T0 if forwarded else None,
            referrals=templates[0],
            events=templates[1],
            consultations=templates[2],
            counts=(len(referrals), len(events), len(consultations)),
            instants=offsets["t"],
            dates=offsets["d"],
            isos=offsets["z"],
            abpm_dues=offsets["a"],
            ids=[
                (f"x{n}", f"X{n}" if f"X{n}" in names else None)
                for n in sorted({int(name[1:]) for name in names if _ID_NAME.fullmatch(name)})
            ],
            message_ids="message_id" in names,
        )


def _recording_formatters(columns: Sequence[str]) -> list[Callable[[Any], str]]:
    """COPY text for a recorded row: instants and ids become placeholders."""

    def instant(value: Any) -> str:
        if value is None:
            return "\\N"
        return value if isinstance(value, str) else _slot(_offset_name("t", value))

    def row_id(value: Any) -> str:
        if value is None:
            return "\\N"
        return value if isinstance(value, str) else _slot(f"x{value}")

    formatters = _pg_formatters(columns)
    for index, name in enumerate(columns):
        if name in INSTANT_COLUMNS:
            formatters[index] = instant
        elif name in UUID_COLUMNS:
            formatters[index] = row_id
    return formatters


def _copy_text(rows: list[tuple[Any, ...]], formatters: list[Callable[[Any], str]]) -> str:
    return "".join(
        "\t".join([f(v) for f, v in zip(formatters, row, strict=True)]) + "\n" for row in rows
    )


def _template(rows: list[tuple[Any, ...]], formatters: list[Callable[[Any], str]]) -> str:
    """COPY text with %-style placeholders (other % signs doubled)."""
    text = _copy_text(rows, formatters).replace("%", "%%")
    return _PLACEHOLDER.sub(lambda m: f"%({m.group(1)})s", text)


_ID_NAME = re.compile(r"[xX][0-9]+")
_OFFSET_NAME = re.compile(r"([tdza])(m?)([0-9]+)")


def _offsets(names: set[str]) -> dict[str, list[tuple[str, int]]]:
    """Placeholders for instants by kind (t: instant, d: local date, z: ISO text, a: ABPM due),
    each with its offset in seconds from the referral's creation."""
    found: dict[str, list[tuple[str, int]]] = {kind: [] for kind in "tdza"}
    for name in sorted(names):
        match = _OFFSET_NAME.fullmatch(name)
        if match:
            value = int(match.group(3))
            found[match.group(1)].append((name, -value if match.group(2) else value))
    return found


def _prototypes(
    rng: random.Random,
    directory: _Directory,
    streams: list[tuple[_Stream, float]],
    count: int,
    lean: bool,
) -> dict[_Stream, list[_Prototype]]:
    """About `count` recorded lives, shared among the streams by their weight."""
    recorder = _Recorder(rng=rng, directory=directory, lean=lean)
    total = sum(weight for _, weight in streams)
    return {
        stream: [recorder.record(stream) for _ in range(max(8, round(count * weight / total)))]
        for stream, weight in streams
    }


_HOUR_DATES: dict[int, str] = {}
_HOUR_ORDINALS: dict[int, int] = {}
_ORDINAL_TEXT: dict[int, str] = {}


def _local_ordinal(at: int) -> int:
    hour = at // HOUR
    ordinal = _HOUR_ORDINALS.get(hour)
    if ordinal is None:
        ordinal = _HOUR_ORDINALS[hour] = datetime.fromtimestamp(hour * HOUR, LONDON).toordinal()
    return ordinal


def _local_date_text(at: int) -> str:
    """England's date of an instant (constant within each UTC hour, as offsets are whole hours)."""
    hour = at // HOUR
    text = _HOUR_DATES.get(hour)
    if text is None:
        text = _HOUR_DATES[hour] = datetime.fromtimestamp(hour * HOUR, LONDON).date().isoformat()
    return text


def _ordinal_text(ordinal: int) -> str:
    text = _ORDINAL_TEXT.get(ordinal)
    if text is None:
        text = _ORDINAL_TEXT[ordinal] = date.fromordinal(ordinal).isoformat()
    return text


def _uuid_text(hex_value: str) -> str:
    h = hex_value
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Replayer:
    """Referrals as COPY text: each is a recorded life of its stream, replayed from a drawn time
    with its own ids, patient, practice and pharmacies. A life that would reach past now is
    played afresh by the simulator instead (the most recent referrals, some still open)."""

    def __init__(
        self,
        *,
        sim: _Simulator,
        calendar: _Calendar,
        prototypes: dict[_Stream, list[_Prototype]],
    ) -> None:
        self.sim = sim
        self.rng = sim.rng
        self.calendar = calendar
        self.prototypes = prototypes
        self.referral_format = _pg_formatters(REFERRAL_COLUMNS)
        self.event_format = _pg_formatters(EVENT_COLUMNS)
        self.consultation_format = _pg_formatters(CONSULTATION_COLUMNS)

    def batch(self, count: int) -> tuple[list[str], tuple[int, int, int]]:
        """COPY text for the referral, event and consultation tables, and the row counts."""
        sim, rng, calendar = self.sim, self.rng, self.calendar
        referrals: list[str] = []
        events: list[str] = []
        consultations: list[str] = []
        rows = [0, 0, 0]
        sim.batch = Batch()
        for day_index, stream in calendar.draw(rng, count):
            room = count - rows[0] - len(sim.batch.referrals)
            if room <= 0:
                break
            created = calendar.instant(rng, day_index, stream.source)
            if created > sim.now:
                continue
            prototype = rng.choice(self.prototypes[stream])
            if created + prototype.span > sim.now or prototype.counts[0] > room:
                self._play(day_index, stream, created, room)
                continue
            values = self._values(prototype, created, day_index)
            if values is None:
                continue
            referrals.append(prototype.referrals % values)
            events.append(prototype.events % values)
            consultations.append(prototype.consultations % values)
            for index, n in enumerate(prototype.counts):
                rows[index] += n
        for index, (table_rows, formats) in enumerate(
            zip(
                _rows(sim.batch),
                (self.referral_format, self.event_format, self.consultation_format),
                strict=True,
            )
        ):
            (referrals, events, consultations)[index].append(_copy_text(table_rows, formats))
            rows[index] += len(table_rows)
        return ["".join(referrals), "".join(events), "".join(consultations)], (
            rows[0],
            rows[1],
            rows[2],
        )

    def _play(self, day_index: int, stream: _Stream, created: int, room: int) -> None:
        sim = self.sim
        day = self.calendar.days[day_index]
        practice = sim.practice_for(stream.source)
        pharmacy = sim.pharmacy_for(practice, stream.service, day.toordinal())
        if pharmacy is not None:
            sim.original(
                created=created,
                day=day,
                stream=stream,
                practice=practice,
                pharmacy=pharmacy,
                room=room,
            )

    def _values(self, prototype: _Prototype, created: int, day_index: int) -> dict[str, str] | None:
        sim, rng = self.sim, self.rng
        stream = prototype.stream
        day = self.calendar.days[day_index].toordinal()
        practice = sim.practice_for(stream.source, always=True) if prototype.has_practice else None
        pharmacy = sim.pharmacy_for(practice, stream.service, day)
        if pharmacy is None:
            return None
        values: dict[str, str] = {"pharmacy": pharmacy, "practice": practice or ""}
        if prototype.forward_offset is not None:
            forwarded_on = datetime.fromtimestamp(created + prototype.forward_offset, LONDON)
            target = sim.pharmacy_for(
                practice, stream.service, forwarded_on.date().toordinal(), avoid=pharmacy
            )
            if target is None:
                return None
            values["copy_pharmacy"] = target
            values["copy_reference"] = sim.reference(stream.service)
        values["reference"] = sim.reference(stream.service)
        directory = sim.directory
        if stream.source is NHS111:
            values["nhs111"] = _pick(rng, directory.nhs111)
        elif stream.source in (TRUST, URGENT):
            trusts = directory.trusts
            values["trust"] = trusts[0] if rng.random() < 0.7 else _pick(rng, trusts)
        age_days = int((prototype.age + 0.01 + 0.98 * rng.random()) * 365.2425)
        values["birth_date"] = _ordinal_text(_local_ordinal(created) - age_days)
        values["given"] = _pick(rng, GIVEN_FEMALE if prototype.female else GIVEN_MALE)
        values["family"] = _pick(rng, FAMILY)
        if prototype.has_nhs_number:
            values["nhs_number"] = _nhs_number(rng)
        values["phone"] = f"07700 900{int(rng.random() * 1000):03d}"
        if prototype.message_ids:
            values["message_id"] = _uuid_text(f"{_uuid4(sim.id_rng):032x}")
            values["correlation_id"] = _uuid_text(f"{_uuid4(sim.id_rng):032x}")
        for name, offset in prototype.instants:
            values[name] = _pg_instant(created + offset)
        for name, offset in prototype.dates:
            values[name] = _local_date_text(created + offset)
        for name, offset in prototype.isos:
            values[name] = datetime.fromtimestamp(created + offset, UTC).isoformat()
        for name, offset in prototype.abpm_dues:
            values[name] = _pg_instant(_abpm_due(created + offset))
        for hex_name, text_name in prototype.ids:
            hex_id = values[hex_name] = f"{_uuid4(sim.id_rng):032x}"
            if text_name is not None:
                values[text_name] = _uuid_text(hex_id)
        return values


# ---- writing -----------------------------------------------------------------------------------


def _rows(
    batch: Batch,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    referrals = [tuple(ref[name] for name in REFERRAL_COLUMNS) for ref in batch.referrals]
    return referrals, batch.events, batch.consultations


_DAY_TEXT: dict[int, str] = {}
_TIME_TEXT = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00" for s in range(DAY_SECONDS)]


def _pg_instant(at: int) -> str:
    """COPY text for a Unix time (whole seconds, UTC)."""
    days, seconds = divmod(at, DAY_SECONDS)
    prefix = _DAY_TEXT.get(days)
    if prefix is None:
        prefix = _DAY_TEXT[days] = (date(1970, 1, 1) + timedelta(days=days)).isoformat() + " "
    return prefix + _TIME_TEXT[seconds]


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode().replace("\\", "\\\\")


def _pg_formatters(columns: Sequence[str]) -> list[Callable[[Any], str]]:
    """COPY text per column (no value the generator makes holds a tab, newline or backslash,
    except JSON, whose backslashes are escaped). None is NULL, except in JSON columns: JSON null,
    as SQLAlchemy's JSON type stores None."""
    formatters: list[Callable[[Any], str]] = []
    for name in columns:
        if name in UUID_COLUMNS:
            formatters.append(_nullable(lambda v: f"{v:032x}"))
        elif name in INSTANT_COLUMNS:
            formatters.append(_nullable(_pg_instant))
        elif name in JSON_COLUMNS:
            formatters.append(_json_text)
        elif name in BOOL_COLUMNS:
            formatters.append(lambda v: "t" if v else "f")
        else:
            formatters.append(_nullable(str))
    return formatters


def _nullable(format_value: Callable[[Any], str]) -> Callable[[Any], str]:
    return lambda v: "\\N" if v is None else format_value(v)


def _copy(session: Session, table: str, columns: Sequence[str], text_rows: str) -> None:
    connection: Any = session.connection().connection.driver_connection
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        step = 1 << 20
        for start in range(0, len(text_rows), step):
            copy.write(text_rows[start : start + step])


_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("referral", REFERRAL_COLUMNS),
    ("referral_event", EVENT_COLUMNS),
    ("consultation", CONSULTATION_COLUMNS),
)


def _insert(session: Session, batch: Batch) -> tuple[int, int, int]:
    """SQLite: executemany of values in the forms SQLAlchemy stores them in (UUIDs as 32 hex
    digits, instants as UTC text with microseconds, JSON as text, JSON null for None)."""
    connection = session.connection()
    counts = []
    for (table, columns), rows in zip(_TABLES, _rows(batch), strict=True):
        formats = [_sqlite_value(name) for name in columns]
        values = [tuple(f(v) for f, v in zip(formats, row, strict=True)) for row in rows]
        if values:
            connection.exec_driver_sql(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})",
                values,
            )
        counts.append(len(values))
    return counts[0], counts[1], counts[2]


def _sqlite_value(name: str) -> Callable[[Any], Any]:
    if name in UUID_COLUMNS:
        return lambda v: None if v is None else f"{v:032x}"
    if name in INSTANT_COLUMNS:
        return lambda v: None if v is None else _sqlite_instant(v)
    if name in JSON_COLUMNS:
        return lambda v: orjson.dumps(v).decode()
    if name in BOOL_COLUMNS:
        return lambda v: 1 if v else 0
    return lambda v: None if v is None else str(v) if isinstance(v, date) else v


def _sqlite_instant(at: int) -> str:
    return _pg_instant(at)[:-3] + ".000000"


@contextmanager
def _without_indexes(session: Session, phases: dict[str, float]) -> Iterator[None]:
    """PostgreSQL: drop the three tables' indexes and constraints (and foreign keys elsewhere
    that point at them) for a bulk load, and build them again afterwards, in the same transaction
    (so a failure leaves everything as it was). Building an index once from sorted data is much
    cheaper than maintaining it row by row, above all for random UUID keys."""
    tables = [table for table, _ in _TABLES]
    # foreign keys first, then unique constraints, then primary keys; put back in reverse
    constraints = session.execute(
        text(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype IN ('f', 'u', 'p') AND (conrelid::regclass::text = ANY(:tables) "
            "OR (contype = 'f' AND confrelid::regclass::text = ANY(:tables))) "
            "ORDER BY CASE contype WHEN 'f' THEN 0 WHEN 'u' THEN 1 ELSE 2 END, 1, 2"
        ),
        {"tables": tables},
    ).all()
    indexes = session.execute(
        text(
            "SELECT indexname, indexdef FROM pg_indexes i WHERE schemaname = current_schema() "
            "AND tablename = ANY(:tables) "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname) "
            "ORDER BY 1"
        ),
        {"tables": tables},
    ).all()
    for table, name, _ in constraints:
        session.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
    for name, _ in indexes:
        session.execute(text(f'DROP INDEX "{name}"'))
    yield
    began = time.perf_counter()
    session.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
    for table, name, definition in reversed(constraints):
        if not definition.startswith("FOREIGN KEY"):
            session.execute(text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
    for _, definition in indexes:
        session.execute(text(definition))
    for table, name, definition in reversed(constraints):
        if definition.startswith("FOREIGN KEY"):
            session.execute(text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
    phases["indexes"] = time.perf_counter() - began


def seed_history(
    *,
    session: Session,
    referrals: int,
    months: int = DEFAULT_MONTHS,
    seed: int = 1,
    now: datetime | None = None,
    lean: bool = False,
    progress: Callable[[int], None] | None = None,
) -> HistorySummary:
    """Add `referrals` synthetic referrals made over the last `months` months (with their events
    and consultations), then rebuild the rollups; one transaction, committed at the end. A lean
    history keeps only what the statistics read: referrals, acceptance events, and blood pressure
    and DMS consultations."""
    if referrals < 0 or months < 1:
        raise ValueError("referrals must be 0 or more and months 1 or more")
    began = time.perf_counter()
    lift_statement_timeout(session)
    rng = random.Random(seed)
    end = (now or utc_now()).astimezone(UTC)
    last_day = end.astimezone(LONDON).date()
    first_day = _months_before(last_day, months) + timedelta(days=1)
    directory = _load_directory(session, rng, first_day)
    streams = _streams(directory)
    calendar = _Calendar(first_day, last_day, streams)
    sim = _Simulator(rng=rng, directory=directory, now=int(end.timestamp()), lean=lean)
    sim.number = session.execute(
        select(func.count()).select_from(Referral.__table__)  # type: ignore[attr-defined]
    ).scalar_one()
    postgres = session.connection().dialect.name == "postgresql"
    phases: dict[str, float] = {"directory": time.perf_counter() - began}
    clock = time.perf_counter()
    replayer = (
        _Replayer(
            sim=sim,
            calendar=calendar,
            prototypes=_prototypes(
                rng, directory, streams, min(max(referrals // 20, 2_000), 20_000), lean
            ),
        )
        if postgres
        else None
    )
    if replayer is not None:
        phases["recording"] = time.perf_counter() - clock
    totals = [0, 0, 0]
    clock = time.perf_counter()
    bulk = postgres and referrals >= BULK_THRESHOLD
    with _without_indexes(session, phases) if bulk else nullcontext():
        if replayer is not None:
            for texts, counts in _ahead(_replayed(replayer, referrals)):
                for (table, columns), text_rows in zip(_TABLES, texts, strict=True):
                    _copy(session, table, columns, text_rows)
                _add(totals, counts, progress)
        else:
            while totals[0] < referrals:
                batch = sim.referrals(calendar, min(BATCH, referrals - totals[0]))
                _add(totals, _insert(session, batch), progress)
        phases["rows"] = time.perf_counter() - clock
    clock = time.perf_counter()
    if postgres:
        session.execute(text("ANALYZE referral, referral_event, consultation"))
        phases["analyze"] = time.perf_counter() - clock
        clock = time.perf_counter()
    rollup_rows = rollup_rebuild.rebuild_rollups(session=session)
    phases["rollups"] = time.perf_counter() - clock
    return HistorySummary(
        referrals=totals[0],
        events=totals[1],
        consultations=totals[2],
        rollup_rows=rollup_rows,
        first_day=first_day,
        last_day=last_day,
        seconds=time.perf_counter() - began,
        phases=phases,
    )


def _add(
    totals: list[int], counts: tuple[int, int, int], progress: Callable[[int], None] | None
) -> None:
    if not counts[0]:
        raise ValueError("No pharmacy in the directory provides a service in the period.")
    for index, count in enumerate(counts):
        totals[index] += count
    if progress is not None:
        progress(totals[0])


def _replayed(
    replayer: "_Replayer", referrals: int
) -> Iterator[tuple[list[str], tuple[int, int, int]]]:
    made = 0
    while made < referrals:
        texts, counts = replayer.batch(min(BATCH, referrals - made))
        if not counts[0]:
            raise ValueError("No pharmacy in the directory provides a service in the period.")
        made += counts[0]
        yield texts, counts


def _ahead(items: Iterator[_T]) -> Iterator[_T]:
    """Produce the next item in a worker thread while the caller uses this one: the COPY of one
    batch (PostgreSQL's work) overlaps the making of the next (Python's)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def _months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    last = (date(year + (month + 1) // 12, (month + 1) % 12 + 1, 1) - timedelta(days=1)).day
    return date(year, month + 1, min(day.day, last))
