"""Scale-out: two `pharmref serve` processes (two ports, as two hosts behind a load balancer
would be) on one PostgreSQL database, driven at once, plus two `pharmref worker` and two
`pharmref sweep --once` processes. No process holds state another needs: one Idempotency-Key is
one referral whichever server takes it, every referral is visible through either, each outbox
message reaches the receiver once, each overdue referral is marked once, and the statistics
(rollups) agree through both servers."""

import re
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.db.base import utc_now
from app.models.delivery import DeliveryStatus, Endpoint, OutboxMessage
from app.models.enums import Role
from app.models.event import ReferralEvent
from app.models.referral import InboundMessage, Referral
from app.services import rollups
from tests.factories import json_referral, make_referral
from tests.faults.live import (
    LiveServer,
    database_url,
    has_connection_to,
    process_env,
    serve_many,
    spawn,
    stop,
)
from tests.helpers import auth

pytestmark = pytest.mark.postgres_only

TIMEOUT = 30.0
GP = auth(Role.GP_PRACTICE, "A81001")
PHARMACY = auth(Role.PHARMACY, "FA001")


@pytest.fixture(scope="module")
def servers(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LiveServer]]:
    """Two servers for the whole module (each test deletes the referrals it made)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("needs PostgreSQL (set PHARMREF_TEST_DATABASE_URL)")
    logs = tmp_path_factory.mktemp("two-servers")
    with serve_many(database_url(engine), [logs / "a.log", logs / "b.log"]) as both:
        yield both


def _post_referral(server: LiveServer, key: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        server.url + "/api/v1/referrals",
        json=body,
        headers={**GP, "Idempotency-Key": key},
        timeout=TIMEOUT,
    )


def _at_once(calls: list[tuple[LiveServer, str]], body: dict[str, object]) -> list[httpx.Response]:
    start = threading.Barrier(len(calls))

    def one(server: LiveServer, key: str) -> httpx.Response:
        start.wait(timeout=TIMEOUT)
        return _post_referral(server, key, body)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(one, server, key) for server, key in calls]
        return [future.result(timeout=TIMEOUT * 2) for future in futures]


@pytest.mark.usefixtures("live_rows")
def test_one_idempotency_key_sent_to_both_servers_makes_one_referral(
    postgres: Engine, servers: list[LiveServer]
) -> None:
    key = f"two-servers-{uuid.uuid4()}"
    calls = [(servers[n % 2], key) for n in range(20)]

    responses = _at_once(calls, json_referral())

    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert all(
        r.headers.get("Idempotent-Replayed") == "true" for r in responses if r.status_code == 200
    )
    with Session(postgres) as session:
        stored = session.exec(
            select(InboundMessage.referral_id).where(InboundMessage.key == key)
        ).all()
    assert [str(i) for i in stored] == [responses[0].json()["id"]]


def test_referrals_made_through_either_server_are_seen_through_both(
    servers: list[LiveServer], live_rows: datetime
) -> None:
    calls = [(servers[n % 2], f"spread-{uuid.uuid4()}") for n in range(16)]

    made = _at_once(calls, json_referral())

    assert [r.status_code for r in made] == [201] * len(calls)
    expected = {r.json()["id"]: r.json()["reference"] for r in made}
    since = live_rows.isoformat()
    for server in servers:
        for referral_id, reference in expected.items():
            read = httpx.get(f"{server.url}/api/v1/referrals/{referral_id}", headers=PHARMACY)
            assert (read.status_code, read.json()["reference"]) == (200, reference)
        listed = httpx.get(
            f"{server.url}/api/v1/referrals",
            params={"since": since, "limit": 200},
            headers=GP,
            timeout=TIMEOUT,
        )
        assert listed.status_code == 200, listed.text
        assert {r["id"] for r in listed.json()["data"]} == set(expected)


class Receiver:
    """A GP system on loopback that counts the Idempotency-Keys it is sent."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        lock = threading.Lock()
        keys = self.keys

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    keys[self.headers["Idempotency-Key"]] += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/inbox"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self) -> Counter[str]:
        return Counter(self.keys)


def _wait(condition: object, what: str) -> None:
    assert callable(condition)
    deadline = threading.Event()
    timer = threading.Timer(TIMEOUT, deadline.set)
    timer.start()
    try:
        while not condition():
            if deadline.wait(0.1):
                pytest.fail(f"{what}: not within {TIMEOUT} s")
    finally:
        timer.cancel()


def _outbox(engine: Engine, since: datetime) -> dict[str, str]:
    with Session(engine) as session:
        rows = session.exec(
            select(OutboxMessage.id, OutboxMessage.status).where(
                col(OutboxMessage.created_at) >= since
            )
        ).all()
    return {str(message_id): status for message_id, status in rows}


