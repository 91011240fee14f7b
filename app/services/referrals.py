"""Referral intake and tracking: the one service layer behind both FHIR and JSON intake."""

import base64
import hashlib
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from functools import cache
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlalchemy import BindParameter, ColumnElement, SQLColumnExpression, and_, bindparam, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from app.core.config import settings
from app.core.errors import (
    AppError,
    BadRequest,
    Conflict,
    Duplicate,
    Forbidden,
    Issue,
    NotFound,
    Unprocessable,
)
from app.db import raw, writes
from app.db.base import utc_now
from app.db.session import execute_read
from app.models.enums import (
    DueState,
    Intake,
    OrgKind,
    Pathway,
    ReferralSource,
    ReferralStatus,
    Role,
    Service,
)
from app.models.intake import NewReferral
from app.models.referral import (
    BloodPressureIn,
    ContraceptivePublic,
    DischargeMedicineIn,
    InboundMessage,
    PatientPublic,
    Referral,
    ReferralCreate,
    ReferralPublic,
)
from app.models.user import User
from app.services import clinical_rules, lifecycle
from app.services import organisations as organisation_service
from app.services.references import new_reference

URGENT = "urgent"  # the priority the pharmacy inbox puts first
ROUTINE = "routine"

ROLE_KIND = {
    Role.GP_PRACTICE: OrgKind.GP_PRACTICE,
    Role.NHS111: OrgKind.NHS111,
    Role.TRUST: OrgKind.TRUST,
    Role.PHARMACY: OrgKind.PHARMACY,
}
ROLE_SOURCES: dict[Role, tuple[ReferralSource, ...]] = {
    Role.GP_PRACTICE: (ReferralSource.GP_PRACTICE,),
    Role.NHS111: (ReferralSource.NHS111,),
    Role.TRUST: (ReferralSource.TRUST, ReferralSource.URGENT_CARE),
    Role.PHARMACY: (ReferralSource.SELF_REFERRAL,),
}


@dataclass(frozen=True, slots=True)
class IntakeKey:
    """What makes an intake request idempotent: X-Request-Id (FHIR) or Idempotency-Key (JSON)."""

    kind: str
    key: str
    body: bytes
    replay: bool  # True: a repeat returns the original result; False: a repeat is a 409 duplicate

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass(frozen=True, slots=True)
class IntakeResult:
    referral: Referral
    created: bool
    warnings: list[Issue]


def _resolve_source(*, new: NewReferral, caller: User) -> ReferralSource:
    allowed = ROLE_SOURCES.get(caller.role)
    if allowed is None:
        raise Forbidden(f"The {caller.role} role may not make referrals.")
    if new.source is None:
        return allowed[0]
    if new.source not in allowed:
        raise Unprocessable(
            f"A {caller.role} caller cannot make a {new.source} referral.",
            issues=[
                Issue(
                    "business-rule",
                    "Referral source does not match the caller.",
                    new.path("source"),
                )
            ],
        )
    return new.source


def _check_referrer(
    *, new: NewReferral, caller: User, organisation: organisation_service.DirectoryEntry | None
) -> None:
    if new.claimed_referrer_ods is not None and new.claimed_referrer_ods != caller.org:
        raise Forbidden(
            "A caller may refer only on behalf of its own organisation.",
            issues=[
                Issue(
                    "forbidden",
                    "The referring organisation is not the caller's organisation.",
                    new.path("referrer.organisation_ods"),
                )
            ],
        )
    if (
        organisation is None
        or organisation.kind is not ROLE_KIND.get(caller.role)
        or not organisation.active
    ):
        raise Forbidden(
            "The caller's organisation is not an active directory entry of the right kind."
        )


def _check_pharmacy(
    *, new: NewReferral, caller: User, pharmacy: organisation_service.DirectoryEntry | None
) -> None:
    where = new.path("pharmacy_ods")
    if pharmacy is None or pharmacy.kind is not OrgKind.PHARMACY or not pharmacy.active:
        raise Unprocessable(
            "The receiving pharmacy is not an active pharmacy in the directory.",
            issues=[Issue("business-rule", "Unknown or inactive pharmacy.", where)],
        )
    if caller.role is Role.PHARMACY and new.pharmacy_ods != caller.org:
        raise Unprocessable(
            "A pharmacy records self-referrals to itself only.",
            issues=[Issue("business-rule", "Self-referral to another pharmacy.", where)],
        )
    if not pharmacy.provides:
        raise Unprocessable(
            f"The receiving pharmacy is not registered for the {new.service} service.",
            issues=[Issue("business-rule", f"Pharmacy not registered for {new.service}.", where)],
        )


