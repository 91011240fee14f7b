"""Push delivery: the signed sender (respx), claiming and leases, retries, dead letters, and an
end-to-end run against a real HTTP receiver on loopback proving exactly-once effect."""

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app import main
from app.core.config import Settings, settings
from app.db.base import utc_now
from app.models.delivery import DeliveryStatus, Endpoint, MessageFormat, OutboxMessage
from app.models.referral import Referral
from app.services import delivery
from app.services.outbox import ROUTINE, URGENT, enqueue
from tests.services.delivery_support import (
    SECRET,
    Receiver,
    add_endpoint,
    committed_referral,
    enqueue_committed,
    messages,
)

# ---- a committed world (the worker uses its own sessions) -----------------------------------------


@pytest.fixture
def world(engine: Engine) -> Iterator[dict[str, Any]]:
    """A referral committed for real; it and every outbox row and endpoint go afterwards."""
    with committed_referral(engine) as referral:
        yield {"referral": referral}


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


def test_claim_takes_expired_leases_first_then_due_messages_urgent_first_up_to_the_limit(
    engine: Engine, world: dict[str, Any]
) -> None:
    referral = world["referral"]
    add_endpoint(engine, "https://gp.example/inbox")
    enqueue_committed(engine, referral, kind="summary", priority=ROUTINE, times=3)
    enqueue_committed(engine, referral, kind="urgent-escalation", priority=URGENT)
    now = utc_now()
    later = now + timedelta(seconds=settings.delivery_lease_seconds + 1)

    with Session(engine) as dead, Session(engine) as alive:
        [(abandoned, _)] = delivery.claim(session=dead, now=now, limit=1)
        batch = delivery.claim(session=alive, now=later, limit=3)

    oldest_routine = sorted(
        (m for m in messages(engine, referral) if m.priority == ROUTINE),
        key=lambda m: m.next_attempt_at,
    )
    assert abandoned.kind == "urgent-escalation"
    assert [(m.id, m.attempts) for m, _ in batch] == [
        (abandoned.id, 2),
        (oldest_routine[0].id, 1),
        (oldest_routine[1].id, 1),
    ]
    assert {e.url for _, e in batch} == {"https://gp.example/inbox"}


def test_result_for_a_row_another_worker_reclaimed_is_left_to_that_worker(
    engine: Engine, world: dict[str, Any]
) -> None:
    """A slow worker whose lease ran out records nothing over the new claim's row; the new claim
    records as usual."""
    referral = world["referral"]
    add_endpoint(engine, "https://gp.example/inbox")
    enqueue_committed(engine, referral)
    now = utc_now()
    later = now + timedelta(seconds=settings.delivery_lease_seconds + 1)
    delivered = delivery.SendResult(True, False, 200, None)

    with Session(engine) as slow, Session(engine) as fresh:
        [(first, _)] = delivery.claim(session=slow, now=now, limit=10)
        [(second, _)] = delivery.claim(session=fresh, now=later, limit=10)
        delivery.record_results(session=slow, sent=[(first, delivered)], now=later)
        assert (messages(engine, referral)[0].status, first.attempts) == (
            DeliveryStatus.SENDING,
            1,
        )
        delivery.record_results(session=fresh, sent=[(second, delivered)], now=later)

    row = messages(engine, referral)[0]
    assert (row.status, row.attempts, row.locked_until) == (DeliveryStatus.DELIVERED, 2, None)


def test_worker_sends_a_batch_in_parallel_up_to_the_concurrency(
    engine: Engine, world: dict[str, Any]
) -> None:
    referral = world["referral"]
    with Receiver() as receiver, ThreadPoolExecutor(4) as pool:
        receiver.hold_until_in_flight = 4  # each request waits until four are in flight
        add_endpoint(engine, receiver.url)
        enqueue_committed(engine, referral, times=12)
        with httpx.Client(timeout=5.0) as client:
            sent = delivery.run_once(engine=engine, client=client, pool=pool, limit=20)

    rows = messages(engine, referral)
    assert sent == 12
    assert receiver.max_in_flight == 4
    assert receiver.applied == {str(row.id): 1 for row in rows}
    assert {row.status for row in rows} == {DeliveryStatus.DELIVERED}


