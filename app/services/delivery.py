"""The delivery worker: claims outbox rows, sends them, records the results.

A batch is claimed in one transaction: SELECTs of due rows (sending with an expired lease, then
pending and due, urgent first), then one compare-and-set UPDATE ... RETURNING of exactly those
rows that repeats the claimable condition, so any number of workers in any number of processes
and hosts never send one row at the same time. On PostgreSQL the SELECTs also take the rows FOR
UPDATE SKIP LOCKED, so workers take disjoint batches instead of queueing on each other; SQLite
has no row locks (the clause is left out) but admits one writer at a time, and the
compare-and-set skips a row another worker claimed in between.

The batch is sent with one pooled httpx client, up to `delivery_concurrency` requests in flight,
urgent messages before routine ones, and the results are recorded in one transaction, each row
only if it is still this worker's claim (`sending` with the same attempt count). A worker killed
between sending and recording leaves its rows `sending`; when their lease expires another worker
sends them again with the same Idempotency-Key, so the receiver's effect happens exactly once.
The lease must outlast a batch: `delivery_timeout_seconds` x ceil(batch size / concurrency) is
the longest a healthy worker holds one (a shorter lease only costs duplicate sends, which the
Idempotency-Key absorbs); so does a claim or result that a PostgreSQL crash loses, which is why
the worker's own commits do not wait for the WAL flush. 5xx, 408, 429, timeouts and connection
errors retry with exponential backoff and jitter; other 4xx are permanent; after the configured
attempts a row is dead-lettered.

Each request carries:
- `Idempotency-Key`: the outbox message id (stable across retries);
- `X-Pharmref-Timestamp`: Unix seconds;
- `X-Pharmref-Signature`: `v1=` + hex HMAC-SHA256 of `"{timestamp}.{body}"` with the endpoint secret.
"""

import hashlib
import hmac
import logging
import math
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby

import anyio
import httpx
from sqlalchemy import ColumnElement, and_, or_, text, update
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

USER_AGENT = "pharmref-delivery/1"

Claimed = tuple[OutboxMessage, Endpoint]


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
    # Built here rather than by client.post: the client's per-request merging of base URL, default
    # headers, query parameters and cookies (none of which a delivery uses) costs a fifth of a
    # send's CPU. client.send still applies its pool, proxies and mounts.
    request = httpx.Request(
        "POST",
        endpoint.url,
        content=body,
        headers={
            "Content-Type": CONTENT_TYPES[message.format],
            "User-Agent": USER_AGENT,
            "Idempotency-Key": str(message.id),
            "X-Pharmref-Timestamp": timestamp,
            "X-Pharmref-Signature": signature(endpoint.secret, timestamp, body),
            "X-Pharmref-Message-Kind": message.kind,
        },
        extensions={"timeout": client.timeout.as_dict()},
    )
    try:
        response = client.send(request)
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