def _check_eligibility(*, new: NewReferral, source: ReferralSource, today: Any) -> None:
    breaches = clinical_rules.referral_eligibility(
        service=new.service,
        pathway=new.pathway,
        birth_date=new.patient_birth_date,
        sex=new.patient_sex,
        contraceptive=new.contraceptive_type,
        has_blood_pressure=new.bp_systolic is not None and new.bp_diastolic is not None,
        has_discharge_medicines=bool(new.discharge_medicines),
        on=today,
    )
    if new.service is Service.DMS and source is not ReferralSource.TRUST:
        breaches.append(
            clinical_rules.RuleBreach("service", "DMS referrals come from NHS trusts only.")
        )
    if breaches:
        raise Unprocessable(
            "The referral does not meet the service's eligibility rules.",
            issues=[Issue("business-rule", b.message, new.path(b.field)) for b in breaches],
        )


def _due_at(*, new: NewReferral, received_at: datetime) -> datetime:
    if new.due_by is not None and new.due_by > received_at:
        return new.due_by
    if new.timeframe is not None and new.timeframe > timedelta(0):
        return received_at + new.timeframe
    return received_at + timedelta(hours=settings.due_hours[new.service])


def _existing_message(*, session: Session, caller: User, key: IntakeKey) -> InboundMessage | None:
    return session.exec(
        select(InboundMessage).where(
            InboundMessage.sender_ods == caller.org,
            InboundMessage.key_kind == key.kind,
            InboundMessage.key == key.key,
        )
    ).first()


def _replay(*, session: Session, message: InboundMessage, key: IntakeKey) -> IntakeResult:
    if not key.replay:
        raise Duplicate(f"A request with this {key.kind} has already been processed.")
    if message.body_sha256 != key.sha256:
        raise Conflict(f"This {key.kind} was used before with a different request body.")
    referral = session.get(Referral, message.referral_id)
    assert referral is not None
    return IntakeResult(referral=referral, created=False, warnings=[])


def _checked_source(
    *, session: Session, new: NewReferral, caller: User, today: date
) -> ReferralSource:
    """Every rule a new referral must meet, with the directory read once."""
    source = _resolve_source(new=new, caller=caller)
    directory = organisation_service.intake_directory(
        session=session, caller_ods=caller.org, pharmacy_ods=new.pharmacy_ods, service=new.service
    )
    _check_referrer(new=new, caller=caller, organisation=directory.caller)
    _check_pharmacy(new=new, caller=caller, pharmacy=directory.pharmacy)
    _check_eligibility(new=new, source=source, today=today)
    return source


def create_referral(
    *, session: Session, new: NewReferral, caller: User, intake: Intake, key: IntakeKey
) -> IntakeResult:
    """Store a new referral and its inbound message in one transaction, exactly once per key.

    A key seen before answers as it always has (the original referral, or 409), whatever the
    repeat's body now makes of the rules: the unique key of inbound_message decides, so the
    key is looked up only when the rules refuse the request or the insert finds it taken."""
    now = utc_now()
    try:
        source = _checked_source(session=session, new=new, caller=caller, today=now.date())
    except AppError:
        existing = _existing_message(session=session, caller=caller, key=key)
        if existing is not None:
            return _replay(session=session, message=existing, key=key)
        raise
    practice = new.patient_practice_ods
    if practice is None and source is ReferralSource.GP_PRACTICE:
        practice = caller.org
    referral = writes.construct(
        Referral,
        reference=new_reference(new.service),
        service=new.service,
        pathway=new.pathway if new.service is Service.PHARMACY_FIRST else None,
        status=ReferralStatus.RECEIVED,
        source=source,
        intake=intake,
        priority=new.priority,
        referrer_ods=caller.org,
        pharmacy_ods=new.pharmacy_ods,
        patient_practice_ods=practice,
        clinician_name=new.clinician_name,
        clinician_id=new.clinician_id,
        patient_nhs_number=new.patient_nhs_number,
        patient_family_name=new.patient_family_name,
        patient_given_name=new.patient_given_name,
        patient_birth_date=new.patient_birth_date,
        patient_sex=new.patient_sex,
        patient_phone=new.patient_phone,
        reason=new.reason,
        notes=new.notes,
        bp_systolic=new.bp_systolic,
        bp_diastolic=new.bp_diastolic,
        bp_measured_at=new.bp_measured_at,
        bmi=new.bmi,
        abpm_requested=new.abpm_requested,
        contraceptive_type=new.contraceptive_type,
        contraceptive_dmd_code=new.contraceptive_dmd_code,
        contraceptive_name=new.contraceptive_name,
        discharged_at=new.discharged_at,
        discharge_medicines=new.discharge_medicines,
        bars_bundle_id=new.bars_bundle_id,
        correlation_id=new.correlation_id,
        authored_at=new.authored_at or now,
        due_at=_due_at(new=new, received_at=now),
        created_at=now,
        updated_at=now,
    )
    # The referral, its created event, its inbound message and its rollup counts: one statement
    # on PostgreSQL (app/db/writes.py).
    lifecycle.add_received(
        session=session,
        referral=referral,
        caller=caller,
        action="created",
        detail={"intake": str(intake)},
    )
    message = _message(caller=caller, key=key, referral_id=referral.id, action="create", now=now)
    writes.insert(session, message)
    try:
        writes.commit(session)
    except IntegrityError:
        existing = _existing_message(session=session, caller=caller, key=key)
        if existing is None:
            raise
        return _replay(session=session, message=existing, key=key)
    # Known to the session as written only now: adding it earlier would have begun the session's
    # transaction before the reads above, which run autocommitted.
    make_transient_to_detached(referral)
    session.add(referral)
    return IntakeResult(referral=referral, created=True, warnings=new.warnings)