def test_two_workers_deliver_each_message_once(
    postgres: Engine, servers: list[LiveServer], live_rows: datetime, tmp_path: Path
) -> None:
    env = process_env(database_url(postgres), PHARMREF_DELIVERY_BATCH_SIZE="2")
    with Receiver() as receiver:
        endpoint = httpx.post(
            servers[0].url + "/api/v1/endpoints",
            json={"url": receiver.url, "format": "fhir-r4", "secret": "k" * 40},
            headers=GP,
        )
        assert endpoint.status_code == 201, endpoint.text
        workers = [
            spawn(["worker", "--interval", "0.1"], env=env, log=tmp_path / f"worker-{n}.log")
            for n in range(2)
        ]
        try:
            made = _at_once(
                [(servers[n % 2], f"outbox-{uuid.uuid4()}") for n in range(24)], json_referral()
            )
            for n, response in enumerate(made):
                declined = httpx.post(
                    f"{servers[n % 2].url}/api/v1/referrals/{response.json()['id']}/decline",
                    json={"version": 1, "reason_code": "no-capacity"},
                    headers=PHARMACY,
                    timeout=TIMEOUT,
                )
                assert declined.status_code == 200, declined.text
            queued = _outbox(postgres, live_rows)
            assert len(queued) == len(made)
            _wait(lambda: set(receiver.received()) == set(queued), "every message received")
            _wait(
                lambda: set(_outbox(postgres, live_rows).values()) == {DeliveryStatus.DELIVERED},
                "every message recorded as delivered",
            )
        finally:
            exit_codes = [stop(worker) for worker in workers]
            with Session(postgres) as session:
                session.execute(
                    delete(OutboxMessage).where(col(OutboxMessage.created_at) >= live_rows)
                )
                session.execute(
                    delete(Endpoint).where(col(Endpoint.id) == uuid.UUID(endpoint.json()["id"]))
                )
                session.commit()

    assert receiver.received() == Counter(dict.fromkeys(queued, 1))
    assert exit_codes == [0, 0]


def _overdue_marks(engine: Engine, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    with Session(engine) as session:
        rows = session.exec(
            select(ReferralEvent.referral_id, func.count())
            .where(ReferralEvent.action == "overdue", col(ReferralEvent.referral_id).in_(ids))
            .group_by(col(ReferralEvent.referral_id))
        ).all()
    return dict(rows)


@pytest.mark.usefixtures("live_rows")
def test_two_sweep_processes_mark_each_overdue_referral_once(
    postgres: Engine, tmp_path: Path
) -> None:
    """Both sweeps are already polling (every 0.1 s) when 60 overdue referrals appear in one
    commit, so they work the same rows at the same time, in batches of two."""
    env = process_env(database_url(postgres), PHARMREF_SWEEP_BATCH_SIZE="2")
    logs = [tmp_path / f"sweep-{n}.log" for n in range(2)]
    sweeps = [spawn(["sweep", "--interval", "0.1"], env=env, log=log) for log in logs]
    ids: list[uuid.UUID] = []
    try:
        port = postgres.url.port or 5432
        _wait(
            lambda: all(has_connection_to(s.pid, port) for s in sweeps),
            "both sweeps running (each has swept once and pooled its connection)",
        )
        with Session(postgres) as session:
            ids.extend(make_referral(session).id for _ in range(60))
            session.execute(
                update(Referral)
                .where(col(Referral.id).in_(ids))
                .values(due_at=utc_now() - timedelta(hours=1))
            )
            session.commit()
        _wait(lambda: len(_overdue_marks(postgres, ids)) == len(ids), "every referral marked")
        # A sweep logs its count when its drain ends; the last marks may still be mid-drain.
        _wait(lambda: _reported(logs) >= len(ids), "both sweeps' counts logged")
        for sweep in sweeps:
            sweep.send_signal(signal.SIGINT)
        codes = [sweep.wait(timeout=TIMEOUT) for sweep in sweeps]
    finally:
        for sweep in sweeps:
            stop(sweep)

    assert codes == [0, 0]
    assert _overdue_marks(postgres, ids) == dict.fromkeys(ids, 1)
    assert _reported(logs) == len(ids)


def _reported(logs: list[Path]) -> int:
    """Referrals the sweeps' logs say they marked overdue, summed over every drain."""
    return sum(
        int(count)
        for log in logs
        for count in re.findall(r"Sweep: (\d+) marked overdue", log.read_text())
    )


def _uptake(server: LiveServer, day: str) -> dict[str, object]:
    response = httpx.get(
        f"{server.url}/api/v1/stats/uptake",
        params={"group_by": "practice", "interval": "none", "from": day, "to": day},
        headers=auth(Role.ADMIN, "ADMIN"),
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _practice_row(report: dict[str, object], practice: str) -> dict[str, object]:
    rows = report["rows"]
    assert isinstance(rows, list)
    [row] = [r for r in rows if r["group_code"] == practice]
    return dict(row)


@pytest.mark.usefixtures("live_rows")
def test_statistics_are_the_same_through_both_servers_and_count_every_change(
    servers: list[LiveServer],
) -> None:
    """Referrals made and accepted through both servers at once are each counted once, and both
    servers give the same uptake figures (the rollups live in the database, not in a process)."""
    day = rollups.local_day(utc_now()).isoformat()
    before = _practice_row(_uptake(servers[0], day), "A81001")
    calls = [(servers[n % 2], f"stats-{uuid.uuid4()}") for n in range(12)]

    made = _at_once(calls, json_referral())
    accepted = [
        httpx.post(
            f"{servers[n % 2].url}/api/v1/referrals/{response.json()['id']}/accept",
            json={"version": 1},
            headers=PHARMACY,
            timeout=TIMEOUT,
        )
        for n, response in enumerate(made[:5])
    ]

    assert [r.status_code for r in made] == [201] * len(calls)
    assert [r.status_code for r in accepted] == [200] * 5
    first, second = _uptake(servers[0], day), _uptake(servers[1], day)
    assert first["rows"] == second["rows"]
    after = _practice_row(first, "A81001")
    assert after["made"] == before["made"] + len(calls)  # type: ignore[operator]
    assert after["accepted"] == before["accepted"] + 5  # type: ignore[operator]
