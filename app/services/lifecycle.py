"""The referral lifecycle: one explicit table of allowed transitions, and the use-cases that move
a referral through it. Every change is a compare-and-set on the referral's version (so two people
acting on one referral at once cannot both win) and writes one audit event in the same transaction.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Table
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from app.core.errors import AppError, Forbidden, InvalidTransition, Issue, Unprocessable
from app.db import writes
from app.db.base import utc_now
from app.fhir.notification import notification_json
from app.models.enums import OrgKind, Role
from app.models.enums import ReferralStatus as S
from app.models.event import ReferralEvent, ReferralEventPublic, ReferralHistory
from app.models.referral import Referral
from app.models.user import User
from app.services import organisations as organisation_service
from app.services import outbox, rollups
from app.services.references import new_reference

TRANSITIONS: dict[S, frozenset[S]] = {
    S.RECEIVED: frozenset(
        {S.ACCEPTED, S.DECLINED, S.FORWARDED, S.RETURNED, S.CANCELLED, S.NO_CONTACT}
    ),
    S.ACCEPTED: frozenset({S.COMPLETED, S.RETURNED, S.CANCELLED, S.NO_CONTACT, S.FORWARDED}),
    S.DECLINED: frozenset(),
    S.FORWARDED: frozenset(),
    S.RETURNED: frozenset(),
    S.CANCELLED: frozenset(),
    S.NO_CONTACT: frozenset(),
    S.COMPLETED: frozenset(),
}

OPEN = frozenset({S.RECEIVED, S.ACCEPTED})
# Outcomes the referrer must hear about (delivered by the outbox).
NOTIFY_REFERRER = frozenset({S.DECLINED, S.RETURNED, S.NO_CONTACT, S.FORWARDED})


class PreconditionFailed(AppError):
    status_code = 412
    issue_code = "conflict"
    rec_code = "REC_PRECONDITION_FAILED"


class PreconditionRequired(AppError):
    status_code = 428
    issue_code = "required"
    rec_code = "REC_BAD_REQUEST"


_REFERRAL: Table = Referral.__table__  # type: ignore[attr-defined]
_EVENT: Table = ReferralEvent.__table__  # type: ignore[attr-defined]


def check_transition(current: S, target: S) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"The referral is {current}; it cannot become {target}.")


def add_received(
    *, session: Session, referral: Referral, caller: User, action: str, detail: dict[str, Any]
) -> None:
    """A new referral among the change's writes, as received: the row, its counts in the
    rollups and its first event (version 1)."""
    writes.insert(session, referral)
    rollups.referral_created(session=session, referral=referral)
    record_event(
        session=session,
        referral_id=referral.id,
        caller=caller,
        action=action,
        version=1,
        to_status=S.RECEIVED,
        detail=detail,
    )


def record_event(
    *,
    session: Session,
    referral_id: uuid.UUID,
    caller: User,
    action: str,
    version: int,
    from_status: S | None = None,
    to_status: S | None = None,
    detail: dict[str, Any] | None = None,
    notify_referrer: bool | None = None,
) -> None:
    notify = to_status in NOTIFY_REFERRER if notify_referrer is None else notify_referrer
    # Events are only ever inserted, and nothing reads them back in the same change: a row
    # among the change's writes (app/db/writes.py), not an ORM object.
    writes.insert_row(
        session,
        _EVENT,
        {
            "referral_id": referral_id,
            "action": action,
            "from_status": from_status,
            "to_status": to_status,
            "version": version,
            "actor_subject": caller.subject,
            "actor_org": caller.org,
            "actor_role": caller.role,
            "notify_referrer": notify,
            "detail": detail,
            "at": utc_now(),
        },
    )
    if notify:
        _notify_referrer(session=session, referral_id=referral_id, action=action, detail=detail)


def _notify_referrer(
    *, session: Session, referral_id: uuid.UUID, action: str, detail: dict[str, Any] | None
) -> None:
    """Queue the event for the referrer's systems in this same transaction (the outbox)."""
    referral = session.get(Referral, referral_id)
    assert referral is not None
    body = orjson.dumps(
        notification_json(referral=referral, action=action, detail=detail, now=utc_now())
    ).decode()
    outbox.enqueue(
        session=session,
        referral=referral,
        kind=action,
        priority=outbox.URGENT if action == "urgent-escalation" else outbox.ROUTINE,
        render=lambda _fmt: body,
    )


