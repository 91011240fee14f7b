"""Consultation summaries for GP systems: built from the stored consultation on demand (pull) and
queued in the outbox when a consultation is recorded (push)."""

import uuid

import orjson
from sqlmodel import Session, col, select

from app.core.errors import AppError, Issue, NotFound, NotSupported
from app.db.base import utc_now
from app.fhir.summary import summary_document_json
from app.fhir.update_record import update_record_message_json
from app.models.consultation import Consultation
from app.models.delivery import MessageFormat
from app.models.organisation import Organisation
from app.models.referral import Referral
from app.models.user import User
from app.services import outbox


def _organisations(
    session: Session, referral: Referral
) -> tuple[Organisation, Organisation | None]:
    pharmacy = session.get(Organisation, referral.pharmacy_ods)
    assert pharmacy is not None
    practice = (
        session.get(Organisation, referral.patient_practice_ods)
        if referral.patient_practice_ods
        else None
    )
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
    from app.services.referrals import get_visible_referral

    try:
        consultation = session.get(Consultation, uuid.UUID(bundle_id))
    except ValueError:
        consultation = None
    if consultation is None:
        raise NotFound("No summary Bundle with that id.")
    referral = get_visible_referral(
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
