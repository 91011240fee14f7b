"""Load generator for the referral intake endpoints (BaRS $process-message and JSON).

Closed loop (default): `--concurrency` workers each send the next request as soon as the last one
answers, for `--duration` seconds; this finds the maximum throughput.

Open loop (`--rate R`): request i is due at start + i/R whatever happened to earlier requests, and
its latency is measured from that intended send time, so time spent queued behind a slow server
(or a slow load generator) counts against the server instead of silently lowering the offered load
(no coordinated omission).

Every response status is checked; non-2xx responses and transport errors are counted apart from
the successes and the first few bodies are printed. Latency percentiles are over 2xx responses.

Run from the project root (the token is signed with the key pair under ./var):

    .venv/bin/python bench/intake.py --url http://127.0.0.1:8765 --kind fhir --concurrency 32 --duration 20
"""

import argparse
import asyncio
import base64
import contextlib
import csv
import json
import math
import os
import resource
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# httpcore 1.0 runs `import sniffio` on every request; anyio 4.10+ no longer installs sniffio, so
# each call is a failed import that stats sys.path (about a fifth of this generator's CPU).
# A None entry makes that import fail at once; httpcore then assumes asyncio, which is right here.
if "sniffio" not in sys.modules:
    try:
        import sniffio  # noqa: F401
    except ImportError:
        sys.modules["sniffio"] = None  # type: ignore[assignment]

import httpx
import rawhttp

ROOT = Path(__file__).resolve().parents[1]
FHIR_EXAMPLE = ROOT / "app" / "fhir" / "example_bp_referral.json"
EXAMPLE_NHS_NUMBER = "9990000018"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
TARGET_ODS = "FA001"
SENDER_ODS = "A81001"
BODY_VARIANTS = 500
SHOW_ERRORS = 5
DRAIN_SECONDS = 30.0
MEASURING, MEASURED = "# measuring", "# measured"


def test_range_nhs_numbers(count: int) -> list[str]:
    """Valid (modulus 11) NHS numbers in the 999 synthetic test range."""
    numbers: list[str] = []
    serial = 1
    while len(numbers) < count:
        stem = f"999{serial:06d}"
        serial += 1
        total = sum(int(d) * w for d, w in zip(stem, range(10, 1, -1), strict=True))
        check = 11 - total % 11
        if check == 10:
            continue
        numbers.append(stem + str(0 if check == 11 else check))
    return numbers


def mint_token() -> str:
    """A gp-practice token for A81001, minted by the project CLI (same key files as the server)."""
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "token", "--role", "gp-practice", "--org", "A81001"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


@dataclass(frozen=True, slots=True)
class Workload:
    path: str
    headers: dict[str, str]
    bodies: list[bytes]
    per_request_header: str  # a fresh UUID goes in this header on every request
    method: str = "POST"
    # Headers that differ from body to body (the sender's token, the receiving pharmacy): the
    # i-th body goes with the (i mod len)-th of these; none: every body has the same headers.
    body_headers: list[dict[str, str]] = field(default_factory=list)


def healthz_workload() -> Workload:
    """GET /healthz: no auth, no DB; the ceiling of the HTTP stack and this generator."""
    return Workload(
        path="/healthz", headers={}, bodies=[b""], per_request_header="X-Request-Id", method="GET"
    )


@dataclass(frozen=True, slots=True)
class Senders:
    """Who sends and who receives: one GP practice to one pharmacy (`single`, the worst case:
    every referral counts in the same practice's, pharmacy's and PCN's rollup rows), or every
    practice of the demo ICB, each referring to pharmacies registered for the service in turn."""

    practices: list[str]
    tokens: dict[str, str]

    def pharmacies(self, service: str, single: bool) -> list[str]:
        if single:
            return [TARGET_ODS]
        return demo_pharmacies(service)


def demo_practices() -> list[str]:
    with (ROOT / "app" / "demo" / "organisations.csv").open() as rows:
        return [row["ods_code"] for row in csv.DictReader(rows) if row["kind"] == "gp-practice"]


