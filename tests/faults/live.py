"""Real `pharmref` processes for the fault tests: start on a free port, wait until they answer,
and always stop them (SIGTERM to the process group we started, SIGKILL if it lingers)."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.auth.tokens import ensure_local_key_pair
from app.core.config import settings
from app.models.consultation import Consultation
from app.models.delivery import OutboxMessage
from app.models.event import ReferralEvent
from app.models.referral import InboundMessage, Referral

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def database_url(engine: Engine, *, port: int | None = None) -> str:
    """The test database's URL, optionally reached through another local port (a proxy)."""
    url = engine.url if port is None else engine.url.set(host="127.0.0.1", port=port)
    return url.render_as_string(hide_password=False)


def process_env(url: str, **overrides: str) -> dict[str, str]:
    """The environment of a child: the test database, a small pool (the machine's PostgreSQL is
    shared, max_connections 100), no background sweep, and the test process's JWT key pair."""
    ensure_local_key_pair()
    env = {
        **os.environ,
        "PHARMREF_DATABASE_URL": url,
        "PHARMREF_DB_POOL_SIZE": "4",
        "PHARMREF_DB_MAX_OVERFLOW": "0",
        "PHARMREF_SWEEP_INTERVAL_SECONDS": "0",
        "PHARMREF_DATA_DIR": str(settings.data_dir.resolve()),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(overrides)
    return env


def spawn(args: list[str], *, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`pharmref <args>` in its own process group, output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], *, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
    """SIGTERM the child's process group; SIGKILL it if it has not exited within `timeout`."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=10)
    finally:
        # Workers of a multi-process server are in the same group; none may outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class LiveServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until_up(server: LiveServer, *, path: str = "/healthz", workers: int = 1) -> None:
    """Until `path` answers 200 and `workers` workers have logged their startup."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"pharmref serve exited early:\n{server.output()[-4000:]}")
        if server.output().count("Application startup complete") >= workers:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + path, timeout=2).status_code == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"pharmref serve did not answer {path}:\n{server.output()[-4000:]}")


@contextlib.contextmanager
def serve_many(
    url: str, logs: list[Path], *, workers: int = 1, env: Mapping[str, str] | None = None
) -> Iterator[list[LiveServer]]:
    """One `pharmref serve` per log file against `url`, started side by side, each with every
    worker started and /healthz answering (the logs are at info level: startup and shutdown
    steps are read from them); all stopped afterwards."""
    servers: list[LiveServer] = []
    try:
        for log in logs:
            port = free_port()
            process = spawn(
                ["serve", "--port", str(port), "--workers", str(workers), "--log-level", "info"],
                env=env or process_env(url),
                log=log,
            )
            servers.append(LiveServer(process=process, port=port, log=log))
        for server in servers:
            wait_until_up(server, workers=workers)
        yield servers
    finally:
        for server in servers:
            stop(server.process)


@contextlib.contextmanager
def serve(
    url: str, log: Path, *, workers: int = 1, env: Mapping[str, str] | None = None
) -> Iterator[LiveServer]:
    """`pharmref serve` against `url` (see serve_many)."""
    with serve_many(url, [log], workers=workers, env=env) as [server]:
        yield server


def delete_referrals_since(engine: Engine, since: datetime) -> int:
    """Remove the referrals made by live processes during a test, with everything hanging off
    them (the per-test rollback cannot reach rows another process committed)."""
    with Session(engine) as session:
        ids = list(session.exec(select(Referral.id).where(col(Referral.created_at) >= since)).all())
        for table in (OutboxMessage, ReferralEvent, InboundMessage, Consultation):
            session.execute(delete(table).where(col(table.referral_id).in_(ids)))
        session.execute(delete(Referral).where(col(Referral.id).in_(ids)))
        session.commit()
    return len(ids)


def has_connection_to(pid: int, port: int) -> bool:
    """Whether process `pid` holds an established TCP connection to local `port` (e.g. a
    pooled PostgreSQL connection, which shows it has started its work). Linux /proc only."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    suffix = f":{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2].endswith(suffix) and fields[3] == "01" and fields[9] in inodes:
            return True
    return False
