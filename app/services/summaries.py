"""Consultation summaries for GP systems: built from the stored consultation on demand (pull) and
queued in the outbox when a consultation is recorded (push)."""

import operator
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, func, or_
from sqlmodel import Session, col, select

from app.core.errors import AppError, BadRequest, Issue, NotFound, NotSupported
from app.db.base import utc_now
from app.db.session import execute_read
from app.fhir.composition import Bound, Comparison
from app.fhir.summary import summary_document_json
from app.fhir.update_record import update_record_message_json
from app.models.consultation import Consultation
from app.models.delivery import MessageFormat
from app.models.organisation import Organisation
from app.models.referral import Referral
from app.models.user import User
from app.services import outbox
from app.services import referrals as referral_service


def _organisations(
    session: Session, referral: Referral
) -> tuple[Organisation, Organisation | None]:
    codes = [referral.pharmacy_ods, referral.patient_practice_ods or referral.pharmacy_ods]
    found = {
        organisation.ods_code: organisation
        for (organisation,) in execute_read(
            session, select(Organisation).where(col(Organisation.ods_code).in_(codes))
        )
    }
    pharmacy = found[referral.pharmacy_ods]
    practice = found.get(referral.patient_practice_ods) if referral.patient_practice_ods else None
    return pharmacy, practice


def render(
    *, session: Session, referral: Referral, consultation: Consultation, fmt: MessageFormat
) -> dict[str, object] | None:
    """The summary in a format; None when that format cannot carry it (DMS, or no NHS number,
    has no GP Connect Update Record form: such summaries go as FHIR R4 only)."""
    pharmacy, practice = _organisations(session, referral)
    now = utc_now()
    if fmt is MessageFormat.R4:
        return summary_document_json(
            referral=referral,
            consultation=consultation,
            pharmacy=pharmacy,
            practice=practice,
            now=now,
        )
    try:
        return update_record_message_json(
            referral=referral,
            consultation=consultation,
            pharmacy=pharmacy,
            practice=practice,
            now=now,
        )
    except AppError:
        return None


def queue_summary(*, session: Session, referral: Referral, consultation: Consultation) -> None:
    """Queue the summary for the referrer's and the registered practice's systems (flush only)."""

    bodies: dict[MessageFormat, str | None] = {}  # one render per format, however many endpoints

    def body(fmt: MessageFormat) -> str | None:
        if fmt not in bodies:
            document = render(
                session=session, referral=referral, consultation=consultation, fmt=fmt
            )
            bodies[fmt] = orjson.dumps(document).decode() if document is not None else None
        return bodies[fmt]

    outbox.enqueue(
        session=session, referral=referral, kind="summary", priority=outbox.ROUTINE, render=body
    )


def latest_consultation(
    *, session: Session, referral: Referral, consultation_id: uuid.UUID | None = None
) -> Consultation:
    query = select(Consultation).where(Consultation.referral_id == referral.id)
    if consultation_id is not None:
        query = query.where(Consultation.id == consultation_id)
    consultation = session.exec(query.order_by(col(Consultation.recorded_at).desc())).first()
    if consultation is None:
        raise NotFound("No consultation has been recorded for this referral yet.")
    return consultation


def find_summary(
    *, session: Session, bundle_id: str, caller: User
) -> tuple[Referral, Consultation]:
    """GET /fhir/Bundle/{id}: the consultation and its referral, for the referrer, the registered
    practice or the pharmacy."""
    try:
        consultation = session.get(Consultation, uuid.UUID(bundle_id))
    except ValueError:
        consultation = None
    if consultation is None:
        raise NotFound("No summary Bundle with that id.")
    referral = referral_service.get_visible_referral(
        session=session, referral_id=str(consultation.referral_id), caller=caller
    )
    return referral, consultation


def render_required(
    *, session: Session, referral: Referral, consultation: Consultation, fmt: MessageFormat
) -> dict[str, object]:
    """The summary in the format a caller asked for, or 422 when that format cannot carry it."""
    document = render(session=session, referral=referral, consultation=consultation, fmt=fmt)
    if document is None:
        raise NotSupported(
            "This summary has no GP Connect Update Record form (DMS, or no NHS number): ask for fhir-r4.",
            issues=[Issue("not-supported", "Use _format=fhir-r4.", "_format")],
        )
    return document