def _message(
    *, caller: User, key: IntakeKey, referral_id: uuid.UUID, action: str, now: datetime
) -> InboundMessage:
    return writes.construct(
        InboundMessage,
        sender_ods=caller.org,
        key_kind=key.kind,
        key=key.key,
        body_sha256=key.sha256,
        referral_id=referral_id,
        action=action,
        body=key.body.decode("utf-8"),
        received_at=now,
    )


def cancel_referral(
    *,
    session: Session,
    referral: Referral,
    caller: User,
    reason: str | None,
    sender_last_updated: datetime | None,
    key: IntakeKey,
) -> Referral:
    """Cancel at the referrer's request (BaRS update with status revoked or entered-in-error)."""
    if _existing_message(session=session, caller=caller, key=key) is not None:
        raise Duplicate(f"A request with this {key.kind} has already been processed.")
    if referral.referrer_ods != caller.org:
        raise Forbidden("Only the referring organisation may cancel a referral.")
    if sender_last_updated is not None and sender_last_updated < referral.updated_at:
        raise Conflict(
            "The referral has changed since the sender's copy (meta.lastUpdated is older)."
        )
    lifecycle.apply_transition(
        session=session,
        referral=referral,
        caller=caller,
        target=ReferralStatus.CANCELLED,
        expected_version=referral.version,
        action="cancelled",
        reason=reason,
    )
    now = utc_now()
    writes.insert(
        session, _message(caller=caller, key=key, referral_id=referral.id, action="cancel", now=now)
    )
    try:
        lifecycle.commit_change(session)
    except IntegrityError as exc:
        raise Duplicate(f"A request with this {key.kind} has already been processed.") from exc
    return referral


# ---- tracking -------------------------------------------------------------------------------


def visible_to(caller: User) -> ColumnElement[bool] | None:
    """The referrals a caller may see, as a WHERE condition (None: all of them)."""
    return _visible_to_role(caller.role, caller.org)


def _visible_to_role(role: Role, org: str | BindParameter[str]) -> ColumnElement[bool] | None:
    """visible_to for a role, with the caller's organisation as a value or a bound parameter."""
    if role is Role.ADMIN:
        return None
    if role is Role.PHARMACY:
        return col(Referral.pharmacy_ods) == org
    if role is Role.GP_PRACTICE:
        # A practice follows the referrals it made and those made for its registered patients.
        return (col(Referral.referrer_ods) == org) | (col(Referral.patient_practice_ods) == org)
    return col(Referral.referrer_ods) == org


@cache
def _visible_by_id(role: Role) -> raw.Statement:
    """One referral by id, if a caller of `role` from organisation :org may see it: every
    column, built once per role."""
    table = Referral.__table__  # type: ignore[attr-defined]
    query = select(table).where(table.c.id == bindparam("id", type_=table.c.id.type))
    condition = _visible_to_role(role, bindparam("org"))
    return raw.Statement(query if condition is None else query.where(condition))


