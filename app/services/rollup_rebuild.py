"""Recompute the uptake rollups from the referral, referral_event and consultation tables.

`app/services/rollups.py` keeps the rollups up to date one change at a time. This module is the
other way to the same figures: one set-based aggregate over the source tables. It repairs or
fills the table (`pharmref rollups rebuild`; `pharmref migrate` runs it once when a database has
referrals but no rollups yet, as after the migration that added the table), loads it after a bulk
seed, and is what the property test compares the incremental rollups against.

| Counter | Direct definition (per referral, counted in its cohort: its England-local creation day) |
|---|---|
| made | not a forwarded copy (`forwarded_from_id IS NULL`) |
| received | every referral, forwarded copies included |
| accepted | has a `received -> accepted` event |
| declined ... completed | its (final) status is that one |
| completed_hNNN, completion_hours_sum | completed: `updated_at - created_at` (completing is its last change) |
| bp_checked | a blood-pressure consultation at stage 0 or 1 (the first visit) |
| bp_abpm | ... of those, ABPM fitted (`derived.abpm_pending`) or its result recorded |
| bp_hypertension_confirmed | a blood-pressure consultation whose ABPM result is hypertension-confirmed |
| dms_stageN, dms_stage1_within_72h | a DMS stage N not ended early (stage 1 with `derived.stage1_within_72_hours`) |

The practice side is the patient's registered practice with the PCN, place and ICB its dated
memberships give on the cohort day; the pharmacy side is the receiving pharmacy. Month rows are
the day rows summed by calendar month, and area rows the practice rows of each grain summed over
practices, sources and pathways (per PCN, place, ICB and service). PostgreSQL computes local dates with `AT TIME ZONE`;
SQLite, which has no time zones, calls two small Python functions registered on the connection.
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Date,
    Float,
    Integer,
    Select,
    Subquery,
    Table,
    and_,
    case,
    cast,
    delete,
    extract,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement

from app.db.bulk import lift_statement_timeout
from app.models.consultation import Consultation
from app.models.enums import ReferralStatus, Service
from app.models.event import ReferralEvent
from app.models.organisation import Membership
from app.models.referral import Referral
from app.models.rollup import HOUR_COLUMNS, HOUR_EDGES, KEY_COLUMNS, UptakeRollup
from app.services.rollups import AREA, DAY, LONDON, MONTH, PHARMACY, PRACTICE

ROLLUP: Table = UptakeRollup.__table__  # type: ignore[attr-defined]
_REFERRAL: Table = Referral.__table__  # type: ignore[attr-defined]
_EVENT: Table = ReferralEvent.__table__  # type: ignore[attr-defined]
_CONSULTATION: Table = Consultation.__table__  # type: ignore[attr-defined]
_MEMBERSHIP: Table = Membership.__table__  # type: ignore[attr-defined]

_STATUS_COUNTS: dict[str, ReferralStatus] = {
    "declined": ReferralStatus.DECLINED,
    "forwarded": ReferralStatus.FORWARDED,
    "returned": ReferralStatus.RETURNED,
    "cancelled": ReferralStatus.CANCELLED,
    "no_contact": ReferralStatus.NO_CONTACT,
    "completed": ReferralStatus.COMPLETED,
}
_CONSULTATION_COUNTS = (
    "bp_checked",
    "bp_abpm",
    "bp_hypertension_confirmed",
    "dms_stage1",
    "dms_stage1_within_72h",
    "dms_stage2",
    "dms_stage3",
)
# Summed per group; the completion seconds become completion_hours_sum.
_SUMMED: tuple[str, ...] = (
    "made",
    "received",
    "accepted",
    *_STATUS_COUNTS,
    *_CONSULTATION_COUNTS,
    *HOUR_COLUMNS,
)
_GROUP = ("day", "service", "source", "pathway")


def _sqlite_london_day(stored: str | None) -> str | None:
    if stored is None:
        return None
    at = datetime.fromisoformat(stored)  # SQLAlchemy stores UTC without an offset on SQLite
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(LONDON).date().isoformat()


def _sqlite_seconds(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _prepare(session: Session) -> str:
    """The dialect name; on SQLite, registers the date functions this aggregate calls."""
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "sqlite":
        raw: Any = connection.connection.driver_connection
        raw.create_function("pharmref_london_day", 1, _sqlite_london_day, deterministic=True)
        raw.create_function("pharmref_seconds", 2, _sqlite_seconds, deterministic=True)
    return dialect


def _local_day(dialect: str, at: ColumnElement[Any]) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return cast(func.timezone(LONDON.key, at), Date)
    return func.pharmref_london_day(at)


def _seconds(
    dialect: str, start: ColumnElement[Any], end: ColumnElement[Any]
) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return extract("epoch", end - start)
    return func.pharmref_seconds(start, end)


def _month_start(dialect: str, day: ColumnElement[Any]) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return cast(func.date_trunc("month", day), Date)
    return func.date(day, "start of month")


def _flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return case((condition, 1), else_=0)


def _accepted() -> Subquery:
    """Referrals that were ever accepted (acceptance is the one way into `accepted`)."""
    return (
        select(_EVENT.c.referral_id)
        .where(
            _EVENT.c.from_status == ReferralStatus.RECEIVED,
            _EVENT.c.to_status == ReferralStatus.ACCEPTED,
        )
        .distinct()
        .subquery("accepted")
    )


def _consultation_counts() -> Subquery:
    """The blood pressure and DMS counters of each referral's consultations."""
    c = _CONSULTATION.c
    derived = c.derived
    blood_pressure = c.service == Service.BLOOD_PRESSURE
    first_visit = and_(blood_pressure, c.stage.in_((0, 1)))
    abpm = or_(
        derived["abpm_pending"].as_boolean().is_(True),
        derived["abpm_result"].as_string().is_not(None),
    )
    dms = and_(c.service == Service.DMS, derived["ended_early"].as_boolean().is_not(True))
    within = derived["stage1_within_72_hours"].as_boolean().is_(True)
    conditions: dict[str, ColumnElement[bool]] = {
        "bp_checked": first_visit,
        "bp_abpm": and_(first_visit, abpm),
        "bp_hypertension_confirmed": and_(
            blood_pressure, derived["abpm_result"].as_string() == "hypertension-confirmed"
        ),
        "dms_stage1": and_(dms, c.stage == 1),
        "dms_stage1_within_72h": and_(dms, c.stage == 1, within),
        "dms_stage2": and_(dms, c.stage == 2),
        "dms_stage3": and_(dms, c.stage == 3),
    }
    return (
        select(
            c.referral_id,
            *(func.sum(_flag(condition)).label(name) for name, condition in conditions.items()),
        )
        .where(c.service.in_((Service.BLOOD_PRESSURE, Service.DMS)))
        .group_by(c.referral_id)
        .subquery("consulted")
    )