def _without_waiting_for_the_wal_flush(session: Session) -> None:
    """The worker's own bookkeeping (claims and results) commits without waiting for PostgreSQL
    to flush its WAL: if a crash loses such a commit, the row is sent once more with the same
    Idempotency-Key, which the receiver absorbs. The outbox rows themselves are written by the
    change they report, with the usual durable commit, so nothing committed is lost."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit = off"))


def _candidates(session: Session, now: datetime, limit: int) -> list[uuid.UUID]:
    """Rows whose lease ran out (their worker died or hung), then pending rows that are due,
    urgent first and longest due first. Two queries, each an ordered walk of the (status,
    priority, next_attempt_at) index that stops at `limit`, where one OR of the two would sort
    the whole queue on every claim."""
    expired = session.exec(
        select(OutboxMessage.id)
        .where(
            col(OutboxMessage.status) == DeliveryStatus.SENDING,
            col(OutboxMessage.locked_until) < now,
        )
        .order_by(col(OutboxMessage.priority), col(OutboxMessage.locked_until))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if len(expired) >= limit:
        return list(expired)
    pending = session.exec(
        select(OutboxMessage.id)
        .where(
            col(OutboxMessage.status) == DeliveryStatus.PENDING,
            col(OutboxMessage.next_attempt_at) <= now,
        )
        .order_by(col(OutboxMessage.priority), col(OutboxMessage.next_attempt_at))
        .limit(limit - len(expired))
        .with_for_update(skip_locked=True)
    ).all()
    return [*expired, *pending]


def claim(*, session: Session, now: datetime, limit: int) -> list[Claimed]:
    """Claim up to `limit` due messages, urgent first, for this worker (one commit)."""
    _without_waiting_for_the_wal_flush(session)
    claimed: list[Claimed] = []
    if candidates := _candidates(session, now, limit):
        messages = session.scalars(
            update(OutboxMessage)
            .where(col(OutboxMessage.id).in_(candidates), _claimable(now))
            .values(
                status=DeliveryStatus.SENDING,
                locked_until=now + timedelta(seconds=settings.delivery_lease_seconds),
                attempts=OutboxMessage.attempts + 1,
            )
            .returning(OutboxMessage)
            .execution_options(synchronize_session=False, populate_existing=True)
        ).all()
        if messages:
            endpoints = {
                endpoint.id: endpoint
                for endpoint in session.exec(
                    select(Endpoint).where(
                        col(Endpoint.id).in_({message.endpoint_id for message in messages})
                    )
                )
            }
            claimed = [
                (message, endpoints[message.endpoint_id])
                for message in sorted(messages, key=lambda m: (m.priority, m.next_attempt_at))
            ]
    session.expunge_all()  # plain objects from here: no lazy reload while sending
    session.commit()
    return claimed


def _send_safely(client: httpx.Client, row: Claimed, clock: Callable[[], datetime]) -> SendResult:
    """One send that cannot take the batch down with it: anything unexpected counts as a
    transient failure of this message (logged), so the rest of the batch is still recorded."""
    message, endpoint = row
    try:
        result = send(client, message, endpoint, now=clock())
    except Exception as exc:
        logger.exception("delivery %s to %s raised", message.id, endpoint.org_ods)
        result = SendResult(False, True, None, f"error: {type(exc).__name__}")
    if not result.delivered:
        logger.warning("delivery %s to %s failed: %s", message.id, endpoint.org_ods, result.error)
    return result


def send_batch(
    *,
    client: httpx.Client,
    batch: Sequence[Claimed],
    clock: Callable[[], datetime] = utc_now,
    pool: Executor | None = None,
) -> list[SendResult]:
    """Send a claimed batch (ordered by priority): each priority's messages go out, up to the
    pool's size at once, before the next priority's start. Without a pool, one at a time."""
    results: list[SendResult] = []
    for _priority, rows in groupby(batch, key=lambda row: row[0].priority):
        group = list(rows)
        if pool is None or len(group) == 1:
            results.extend(_send_safely(client, row, clock) for row in group)
        else:
            results.extend(pool.map(lambda row: _send_safely(client, row, clock), group))
    return results


def _failure_values(message: OutboxMessage, result: SendResult, now: datetime) -> dict[str, object]:
    values: dict[str, object] = {
        "last_status_code": result.status_code,
        "last_error": result.error,
        "locked_until": None,
    }
    if result.transient and message.attempts < settings.delivery_max_attempts:
        return values | {
            "status": DeliveryStatus.PENDING,
            "next_attempt_at": now + backoff(message.attempts),
        }
    return values | {"status": DeliveryStatus.DEAD}


def record_results(
    *, session: Session, sent: Sequence[tuple[OutboxMessage, SendResult]], now: datetime
) -> None:
    """Record a batch's outcomes in one transaction. Each row changes only while it is still
    this worker's claim (`sending` with the attempt count the claim gave it): a row whose lease
    ran out and that another worker re-claimed meanwhile is that worker's to record."""
    _without_waiting_for_the_wal_flush(session)
    delivered: defaultdict[tuple[int, int | None], list[uuid.UUID]] = defaultdict(list)
    for message, result in sent:
        if result.delivered:
            delivered[(message.attempts, result.status_code)].append(message.id)
            continue
        session.execute(
            update(OutboxMessage)
            .where(
                col(OutboxMessage.id) == message.id,
                col(OutboxMessage.status) == DeliveryStatus.SENDING,
                col(OutboxMessage.attempts) == message.attempts,
            )
            .values(**_failure_values(message, result, now))
            .execution_options(synchronize_session=False)
        )
    for (attempts, status_code), ids in delivered.items():
        session.execute(
            update(OutboxMessage)
            .where(
                col(OutboxMessage.id).in_(ids),
                col(OutboxMessage.status) == DeliveryStatus.SENDING,
                col(OutboxMessage.attempts) == attempts,
            )
            .values(
                status=DeliveryStatus.DELIVERED,
                delivered_at=now,
                locked_until=None,
                last_status_code=status_code,
                last_error=None,
            )
            .execution_options(synchronize_session=False)
        )
    session.commit()


