"""The worker as deployed: `pharmref worker` processes against the committed test database (the
run's SQLite file, or PostgreSQL when PHARMREF_TEST_DATABASE_URL names one) and a receiver on
loopback. A worker SIGKILLed after the receiver applied a message but before the worker recorded
success, or in the middle of a batch, loses nothing: the next worker resends once the lease runs
out, with the same Idempotency-Key, and the receiver's effect happens exactly once."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from app.models.delivery import DeliveryStatus
from app.models.referral import Referral
from tests.services.delivery_support import (
    Receiver,
    add_endpoint,
    committed_referral,
    enqueue_committed,
    messages,
)

ROOT = Path(__file__).resolve().parents[2]
SHORT_LEASE = "2"  # seconds: how long a killed worker's claims block the next worker


@pytest.fixture
def referral(engine: Engine) -> Iterator[Referral]:
    with committed_referral(engine) as made:
        yield made


@contextmanager
def worker(
    engine: Engine, log: Path, *args: str, **delivery_settings: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`pharmref worker` in its own process on the test database; `delivery_settings` become
    PHARMREF_DELIVERY_* variables. Stopped with SIGTERM (then SIGKILL) if still running."""
    env = os.environ | {
        "PHARMREF_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PHARMREF_SWEEP_INTERVAL_SECONDS": "0",
        "PHARMREF_DELIVERY_ALLOW_HTTP": "true",
        "PHARMREF_DELIVERY_TIMEOUT_SECONDS": "30",  # a held request is never given up on
    }
    env |= {f"PHARMREF_DELIVERY_{name.upper()}": value for name, value in delivery_settings.items()}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--interval", "0.05", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()  # SIGKILL: no clean-up, no chance to record anything
    process.wait()


def wait_until(condition: Callable[[], bool], seconds: float = 60.0) -> bool:
    """Poll until `condition` holds or `seconds` pass (a bound on waiting, not a timing check)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def all_delivered(engine: Engine, referral: Referral) -> Callable[[], bool]:
    return lambda: all(m.status is DeliveryStatus.DELIVERED for m in messages(engine, referral))


def test_worker_killed_after_the_receiver_applied_the_message_is_resent_with_the_same_key(
    engine: Engine, referral: Referral, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with Receiver() as receiver:
        receiver.gate.clear()  # apply the effect, then hold the 200 back
        add_endpoint(engine, receiver.url)
        enqueue_committed(engine, referral)
        with worker(engine, log, lease_seconds=SHORT_LEASE) as first:
            assert receiver.some_held.wait(60), log.read_text()
            kill(first)
        [row] = messages(engine, referral)
        assert (row.status, row.attempts) == (DeliveryStatus.SENDING, 1)  # never recorded
        receiver.gate.set()

        with worker(engine, log):
            assert wait_until(all_delivered(engine, referral)), log.read_text()

    [row] = messages(engine, referral)
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.DELIVERED, 2, 200)
    assert receiver.arrivals == [str(row.id), str(row.id)]  # sent twice, with one key
    assert receiver.applied == {str(row.id): 1}  # applied once
    assert receiver.verified


def test_worker_killed_mid_batch_loses_nothing(
    engine: Engine, referral: Referral, tmp_path: Path
) -> None:
    """Batches of 5, two in flight: the kill leaves five rows claimed (two of them sent, three
    not yet) and seven queued; a new worker delivers all twelve."""
    log = tmp_path / "worker.log"
    with Receiver() as receiver:
        receiver.gate.clear()
        add_endpoint(engine, receiver.url)
        enqueue_committed(engine, referral, times=12)
        with worker(
            engine, log, lease_seconds=SHORT_LEASE, batch_size="5", concurrency="2"
        ) as first:
            assert wait_until(lambda: receiver.held == 2), log.read_text()
            kill(first)
        statuses = [m.status for m in messages(engine, referral)]
        assert statuses.count(DeliveryStatus.SENDING) == 5
        assert statuses.count(DeliveryStatus.PENDING) == 7
        receiver.gate.set()

        with worker(engine, log, batch_size="5", concurrency="2"):
            assert wait_until(all_delivered(engine, referral)), log.read_text()

    rows = messages(engine, referral)
    keys = {str(row.id) for row in rows}
    assert {row.status for row in rows} == {DeliveryStatus.DELIVERED}
    assert receiver.applied == dict.fromkeys(keys, 1)
    assert set(receiver.arrivals) == keys
    assert len(receiver.arrivals) == 12 + 2  # only the two the killed worker had sent went twice
    assert sorted(row.attempts for row in rows) == [1] * 7 + [2] * 5


def test_two_workers_at_once_send_each_message_once(
    engine: Engine, referral: Referral, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with Receiver() as receiver:
        add_endpoint(engine, receiver.url)
        enqueue_committed(engine, referral, times=40)
        with (
            worker(engine, log, batch_size="5", concurrency="2"),
            worker(engine, log, batch_size="5", concurrency="2"),
        ):
            assert wait_until(all_delivered(engine, referral)), log.read_text()

    rows = messages(engine, referral)
    assert sorted(receiver.arrivals) == sorted(str(row.id) for row in rows)  # no key twice
    assert {row.attempts for row in rows} == {1}


def test_worker_once_delivers_what_is_due_and_exits(
    engine: Engine, referral: Referral, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with Receiver() as receiver:
        add_endpoint(engine, receiver.url)
        enqueue_committed(engine, referral, times=3)
        with worker(engine, log, "--once", batch_size="2") as once:
            assert once.wait(timeout=60) == 0, log.read_text()

    assert "sent: 3" in log.read_text()
    assert {m.status for m in messages(engine, referral)} == {DeliveryStatus.DELIVERED}
    assert len(receiver.arrivals) == 3