# ---- search: GET /fhir/Composition -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SummaryHead:
    """A summary as search lists it: the consultation, its referral and the pharmacy's name."""

    consultation: Consultation
    referral: Referral
    pharmacy_name: str


@dataclass(frozen=True, slots=True)
class SummaryFilter:
    nhs_number: str | None = None
    recorded: tuple[Bound, ...] = ()  # every (op, instant) must hold for recorded_at


@dataclass(frozen=True, slots=True)
class SummaryPage:
    heads: list[SummaryHead]
    total: int  # every match, not just this page
    next_cursor: str | None


_COMPARE: dict[Comparison, Callable[[Any, datetime], ColumnElement[bool]]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def _summary_conditions(caller: User, filters: SummaryFilter) -> list[ColumnElement[bool]]:
    """Who may see which summaries is who may see which referrals (referrals.visible_to)."""
    conditions = [_COMPARE[op](col(Consultation.recorded_at), at) for op, at in filters.recorded]
    visible = referral_service.visible_to(caller)
    if visible is not None:
        conditions.append(visible)
    if filters.nhs_number is not None:
        conditions.append(col(Referral.patient_nhs_number) == filters.nhs_number)
    return conditions


def _after(cursor: str) -> ColumnElement[bool]:
    """Rows after the cursor in (recorded_at, id) order; the leading >= lets the index range."""
    try:
        recorded_at, consultation_id = referral_service.decode_cursor(
            cursor, referral_service.ReferralOrder.LAST_UPDATED
        )
    except BadRequest as exc:
        raise BadRequest(
            exc.detail,
            issues=[
                Issue("invalid", "The paging cursor is not valid: use the next link.", "_cursor")
            ],
        ) from exc
    recorded, key = col(Consultation.recorded_at), col(Consultation.id)
    return and_(
        recorded >= recorded_at,
        or_(recorded > recorded_at, and_(recorded == recorded_at, key > consultation_id)),
    )


def search_summaries(
    *, session: Session, caller: User, filters: SummaryFilter, cursor: str | None, limit: int
) -> SummaryPage:
    """The summaries the caller may see, oldest recorded first, keyset paged on (recorded_at, id)."""
    conditions = _summary_conditions(caller, filters)
    total = session.exec(
        select(func.count())
        .select_from(Consultation)
        .join(Referral, col(Referral.id) == col(Consultation.referral_id))
        .where(*conditions)
    ).one()
    if limit == 0:
        return SummaryPage(heads=[], total=total, next_cursor=None)
    if cursor is not None:
        conditions.append(_after(cursor))
    rows = session.exec(
        select(Consultation, Referral, Organisation.name)
        .join(Referral, col(Referral.id) == col(Consultation.referral_id))
        .join(Organisation, col(Organisation.ods_code) == col(Referral.pharmacy_ods))
        .where(*conditions)
        .order_by(col(Consultation.recorded_at), col(Consultation.id))
        .limit(limit + 1)
    ).all()
    heads = [SummaryHead(c, r, name) for c, r, name in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = heads[-1].consultation
        next_cursor = referral_service.encode_cursor((last.recorded_at, last.id))
    return SummaryPage(heads=heads, total=total, next_cursor=next_cursor)


def read_summary_head(*, session: Session, composition_id: str, caller: User) -> SummaryHead:
    """GET /fhir/Composition/{id}: one summary the caller may see (id = the consultation id)."""
    try:
        key = uuid.UUID(composition_id)
    except ValueError as exc:
        raise NotFound("No Composition with that id.") from exc
    visible = referral_service.visible_to(caller)
    query = (
        select(Consultation, Referral, Organisation.name)
        .join(Referral, col(Referral.id) == col(Consultation.referral_id))
        .join(Organisation, col(Organisation.ods_code) == col(Referral.pharmacy_ods))
        .where(col(Consultation.id) == key)
    )
    row = session.exec(query if visible is None else query.where(visible)).first()
    if row is None:
        raise NotFound("No Composition with that id.")
    return SummaryHead(*row)