def demo_pharmacies(service: str) -> list[str]:
    with (ROOT / "app" / "demo" / "pharmacy_services.csv").open() as rows:
        return sorted({r["pharmacy_ods"] for r in csv.DictReader(rows) if r["service"] == service})


def senders(token: str | None, single: bool) -> Senders:
    """The sending practices and a token for each (minted here with the project's own signing
    key, as `pharmref token` does; --token is the single sender's)."""
    if single:
        return Senders(practices=[SENDER_ODS], tokens={SENDER_ODS: token or mint_token()})
    sys.path.insert(0, str(ROOT))
    from app.auth.tokens import create_access_token
    from app.models.enums import Role

    practices = demo_practices()
    tokens = {
        ods: create_access_token(subject=f"bench-{ods}", org=ods, role=Role.GP_PRACTICE)
        for ods in practices
    }
    return Senders(practices=practices, tokens=tokens)


def _target(pharmacy: str) -> str:
    return base64.b64encode(json.dumps({"system": ODS_SYSTEM, "value": pharmacy}).encode()).decode()


def fhir_workload(who: Senders, single: bool = False) -> Workload:
    """The BaRS blood pressure example, from each sender to the pharmacies in turn."""
    template = FHIR_EXAMPLE.read_text()
    for code in (EXAMPLE_NHS_NUMBER, f'"{SENDER_ODS}"', f'"{TARGET_ODS}"'):
        if code not in template:
            raise SystemExit(f"{FHIR_EXAMPLE} no longer contains {code}")
    pharmacies = who.pharmacies("blood-pressure", single)
    bodies, body_headers = [], []
    for index, number in enumerate(test_range_nhs_numbers(BODY_VARIANTS)):
        practice = who.practices[index % len(who.practices)]
        pharmacy = pharmacies[index % len(pharmacies)]
        body = template.replace(EXAMPLE_NHS_NUMBER, number)
        body = body.replace(f'"{SENDER_ODS}"', f'"{practice}"')
        bodies.append(body.replace(f'"{TARGET_ODS}"', f'"{pharmacy}"').encode())
        body_headers.append(
            {
                "Authorization": f"Bearer {who.tokens[practice]}",
                "NHSD-Target-Identifier": _target(pharmacy),
            }
        )
    return Workload(
        path="/fhir/$process-message",
        headers={
            "Content-Type": "application/fhir+json",
            "Accept": "application/fhir+json",
            "X-Correlation-Id": str(uuid.uuid4()),
        },
        bodies=bodies,
        per_request_header="X-Request-Id",
        body_headers=body_headers,
    )


def get_workload(token: str, path: str) -> Workload:
    """A read: GET `path` with the bearer token (inbox, search, statistics); the dashboard's pages
    take the same token in their sign-in cookie instead."""
    if path.startswith("/dashboard"):
        headers = {"Cookie": f"pharmref_dashboard={token}", "Accept": "text/html"}
    else:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    return Workload(
        path=path,
        headers=headers,
        bodies=[b""],
        per_request_header="X-Request-Id",
        method="GET",
    )


def json_workload(who: Senders, single: bool = False) -> Workload:
    """The API's Pharmacy First example, from each sender to the pharmacies in turn."""
    sys.path.insert(0, str(ROOT))
    from app.routers.examples import JSON_REFERRAL

    pharmacies = who.pharmacies("pharmacy-first", single)
    bodies, body_headers = [], []
    for index, number in enumerate(test_range_nhs_numbers(BODY_VARIANTS)):
        practice = who.practices[index % len(who.practices)]
        body = json.loads(json.dumps(JSON_REFERRAL))
        body["patient"]["nhs_number"] = number
        body["pharmacy_ods"] = pharmacies[index % len(pharmacies)]
        bodies.append(json.dumps(body).encode())
        body_headers.append({"Authorization": f"Bearer {who.tokens[practice]}"})
    return Workload(
        path="/api/v1/referrals",
        headers={"Content-Type": "application/json"},
        bodies=bodies,
        per_request_header="Idempotency-Key",
        body_headers=body_headers,
    )


