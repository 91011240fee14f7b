"""The transactional outbox: messages to GP systems are rows written in the same transaction as the
change they report, so a rolled-back change sends nothing and a committed one is never forgotten."""

from collections.abc import Callable

from sqlalchemy import bindparam, select
from sqlmodel import Session

from app.db import raw, writes
from app.models.delivery import DeliveryStatus, Endpoint, MessageFormat, OutboxMessage
from app.models.referral import Referral

URGENT, ROUTINE = 0, 1

_ENDPOINT = Endpoint.__table__  # type: ignore[attr-defined]
# The active endpoints of a change's (at most two) recipients: the three columns used, built once.
_ACTIVE_ENDPOINTS = raw.Statement(
    select(_ENDPOINT.c.id, _ENDPOINT.c.org_ods, _ENDPOINT.c.format)
    .where(
        _ENDPOINT.c.org_ods.in_([bindparam("first"), bindparam("second")]),
        _ENDPOINT.c.active.is_(True),
    )
    .order_by(_ENDPOINT.c.created_at)
)


def recipients(referral: Referral) -> list[str]:
    """Who hears about a referral: the referrer, and the patient's registered practice."""
    found = [referral.referrer_ods]
    if referral.patient_practice_ods and referral.patient_practice_ods not in found:
        found.append(referral.patient_practice_ods)
    return found


def enqueue(
    *,
    session: Session,
    referral: Referral,
    kind: str,
    priority: int,
    render: Callable[[MessageFormat], str | None],
) -> int:
    """Add one outbox row per active endpoint of each recipient to the change's writes (the
    caller commits).

    `render` gives the body for an endpoint's format, or None when that format cannot carry the
    message (e.g. DMS has no GP Connect Update Record form): such endpoints get the FHIR R4 form.
    """
    first, *others = recipients(referral)
    endpoints = raw.fetch(
        session, _ACTIVE_ENDPOINTS, {"first": first, "second": others[0] if others else first}
    )
    for endpoint_id, org_ods, endpoint_format in endpoints:
        fmt = MessageFormat(endpoint_format)
        body = render(fmt)
        if body is None:
            fmt, body = MessageFormat.R4, render(MessageFormat.R4)
        assert body is not None
        writes.insert(
            session,
            OutboxMessage(
                endpoint_id=endpoint_id,
                recipient_ods=org_ods,
                referral_id=referral.id,
                kind=kind,
                priority=priority,
                format=fmt,
                body=body,
                status=DeliveryStatus.PENDING,
            ),
        )
    return len(endpoints)
