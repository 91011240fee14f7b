"""The delivery worker: claims outbox rows, sends them, records the result.

Claiming is a compare-and-set UPDATE on each row (pending and due, or sending with an expired
lease), so any number of workers on any number of hosts never send one row at the same time; on
PostgreSQL the candidate SELECT also uses FOR UPDATE SKIP LOCKED so workers do not queue on each
other. A worker killed between sending and recording leaves the row `sending`; when its lease
expires another worker sends it again with the same Idempotency-Key, so the receiver's effect
happens exactly once. 5xx, timeouts and connection errors retry with exponential backoff and
jitter; 4xx is permanent; after the configured attempts a row is dead-lettered (`dead`).

Each request carries:
- `Idempotency-Key`: the outbox message id (stable across retries);
- `X-Pharmref-Timestamp`: Unix seconds;
- `X-Pharmref-Signature`: `v1=` + hex HMAC-SHA256 of `"{timestamp}.{body}"` with the endpoint secret.
"""

import hashlib
import hmac
import logging
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import ColumnElement, and_, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.core.config import settings
from app.core.errors import Conflict, Forbidden, Issue, NotFound, Unprocessable
from app.db.base import utc_now
from app.models.delivery import DeliveryStatus, Endpoint, MessageFormat, OutboxMessage
from app.models.enums import Role
from app.models.user import User
from app.services import organisations as organisation_service

logger = logging.getLogger("pharmref.delivery")

CONTENT_TYPES = {
    MessageFormat.R4: "application/fhir+json",
    MessageFormat.UPDATE_RECORD: "application/fhir+json",
}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


@dataclass(frozen=True, slots=True)
class SendResult:
    delivered: bool
    transient: bool
    status_code: int | None
    error: str | None


def send(
    client: httpx.Client, message: OutboxMessage, endpoint: Endpoint, *, now: datetime
) -> SendResult:
    body = message.body.encode()
    timestamp = str(int(now.timestamp()))
    headers = {
        "Content-Type": CONTENT_TYPES[message.format],
        "Idempotency-Key": str(message.id),
        "X-Pharmref-Timestamp": timestamp,
        "X-Pharmref-Signature": signature(endpoint.secret, timestamp, body),
        "X-Pharmref-Message-Kind": message.kind,
    }
    try:
        response = client.post(endpoint.url, content=body, headers=headers)
    except httpx.TimeoutException:
        return SendResult(False, True, None, "timeout")
    except httpx.TransportError as exc:
        return SendResult(False, True, None, f"connection error: {type(exc).__name__}")
    if response.is_success:
        return SendResult(True, False, response.status_code, None)
    transient = response.status_code >= 500 or response.status_code in (408, 429)
    return SendResult(False, transient, response.status_code, f"HTTP {response.status_code}")


def backoff(attempts: int) -> timedelta:
    """Exponential backoff with full jitter, capped."""
    ceiling = min(
        settings.delivery_max_backoff_seconds,
        settings.delivery_base_backoff_seconds * 2 ** (attempts - 1),
    )
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def _claimable(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(
            col(OutboxMessage.status) == DeliveryStatus.PENDING,
            col(OutboxMessage.next_attempt_at) <= now,
        ),
        and_(
            col(OutboxMessage.status) == DeliveryStatus.SENDING,
            col(OutboxMessage.locked_until) < now,
        ),
    )


