"""Push delivery throughput and steady state: `pharmref worker` against a loopback receiver.

1. drop and re-create the PostgreSQL database `--db` (default `bench_worker`), `pharmref migrate`,
   `pharmref seed-demo`; store one completed Pharmacy First consultation through the service layer
   with an endpoint registered for the referring practice, so the outbox holds one real FHIR R4
   summary (about 9 KB), the body every benchmark message carries;
2. start the receiver: a minimal ASGI app under uvicorn (uvloop, httptools) in its own process
   that checks each request's HMAC signature, applies each Idempotency-Key once and counts raw
   arrivals (`GET /stats`);
3. start `pharmref worker --interval 0.05` in its own process, as deployed;
4. before each phase, wait (up to `--quiet-wait` s) until the machine uses under
   `--quiet-threshold` cores: other people's work shares these two cores;
   throughput (`--runs` times): commit `--queued` messages in one transaction and time until the
   last is recorded delivered; deliveries/s = queued / that time. The CPU each process used in
   the window (worker, receiver, PostgreSQL, anything else) is read from /proc;
5. steady state: enqueue at `--rate` messages/s in small transactions (like consultations being
   recorded) for `--duration` seconds, printing the outbox depth (pending + sending) every
   `--every` seconds, then how long the backlog takes to drain;
6. check: every message delivered, the receiver saw every Idempotency-Key once, no bad signature;
   stop the worker and the receiver (always, also on errors and Ctrl-C).

Run from the project root (PostgreSQL on 127.0.0.1:5432, user postgres):

    .venv/bin/python bench/delivery.py [--queued 3000] [--runs 3] [--rate 200] [--duration 45]
    PHARMREF_DELIVERY_CONCURRENCY=8 .venv/bin/python bench/delivery.py   # worker settings pass through
"""

import argparse
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SECRET = "bench-shared-secret-of-at-least-32-characters"
TARGET_PER_SECOND = 300.0
REFUSED_DATABASES = {"postgres", "template0", "template1", "test"}


# ---- the receiver (runs in its own process: `bench/delivery.py receive --port N`) ----------------