def _require_version(referral: Referral, expected_version: int | None) -> int:
    if expected_version is None:
        raise PreconditionRequired("Send If-Match with the referral's ETag, or a version field.")
    if expected_version != referral.version:
        raise PreconditionFailed(
            f"The referral is at version {referral.version}, not {expected_version}; reload it and retry."
        )
    return expected_version


def _compare_and_set(
    *,
    session: Session,
    referral: Referral,
    expected_version: int,
    values: dict[str, Any],
    now: datetime | None = None,
) -> None:
    """Write `values` and the next version only if nobody has changed the referral since it was
    read: the change's guard (app/db/writes.py), so commit_change writes nothing and answers 412
    when someone else got there first.

    The same values are set on `referral` as its committed state, so callers need no refresh (a
    SELECT of every column) after they commit, and the session has nothing to flush for it."""
    written = {"version": expected_version + 1, "updated_at": now or utc_now(), **values}
    writes.compare_and_set(
        session, _REFERRAL, key=referral.id, version=expected_version, values=written
    )
    for key, value in written.items():
        set_committed_value(referral, key, value)


def commit_change(session: Session) -> None:
    """Write the change and commit: 412 when the referral changed since it was read (nothing is
    written), IntegrityError as from any write."""
    try:
        writes.commit(session)
    except writes.StaleWrite as exc:
        raise PreconditionFailed(
            "The referral was changed by someone else; reload it and retry."
        ) from exc


def apply_transition(
    *,
    session: Session,
    referral: Referral,
    caller: User,
    target: S,
    expected_version: int | None,
    action: str,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
) -> None:
    """Move the referral to `target` if it is still at `expected_version` (the caller ends the
    change with commit_change); `values` are other columns changed in the same compare-and-set."""
    version = _require_version(referral, expected_version)
    check_transition(referral.status, target)
    # The ORM update below also updates `referral` in the session: keep the state it leaves.
    previous = referral.status
    now = utc_now()
    _compare_and_set(
        session=session,
        referral=referral,
        expected_version=version,
        values={"status": target, "status_reason": reason, **(values or {})},
        now=now,
    )
    rollups.status_changed(session=session, referral=referral, target=target, at=now)
    record_event(
        session=session,
        referral_id=referral.id,
        caller=caller,
        action=action,
        version=version + 1,
        from_status=previous,
        to_status=target,
        detail={k: v for k, v in {"reason": reason, **(detail or {})}.items() if v is not None}
        or None,
    )


def _require_receiving_pharmacy(referral: Referral, caller: User) -> None:
    if caller.role is not Role.PHARMACY or caller.org != referral.pharmacy_ods:
        raise Forbidden("Only the receiving pharmacy may do this.")


def _require_referrer(referral: Referral, caller: User) -> None:
    if caller.org != referral.referrer_ods or caller.role in (Role.ICB_ANALYST, Role.ADMIN):
        raise Forbidden("Only the referring organisation may do this.")