def _visible(query: SelectOfScalar[Referral], caller: User) -> SelectOfScalar[Referral]:
    condition = visible_to(caller)
    return query if condition is None else query.where(condition)


def get_visible_referral(*, session: Session, referral_id: str, caller: User) -> Referral:
    """A referral the caller may see; another organisation's referral reads as not found."""
    try:
        key = uuid.UUID(referral_id)
    except ValueError as exc:
        raise NotFound("No referral with that id.") from exc
    referral = raw.load(
        session, Referral, _visible_by_id(caller.role), {"id": key, "org": caller.org}
    )
    if referral is None:
        raise NotFound("No referral with that id.")
    return referral


def list_referral_and_forwards(
    *, session: Session, referral_id: str, caller: User
) -> list[Referral]:
    """The referral and the referral it was forwarded as, as far as the caller may see them;
    nothing at all when the caller may not see the referral itself."""
    try:
        referral = get_visible_referral(session=session, referral_id=referral_id, caller=caller)
    except NotFound:
        return []
    if referral.status is not ReferralStatus.FORWARDED:  # only forwarding makes a new referral
        return [referral]
    forwards = session.exec(
        _visible(
            select(Referral).where(Referral.forwarded_from_id == referral.id), caller
        ).order_by(col(Referral.created_at), col(Referral.id))
    ).all()
    return [referral, *forwards]


class ReferralOrder(StrEnum):
    """The orders list_referrals pages through; each ends in the id, so it is total."""

    NEWEST = "newest"  # created_at descending: the referrer's tracking view
    URGENCY = "urgency"  # urgent first, then the soonest due: the pharmacy's inbox
    LAST_UPDATED = "last-updated"  # updated_at ascending: FHIR _lastUpdated polling


SortValue = int | str | datetime | uuid.UUID


class ReferralRow(SimpleNamespace):
    """A referral's columns read without the ORM, as plain attributes with Referral's names
    (read faster than a SQLAlchemy Row's, which are looked up by key on every access)."""


_Listed = TypeVar("_Listed", Referral, ReferralRow)
_COLUMNS = tuple(Referral.__table__.columns)  # type: ignore[attr-defined]


# The urgency order sorts on the priority column itself, descending: both intakes store only
# "routine" or "urgent", so "urgent" sorts first, and the inbox index
# (pharmacy_ods, status, priority DESC, due_at, id) then returns a page in order without a sort.
# (A CASE expression here cannot use an index: every received row of the pharmacy was sorted.)
# The cursor keeps the rank (0 urgent, 1 routine) so it does not depend on the stored spelling.
_RANK_PRIORITY = {0: URGENT, 1: ROUTINE}
_PRIORITY_RANK = {priority: rank for rank, priority in _RANK_PRIORITY.items()}


def _sort_keys(order: ReferralOrder) -> list[tuple[SQLColumnExpression[Any], bool]]:
    """(expression, ascending) pairs, most significant first."""
    if order is ReferralOrder.URGENCY:
        return [
            (col(Referral.priority), False),
            (col(Referral.due_at), True),
            (col(Referral.id), True),
        ]
    if order is ReferralOrder.LAST_UPDATED:
        return [(col(Referral.updated_at), True), (col(Referral.id), True)]
    return [(col(Referral.created_at), False), (col(Referral.id), False)]


def _sort_values(order: ReferralOrder, referral: Referral | ReferralRow) -> tuple[SortValue, ...]:
    if order is ReferralOrder.URGENCY:
        return _PRIORITY_RANK[referral.priority], referral.due_at, referral.id
    if order is ReferralOrder.LAST_UPDATED:
        return referral.updated_at, referral.id
    return referral.created_at, referral.id