class Receiver:
    """A GP system's inbox, as small as it can be: verify, apply each Idempotency-Key once, 200."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.keys: set[bytes] = set()
        self.arrivals = 0
        self.bad_signatures = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            stats = {
                "arrivals": self.arrivals,
                "applied": len(self.keys),
                "bad_signatures": self.bad_signatures,
            }
            await self._answer(send, 200, json.dumps(stats).encode())
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = dict(scope["headers"])
        timestamp = headers.get(b"x-pharmref-timestamp", b"")
        expected = (
            "v1=" + hmac.new(self.secret, timestamp + b"." + body, hashlib.sha256).hexdigest()
        )
        self.arrivals += 1
        if not hmac.compare_digest(expected.encode(), headers.get(b"x-pharmref-signature", b"")):
            self.bad_signatures += 1
            await self._answer(send, 401, b"")
            return
        self.keys.add(headers[b"idempotency-key"])
        await self._answer(send, 200, b"")

    @staticmethod
    async def _answer(send: Any, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def serve_receiver(port: int) -> None:
    import uvicorn

    uvicorn.run(
        Receiver(SECRET),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def receiver_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        stats: dict[str, int] = json.loads(response.read())
        return stats


# ---- CPU accounting from /proc ------------------------------------------------------------------


def machine_busy_ticks() -> int:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]) - fields[3] - fields[4]


def process_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def postgres_ticks(db: str) -> dict[int, tuple[str, int]]:
    """pid -> (group, CPU ticks) for PostgreSQL processes: "postgres" for the backends and
    autovacuum workers serving `db`, "pg-shared" for the shared background processes
    (checkpointer, WAL writer, ...: they also serve other databases). Other databases' backends
    (other people's test runs) are left out."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            postmaster = "/postgres " in cmdline and " -D " in cmdline
            if not (cmdline.startswith("postgres: ") or postmaster):
                continue
            words = cmdline.split(": ")[-1].split()  # after "postgres: 15/main: "
            backend = len(words) >= 3 and (words[2].endswith(")") or words[2] == "[local]")
            autovacuum = words[:2] == ["autovacuum", "worker"] and len(words) >= 3
            serving = words[1] if backend else words[2] if autovacuum else None
            if (serving is not None and serving != db) or words[:2] == ["parallel", "worker"]:
                continue  # another database's, or a parallel worker of some backend's query
            stat = (entry / "stat").read_text()
            rest = stat[stat.rindex(")") + 2 :].split()
            group = "pg-shared" if serving is None else "postgres"
            found[int(entry.name)] = (group, int(rest[11]) + int(rest[12]))
    return found


class CpuWindow:
    """Average cores used between construction and `cores()`, by group. Processes that exit in
    between are left out (the benchmark's own processes and connections live throughout)."""

    db = "bench_worker"

    def __init__(self, worker: int, receiver: int) -> None:
        self.pids = {"worker": worker, "receiver": receiver, "bench": os.getpid()}
        self.start = self._read()

    def _read(self) -> tuple[float, int, dict[str, int], dict[int, tuple[str, int]]]:
        ticks = {name: process_ticks(pid) for name, pid in self.pids.items()}
        return time.perf_counter(), machine_busy_ticks(), ticks, postgres_ticks(self.db)

    def cores(self) -> dict[str, float]:
        at, machine, ticks, postgres = self._read()
        start_at, start_machine, start_ticks, start_postgres = self.start
        seconds = at - start_at
        used = {name: (ticks[name] - start_ticks[name]) / CLK_TCK for name in ticks}
        for group in ("postgres", "pg-shared"):
            used[group] = (
                sum(
                    t - start_postgres.get(pid, (group, 0))[1]
                    for pid, (g, t) in postgres.items()
                    if g == group
                )
                / CLK_TCK
            )
        used["machine"] = (machine - start_machine) / CLK_TCK
        ours = sum(used[k] for k in (*ticks, "postgres", "pg-shared"))
        used["other"] = max(0.0, used["machine"] - ours)
        return {k: round(v / seconds, 2) for k, v in used.items()}


def busy_cores(seconds: float = 2.0) -> float:
    before = machine_busy_ticks()
    time.sleep(seconds)
    return (machine_busy_ticks() - before) / CLK_TCK / seconds


def wait_for_quiet(limit: float, threshold: float) -> float:
    """Wait (up to `limit` s) until the machine uses under `threshold` cores (our worker and
    receiver idle meanwhile); return the last sample."""
    deadline = time.monotonic() + limit
    while True:
        load = busy_cores()
        if load < threshold or time.monotonic() >= deadline:
            return round(load, 2)
        print(f"  machine busy with other work ({load:.2f} cores); waiting", flush=True)
        time.sleep(3)


# ---- database --------------------------------------------------------------------------------------


def run(cmd: list[str], env: dict[str, str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def reset_database(args: argparse.Namespace, env: dict[str, str]) -> None:
    if args.db in REFUSED_DATABASES or not args.db.startswith("bench"):
        raise SystemExit(f"refusing to drop database {args.db!r} (its name must start with bench)")
    psql = ["psql", "-h", args.pg_host, "-p", str(args.pg_port), "-U", "postgres", "-q"]
    run(
        [*psql, "-v", "ON_ERROR_STOP=1", "-c", f'drop database if exists "{args.db}" with (force)'],
        env,
    )
    run([*psql, "-v", "ON_ERROR_STOP=1", "-c", f'create database "{args.db}"'], env)
    run([str(BIN / "pharmref"), "migrate"], env)
    run([str(BIN / "pharmref"), "seed-demo"], env)


def seed_summary(url: str, receiver_url: str) -> dict[str, Any]:
    """An endpoint for A81001 and one completed consultation whose summary the outbox now holds."""
    sys.path.insert(0, str(ROOT / "bench"))
    from sqlalchemy import delete
    from sqlmodel import Session, select
    from summary_build import prepare, record_consultations

    from app.models.delivery import Endpoint, MessageFormat, OutboxMessage

    engine = prepare(url)
    with Session(engine, expire_on_commit=False) as session:
        endpoint = Endpoint(
            org_ods="A81001", url=receiver_url, format=MessageFormat.R4, secret=SECRET
        )
        session.add(endpoint)
        session.commit()
    made = record_consultations(engine)
    with Session(engine) as session:
        row = session.exec(
            select(OutboxMessage).where(OutboxMessage.referral_id == made[0][1])
        ).one()
        seed = {"endpoint": endpoint.id, "referral": row.referral_id, "body": row.body}
        session.execute(delete(OutboxMessage))
        session.commit()
    engine.dispose()
    return seed


INSERT = """
INSERT INTO outbox_message (id, endpoint_id, recipient_ods, referral_id, kind, priority, format,
                            body, status, attempts, next_attempt_at, created_at)
SELECT gen_random_uuid(), %(endpoint)s, 'A81001', %(referral)s, 'summary', 1, 'fhir-r4',
       %(body)s, 'pending', 0, now(), clock_timestamp()
FROM generate_series(1, %(n)s)
"""


def enqueue(connection: Any, seed: dict[str, Any], n: int) -> None:
    with connection.transaction():
        connection.execute(INSERT, {**seed, "n": n})


def counts(connection: Any) -> dict[str, int]:
    rows = connection.execute("SELECT status, count(*) FROM outbox_message GROUP BY status")
    return dict(rows.fetchall())


# ---- processes ---------------------------------------------------------------------------------------


@contextmanager
def process(cmd: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def _raise_on_signal(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# ---- phases ------------------------------------------------------------------------------------------


def throughput(
    connection: Any, seed: dict[str, Any], n: int, worker: int, receiver: int
) -> dict[str, Any]:
    connection.execute("DELETE FROM outbox_message")
    connection.execute("VACUUM (ANALYZE) outbox_message")
    window = CpuWindow(worker, receiver)
    start = time.perf_counter()
    enqueue(connection, seed, n)
    committed = time.perf_counter()
    while counts(connection).get("delivered", 0) < n:
        time.sleep(0.02)
    done = time.perf_counter()
    cores = window.cores()
    seconds = done - committed
    return {
        "queued": n,
        "enqueue_s": round(committed - start, 2),
        "drain_s": round(seconds, 2),
        "per_second": round(n / seconds, 1),
        "cores": cores,
        "worker_cpu_ms_per_message": round(cores["worker"] * (done - start) * 1000 / n, 3),
    }


def steady(
    connection: Any,
    seed: dict[str, Any],
    rate: float,
    duration: float,
    every: float,
    worker: int,
    receiver: int,
) -> dict[str, Any]:
    """Enqueue `rate` per second in transactions of `rate / 20` for `duration` seconds."""
    connection.execute("DELETE FROM outbox_message")
    connection.execute("VACUUM (ANALYZE) outbox_message")
    tick = 0.05
    per_tick = max(1, round(rate * tick))
    depths: list[tuple[float, int]] = []
    stop = threading.Event()

    import psycopg

    def watch() -> None:
        with psycopg.connect(connection.info.dsn, autocommit=True) as watcher:
            began = time.perf_counter()
            while not stop.wait(every):
                c = counts(watcher)
                depth = c.get("pending", 0) + c.get("sending", 0)
                at = time.perf_counter() - began
                depths.append((at, depth))
                print(
                    f"  t={at:5.1f}s  depth {depth:5d}  delivered {c.get('delivered', 0):6d}",
                    flush=True,
                )

    watcher = threading.Thread(target=watch, daemon=True)
    window = CpuWindow(worker, receiver)
    start = time.perf_counter()
    watcher.start()
    sent = 0
    ticks = int(duration / tick)
    for i in range(ticks):
        enqueue(connection, seed, per_tick)
        sent += per_tick
        pause = start + (i + 1) * tick - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    produced = time.perf_counter()
    while counts(connection).get("delivered", 0) < sent:
        time.sleep(0.01)
    drained = time.perf_counter()
    stop.set()
    watcher.join()
    cores = window.cores()
    during = [d for at, d in depths if at <= produced - start]
    return {
        "rate": rate,
        "enqueued": sent,
        "achieved_enqueue_rate": round(sent / (produced - start), 1),
        "duration_s": round(produced - start, 1),
        "depth_max": max(during, default=0),
        "depth_mean": round(sum(during) / len(during), 1) if during else 0,
        "depth_last": during[-1] if during else 0,
        "drain_after_stop_s": round(drained - produced, 2),
        "cores": cores,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    receive = commands.add_parser("receive", help="(internal) run the loopback receiver")
    receive.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", default="bench_worker")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--port", type=int, default=8799, help="receiver port")
    parser.add_argument("--queued", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=45.0)
    parser.add_argument("--every", type=float, default=2.0, help="depth print interval (s)")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument(
        "--quiet-wait", type=float, default=120.0, help="max seconds to wait for a quiet machine"
    )
    parser.add_argument(
        "--quiet-threshold", type=float, default=0.3, help="cores others may use before a phase"
    )
    args = parser.parse_args(argv)
    if args.command == "receive":
        serve_receiver(args.port)
        return 0

    signal.signal(signal.SIGTERM, _raise_on_signal)
    url = f"postgresql+psycopg://postgres@{args.pg_host}:{args.pg_port}/{args.db}"
    env = {
        **os.environ,
        "PHARMREF_DATABASE_URL": url,
        "PHARMREF_SWEEP_INTERVAL_SECONDS": "0",
        "PHARMREF_DELIVERY_ALLOW_HTTP": "true",
    }
    os.environ.update(
        {k: env[k] for k in ("PHARMREF_DATABASE_URL", "PHARMREF_SWEEP_INTERVAL_SECONDS")}
    )
    CpuWindow.db = args.db
    reset_database(args, env)
    receiver_url = f"http://127.0.0.1:{args.port}/inbox"
    seed = seed_summary(url, receiver_url)
    print(f"message body: {len(seed['body'])} bytes (a FHIR R4 Pharmacy First summary)")
    worker_settings = {k: v for k, v in os.environ.items() if k.startswith("PHARMREF_DELIVERY_")}
    print(f"worker settings from the environment: {worker_settings or 'defaults'}")
    print(f"load average before: {os.getloadavg()}")

    import psycopg

    results: dict[str, Any] = {"throughput": [], "steady": None}
    receive_cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "receive",
        "--port",
        str(args.port),
    ]
    worker_cmd = [str(BIN / "pharmref"), "worker", "--interval", "0.05"]
    with (
        process(receive_cmd, env) as receiver,
        psycopg.connect(
            f"postgresql://postgres@{args.pg_host}:{args.pg_port}/{args.db}", autocommit=True
        ) as connection,
    ):
        wait_for(lambda: _up(args.port), 30, "the receiver")
        with process(worker_cmd, env) as worker:
            time.sleep(2.0)  # imports done, first idle poll made
            for i in range(args.runs):
                quiet = wait_for_quiet(args.quiet_wait, args.quiet_threshold)
                figures = throughput(connection, seed, args.queued, worker.pid, receiver.pid)
                figures["busy_cores_before"] = quiet
                results["throughput"].append(figures)
                print(
                    f"throughput run {i + 1}: {figures['queued']} queued, drained in "
                    f"{figures['drain_s']} s = {figures['per_second']} deliveries/s (machine busy "
                    f"before: {quiet} cores); cores during: "
                    f"{figures['cores']}; worker CPU {figures['worker_cpu_ms_per_message']} ms/message",
                    flush=True,
                )
            if args.duration > 0:
                quiet = wait_for_quiet(args.quiet_wait, args.quiet_threshold)
                print(
                    f"steady state: {args.rate:g} messages/s for {args.duration:g} s "
                    f"(machine busy before: {quiet} cores)",
                    flush=True,
                )
                results["steady"] = steady(
                    connection,
                    seed,
                    args.rate,
                    args.duration,
                    args.every,
                    worker.pid,
                    receiver.pid,
                )
                print(f"steady state: {results['steady']}", flush=True)
        final = counts(connection)
        stats = receiver_stats(args.port)
    print(f"outbox: {final}; receiver: {stats}")
    ok = (
        set(final) == {"delivered"}
        and stats["bad_signatures"] == 0
        and stats["arrivals"] == stats["applied"]
        and stats["applied"]
        == args.runs * args.queued + (results["steady"] or {}).get("enqueued", 0)
    )
    rates = sorted(r["per_second"] for r in results["throughput"])
    if rates:
        print(
            f"deliveries/s: median {rates[len(rates) // 2]}, range {rates[0]}-{rates[-1]} "
            f"(target >= {TARGET_PER_SECOND:g}); every message delivered, sent once and applied once: {ok}"
        )
    print(f"load average after: {os.getloadavg()}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0 if ok else 1


def _up(port: int) -> bool:
    try:
        receiver_stats(port)
    except OSError:
        return False
    return True


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        raise SystemExit(main())
    raise SystemExit(130)
