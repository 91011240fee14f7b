"""Keeping the uptake rollups (app/models/rollup.py) in step with the referrals.

The lifecycle calls `referral_created`, `status_changed` and `consultation_recorded` as it writes;
the counts join the change's other writes (app/db/writes.py) and are upserted with them, in the
same statement on PostgreSQL, so a rolled-back change counts nothing and a committed one is always
counted. The rows of one change are upserted in key order, so concurrent changes lock rollup rows
in the same order and cannot deadlock on them.

Each change counts in six rows: day and month rows of the practice side, the pharmacy side and the
area side (the practice side without the practice, source and pathway: what per-PCN, place and ICB
questions read).
"""

import bisect
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Date, bindparam, event, text
from sqlalchemy.orm import Session as OrmSession

from app.db import raw, writes
from app.db.session import READING
from app.models.consultation import Consultation
from app.models.enums import ReferralStatus, Service
from app.models.referral import Referral
from app.models.rollup import HOUR_COLUMNS, HOUR_EDGES, UptakeRollup

LONDON = ZoneInfo("Europe/London")
PRACTICE = "practice"
PHARMACY = "pharmacy"
AREA = "area"
DAY = "day"
MONTH = "month"

_PLACES = "pharmref.rollup.places"
_ROLLUP = UptakeRollup.__table__  # type: ignore[attr-defined]

_OUTCOME_COLUMN: dict[ReferralStatus, str] = {
    ReferralStatus.ACCEPTED: "accepted",
    ReferralStatus.DECLINED: "declined",
    ReferralStatus.FORWARDED: "forwarded",
    ReferralStatus.RETURNED: "returned",
    ReferralStatus.CANCELLED: "cancelled",
    ReferralStatus.NO_CONTACT: "no_contact",
    ReferralStatus.COMPLETED: "completed",
}


def local_day(at: datetime) -> date:
    """The England calendar day of an instant (statistics periods are local dates)."""
    return at.astimezone(LONDON).date()


def month_start(day: date) -> date:
    return day.replace(day=1)


def hour_column(hours: float) -> str:
    """The completion-time histogram column for a duration in hours."""
    index = bisect.bisect_right(HOUR_EDGES, max(hours, 0.0)) - 1
    return HOUR_COLUMNS[index]


@dataclass(frozen=True, slots=True, order=True)
class Placement:
    """Where a registered practice sat in the hierarchy on one day ('' where it sat nowhere)."""

    pcn_ods: str = ""
    place_ods: str = ""
    icb_ods: str = ""


def _in_force(alias: str) -> str:
    return f"{alias}.start_date <= :day AND ({alias}.end_date IS NULL OR {alias}.end_date >= :day)"


# A practice's PCN on a day, that PCN's place and the place's ICB, from the dated memberships.
_PLACEMENT_SQL = (
    "SELECT pcn.group_ods AS pcn, place.group_ods AS place, icb.group_ods AS icb "
    "FROM membership AS pcn "
    f"LEFT OUTER JOIN membership AS place ON place.member_ods = pcn.group_ods AND {_in_force('place')} "
    f"LEFT OUTER JOIN membership AS icb ON icb.member_ods = place.group_ods AND {_in_force('icb')} "
    f"WHERE pcn.member_ods = :practice AND {_in_force('pcn')} "
    "ORDER BY pcn.start_date DESC LIMIT 1"
)
_PLACEMENT = raw.Statement(text(_PLACEMENT_SQL).bindparams(bindparam("day", type_=Date())))


def placement(*, session: OrmSession, practice_ods: str, day: date) -> Placement:
    """The PCN, place and ICB of a practice on `day`, by the directory's dated memberships."""
    if not practice_ods:
        return Placement()
    cache: dict[tuple[str, date], Placement] = session.info.setdefault(_PLACES, {})
    key = (practice_ods, day)
    if key not in cache:
        rows = raw.fetch(session, _PLACEMENT, {"practice": practice_ods, "day": day})
        cache[key] = Placement(*(value or "" for value in rows[0])) if rows else Placement()
    return cache[key]


def _add(*, session: OrmSession, referral: Referral, counts: dict[str, float]) -> None:
    """Count `counts` for the referral's cohort (its day) on both sides."""
    day = local_day(referral.created_at)
    practice = referral.patient_practice_ods or ""
    where = placement(session=session, practice_ods=practice, day=day)
    dims = (str(referral.service), str(referral.source), str(referral.pathway or ""))
    area = (str(referral.service), "", "")
    for side, org, place, keyed in (
        (PRACTICE, practice, where, dims),
        (PHARMACY, referral.pharmacy_ods, Placement(), dims),
        (AREA, "", where, area),
    ):
        for grain, period in ((DAY, day), (MONTH, month_start(day))):
            key = (grain, period, side, org, place.pcn_ods, place.place_ods, place.icb_ods, *keyed)
            writes.add_counts_at(session, _ROLLUP, key, counts)


def referral_created(*, session: OrmSession, referral: Referral) -> None:
    counts = {"received": 1.0}
    if referral.forwarded_from_id is None:
        counts["made"] = 1.0
    _add(session=session, referral=referral, counts=counts)


def status_changed(
    *, session: OrmSession, referral: Referral, target: ReferralStatus, at: datetime
) -> None:
    column = _OUTCOME_COLUMN.get(target)
    if column is None:
        return
    counts = {column: 1.0}
    if target is ReferralStatus.COMPLETED:
        hours = (at - referral.created_at).total_seconds() / 3600
        counts[hour_column(hours)] = 1.0
        counts["completion_hours_sum"] = hours
    _add(session=session, referral=referral, counts=counts)


def consultation_counts(consultation: Consultation) -> dict[str, float]:
    """What a consultation adds to the service-specific counters: BP checks, conversion to
    ambulatory monitoring and confirmed hypertension; DMS stages done (stage 1 within 72 hours)."""
    derived = consultation.derived
    counts: dict[str, float] = {}
    if consultation.service is Service.BLOOD_PRESSURE:
        if consultation.stage in (0, 1):
            counts["bp_checked"] = 1.0
            if derived.get("abpm_pending") or derived.get("abpm_result") is not None:
                counts["bp_abpm"] = 1.0
        if derived.get("abpm_result") == "hypertension-confirmed":
            counts["bp_hypertension_confirmed"] = 1.0
    elif consultation.service is Service.DMS and not derived.get("ended_early"):
        counts[f"dms_stage{consultation.stage}"] = 1.0
        if consultation.stage == 1 and derived.get("stage1_within_72_hours"):
            counts["dms_stage1_within_72h"] = 1.0
    return counts


def consultation_recorded(
    *, session: OrmSession, referral: Referral, consultation: Consultation
) -> None:
    counts = consultation_counts(consultation)
    if counts:
        _add(session=session, referral=referral, counts=counts)


@event.listens_for(OrmSession, "after_commit")
@event.listens_for(OrmSession, "after_soft_rollback")
def _forget_places(session: OrmSession, *_args: Any) -> None:
    """Placements are remembered for one change (or a sweep's batch) only: not past its commit
    or rollback, though past the commit of a read made while the change is gathered."""
    if not session.info.get(READING):
        session.info.pop(_PLACES, None)
