"""SIGTERM drains: requests in flight when a `pharmref serve` (2 workers) is told to stop are
answered in full, and the server then exits 0 within its graceful timeout.

A request is held in flight without any test hook in the app: the client sends the headers and
half of a valid JSON referral, waits until the kernel shows the server has read those bytes (the
request has started in a worker), signals the server, waits until every worker logs that it is
shutting down, and only then sends the rest of the body.
"""

import json
import os
import signal
import socket
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.cli import GRACEFUL_SHUTDOWN_SECONDS
from app.models.enums import Role
from app.models.referral import InboundMessage
from tests.factories import json_referral
from tests.faults.live import database_url, serve
from tests.helpers import token_for

IN_FLIGHT = 4
WAIT_SECONDS = 30.0


def _hex_endpoint(port: int) -> str:
    return f"0100007F:{port:04X}"


def unread_bytes(server_port: int, client_port: int) -> int | None:
    """Bytes the server side of a loopback connection has not yet read (/proc/net/tcp
    rx_queue), or None when the connection is not listed."""
    local, remote = _hex_endpoint(server_port), _hex_endpoint(client_port)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[4].split(":")[1], 16)
    return None


def wait_until(condition: object, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {WAIT_SECONDS} s")
        time.sleep(0.05)


def read_response(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """Status and JSON body of one HTTP/1.1 response; the server closes the connection after it
    (it is shutting down), so read to the end."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp (Linux)")
def test_sigterm_lets_in_flight_requests_finish_then_exits_0(
    engine: Engine, live_rows: datetime, tmp_path: Path
) -> None:
    del live_rows
    token = token_for(Role.GP_PRACTICE, "A81001")
    body = json.dumps(json_referral(notes="Held in flight over a shutdown. " * 100)).encode()
    keys = [f"drain-{uuid.uuid4()}" for _ in range(IN_FLIGHT)]
    sockets: list[socket.socket] = []
    with serve(database_url(engine), tmp_path / "serve.log", workers=2) as api:
        try:
            for key in keys:
                sock = socket.create_connection(("127.0.0.1", api.port), timeout=WAIT_SECONDS)
                sockets.append(sock)
                head = (
                    "POST /api/v1/referrals HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                    f"Idempotency-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                sock.sendall(head + body[: len(body) // 2])
            for sock in sockets:
                client_port = sock.getsockname()[1]
                wait_until(
                    lambda p=client_port: unread_bytes(api.port, p) == 0,
                    "the server read the first half of each request",
                )

            os.kill(api.process.pid, signal.SIGTERM)
            wait_until(
                lambda: api.output().count("Shutting down") >= 2,
                "both workers began their graceful shutdown",
            )
            wait_until(
                lambda: "Waiting for connections to close" in api.output(),
                "a worker is waiting for its in-flight requests",
            )
            assert api.process.poll() is None, "exited with requests still in flight"

            answers = []
            for sock in sockets:
                sock.sendall(body[len(body) // 2 :])
                answers.append(read_response(sock))
            exit_code = api.process.wait(timeout=GRACEFUL_SHUTDOWN_SECONDS + WAIT_SECONDS)
        finally:
            for sock in sockets:
                sock.close()

    assert [status for status, _ in answers] == [201] * IN_FLIGHT, answers
    assert exit_code == 0, api.output()[-4000:]
    # Within the graceful timeout: uvicorn cancels what is left when it runs out, and says so.
    assert "timeout graceful shutdown exceeded" not in api.output()
    with Session(engine) as session:
        stored = session.exec(
            select(InboundMessage.key, InboundMessage.referral_id).where(
                col(InboundMessage.key).in_(keys)
            )
        ).all()
    assert {key: str(referral_id) for key, referral_id in stored} == {
        key: str(answer["id"]) for key, (_, answer) in zip(keys, answers, strict=True)
    }
