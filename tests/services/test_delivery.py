"""Push delivery: the signed sender (respx), claiming and leases, retries, dead letters, and an
end-to-end run against a real HTTP receiver on loopback proving exactly-once effect."""

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.core.config import settings
from app.db.base import utc_now
from app.models.delivery import DeliveryStatus, Endpoint, MessageFormat, OutboxMessage
from app.models.event import ReferralEvent
from app.models.referral import InboundMessage, Referral
from app.models.rollup import UptakeRollup
from app.services import delivery
from app.services.outbox import ROUTINE, URGENT, enqueue
from tests.factories import make_referral

SECRET = "s" * 40


# ---- a committed world (the worker uses its own sessions) -----------------------------------------


@pytest.fixture
def world(engine: Engine) -> Iterator[dict[str, Any]]:
    """A referral and an endpoint committed for real; everything is removed afterwards."""
    made: dict[str, Any] = {}
    _wipe_outbox(engine)
    with Session(engine, expire_on_commit=False) as session:
        referral = make_referral(session)
        made["referral"] = referral
    yield made
    _wipe_outbox(engine)
    with Session(engine) as session:
        session.execute(delete(ReferralEvent).where(ReferralEvent.referral_id == referral.id))  # type: ignore[arg-type]
        session.execute(delete(InboundMessage).where(InboundMessage.referral_id == referral.id))  # type: ignore[arg-type]
        session.execute(delete(Referral).where(Referral.id == referral.id))  # type: ignore[arg-type]
        session.execute(delete(UptakeRollup))
        session.commit()


def _wipe_outbox(engine: Engine) -> None:
    """Delivery tests commit for real; no other test leaves committed outbox rows or endpoints."""
    with Session(engine) as session:
        session.execute(delete(OutboxMessage))
        session.execute(delete(Endpoint))
        session.commit()


def add_endpoint(engine: Engine, url: str, fmt: MessageFormat = MessageFormat.R4) -> Endpoint:
    with Session(engine, expire_on_commit=False) as session:
        endpoint = Endpoint(org_ods="A81001", url=url, format=fmt, secret=SECRET)
        session.add(endpoint)
        session.commit()
        return endpoint


def enqueue_committed(
    engine: Engine, referral: Referral, kind: str = "summary", priority: int = ROUTINE
) -> None:
    with Session(engine) as session:
        enqueue(
            session=session,
            referral=referral,
            kind=kind,
            priority=priority,
            render=lambda fmt: json.dumps({"kind": kind, "format": fmt}),
        )
        session.commit()


def messages(engine: Engine, referral: Referral) -> list[OutboxMessage]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(OutboxMessage).where(OutboxMessage.referral_id == referral.id)
            ).all()
        )


# ---- the sender ----------------------------------------------------------------------------------------


def outbox_row(body: str = '{"a": 1}') -> tuple[OutboxMessage, Endpoint]:
    endpoint = Endpoint(
        org_ods="A81001", url="https://gp.example/inbox", format=MessageFormat.R4, secret=SECRET
    )
    message = OutboxMessage(
        endpoint_id=endpoint.id,
        recipient_ods="A81001",
        referral_id=uuid.uuid4(),
        kind="summary",
        format=MessageFormat.R4,
        body=body,
        status=DeliveryStatus.SENDING,
    )
    return message, endpoint


@respx.mock
def test_send_signs_body_and_timestamp_with_hmac_sha256() -> None:
    route = respx.post("https://gp.example/inbox").mock(return_value=httpx.Response(200))
    message, endpoint = outbox_row()
    now = datetime.fromtimestamp(1_800_000_000, tz=utc_now().tzinfo)

    with httpx.Client() as client:
        result = delivery.send(client, message, endpoint, now=now)

    assert result == delivery.SendResult(True, False, 200, None)
    request = route.calls.last.request
    assert request.headers["Idempotency-Key"] == str(message.id)
    assert request.headers["X-Pharmref-Timestamp"] == "1800000000"
    expected = hmac.new(
        SECRET.encode(), b"1800000000." + message.body.encode(), hashlib.sha256
    ).hexdigest()
    assert request.headers["X-Pharmref-Signature"] == f"v1={expected}"
    assert request.headers["Content-Type"] == "application/fhir+json"
    assert request.content == message.body.encode()


@respx.mock
@pytest.mark.parametrize(
    ("response", "transient"),
    [
        (httpx.Response(503), True),
        (httpx.Response(500), True),
        (httpx.Response(429), True),
        (httpx.Response(400), False),
        (httpx.Response(404), False),
        (httpx.Response(410), False),
    ],
)
def test_send_classifies_failures(response: httpx.Response, transient: bool) -> None:
    respx.post("https://gp.example/inbox").mock(return_value=response)
    message, endpoint = outbox_row()

    with httpx.Client() as client:
        result = delivery.send(client, message, endpoint, now=utc_now())

    assert (result.delivered, result.transient, result.status_code) == (
        False,
        transient,
        response.status_code,
    )