def _hour_flags(seconds: ColumnElement[Any], completed: ColumnElement[bool]) -> list[Any]:
    """One 0/1 column per completion-time bucket (in seconds, so no division can round a
    duration across a bucket edge)."""
    flags = []
    for index, column in enumerate(HOUR_COLUMNS):
        bounds = [completed]
        if index > 0:
            bounds.append(seconds >= HOUR_EDGES[index] * 3600)
        if index + 1 < len(HOUR_EDGES):
            bounds.append(seconds < HOUR_EDGES[index + 1] * 3600)
        flags.append(_flag(and_(*bounds)).label(column))
    return flags


def _per_referral(dialect: str) -> Subquery:
    r = _REFERRAL.c
    accepted = _accepted()
    consulted = _consultation_counts()
    completed = r.status == ReferralStatus.COMPLETED
    seconds = _seconds(dialect, r.created_at, r.updated_at)
    return (
        select(
            _local_day(dialect, r.created_at).label("day"),
            func.coalesce(r.patient_practice_ods, "").label("practice"),
            r.pharmacy_ods.label("pharmacy"),
            r.service,
            r.source,
            func.coalesce(r.pathway, "").label("pathway"),
            _flag(r.forwarded_from_id.is_(None)).label("made"),
            literal(1, Integer).label("received"),
            _flag(accepted.c.referral_id.is_not(None)).label("accepted"),
            *(_flag(r.status == status).label(name) for name, status in _STATUS_COUNTS.items()),
            *(func.coalesce(consulted.c[name], 0).label(name) for name in _CONSULTATION_COUNTS),
            *_hour_flags(seconds, completed),
            case((completed, seconds), else_=0).label("seconds"),
        )
        .select_from(
            _REFERRAL.outerjoin(accepted, accepted.c.referral_id == r.id).outerjoin(
                consulted, consulted.c.referral_id == r.id
            )
        )
        .subquery("per_referral")
    )


