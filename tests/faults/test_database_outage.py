"""PostgreSQL goes away under load and comes back: a real `pharmref serve` (2 workers) reaches the
test database through a TCP proxy this test cuts for a few seconds (the shared PostgreSQL server
itself keeps running for everyone else).

Clients behave as the API asks: a 503 is retried with the same Idempotency-Key after Retry-After.
Asserted: while the database is away every answer is a prompt 503 with Retry-After (JSON, or an
OperationOutcome on /fhir), never a 500 and never a hang; the service recovers by itself; and
afterwards the referrals in the database are exactly those the clients were given ids for, one
per Idempotency-Key (nothing lost, nothing doubled by the retries).
"""

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.models.enums import Role
from app.models.referral import InboundMessage, Referral
from tests.factories import NHS_NUMBERS, json_referral
from tests.faults.live import database_url, serve, wait_until_up
from tests.faults.proxy import TcpProxy
from tests.helpers import auth, bars_headers

pytestmark = pytest.mark.postgres_only

LOAD_THREADS = 6
OUTAGE_SECONDS = 3.0
HANG_SECONDS = 10.0  # an answer slower than this is a hang, and fails the test
RECOVERY_BOUND_SECONDS = 15.0  # liveness bound, not a performance figure
BP_REFERRAL = Path(__file__).resolve().parents[2] / "app" / "fhir" / "example_bp_referral.json"


@dataclass(frozen=True, slots=True)
class Answer:
    key: str
    phase: str
    status: int | None  # None: no answer (transport error or timeout)
    referral_id: str | None = None
    replayed: bool = False
    retry_after: str | None = None
    detail: str = ""


class Load:
    """Threads posting JSON referrals, each key retried after Retry-After until it is accepted."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.phase = "before"
        self.answers: list[Answer] = []
        self.pending: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(LOAD_THREADS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=HANG_SECONDS * 2)

    def count(self, *, phase: str, status: int | None) -> int:
        with self._lock:
            return sum(1 for a in self.answers if a.phase == phase and a.status == status)

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)
            if answer.status is not None and answer.status < 300:
                self.pending.discard(answer.key)
            else:
                self.pending.add(answer.key)

    def _run(self, number: int) -> None:
        body = json_referral(patient={"nhs_number": NHS_NUMBERS[number % len(NHS_NUMBERS)]})
        headers = auth(Role.GP_PRACTICE, "A81001")
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=HANG_SECONDS) as client:
            key = str(uuid.uuid4())
            while not self._stop.is_set():
                answer = post_referral(client, key, body, self.phase)
                self._record(answer)
                if answer.status == 503:
                    self._stop.wait(float(answer.retry_after or 1))
                else:
                    key = str(uuid.uuid4())


def post_referral(client: httpx.Client, key: str, body: dict[str, object], phase: str) -> Answer:
    try:
        response = client.post("/api/v1/referrals", json=body, headers={"Idempotency-Key": key})
    except httpx.HTTPError as exc:
        return Answer(key, phase, None, detail=f"{type(exc).__name__}: {exc}")
    ok = response.status_code in (200, 201)
    return Answer(
        key,
        phase,
        response.status_code,
        referral_id=response.json()["id"] if ok else None,
        replayed=response.headers.get("Idempotent-Replayed") == "true",
        retry_after=response.headers.get("Retry-After"),
        detail="" if ok else response.text[:500],
    )


def wait_for(condition: object, what: str, timeout: float) -> float:
    """Seconds until `condition()` held; fails the test if it does not within `timeout`."""
    assert callable(condition)
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def referrals_in_database(engine: Engine, since: datetime) -> set[str]:
    with Session(engine) as session:
        ids = session.exec(select(Referral.id).where(col(Referral.created_at) >= since)).all()
    return {str(i) for i in ids}


def messages_per_key(engine: Engine, keys: set[str]) -> dict[str, int]:
    with Session(engine) as session:
        rows = session.exec(
            select(InboundMessage.key, func.count())
            .where(InboundMessage.key_kind == "idempotency-key", col(InboundMessage.key).in_(keys))
            .group_by(col(InboundMessage.key))
        ).all()
    return dict(rows)


def test_database_outage_under_load(postgres: Engine, live_rows: datetime, tmp_path: Path) -> None:
    with (
        TcpProxy(postgres.url.host or "127.0.0.1", postgres.url.port or 5432) as proxy,
        serve(database_url(postgres, port=proxy.port), tmp_path / "serve.log", workers=2) as api,
    ):
        wait_until_up(api, path="/readyz")
        load = Load(api.url)
        load.start()
        try:
            wait_for(lambda: load.count(phase="before", status=201) >= 20, "load running", 60)

            load.phase = "outage"
            proxy.cut()
            outage_started = time.monotonic()
            wait_for(lambda: load.count(phase="outage", status=503) >= LOAD_THREADS, "503s", 30)
            fhir = httpx.post(
                api.url + "/fhir/$process-message",
                content=BP_REFERRAL.read_bytes(),
                headers=bars_headers(),
                timeout=HANG_SECONDS,
            )
            ready_during = httpx.get(api.url + "/readyz", timeout=HANG_SECONDS)
            live_during = httpx.get(api.url + "/healthz", timeout=HANG_SECONDS)
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))

            proxy.restore()
            load.phase = "after"
            ready_after = wait_for(
                lambda: httpx.get(api.url + "/readyz", timeout=HANG_SECONDS).status_code == 200,
                "/readyz 200 again",
                RECOVERY_BOUND_SECONDS,
            )
            wait_for(
                lambda: load.count(phase="after", status=201) >= 20 and not load.pending,
                "intake accepted again, every 503'd key retried to success",
                RECOVERY_BOUND_SECONDS,
            )
        finally:
            load.stop()

    answers = load.answers
    unexpected = [a for a in answers if a.status not in (200, 201, 503)]
    assert unexpected == [], unexpected[:5]
    unavailable = [a for a in answers if a.status == 503]
    assert unavailable, "the outage produced no 503"
    assert all(a.retry_after == "2" for a in unavailable)
    assert all('"error":"ServiceUnavailable"' in a.detail for a in unavailable)
    assert not any("Traceback" in a.detail for a in answers)
    assert {a.phase for a in answers if a.status == 201} >= {"before", "after"}

    assert fhir.status_code == 503, fhir.text
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    assert fhir.json()["issue"][0]["code"] == "transient"
    assert fhir.headers["Retry-After"] == "2"
    assert (ready_during.status_code, ready_during.headers["Retry-After"]) == (503, "2")
    assert live_during.status_code == 200
    assert ready_after < RECOVERY_BOUND_SECONDS

    accepted = [a for a in answers if a.status in (200, 201)]
    keys = {a.key for a in answers}
    assert {a.key for a in accepted} == keys, "a key was never accepted"
    ids_given = {a.referral_id for a in accepted}
    assert len(ids_given) == len(keys), "one key, one referral id (replays return the same id)"
    assert referrals_in_database(postgres, live_rows) == ids_given
    assert set(messages_per_key(postgres, keys).values()) == {1}
    assert len(messages_per_key(postgres, keys)) == len(keys)