@respx.mock
@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
def test_send_transport_errors_are_transient(error: Exception) -> None:
    respx.post("https://gp.example/inbox").mock(side_effect=error)
    message, endpoint = outbox_row()

    with httpx.Client() as client:
        result = delivery.send(client, message, endpoint, now=utc_now())

    assert (result.delivered, result.transient, result.status_code) == (False, True, None)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempts in range(1, 6):
        ceiling = settings.delivery_base_backoff_seconds * 2 ** (attempts - 1)
        for _ in range(20):
            assert ceiling / 2 <= delivery.backoff(attempts).total_seconds() <= ceiling
    assert delivery.backoff(40).total_seconds() <= settings.delivery_max_backoff_seconds


# ---- the outbox and the worker over the database --------------------------------------------------------


def test_enqueue_needs_an_endpoint_and_writes_one_row_per_endpoint(
    engine: Engine, world: dict[str, Any]
) -> None:
    referral = world["referral"]
    enqueue_committed(engine, referral)
    assert messages(engine, referral) == []

    add_endpoint(engine, "https://gp.example/a")
    add_endpoint(engine, "https://gp.example/b", MessageFormat.UPDATE_RECORD)
    enqueue_committed(engine, referral)

    rows = messages(engine, referral)
    assert sorted(r.format for r in rows) == sorted([MessageFormat.UPDATE_RECORD, MessageFormat.R4])
    assert {r.status for r in rows} == {DeliveryStatus.PENDING}


def test_enqueue_rolled_back_with_its_change_sends_nothing(
    engine: Engine, world: dict[str, Any]
) -> None:
    referral = world["referral"]
    add_endpoint(engine, "https://gp.example/a")

    with Session(engine) as session:
        enqueue(
            session=session,
            referral=referral,
            kind="summary",
            priority=ROUTINE,
            render=lambda _fmt: "{}",
        )
        session.rollback()

    assert messages(engine, referral) == []


@respx.mock
def test_worker_sends_urgent_first_and_marks_delivered(
    engine: Engine, world: dict[str, Any]
) -> None:
    referral = world["referral"]
    add_endpoint(engine, "https://gp.example/inbox")
    enqueue_committed(engine, referral, kind="summary", priority=ROUTINE)
    enqueue_committed(engine, referral, kind="urgent-escalation", priority=URGENT)
    route = respx.post("https://gp.example/inbox").mock(return_value=httpx.Response(202))

    with httpx.Client() as client:
        sent = delivery.run_once(engine=engine, client=client)

    assert sent == 2
    kinds = [call.request.headers["X-Pharmref-Message-Kind"] for call in route.calls]
    assert kinds == ["urgent-escalation", "summary"]
    assert {r.status for r in messages(engine, referral)} == {DeliveryStatus.DELIVERED}


@respx.mock
def test_worker_retries_transient_then_dead_letters(
    engine: Engine, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    referral = world["referral"]
    monkeypatch.setattr(settings, "delivery_max_attempts", 3)
    add_endpoint(engine, "https://gp.example/inbox")
    enqueue_committed(engine, referral)
    respx.post("https://gp.example/inbox").mock(return_value=httpx.Response(503))
    clock = [utc_now()]

    with httpx.Client() as client:
        for _ in range(3):
            assert delivery.run_once(engine=engine, client=client, clock=lambda: clock[0]) == 1
            row = messages(engine, referral)[0]
            clock[0] = clock[0] + timedelta(hours=2)

    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.DEAD, 3, 503)


@respx.mock
def test_worker_waits_for_backoff_before_retrying(engine: Engine, world: dict[str, Any]) -> None:
    referral = world["referral"]
    add_endpoint(engine, "https://gp.example/inbox")
    enqueue_committed(engine, referral)
    respx.post("https://gp.example/inbox").mock(return_value=httpx.Response(500))
    now = utc_now()

    with httpx.Client() as client:
        assert delivery.run_once(engine=engine, client=client, clock=lambda: now) == 1
        assert delivery.run_once(engine=engine, client=client, clock=lambda: now) == 0

    row = messages(engine, referral)[0]
    assert row.status is DeliveryStatus.PENDING
    assert row.next_attempt_at > now


@respx.mock
def test_permanent_failure_is_dead_at_once_and_can_be_retried(
    engine: Engine, world: dict[str, Any]
) -> None:
    referral = world["referral"]
    add_endpoint(engine, "https://gp.example/inbox")
    enqueue_committed(engine, referral)
    respx.post("https://gp.example/inbox").mock(
        side_effect=[httpx.Response(400), httpx.Response(200)]
    )

    with httpx.Client() as client:
        delivery.run_once(engine=engine, client=client)
        assert messages(engine, referral)[0].status is DeliveryStatus.DEAD
        with Session(engine) as session:
            from app.models.enums import Role
            from app.models.user import User

            delivery.retry_delivery(
                session=session,
                caller=User(subject="t", org="A81001", role=Role.GP_PRACTICE),
                message_id=messages(engine, referral)[0].id,
            )
        delivery.run_once(engine=engine, client=client)

    assert messages(engine, referral)[0].status is DeliveryStatus.DELIVERED