def _sums(source: Subquery) -> list[Any]:
    return [
        *(func.sum(source.c[name]).label(name) for name in _SUMMED),
        func.sum(source.c.seconds).label("seconds"),
    ]


def _day_groups(dialect: str) -> Subquery:
    """Day totals per (side, organisation, service, source, pathway), before placement."""
    base = _per_referral(dialect)
    dims = [base.c[name] for name in _GROUP]
    if dialect == "postgresql":
        # GROUPING SETS: both sides from one pass over the referrals.
        practice_set = func.grouping(base.c.pharmacy) == 1
        return (
            select(
                case((practice_set, PRACTICE), else_=PHARMACY).label("side"),
                case((practice_set, base.c.practice), else_=base.c.pharmacy).label("org"),
                *dims,
                *_sums(base),
            )
            .group_by(
                func.grouping_sets(
                    tuple_(base.c.day, base.c.practice, *dims[1:]),
                    tuple_(base.c.day, base.c.pharmacy, *dims[1:]),
                )
            )
            .subquery("day_groups")
        )
    sides = [
        select(literal(side).label("side"), base.c[org].label("org"), *dims, *_sums(base)).group_by(
            base.c[org], *dims
        )
        for side, org in ((PRACTICE, "practice"), (PHARMACY, "pharmacy"))
    ]
    return sides[0].union_all(sides[1]).subquery("day_groups")


def _in_force(membership: Any, day: ColumnElement[Any]) -> ColumnElement[bool]:
    return and_(
        membership.c.start_date <= day,
        or_(membership.c.end_date.is_(None), membership.c.end_date >= day),
    )


def day_rows(dialect: str) -> Select[Any]:
    """Every day row of the direct aggregate, in the rollup table's column order."""
    groups = _day_groups(dialect)
    pcn, place, icb = (_MEMBERSHIP.alias(name) for name in ("pcn", "place", "icb"))
    joined = (
        groups.outerjoin(
            pcn,
            and_(
                groups.c.side == PRACTICE,
                pcn.c.member_ods == groups.c.org,
                _in_force(pcn, groups.c.day),
            ),
        )
        .outerjoin(
            place, and_(place.c.member_ods == pcn.c.group_ods, _in_force(place, groups.c.day))
        )
        .outerjoin(icb, and_(icb.c.member_ods == place.c.group_ods, _in_force(icb, groups.c.day)))
    )
    return select(
        literal(DAY).label("grain"),
        groups.c.day.label("period_start"),
        groups.c.side,
        groups.c.org.label("org_ods"),
        func.coalesce(pcn.c.group_ods, "").label("pcn_ods"),
        func.coalesce(place.c.group_ods, "").label("place_ods"),
        func.coalesce(icb.c.group_ods, "").label("icb_ods"),
        groups.c.service,
        groups.c.source,
        groups.c.pathway,
        *(groups.c[name] for name in _SUMMED),
        cast(groups.c.seconds / 3600.0, Float).label("completion_hours_sum"),
    ).select_from(joined)