def _after(
    keys: list[tuple[SQLColumnExpression[Any], bool]], values: tuple[SortValue, ...]
) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order `keys` (the keyset condition, expanded)."""
    clauses = []
    for i, (expr, ascending) in enumerate(keys):
        ties = [key == value for (key, _), value in zip(keys[:i], values[:i], strict=True)]
        clauses.append(and_(*ties, expr > values[i] if ascending else expr < values[i]))
    return or_(*clauses)


def _key_values(order: ReferralOrder, values: tuple[SortValue, ...]) -> tuple[SortValue, ...]:
    """A cursor's values as the sort keys' values (the urgency rank as the priority it stands for)."""
    if order is ReferralOrder.URGENCY:
        rank, *rest = values
        return (_RANK_PRIORITY[int(rank)], *rest)  # type: ignore[arg-type]
    return values


def encode_cursor(values: tuple[SortValue, ...]) -> str:
    text = "|".join(v.isoformat() if isinstance(v, datetime) else str(v) for v in values)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _instant(text: str) -> datetime:
    instant = datetime.fromisoformat(text)
    if instant.tzinfo is None:
        raise ValueError("cursor instant has no offset")
    return instant


def decode_cursor(cursor: str, order: ReferralOrder) -> tuple[SortValue, ...]:
    """The sort values of the last row of the previous page: `instant|id`, or for the urgency
    order `rank|due_at|id` (so a cursor from one order is refused by the other)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = base64.urlsafe_b64decode(padded).decode().split("|")
        if order is ReferralOrder.URGENCY:
            rank, due_at, referral_id = parts
            if rank not in ("0", "1"):
                raise ValueError("unknown urgency rank")
            return int(rank), _instant(due_at), uuid.UUID(referral_id)
        moment, referral_id = parts
        return _instant(moment), uuid.UUID(referral_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The paging cursor is not valid.") from exc


@dataclass(frozen=True, slots=True)
class ReferralFilter:
    status: ReferralStatus | None = None
    statuses: frozenset[ReferralStatus] | None = None
    service: Service | None = None
    created_since: datetime | None = None
    updated_after: datetime | None = None
    updated_from: datetime | None = None
    updated_before: datetime | None = None
    due: DueState | None = None


def list_referrals(
    *,
    session: Session,
    caller: User,
    filters: ReferralFilter,
    cursor: str | None,
    limit: int,
    order: ReferralOrder = ReferralOrder.NEWEST,
) -> tuple[list[Referral], str | None]:
    """Referrals the caller may see, in `order`, keyset paged."""
    query = _list_query(caller=caller, filters=filters, cursor=cursor, order=order)
    rows = list(session.exec(query.limit(limit + 1)).all())
    return _paged(rows, limit=limit, order=order)


def list_referral_rows(
    *,
    session: Session,
    caller: User,
    filters: ReferralFilter,
    cursor: str | None,
    limit: int,
    order: ReferralOrder = ReferralOrder.NEWEST,
) -> tuple[list[ReferralRow], str | None]:
    """As list_referrals, but the page's rows as read (columns by name, without the ORM): for a
    page that is only shown (to_public), where building and tracking 50 ORM objects cost more
    than the query."""
    query = _list_query(caller=caller, filters=filters, cursor=cursor, order=order)
    result = execute_read(session, query.with_only_columns(*_COLUMNS).limit(limit + 1))
    rows = [ReferralRow(**row._asdict()) for row in result]
    return _paged(rows, limit=limit, order=order)


def _paged(
    rows: list[_Listed], *, limit: int, order: ReferralOrder
) -> tuple[list[_Listed], str | None]:
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_cursor(_sort_values(order, page[-1]))
    return page, next_cursor


def _list_query(
    *, caller: User, filters: ReferralFilter, cursor: str | None, order: ReferralOrder
) -> SelectOfScalar[Referral]:
    query = _visible(select(Referral), caller)
    if filters.status is not None:
        query = query.where(Referral.status == filters.status)
    if filters.statuses is not None:
        query = query.where(col(Referral.status).in_(sorted(filters.statuses)))
    if filters.service is not None:
        query = query.where(Referral.service == filters.service)
    if filters.created_since is not None:
        query = query.where(col(Referral.created_at) >= filters.created_since)
    if filters.updated_after is not None:
        query = query.where(col(Referral.updated_at) > filters.updated_after)
    if filters.updated_from is not None:
        query = query.where(col(Referral.updated_at) >= filters.updated_from)
    if filters.updated_before is not None:
        query = query.where(col(Referral.updated_at) < filters.updated_before)
    if filters.due is not None:
        now = utc_now()
        due_at = col(Referral.due_at)
        query = query.where(
            col(Referral.status).in_(sorted(lifecycle.OPEN)),
            due_at > now if filters.due is DueState.DUE else due_at <= now,
        )
    keys = _sort_keys(order)
    if cursor is not None:
        query = query.where(_after(keys, _key_values(order, decode_cursor(cursor, order))))
    return query.order_by(*(expr.asc() if ascending else expr.desc() for expr, ascending in keys))


# ---- JSON channel -------------------------------------------------------------------------------


def from_json(referral_in: ReferralCreate) -> NewReferral:
    """Map the JSON intake schema onto the shared referral shape (paths are the JSON field names)."""
    patient, bp, oc = (
        referral_in.patient,
        referral_in.blood_pressure,
        referral_in.current_contraceptive,
    )
    return NewReferral(
        service=referral_in.service,
        pathway=referral_in.pathway
        or (Pathway.MINOR_ILLNESS if referral_in.service is Service.PHARMACY_FIRST else None),
        pharmacy_ods=referral_in.pharmacy_ods,
        source=referral_in.source,
        priority=referral_in.priority,
        patient_nhs_number=patient.nhs_number,
        patient_family_name=patient.family_name,
        patient_given_name=patient.given_name,
        patient_birth_date=patient.birth_date,
        patient_sex=patient.sex,
        patient_phone=patient.phone,
        patient_practice_ods=patient.registered_practice_ods,
        claimed_referrer_ods=referral_in.referrer.organisation_ods,
        clinician_name=referral_in.referrer.clinician_name,
        clinician_id=referral_in.referrer.clinician_id,
        reason=referral_in.reason,
        notes=referral_in.notes,
        bp_systolic=bp.systolic if bp else None,
        bp_diastolic=bp.diastolic if bp else None,
        bp_measured_at=bp.measured_at if bp else None,
        bmi=referral_in.bmi,
        abpm_requested=referral_in.abpm_requested,
        contraceptive_type=oc.type if oc else None,
        contraceptive_dmd_code=oc.dmd_code if oc else None,
        contraceptive_name=oc.name if oc else None,
        discharged_at=referral_in.discharged_at,
        discharge_medicines=[m.model_dump() for m in referral_in.discharge_medicines]
        if referral_in.discharge_medicines
        else None,
        due_by=referral_in.due_by,
    )


def create_referral_from_json(
    *, session: Session, referral_in: ReferralCreate, caller: User, idempotency_key: str | None
) -> IntakeResult:
    body = referral_in.model_dump_json().encode()
    key = IntakeKey(
        kind="idempotency-key",
        key=idempotency_key or f"auto:{uuid.uuid4()}",
        body=body,
        replay=True,
    )
    return create_referral(
        session=session, new=from_json(referral_in), caller=caller, intake=Intake.JSON, key=key
    )


def to_public(referral: Referral | ReferralRow) -> ReferralPublic:
    bp = None
    if referral.bp_systolic is not None and referral.bp_diastolic is not None:
        bp = BloodPressureIn(
            systolic=referral.bp_systolic,
            diastolic=referral.bp_diastolic,
            measured_at=referral.bp_measured_at,
        )
    contraceptive = None
    if referral.contraceptive_type is not None or referral.contraceptive_name is not None:
        contraceptive = ContraceptivePublic(
            type=referral.contraceptive_type,
            dmd_code=referral.contraceptive_dmd_code,
            name=referral.contraceptive_name,
        )
    return ReferralPublic(
        id=referral.id,
        reference=referral.reference,
        service=referral.service,
        pathway=referral.pathway,
        status=referral.status,
        status_reason=referral.status_reason,
        source=referral.source,
        intake=referral.intake,
        priority=referral.priority,
        referrer_ods=referral.referrer_ods,
        pharmacy_ods=referral.pharmacy_ods,
        clinician_name=referral.clinician_name,
        clinician_id=referral.clinician_id,
        patient=PatientPublic(
            nhs_number=referral.patient_nhs_number,
            family_name=referral.patient_family_name,
            given_name=referral.patient_given_name,
            birth_date=referral.patient_birth_date,
            sex=referral.patient_sex,
            phone=referral.patient_phone,
            registered_practice_ods=referral.patient_practice_ods,
        ),
        reason=referral.reason,
        notes=referral.notes,
        blood_pressure=bp,
        bmi=referral.bmi,
        abpm_requested=referral.abpm_requested,
        current_contraceptive=contraceptive,
        discharged_at=referral.discharged_at,
        discharge_medicines=[
            DischargeMedicineIn.model_construct(**m) for m in referral.discharge_medicines
        ]
        if referral.discharge_medicines is not None
        else None,
        authored_at=referral.authored_at,
        due_at=referral.due_at,
        version=referral.version,
        created_at=referral.created_at,
        updated_at=referral.updated_at,
    )