@respx.mock
def test_parallel_batch_sends_every_urgent_message_before_any_routine_one(
    engine: Engine, world: dict[str, Any]
) -> None:
    referral = world["referral"]
    add_endpoint(engine, "https://gp.example/inbox")
    enqueue_committed(engine, referral, kind="summary", priority=ROUTINE, times=4)
    enqueue_committed(engine, referral, kind="urgent-escalation", priority=URGENT, times=4)
    route = respx.post("https://gp.example/inbox").mock(return_value=httpx.Response(200))

    with httpx.Client() as client, ThreadPoolExecutor(8) as pool:
        assert delivery.run_once(engine=engine, client=client, pool=pool) == 8

    kinds = [call.request.headers["X-Pharmref-Message-Kind"] for call in route.calls]
    assert kinds == ["urgent-escalation"] * 4 + ["summary"] * 4


@respx.mock
def test_unexpected_error_in_one_send_still_records_the_rest_of_the_batch(
    engine: Engine, world: dict[str, Any]
) -> None:
    referral = world["referral"]
    add_endpoint(engine, "https://gp.example/inbox")
    enqueue_committed(engine, referral, times=3)
    rows = messages(engine, referral)
    broken = str(rows[1].id)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["Idempotency-Key"] == broken:
            raise RuntimeError("a bug in a transport")
        return httpx.Response(200)

    respx.post("https://gp.example/inbox").mock(side_effect=answer)
    with httpx.Client() as client, ThreadPoolExecutor(3) as pool:
        assert delivery.run_once(engine=engine, client=client, pool=pool) == 3

    statuses = {str(row.id): (row.status, row.last_error) for row in messages(engine, referral)}
    assert statuses.pop(broken) == (DeliveryStatus.PENDING, "error: RuntimeError")
    assert set(statuses.values()) == {(DeliveryStatus.DELIVERED, None)}


def test_in_process_worker_delivers_when_enabled(
    engine: Engine, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PHARMREF_DELIVERY_IN_PROCESS: the API process's lifespan runs the worker loop."""
    referral = world["referral"]
    monkeypatch.setattr(main, "engine", engine)  # the app's engine is the configured database
    monkeypatch.setattr(settings, "delivery_in_process", True)
    monkeypatch.setattr(settings, "delivery_poll_interval_seconds", 0.05)
    with Receiver() as receiver:
        add_endpoint(engine, receiver.url)
        enqueue_committed(engine, referral, times=3)
        with TestClient(main.app):
            delivered = wait_until(
                lambda: all(
                    m.status is DeliveryStatus.DELIVERED for m in messages(engine, referral)
                )
            )

    assert delivered
    assert receiver.applied == {str(m.id): 1 for m in messages(engine, referral)}


def test_no_in_process_worker_by_default() -> None:
    assert Settings.model_fields["delivery_in_process"].default is False


def wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    """Poll until `condition` holds or `seconds` pass (a bound on waiting, not a timing check)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---- end to end: a real receiver on loopback ------------------------------------------------------------


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
    assert len(receiver.arrivals) == 3
    assert receiver.applied == {str(row.id): 1}
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
    assert receiver.arrivals == [str(row.id)] * 2
    assert receiver.applied == {str(row.id): 1}


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
    assert receiver.arrivals == [str(row.id)] * 2
    assert receiver.applied == {str(row.id): 1}


def test_readme_signature_worked_example() -> None:
    body = b'{"resourceType":"Bundle"}'

    assert delivery.signature("a-long-random-shared-secret-of-32-chars", "1800000000", body) == (
        "v1=ffc6505072c10da790e4d5775539b2889fec0c30917b4905fd4c520abce52d0e"
    )
