"""What the delivery tests share: a committed referral (the worker uses its own sessions, so
these tests commit for real and clean up), outbox helpers, and a GP system's inbox on loopback
that verifies each request's signature, applies each Idempotency-Key's effect once (as a real
receiver must), counts raw arrivals, and misbehaves on cue."""

import hmac
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.models.delivery import Endpoint, MessageFormat, OutboxMessage
from app.models.event import ReferralEvent
from app.models.referral import InboundMessage, Referral
from app.services import delivery
from app.services.outbox import ROUTINE, enqueue
from tests.factories import make_referral

SECRET = "s" * 40


@contextmanager
def committed_referral(engine: Engine) -> Iterator[Referral]:
    """A referral committed for real; it and every outbox row and endpoint are removed after."""
    wipe_outbox(engine)
    with Session(engine, expire_on_commit=False) as session:
        referral = make_referral(session)
    try:
        yield referral
    finally:
        wipe_outbox(engine)
        with Session(engine) as session:
            session.execute(delete(ReferralEvent).where(ReferralEvent.referral_id == referral.id))  # type: ignore[arg-type]
            session.execute(delete(InboundMessage).where(InboundMessage.referral_id == referral.id))  # type: ignore[arg-type]
            session.execute(delete(Referral).where(Referral.id == referral.id))  # type: ignore[arg-type]
            session.commit()


def wipe_outbox(engine: Engine) -> None:
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
    engine: Engine,
    referral: Referral,
    kind: str = "summary",
    priority: int = ROUTINE,
    times: int = 1,
) -> None:
    """`times` outbox rows per endpoint, committed in one transaction."""
    with Session(engine) as session:
        for _ in range(times):
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


class Receiver:
    """`script` steps, one per request: "503" answers 503 without applying the effect; "slow"
    applies it, then answers after 1.5 s (a sender with a shorter timeout gives up); anything
    else (and an empty script) applies it and answers 200.

    `gate`: while it is clear, a request whose effect has been applied waits for it before
    answering (a receiver whose 200 has not reached the sender yet); `held` counts those waiting.
    `hold_until_in_flight`: each request waits (up to 2 s) until that many are in flight at once.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.applied: Counter[str] = Counter()  # effects: at most 1 per key
        self.arrivals: list[str] = []  # every request's Idempotency-Key, in order of arrival
        self.kinds: list[str] = []
        self.script: list[str] = []
        self.verified = True
        self.gate = threading.Event()
        self.gate.set()
        self.held = 0
        self.some_held = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.hold_until_in_flight = 0
        self.crowd = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.handle(self, body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/inbox"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = request.headers
        key = headers["Idempotency-Key"]
        expected = delivery.signature(SECRET, headers["X-Pharmref-Timestamp"], body)
        with self.crowd:
            self.arrivals.append(key)
            self.kinds.append(headers["X-Pharmref-Message-Kind"])
            self.verified &= hmac.compare_digest(expected, headers["X-Pharmref-Signature"])
            step = self.script.pop(0) if self.script else "ok"
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.crowd.notify_all()
            if self.hold_until_in_flight:
                self.crowd.wait_for(lambda: self.in_flight >= self.hold_until_in_flight, 2.0)
            if step != "503" and not self.applied[key]:
                self.applied[key] = 1
        try:
            if step != "503" and not self.gate.is_set():
                with self.lock:
                    self.held += 1
                self.some_held.set()
                self.gate.wait(30)
            if step == "slow":
                threading.Event().wait(1.5)
        finally:
            # No longer in flight once the answer may reach the sender: its next request can
            # arrive before this handler thread runs again.
            with self.crowd:
                self.in_flight -= 1
        try:
            request.send_response(503 if step == "503" else 200)
            request.send_header("Content-Length", "0")
            request.end_headers()
        except OSError:
            pass  # the sender is gone (killed, or it timed out)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