def _month_rows(dialect: str, days: Table) -> Select[Any]:
    """Month rows: the day rows (in `days`) summed by calendar month."""
    keys = [days.c[name] for name in KEY_COLUMNS if name not in ("grain", "period_start")]
    month = _month_start(dialect, days.c.period_start)
    additive = (*_SUMMED, "completion_hours_sum")
    return (
        select(
            literal(MONTH).label("grain"),
            month.label("period_start"),
            *keys,
            *(func.sum(days.c[name]).label(name) for name in additive),
        )
        .where(days.c.grain == DAY)
        .group_by(month, *keys)
    )


def _area_rows(rows: Table) -> Select[Any]:
    """Area rows: the practice rows (in `rows`, both grains) summed per PCN, place, ICB and
    service, without the practice, source and pathway."""
    keys = [rows.c[name] for name in ("grain", "period_start", "pcn_ods", "place_ods", "icb_ods")]
    additive = (*_SUMMED, "completion_hours_sum")
    return (
        select(
            *keys[:2],
            literal(AREA).label("side"),
            literal("").label("org_ods"),
            *keys[2:],
            rows.c.service,
            literal("").label("source"),
            literal("").label("pathway"),
            *(func.sum(rows.c[name]).label(name) for name in additive),
        )
        .where(rows.c.side == PRACTICE)
        .group_by(*keys, rows.c.service)
    )


def aggregate_into(*, session: Session, target: Table) -> None:
    """Insert the direct aggregate into `target`, a table shaped like `uptake_rollup` (the table
    itself, emptied, or a scratch copy): the day rows, then the month rows summed from them, then
    the area rows summed from the practice rows; flush only."""
    dialect = _prepare(session)
    if dialect == "postgresql":
        session.execute(text("SET LOCAL work_mem = '256MB'"))
        session.execute(text("SET LOCAL jit = off"))  # compiling costs more than it saves here
    days = day_rows(dialect)
    session.execute(
        target.insert().from_select([column.name for column in days.selected_columns], days)
    )
    for derived in (_month_rows(dialect, target), _area_rows(target)):
        session.execute(
            target.insert().from_select(
                [column.name for column in derived.selected_columns], derived
            )
        )


def rollups_missing(*, session: Session) -> bool:
    """True when there are referrals but no rollups (a database migrated from before them)."""
    referral = session.execute(select(_REFERRAL.c.id).limit(1)).first()
    rollup = session.execute(select(ROLLUP.c.grain).limit(1)).first()
    return referral is not None and rollup is None


def rebuild_rollups(*, session: Session) -> int:
    """Replace the whole uptake_rollup table with the direct aggregate, in one transaction.
    Returns the number of rows written.

    On PostgreSQL the table is locked first and emptied with TRUNCATE (refilling a table whose
    deleted rows carry the same keys is several times slower): statistics requests and referral
    changes wait for the rebuild to commit. A change that wrote its rollup rows before the lock is
    in the aggregate; one that comes after waits, then adds itself: none is lost or counted twice,
    because every change writes its rollup rows last, just before it commits."""
    dialect = _prepare(session)
    lift_statement_timeout(session)
    if dialect == "postgresql":
        session.execute(text("LOCK TABLE uptake_rollup IN ACCESS EXCLUSIVE MODE"))
        session.execute(text("TRUNCATE uptake_rollup"))
    else:
        session.execute(delete(ROLLUP))
    aggregate_into(session=session, target=ROLLUP)
    written = session.execute(select(func.count()).select_from(ROLLUP)).scalar_one()
    if dialect == "postgresql":
        session.execute(text("ANALYZE uptake_rollup"))
    session.commit()
    return int(written)
