"""The audit of reads of patient-identifiable data: record one, and page through them (admin).

A read is recorded, and committed, before the data leaves pharmref: if the audit row cannot be
written the caller gets 503 with Retry-After and no data, so no read goes unaudited.
"""

import base64
import binascii
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Executable, Uuid, bindparam, cast, func, insert
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from app.core.errors import BadRequest, Issue, ServiceUnavailable
from app.db.base import utc_now
from app.db.session import execute_committed
from app.logging import current_request
from app.models.audit import ReadAudit, ReadAuditPublic, ReadAuditReferral
from app.models.user import User

logger = logging.getLogger("pharmref.audit")


def record_read(
    *,
    session: Session,
    caller: User,
    method: str,
    route: str,
    referral_ids: Sequence[uuid.UUID],
) -> None:
    """Write who read which referrals through which route (with the request's ids) and commit."""
    ids = list(dict.fromkeys(referral_ids))
    request = current_request()
    entry = {
        "at": utc_now(),
        "actor_subject": caller.subject[:200],
        "actor_org": caller.org,
        "actor_role": caller.role,
        "method": method,
        "route": route[:200],
        "request_id": request.request_id if request else None,
        "correlation_id": request.correlation_id if request else None,
        "referral_count": len(ids),
    }
    try:
        if session.get_bind().dialect.name == "postgresql":
            # one statement, committed (on its own, between transactions) before this returns
            execute_committed(session, _INSERT_READ_WITH_REFERRALS, {**entry, "referral_ids": ids})
        else:
            audit_id = session.execute(_INSERT_READ, entry).scalar_one()
            if ids:
                session.execute(
                    _INSERT_READ_REFERRAL,
                    [
                        {"read_audit_id": audit_id, "referral_id": referral_id}
                        for referral_id in ids
                    ],
                )
            session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        logger.error("read audit not written for %s %s: %s", method, route, type(exc).__name__)
        raise ServiceUnavailable(
            "The read could not be audited, so no data was returned; retry shortly.",
            headers={"Retry-After": "2"},
        ) from exc


# Built once: a statement made per request spent more CPU on its construction and cache key than
# on its round trip.
_read_audit = ReadAudit.__table__  # type: ignore[attr-defined]
_read_audit_referral = ReadAuditReferral.__table__  # type: ignore[attr-defined]
_INSERT_READ = (
    insert(_read_audit)
    .values({c.name: bindparam(c.name) for c in _read_audit.c if c.name != "id"})
    .returning(_read_audit.c.id)
)
_INSERT_READ_REFERRAL = insert(_read_audit_referral)


def _insert_read_with_referrals() -> Executable:
    """PostgreSQL: the read_audit row and its read_audit_referral rows in one statement (one
    round trip): `WITH entry AS (INSERT ... RETURNING id) INSERT ... SELECT id, unnest(ids)`."""
    entry = _INSERT_READ.cte("entry")
    referral_ids = cast(bindparam("referral_ids"), postgresql.ARRAY(Uuid()))
    return insert(_read_audit_referral).from_select(
        ["read_audit_id", "referral_id"], select(entry.c.id, func.unnest(referral_ids))
    )


_INSERT_READ_WITH_REFERRALS = _insert_read_with_referrals()


@dataclass(frozen=True, slots=True)
class ReadFilter:
    referral_id: uuid.UUID | None = None
    org: str | None = None
    subject: str | None = None
    at_from: datetime | None = None  # inclusive
    at_to: datetime | None = None  # exclusive


def encode_cursor(audit_id: int) -> str:
    return base64.urlsafe_b64encode(str(audit_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.isdigit():
            raise ValueError("not an id")
        return int(text)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise BadRequest(
            "The paging cursor is not valid.",
            issues=[Issue("invalid", "Use next_cursor from the previous page.", "cursor")],
        ) from exc


def list_reads(
    *, session: Session, filters: ReadFilter, cursor: str | None, limit: int
) -> tuple[list[ReadAuditPublic], str | None]:
    """Recorded reads, newest first, keyset paged on the id."""
    query = select(ReadAudit)
    if filters.referral_id is not None:
        query = query.where(
            col(ReadAudit.id).in_(
                select(ReadAuditReferral.read_audit_id).where(
                    ReadAuditReferral.referral_id == filters.referral_id
                )
            )
        )
    if filters.org is not None:
        query = query.where(ReadAudit.actor_org == filters.org)
    if filters.subject is not None:
        query = query.where(ReadAudit.actor_subject == filters.subject)
    if filters.at_from is not None:
        query = query.where(col(ReadAudit.at) >= filters.at_from)
    if filters.at_to is not None:
        query = query.where(col(ReadAudit.at) < filters.at_to)
    if cursor is not None:
        query = query.where(col(ReadAudit.id) < decode_cursor(cursor))
    rows = session.exec(query.order_by(col(ReadAudit.id).desc()).limit(limit + 1)).all()
    page = rows[:limit]
    referrals: dict[int, list[uuid.UUID]] = {row.id: [] for row in page if row.id is not None}
    if referrals:
        for audit_id, referral_id in session.exec(
            select(ReadAuditReferral.read_audit_id, ReadAuditReferral.referral_id)
            .where(col(ReadAuditReferral.read_audit_id).in_(list(referrals)))
            .order_by(col(ReadAuditReferral.read_audit_id), col(ReadAuditReferral.referral_id))
        ):
            referrals[audit_id].append(referral_id)
    data = [
        ReadAuditPublic(
            **row.model_dump(exclude={"referral_count"}),
            referral_ids=referrals.get(row.id or 0, []),
        )
        for row in page
    ]
    last = page[-1].id if page else None
    next_cursor = encode_cursor(last) if len(rows) > limit and last is not None else None
    return data, next_cursor