@dataclass(slots=True)
class Results:
    latencies_ms: list[float] = field(default_factory=list)
    ok: int = 0
    non_2xx: int = 0
    transport_errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    max_dispatch_lag_ms: float = 0.0

    def answered(self, status: int, started: float, text: Callable[[], str]) -> None:
        """Record an answer that came back (its body's text read only for an error sample)."""
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.record(status, elapsed_ms, "" if 200 <= status < 300 else text())

    def record(self, status: int | None, latency_ms: float, detail: str = "") -> None:
        key = str(status) if status is not None else "transport-error"
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if status is not None and 200 <= status < 300:
            self.ok += 1
            self.latencies_ms.append(latency_ms)
            return
        if status is None:
            self.transport_errors += 1
        else:
            self.non_2xx += 1
        if len(self.error_samples) < SHOW_ERRORS:
            self.error_samples.append(f"[{key}] {detail[:600]}")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class Sender:
    """What both runners share: the workload and which of its bodies goes next."""

    workload: Workload
    sent: int

    def next_body(self) -> tuple[int, bytes]:
        index = self.sent % len(self.workload.bodies)
        self.sent += 1
        return index, self.workload.bodies[index]


class Runner(Sender):
    """Sends requests over `concurrency` keep-alive HTTP/1.1 connections.

    `sharded` (default): one single-connection AsyncClient per connection, handed out through a
    queue. `shared`: one AsyncClient whose pool holds all the connections. httpcore 1.0 checks every
    pooled connection (a poll() syscall each) on every request, so a shared pool of 32 costs the
    generator several times more CPU per request than 32 pools of one; see docs/performance.md.
    """

    def __init__(self, clients: list[httpx.AsyncClient], workload: Workload) -> None:
        self.idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in clients:
            self.idle.put_nowait(client)
        self.workload = workload
        self.sent = 0

    async def one(self, results: Results | None, started: float) -> None:
        """Send one request; `started` is when it was (meant to be) sent, for latency."""
        w = self.workload
        index, body = self.next_body()
        headers = {**w.headers, w.per_request_header: str(uuid.uuid4())}
        if w.body_headers:
            headers.update(w.body_headers[index % len(w.body_headers)])
        client = await self.idle.get()
        try:
            response = await client.request(w.method, w.path, content=body or None, headers=headers)
        except httpx.HTTPError as exc:
            if results is not None:
                results.record(None, 0.0, f"{type(exc).__name__}: {exc}")
            return
        finally:
            self.idle.put_nowait(client)
        if results is not None:
            results.answered(response.status_code, started, lambda: response.text)


class RawRunner(Sender):
    """Runner's protocol over bench/rawhttp.py connections: the fixed part of each request is
    rendered once, so a request costs the generator a UUID, one bytes format and a parse of the
    status line."""

    def __init__(self, connections: list[rawhttp.Connection], workload: Workload) -> None:
        self.idle: asyncio.Queue[rawhttp.Connection] = asyncio.Queue()
        for connection in connections:
            self.idle.put_nowait(connection)
        self.workload = workload
        self.head = connections[0].prepare(workload.method, workload.path, workload.headers)
        self.varying = [
            "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
            for headers in workload.body_headers
        ] or [b""]
        self.fresh = f"{workload.per_request_header}: ".encode()
        self.sent = 0

    async def one(self, results: Results | None, started: float) -> None:
        index, body = self.next_body()
        extra = b"%s%s%s\r\n" % (
            self.varying[index % len(self.varying)],
            self.fresh,
            str(uuid.uuid4()).encode(),
        )
        connection = await self.idle.get()
        try:
            response = await connection.send(self.head, body, extra)
        except (OSError, rawhttp.ProtocolError) as exc:
            if results is not None:
                results.record(None, 0.0, f"{type(exc).__name__}: {exc}")
            return
        finally:
            self.idle.put_nowait(connection)
        if results is not None:
            results.answered(response.status_code, started, lambda: response.text)


