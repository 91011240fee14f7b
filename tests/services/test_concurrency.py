"""Concurrent writers on real connections (the application's own engine, never the per-test
savepoint session): two pharmacists acting on one referral at once (one wins), and 50 identical
intake requests at once (exactly one referral). The overdue sweep run by two workers at once is in
tests/services/test_sweep.py (threads) and tests/faults/test_two_servers.py (processes)."""

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.core.errors import AppError
from app.db import session as db_session
from app.db.base import utc_now
from app.db.session import make_engine
from app.main import app
from app.models.delivery import OutboxMessage
from app.models.enums import ReferralStatus, Role
from app.models.event import ReferralEvent
from app.models.referral import InboundMessage, Referral
from app.models.rollup import UptakeRollup
from app.models.user import User
from app.services import lifecycle
from tests.factories import json_referral, make_referral
from tests.faults.live import delete_referrals_since
from tests.helpers import auth, bars_headers

PHARMACIST = User(subject="test:pharmacist", org="FA001", role=Role.PHARMACY)


@pytest.fixture
def committed_referral(engine: Engine) -> Iterator[Referral]:
    with Session(engine, expire_on_commit=False) as session:
        referral = make_referral(session)
    yield referral
    with Session(engine) as session:
        for table in (OutboxMessage, ReferralEvent, InboundMessage):
            session.execute(delete(table).where(table.referral_id == referral.id))  # type: ignore[arg-type]
        session.execute(delete(Referral).where(Referral.id == referral.id))  # type: ignore[arg-type]
        session.execute(delete(UptakeRollup))
        session.commit()


@pytest.mark.parametrize("rounds", range(3))
@pytest.mark.parametrize("actions", [("accept", "decline"), ("accept", "accept")])
def test_concurrent_changes_to_one_version_one_wins(
    engine: Engine, committed_referral: Referral, rounds: int, actions: tuple[str, str]
) -> None:
    """Both read version 1 and act on it: one succeeds, the other gets 412 (the version it
    names is gone), whichever commits first."""
    del rounds
    # The application's own engine settings (on SQLite: WAL and a busy timeout, no read locks held),
    # not the test engine's savepoint mode.
    app_engine = make_engine(engine.url.render_as_string(hide_password=False))
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def act(action: str) -> None:
        with Session(app_engine, expire_on_commit=False) as session:
            referral = session.get(Referral, committed_referral.id)
            assert referral is not None
            barrier.wait()
            try:
                if action == "accept":
                    lifecycle.accept_referral(
                        session=session, referral=referral, caller=PHARMACIST, version=1
                    )
                else:
                    lifecycle.decline_referral(
                        session=session,
                        referral=referral,
                        caller=PHARMACIST,
                        version=1,
                        reason_code="no-capacity",
                        reason=None,
                    )
                outcomes.append(f"{action}:ok")
            except AppError as exc:
                session.rollback()
                outcomes.append(f"{action}:{exc.status_code}")

    threads = [threading.Thread(target=act, args=(a,)) for a in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    app_engine.dispose()
    assert sorted(o.split(":")[1] for o in outcomes) == ["412", "ok"]
    with Session(engine) as session:
        referral = session.get(Referral, committed_referral.id)
        assert referral is not None
        assert referral.version == 2
        assert referral.status in (ReferralStatus.ACCEPTED, ReferralStatus.DECLINED)
        events = session.exec(
            select(ReferralEvent).where(ReferralEvent.referral_id == referral.id)
        ).all()
        assert sorted(e.action for e in events) == sorted(
            ["created", "accepted" if referral.status is ReferralStatus.ACCEPTED else "declined"]
        )


# ---- 50 identical intake requests at once ---------------------------------------------------------

PARALLEL = 50
BP_REFERRAL = Path(__file__).resolve().parents[2] / "app" / "fhir" / "example_bp_referral.json"


@pytest.fixture
def live_client(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app with its own engine set-up (pool, thread limit and session limit as configured)
    against the test database, through the real `get_session`: every request has its own session
    and pooled connection and commits for real; requests beyond the pool queue for a session, as
    in a real worker."""
    if engine.dialect.name != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite admits one writer at a time")
    app_engine = make_engine(engine.url.render_as_string(hide_password=False))
    monkeypatch.setattr(db_session, "engine", app_engine)
    started = utc_now()
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client
    finally:
        app_engine.dispose()
        delete_referrals_since(engine, started)


def _all_at_once(send: Callable[[], httpx.Response]) -> list[httpx.Response]:
    start = threading.Barrier(PARALLEL)

    def one() -> httpx.Response:
        start.wait(timeout=30)
        return send()

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        futures = [pool.submit(one) for _ in range(PARALLEL)]
        return [future.result(timeout=120) for future in futures]


def _referrals_for_key(engine: Engine, kind: str, key: str) -> list[uuid.UUID]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(InboundMessage.referral_id).where(
                    InboundMessage.key_kind == kind, InboundMessage.key == key
                )
            ).all()
        )


@pytest.mark.postgres_only
def test_parallel_json_submissions_with_one_idempotency_key_make_one_referral(
    engine: Engine, live_client: TestClient
) -> None:
    key = f"parallel-{uuid.uuid4()}"
    body = json_referral()
    headers = {**auth(Role.GP_PRACTICE, "A81001"), "Idempotency-Key": key}

    responses = _all_at_once(
        lambda: live_client.post("/api/v1/referrals", json=body, headers=headers)
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (PARALLEL - 1) + [201], [
        r.text for r in responses if r.status_code >= 300
    ][:3]
    [created] = [r for r in responses if r.status_code == 201]
    replays = [r for r in responses if r.status_code == 200]
    assert all(r.headers["Idempotent-Replayed"] == "true" for r in replays)
    assert {r.json()["id"] for r in responses} == {created.json()["id"]}
    assert {r.json()["reference"] for r in responses} == {created.json()["reference"]}
    assert [str(i) for i in _referrals_for_key(engine, "idempotency-key", key)] == [
        created.json()["id"]
    ]


@pytest.mark.postgres_only
def test_parallel_bars_messages_with_one_request_id_make_one_referral(
    engine: Engine, live_client: TestClient
) -> None:
    request_id = str(uuid.uuid4())
    body = BP_REFERRAL.read_bytes()
    headers = bars_headers(request_id=request_id)

    responses = _all_at_once(
        lambda: live_client.post("/fhir/$process-message", content=body, headers=headers)
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * (PARALLEL - 1), [
        r.text for r in responses if r.status_code >= 500
    ][:3]
    for duplicate in (r for r in responses if r.status_code == 409):
        assert duplicate.headers["content-type"].startswith("application/fhir+json")
        [issue] = duplicate.json()["issue"]
        assert issue["code"] == "duplicate"
        assert issue["details"]["coding"][0]["code"] == "REC_CONFLICT"
    [created] = [r for r in responses if r.status_code == 200]
    focus = next(
        e["resource"]
        for e in created.json()["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest"
    )
    assert [str(i) for i in _referrals_for_key(engine, "x-request-id", request_id)] == [focus["id"]]


@pytest.mark.postgres_only
def test_a_burst_of_reads_larger_than_the_pool_is_served(live_client: TestClient) -> None:
    """Reads keep their connection until the response is rendered (in a worker thread): more
    requests than connections must queue for a session, not starve each other into 503s. Once
    answered, every request's session is closed and its connection back in the pool."""
    headers = auth(Role.PHARMACY, "FA001")

    responses = _all_at_once(lambda: live_client.get("/api/v1/referrals?limit=5", headers=headers))

    assert [r.status_code for r in responses] == [200] * PARALLEL
    assert db_session.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