def test_claimed_row_is_not_claimed_again_until_its_lease_expires(
    engine: Engine, world: dict[str, Any]
) -> None:
    referral = world["referral"]
    add_endpoint(engine, "https://gp.example/inbox")
    enqueue_committed(engine, referral)
    now = utc_now()

    with Session(engine) as first, Session(engine) as second:
        assert len(delivery.claim(session=first, now=now, limit=10)) == 1
        assert delivery.claim(session=second, now=now, limit=10) == []
        later = now + timedelta(seconds=settings.delivery_lease_seconds + 1)
        assert len(delivery.claim(session=second, now=later, limit=10)) == 1


# ---- end to end: a real receiver on loopback ------------------------------------------------------------


class Receiver:
    """An HTTP server that applies each Idempotency-Key's effect once and can misbehave on cue."""

    def __init__(self) -> None:
        self.effects: dict[str, int] = {}
        self.requests = 0
        self.script: list[str] = []  # "503", "slow", then normal
        self.verified = True
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                step = receiver.script.pop(0) if receiver.script else "ok"
                expected = delivery.signature(SECRET, self.headers["X-Pharmref-Timestamp"], body)
                receiver.verified &= hmac.compare_digest(
                    expected, self.headers["X-Pharmref-Signature"]
                )
                if step == "503":
                    self.send_response(503)
                    self.end_headers()
                    return
                key = self.headers["Idempotency-Key"]
                receiver.effects[key] = (
                    receiver.effects.get(key, 0) + 1
                    if key not in receiver.effects
                    else receiver.effects[key]
                )
                if step == "slow":
                    threading.Event().wait(1.5)  # the sender times out; the effect has happened
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/inbox"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def drain(
    engine: Engine,
    referral: Referral,
    client: httpx.Client,
    clock: list[datetime],
    rounds: int = 10,
) -> None:
    for _ in range(rounds):
        delivery.run_once(engine=engine, client=client, clock=lambda: clock[0])
        if all(m.status is DeliveryStatus.DELIVERED for m in messages(engine, referral)):
            return
        clock[0] = clock[0] + timedelta(hours=2)


def test_end_to_end_503_twice_then_delivered_once(engine: Engine, world: dict[str, Any]) -> None:
    referral = world["referral"]
    with Receiver() as receiver:
        receiver.script = ["503", "503"]
        add_endpoint(engine, receiver.url)
        enqueue_committed(engine, referral)
        with httpx.Client(timeout=1.0) as client:
            drain(engine, referral, client, [utc_now()])

    row = messages(engine, referral)[0]
    assert (row.status, row.attempts) == (DeliveryStatus.DELIVERED, 3)
    assert receiver.requests == 3
    assert receiver.effects == {str(row.id): 1}
    assert receiver.verified


def test_end_to_end_timeout_then_resent_with_the_same_key(
    engine: Engine, world: dict[str, Any]
) -> None:
    referral = world["referral"]
    with Receiver() as receiver:
        receiver.script = ["slow"]
        add_endpoint(engine, receiver.url)
        enqueue_committed(engine, referral)
        with httpx.Client(timeout=0.5) as client:
            drain(engine, referral, client, [utc_now()])

    row = messages(engine, referral)[0]
    assert row.status is DeliveryStatus.DELIVERED
    assert receiver.requests == 2
    assert receiver.effects == {str(row.id): 1}


def test_end_to_end_worker_killed_between_send_and_record(
    engine: Engine, world: dict[str, Any]
) -> None:
    """The first worker claims and sends, then dies before recording: its lease runs out and the
    next worker sends the same message again; the receiver applies it once."""
    referral = world["referral"]
    with Receiver() as receiver:
        add_endpoint(engine, receiver.url)
        enqueue_committed(engine, referral)
        now = utc_now()
        with httpx.Client(timeout=1.0) as client:
            with Session(engine) as dying:
                for message, endpoint in delivery.claim(session=dying, now=now, limit=10):
                    assert delivery.send(client, message, endpoint, now=now).delivered
            # no record_result: the worker is gone
            assert messages(engine, referral)[0].status is DeliveryStatus.SENDING
            assert (
                delivery.run_once(engine=engine, client=client, clock=lambda: now) == 0
            )  # lease still held
            later = now + timedelta(seconds=settings.delivery_lease_seconds + 1)
            assert delivery.run_once(engine=engine, client=client, clock=lambda: later) == 1

    row = messages(engine, referral)[0]
    assert (row.status, row.attempts) == (DeliveryStatus.DELIVERED, 2)
    assert receiver.requests == 2
    assert receiver.effects == {str(row.id): 1}


def test_readme_signature_worked_example() -> None:
    body = b'{"resourceType":"Bundle"}'

    assert delivery.signature("a-long-random-shared-secret-of-32-chars", "1800000000", body) == (
        "v1=ffc6505072c10da790e4d5775539b2889fec0c30917b4905fd4c520abce52d0e"
    )