def claim(*, session: Session, now: datetime, limit: int) -> list[tuple[OutboxMessage, Endpoint]]:
    """Claim up to `limit` due messages, urgent first, for this worker (one commit)."""
    candidates = session.exec(
        select(OutboxMessage.id)
        .where(_claimable(now))
        .order_by(col(OutboxMessage.priority), col(OutboxMessage.created_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    claimed: list[uuid.UUID] = []
    lease = now + timedelta(seconds=settings.delivery_lease_seconds)
    for message_id in candidates:
        result = session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.id) == message_id, _claimable(now))
            .values(
                status=DeliveryStatus.SENDING,
                locked_until=lease,
                attempts=OutboxMessage.attempts + 1,
            )
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(message_id)
    session.commit()
    if not claimed:
        return []
    rows = session.exec(
        select(OutboxMessage, Endpoint)
        .join(Endpoint, col(Endpoint.id) == col(OutboxMessage.endpoint_id))
        .where(col(OutboxMessage.id).in_(claimed))
        .order_by(col(OutboxMessage.priority), col(OutboxMessage.created_at))
    ).all()
    claimed_rows = [(message, endpoint) for message, endpoint in rows]
    session.expunge_all()
    session.commit()  # hold no transaction open while sending
    return claimed_rows


def record_result(
    *, session: Session, message: OutboxMessage, result: SendResult, now: datetime
) -> None:
    """Record one send's outcome, unless another worker has re-claimed the row meanwhile (one commit)."""
    values: dict[str, object] = {
        "last_status_code": result.status_code,
        "last_error": result.error,
        "locked_until": None,
    }
    if result.delivered:
        values |= {"status": DeliveryStatus.DELIVERED, "delivered_at": now}
    elif result.transient and message.attempts < settings.delivery_max_attempts:
        values |= {
            "status": DeliveryStatus.PENDING,
            "next_attempt_at": now + backoff(message.attempts),
        }
    else:
        values |= {"status": DeliveryStatus.DEAD}
    session.execute(
        update(OutboxMessage)
        .where(
            col(OutboxMessage.id) == message.id,
            col(OutboxMessage.status) == DeliveryStatus.SENDING,
            col(OutboxMessage.attempts) == message.attempts,
        )
        .values(**values)
    )
    session.commit()


def run_once(
    *,
    engine: Engine,
    client: httpx.Client,
    clock: Callable[[], datetime] = utc_now,
    limit: int | None = None,
) -> int:
    """Claim one batch, send it, record the results; returns how many were sent."""
    with Session(engine, expire_on_commit=False) as session:
        batch = claim(session=session, now=clock(), limit=limit or settings.delivery_batch_size)
        for message, endpoint in batch:
            result = send(client, message, endpoint, now=clock())
            if not result.delivered:
                logger.warning(
                    "delivery %s to %s failed: %s", message.id, endpoint.org_ods, result.error
                )
            record_result(session=session, message=message, result=result, now=clock())
    return len(batch)


def make_client() -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(settings.delivery_timeout_seconds), follow_redirects=False
    )


def run_worker(*, engine: Engine, stop: threading.Event, interval: float = 1.0) -> None:
    """Deliver until `stop` is set; idle polls wait `interval` seconds."""
    with make_client() as client:
        while not stop.is_set():
            try:
                sent = run_once(engine=engine, client=client)
            except Exception:
                logger.exception("delivery batch failed; retrying")
                sent = 0
            if not sent:
                stop.wait(interval)


# ---- state for the API ----------------------------------------------------------------------------


def list_deliveries(
    *, session: Session, caller: User, status: DeliveryStatus | None, limit: int
) -> list[OutboxMessage]:
    query = select(OutboxMessage)
    if caller.role is not Role.ADMIN:
        query = query.where(OutboxMessage.recipient_ods == caller.org)
    if status is not None:
        query = query.where(OutboxMessage.status == status)
    return list(
        session.exec(query.order_by(col(OutboxMessage.created_at).desc()).limit(limit)).all()
    )


def retry_delivery(*, session: Session, caller: User, message_id: uuid.UUID) -> OutboxMessage:
    """Put a dead (or failing) message back in the queue now, with a fresh attempt budget."""
    message = session.get(OutboxMessage, message_id)
    if message is None or (caller.role is not Role.ADMIN and message.recipient_ods != caller.org):
        raise NotFound("No delivery with that id.")
    if message.status is DeliveryStatus.DELIVERED:
        raise Conflict("The message was delivered; there is nothing to retry.")
    message.status = DeliveryStatus.PENDING
    message.attempts = 0
    message.next_attempt_at = utc_now()
    message.locked_until = None
    session.add(message)
    session.commit()
    session.refresh(message)
    return message


LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def register_endpoint(
    *, session: Session, caller: User, url: str, fmt: MessageFormat, secret: str
) -> Endpoint:
    """A referrer's system registers where pharmref pushes summaries and events to it."""
    parsed = httpx.URL(url)
    loopback = parsed.host in LOOPBACK_HOSTS
    if parsed.scheme != "https" and not (
        parsed.scheme == "http" and loopback and settings.delivery_allow_http
    ):
        raise Unprocessable(
            "Endpoints must use https (plain http only to loopback, for local testing).",
            issues=[Issue("business-rule", "Insecure endpoint URL.", "url")],
        )
    organisation = organisation_service.get_organisation(session=session, ods_code=caller.org)
    if organisation is None or not organisation.active:
        raise Forbidden("The caller's organisation is not an active directory entry.")
    endpoint = Endpoint(org_ods=caller.org, url=url, format=fmt, secret=secret)
    session.add(endpoint)
    session.commit()
    session.refresh(endpoint)
    return endpoint


def list_endpoints(*, session: Session, caller: User) -> list[Endpoint]:
    return list(
        session.exec(
            select(Endpoint)
            .where(Endpoint.org_ods == caller.org, col(Endpoint.active).is_(True))
            .order_by(col(Endpoint.created_at))
        ).all()
    )


def deactivate_endpoint(*, session: Session, caller: User, endpoint_id: uuid.UUID) -> None:
    endpoint = session.get(Endpoint, endpoint_id)
    if endpoint is None or endpoint.org_ods != caller.org or not endpoint.active:
        raise NotFound("No endpoint with that id.")
    endpoint.active = False
    session.add(endpoint)
    session.commit()