def run_once(
    *,
    engine: Engine,
    client: httpx.Client,
    clock: Callable[[], datetime] = utc_now,
    limit: int | None = None,
    pool: Executor | None = None,
) -> int:
    """Claim one batch, send it, record the results; returns how many were sent."""
    with Session(engine, expire_on_commit=False) as session:
        batch = claim(session=session, now=clock(), limit=limit or settings.delivery_batch_size)
        if not batch:
            return 0
        results = send_batch(client=client, batch=batch, clock=clock, pool=pool)
        record_results(
            session=session,
            sent=[(message, result) for (message, _), result in zip(batch, results, strict=True)],
            now=clock(),
        )
    return len(batch)


def make_client() -> httpx.Client:
    """One client for every send: its pool keeps a connection per in-flight request alive."""
    connections = settings.delivery_concurrency
    return httpx.Client(
        timeout=httpx.Timeout(settings.delivery_timeout_seconds),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        follow_redirects=False,
    )


@contextmanager
def sender() -> Iterator[tuple[httpx.Client, Executor | None]]:
    """The pooled client and the bounded pool of sending threads a worker shares across batches."""
    _warn_if_lease_is_short()
    concurrency = settings.delivery_concurrency
    with make_client() as client:
        if concurrency == 1:
            yield client, None
            return
        with ThreadPoolExecutor(concurrency, thread_name_prefix="pharmref-delivery") as pool:
            yield client, pool


def _warn_if_lease_is_short() -> None:
    waves = math.ceil(settings.delivery_batch_size / settings.delivery_concurrency)
    longest = settings.delivery_timeout_seconds * waves
    if settings.delivery_lease_seconds <= longest:
        logger.warning(
            "PHARMREF_DELIVERY_LEASE_SECONDS (%s) is not above the longest a batch can take "
            "(%s s: timeout x %d waves): slow receivers will get duplicate sends.",
            settings.delivery_lease_seconds,
            longest,
            waves,
        )


def drain(*, engine: Engine) -> int:
    """Deliver batch after batch until nothing is due; returns how many were sent."""
    total = 0
    with sender() as (client, pool):
        while sent := run_once(engine=engine, client=client, pool=pool):
            total += sent
    return total


def run_worker(*, engine: Engine, stop: threading.Event, interval: float) -> None:
    """Deliver until `stop` is set; a batch in hand is finished and recorded first. Idle polls
    wait `interval` seconds; a failing batch is logged and retried after `interval`."""
    with sender() as (client, pool):
        while not stop.is_set():
            try:
                sent = run_once(engine=engine, client=client, pool=pool)
            except Exception:
                logger.exception("delivery batch failed; retrying")
                sent = 0
            if not sent:
                stop.wait(interval)


async def deliver_periodically(*, engine: Engine, interval: float) -> None:
    """The in-process worker (PHARMREF_DELIVERY_IN_PROCESS): batches run in a worker thread from
    the same limiter as requests (the sessions are synchronous), back to back while there is
    work, then every `interval` seconds, until cancelled; cancelling waits for the batch in hand
    to be recorded. Safe in every API process at once: claims are compare-and-set."""
    with sender() as (client, pool):
        while True:
            try:
                sent = await anyio.to_thread.run_sync(
                    lambda: run_once(engine=engine, client=client, pool=pool)
                )
            except Exception:
                logger.exception("delivery batch failed; retrying in %s seconds", interval)
                sent = 0
            if not sent:
                await anyio.sleep(interval)


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