def _transition_and_commit(
    *,
    session: Session,
    referral: Referral,
    caller: User,
    version: int | None,
    target: S,
    action: str,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Referral:
    apply_transition(
        session=session,
        referral=referral,
        caller=caller,
        target=target,
        expected_version=version,
        action=action,
        reason=reason,
        detail=detail,
    )
    commit_change(session)
    return referral


def accept_referral(
    *, session: Session, referral: Referral, caller: User, version: int | None
) -> Referral:
    _require_receiving_pharmacy(referral, caller)
    return _transition_and_commit(
        session=session,
        referral=referral,
        caller=caller,
        version=version,
        target=S.ACCEPTED,
        action="accepted",
    )


def decline_referral(
    *,
    session: Session,
    referral: Referral,
    caller: User,
    version: int | None,
    reason_code: str,
    reason: str | None,
) -> Referral:
    _require_receiving_pharmacy(referral, caller)
    return _transition_and_commit(
        session=session,
        referral=referral,
        caller=caller,
        version=version,
        target=S.DECLINED,
        action="declined",
        reason=reason,
        detail={"reason_code": reason_code},
    )


def return_referral(
    *, session: Session, referral: Referral, caller: User, version: int | None, reason: str
) -> Referral:
    _require_receiving_pharmacy(referral, caller)
    return _transition_and_commit(
        session=session,
        referral=referral,
        caller=caller,
        version=version,
        target=S.RETURNED,
        action="returned",
        reason=reason,
    )


def record_no_contact(
    *, session: Session, referral: Referral, caller: User, version: int | None, reason: str | None
) -> Referral:
    _require_receiving_pharmacy(referral, caller)
    return _transition_and_commit(
        session=session,
        referral=referral,
        caller=caller,
        version=version,
        target=S.NO_CONTACT,
        action="no-contact",
        reason=reason or "The patient did not make contact.",
    )


def cancel_by_referrer(
    *, session: Session, referral: Referral, caller: User, version: int | None, reason: str
) -> Referral:
    _require_referrer(referral, caller)
    return _transition_and_commit(
        session=session,
        referral=referral,
        caller=caller,
        version=version,
        target=S.CANCELLED,
        action="cancelled",
        reason=reason,
    )


@dataclass(frozen=True, slots=True)
class Forwarded:
    original: Referral
    forwarded: Referral


def forward_referral(
    *,
    session: Session,
    referral: Referral,
    caller: User,
    version: int | None,
    pharmacy_ods: str,
    reason: str | None,
) -> Forwarded:
    """Close this referral as forwarded and give the other pharmacy a new one it receives."""
    _require_receiving_pharmacy(referral, caller)
    target = organisation_service.get_organisation(session=session, ods_code=pharmacy_ods)
    where = "pharmacy_ods"
    if target is None or target.kind is not OrgKind.PHARMACY or not target.active:
        raise Unprocessable(
            "The other pharmacy is not an active pharmacy in the directory.",
            issues=[Issue("business-rule", "Unknown or inactive pharmacy.", where)],
        )
    if target.ods_code == referral.pharmacy_ods:
        raise Unprocessable(
            "A referral cannot be forwarded to the pharmacy that holds it.",
            issues=[Issue("business-rule", "Same pharmacy.", where)],
        )
    if not organisation_service.pharmacy_provides(
        session=session, pharmacy_ods=target.ods_code, service=referral.service
    ):
        raise Unprocessable(
            f"The other pharmacy is not registered for the {referral.service} service.",
            issues=[Issue("business-rule", f"Not registered for {referral.service}.", where)],
        )
    now = utc_now()
    copy = Referral.model_validate(
        referral.model_dump(
            exclude={
                "id",
                "reference",
                "status",
                "status_reason",
                "version",
                "created_at",
                "updated_at",
                "forwarded_from_id",
                "pharmacy_ods",
            }
        )
        | {
            "reference": new_reference(referral.service),
            "status": S.RECEIVED,
            "pharmacy_ods": target.ods_code,
            "forwarded_from_id": referral.id,
            "created_at": now,
            "updated_at": now,
        }
    )
    apply_transition(
        session=session,
        referral=referral,
        caller=caller,
        target=S.FORWARDED,
        expected_version=version,
        action="forwarded",
        reason=reason,
        detail={"to_pharmacy_ods": target.ods_code, "to_referral_id": str(copy.id)},
    )
    add_received(
        session=session,
        referral=copy,
        caller=caller,
        action="received-by-forwarding",
        detail={"from_pharmacy_ods": referral.pharmacy_ods, "from_referral_id": str(referral.id)},
    )
    commit_change(session)
    make_transient_to_detached(copy)
    session.add(copy)
    return Forwarded(original=referral, forwarded=copy)


def read_history(*, session: Session, referral: Referral) -> ReferralHistory:
    events = session.exec(
        select(ReferralEvent)
        .where(ReferralEvent.referral_id == referral.id)
        .order_by(col(ReferralEvent.id))
    ).all()
    return ReferralHistory(
        referral_id=referral.id,
        reference=referral.reference,
        status=referral.status,
        events=[ReferralEventPublic.model_validate(e) for e in events],
    )


def record_progress(
    *,
    session: Session,
    referral: Referral,
    caller: User,
    expected_version: int | None,
    action: str,
    detail: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
) -> None:
    """A change that keeps the state (e.g. a DMS stage recorded): same version rules, one event."""
    version = _require_version(referral, expected_version)
    _compare_and_set(
        session=session, referral=referral, expected_version=version, values=values or {}
    )
    record_event(
        session=session,
        referral_id=referral.id,
        caller=caller,
        action=action,
        version=version + 1,
        from_status=referral.status,
        to_status=referral.status,
        detail=detail,
    )