async def closed_loop(
    runner: "Runner | RawRunner",
    results: Results | None,
    concurrency: int,
    duration: float,
    ramp: float = 0.0,
) -> float:
    """`ramp` spreads the workers' first requests (and so their connects) over that many seconds."""
    deadline = time.perf_counter() + duration

    async def worker(index: int) -> None:
        await asyncio.sleep(ramp * index / concurrency)
        while time.perf_counter() < deadline:
            await runner.one(results, time.perf_counter())

    begun = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return time.perf_counter() - begun


async def open_loop(
    runner: "Runner | RawRunner", results: Results | None, rate: float, duration: float
) -> float:
    interval = 1.0 / rate
    total = int(rate * duration)
    begun = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    for i in range(total):
        due = begun + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif results is not None:
            results.max_dispatch_lag_ms = max(results.max_dispatch_lag_ms, -delay * 1000)
        task = asyncio.create_task(runner.one(results, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
        for task in pending:
            task.cancel()
        if results is not None:
            for _ in pending:
                results.record(None, 0.0, f"no answer {DRAIN_SECONDS:.0f} s after the run ended")
    return time.perf_counter() - begun


def summarise(
    args: argparse.Namespace, results: Results, elapsed: float, cpu_seconds: float
) -> dict[str, Any]:
    lat = sorted(results.latencies_ms)
    return {
        "kind": args.kind,
        "mode": f"open-loop {args.rate:g} req/s" if args.rate else "closed-loop",
        "client": args.client,
        "senders": "single" if args.single else "demo ICB",
        "pool": args.pool,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "elapsed_s": round(elapsed, 3),
        "requests": results.ok + results.non_2xx + results.transport_errors,
        "ok": results.ok,
        "non_2xx": results.non_2xx,
        "transport_errors": results.transport_errors,
        "statuses": results.statuses,
        "throughput_rps": round(results.ok / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {
            "p50": round(percentile(lat, 50), 2),
            "p95": round(percentile(lat, 95), 2),
            "p99": round(percentile(lat, 99), 2),
            "max": round(lat[-1], 2) if lat else math.nan,
            "mean": round(sum(lat) / len(lat), 2) if lat else math.nan,
        },
        "max_dispatch_lag_ms": round(results.max_dispatch_lag_ms, 2),
        "loadgen_cpu_s": round(cpu_seconds, 2),
        "loadgen_cpu_pct_of_one_core": round(100 * cpu_seconds / elapsed, 1) if elapsed else 0.0,
        "loadgen_cpu_pct_of_machine": round(100 * cpu_seconds / elapsed / (os.cpu_count() or 1), 1)
        if elapsed
        else 0.0,
        "error_samples": results.error_samples,
    }


def cpu_time() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.kind == "healthz":
        workload = healthz_workload()
    elif args.kind == "get":
        workload = get_workload(args.token or mint_token(), args.path)
    else:
        who = senders(args.token, args.single)
        build = fhir_workload if args.kind == "fhir" else json_workload
        workload = build(who, args.single)
    if args.client == "raw":
        connections = [rawhttp.Connection.for_url(args.url) for _ in range(args.concurrency)]
        try:
            return await drive_runner(args, RawRunner(connections, workload))
        finally:
            for connection in connections:
                connection.close()
    # pool=None: in open-loop mode a request may wait for a free connection; that wait is latency.
    timeout = httpx.Timeout(args.timeout, pool=None)
    shards = args.concurrency if args.pool == "sharded" else 1
    per_client = 1 if args.pool == "sharded" else args.concurrency
    limits = httpx.Limits(
        max_connections=per_client, max_keepalive_connections=per_client, keepalive_expiry=60
    )
    tls = ssl.create_default_context()  # one, not one per client: each costs ~30 ms of CPU
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=args.url,
                    http1=True,
                    http2=False,
                    limits=limits,
                    timeout=timeout,
                    verify=tls,
                )
            )
            for _ in range(shards)
        ]
        return await drive_runner(args, Runner(clients * per_client, workload))


async def drive_runner(args: argparse.Namespace, runner: "Runner | RawRunner") -> dict[str, Any]:
    drive: Callable[[Results | None, float], Awaitable[float]]
    if args.rate:
        drive = lambda res, secs: open_loop(runner, res, args.rate, secs)  # noqa: E731
    else:
        drive = lambda res, secs: closed_loop(runner, res, args.concurrency, secs)  # noqa: E731
    if args.warmup > 0 and not args.rate:
        # Connections opened all at once tend to land on one server worker (they share one
        # listening socket); opening them over half the warm-up spreads them as real traffic would.
        await closed_loop(runner, None, args.concurrency, args.warmup, ramp=args.warmup / 2)
    elif args.warmup > 0:
        await drive(None, args.warmup)
    results = Results()
    if args.markers:  # bench/run.py reads the server's CPU time at these two lines
        print(MEASURING, flush=True)
    cpu_before = cpu_time()
    elapsed = await drive(results, args.duration)
    cpu_seconds = cpu_time() - cpu_before
    if args.markers:
        print(MEASURED, flush=True)
    return summarise(args, results, elapsed, cpu_seconds)


def print_report(summary: dict[str, Any]) -> None:
    lat = summary["latency_ms"]
    print(
        f"{summary['kind']} {summary['mode']}, concurrency {summary['concurrency']}, "
        f"{summary['elapsed_s']:.1f} s"
    )
    print(
        f"  requests {summary['requests']}  2xx {summary['ok']}  non-2xx {summary['non_2xx']}  "
        f"transport errors {summary['transport_errors']}  statuses {summary['statuses']}"
    )
    print(f"  throughput {summary['throughput_rps']:.1f} req/s (2xx)")
    print(
        f"  latency ms  p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  "
        f"max {lat['max']:.1f}"
    )
    if summary["mode"].startswith("open-loop"):
        print(f"  max dispatch lag {summary['max_dispatch_lag_ms']:.1f} ms")
    print(
        f"  load generator CPU {summary['loadgen_cpu_s']:.1f} s "
        f"({summary['loadgen_cpu_pct_of_one_core']:.0f}% of one core, "
        f"{summary['loadgen_cpu_pct_of_machine']:.0f}% of the machine)"
    )
    for sample in summary["error_samples"]:
        print(f"  error: {sample}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--kind", choices=["fhir", "json", "healthz", "get"], required=True)
    parser.add_argument("--path", default="/healthz", help="the URL path for --kind get")
    parser.add_argument("--concurrency", type=int, default=32, help="connections (and workers)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--rate", type=float, default=None, help="open loop at this many req/s")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="bench/rawhttp.py (default: tens of microseconds of CPU a request) or httpx",
    )
    parser.add_argument(
        "--pool",
        choices=["sharded", "shared"],
        default="sharded",
        help="one client per connection (default) or one client with a shared pool",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request seconds")
    parser.add_argument(
        "--token", default=None, help="the bearer token of the single sender (default: mint one)"
    )
    parser.add_argument(
        "--single",
        action="store_true",
        help="one practice (A81001) to one pharmacy (FA001) only: every referral counts in the "
        "same rollup rows (default: every practice of the demo ICB to the pharmacies in turn)",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="write the figures here")
    parser.add_argument("--markers", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or (args.rate is not None and args.rate <= 0):
        parser.error("--concurrency, --duration and --rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        summary = asyncio.run(run(args))
    else:
        summary = uvloop.run(run(args))
    print_report(summary)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["ok"] and not summary["non_2xx"] and not summary["transport_errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
