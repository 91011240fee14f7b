"""Load generator for complete referral lifecycles: create, accept, record the consultation.

One lifecycle is three requests, in order, over one keep-alive connection:

1. `POST /api/v1/referrals` as GP practice A81001 (JSON, Pharmacy First to FA001, a fresh
   Idempotency-Key, NHS numbers rotating through the 999 test range) -> 201, status received;
2. `POST /api/v1/referrals/{id}/accept` `{"version": 1}` as pharmacy FA001 -> 200, accepted, v2;
3. `POST /api/v1/referrals/{id}/consultation` (minor illness, advice and self-care, version 2)
   as FA001 -> 201 with `referral_status` completed.

Closed loop: `--concurrency` workers each start the next lifecycle as soon as the last one ends,
for `--duration` seconds. A lifecycle counts as completed only when all three steps answered as
expected; a failed step (non-2xx, transport error, or a 2xx whose body is not what the step must
produce) ends that lifecycle, is counted against its step and the first bodies are printed.
Latency percentiles per step are over 2xx answers; the lifecycle latency is over completed ones.

Run from the project root (tokens are signed with the key pair under ./var):

    .venv/bin/python bench/lifecycle.py --url http://127.0.0.1:8765 --concurrency 32 --duration 20
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import intake
import rawhttp

ROOT = intake.ROOT
GP_ODS = "A81001"
PHARMACY_ODS = "FA001"
STEPS = ("create", "accept", "consultation")
CONSULTATION = {
    "service": "pharmacy-first",
    "version": 2,
    "clinician_name": "Priya Example",
    "gphc_number": "2099999",
    "pathway": "minor-illness",
    "outcome": "advice-self-care",
}


def mint(role: str, org: str) -> str:
    """A token minted by the project CLI (same key files as the server)."""
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "token", "--role", role, "--org", org],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def referral_bodies(count: int, pharmacies: list[str] | None = None) -> list[bytes]:
    """Pharmacy First minor-illness referrals, one per test-range NHS number, to FA001 or to the
    given pharmacies in turn."""
    bodies = []
    for index, number in enumerate(intake.test_range_nhs_numbers(count)):
        body = {
            "service": "pharmacy-first",
            "pathway": "minor-illness",
            "pharmacy_ods": pharmacies[index % len(pharmacies)] if pharmacies else PHARMACY_ODS,
            "priority": "routine",
            "patient": {
                "nhs_number": number,
                "family_name": "Testpatient",
                "given_name": "Alex",
                "birth_date": "1990-04-01",
                "sex": "female",
                "phone": "07700900001",
            },
            "referrer": {"clinician_name": "Dr Sam Example", "clinician_id": "G1234567"},
            "reason": "Cough and cold for 4 days; asks for advice",
        }
        bodies.append(json.dumps(body).encode())
    return bodies


@dataclass(slots=True)
class Tally:
    """Per-step results (an intake.Results each) and the completed lifecycles."""

    steps: dict[str, intake.Results] = field(
        default_factory=lambda: {step: intake.Results() for step in STEPS}
    )
    wrong_body: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STEPS, 0))
    lifecycle_ms: list[float] = field(default_factory=list)
    started: int = 0
    completed: int = 0


class Lifecycles:
    """Whose lifecycles: one practice's token, one pharmacy's token and the bodies to it, or (from
    `spread`) each body with the token of a practice of its own and of the pharmacy it names."""

    def __init__(self, gp_token: str, pharmacy_token: str, bodies: list[bytes]) -> None:
        gp = {"Authorization": f"Bearer {gp_token}", "Content-Type": "application/json"}
        pharmacy = {
            "Authorization": f"Bearer {pharmacy_token}",
            "Content-Type": "application/json",
        }
        self.parties = [(gp, pharmacy, body) for body in bodies]
        self.accept_body = json.dumps({"version": 1}).encode()
        self.consultation_body = json.dumps(CONSULTATION).encode()
        self.sent = 0

    @classmethod
    def spread(cls, count: int) -> "Lifecycles":
        """Every practice of the demo ICB referring to the Pharmacy First pharmacies in turn, each
        pharmacy accepting and recording its own (tokens minted with the project's signing key)."""
        sys.path.insert(0, str(ROOT))
        from app.auth.tokens import create_access_token
        from app.models.enums import Role

        practices = intake.demo_practices()
        pharmacies = intake.demo_pharmacies("pharmacy-first")

        def headers(role: Role, org: str) -> dict[str, str]:
            token = create_access_token(subject=f"bench-{org}", org=org, role=role)
            return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        gp = {ods: headers(Role.GP_PRACTICE, ods) for ods in practices}
        chemist = {ods: headers(Role.PHARMACY, ods) for ods in pharmacies}
        bodies = referral_bodies(count, pharmacies)
        lifecycles = cls("", "", [])
        lifecycles.parties = [
            (
                gp[practices[index % len(practices)]],
                chemist[pharmacies[index % len(pharmacies)]],
                body,
            )
            for index, body in enumerate(bodies)
        ]
        return lifecycles

    async def _step(
        self,
        client: rawhttp.Connection,
        tally: Tally | None,
        step: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        want: tuple[int, dict[str, Any]],
    ) -> dict[str, Any] | None:
        """POST and check the answer: the wanted status and these fields in the JSON body.

        A 2xx with another status or other field values counts as an error of the step."""
        started = time.perf_counter()
        try:
            response = await client.request("POST", path, headers=headers, content=body)
        except (OSError, rawhttp.ProtocolError) as exc:
            if tally is not None:
                tally.steps[step].record(None, 0.0, f"{type(exc).__name__}: {exc}")
            return None
        elapsed_ms = (time.perf_counter() - started) * 1000
        status, fields = want
        data: Any = None
        with contextlib.suppress(ValueError):
            data = response.json()
        got = {k: data.get(k) for k in fields} if isinstance(data, dict) else None
        if response.status_code == status and got == fields:
            if tally is not None:
                tally.steps[step].record(status, elapsed_ms)
            return data  # type: ignore[no-any-return]
        if tally is not None:
            detail = response.text
            if 200 <= response.status_code < 300:
                tally.wrong_body[step] += 1
                detail = f"wanted {status} {fields}, got {got}: {detail}"
                # record() treats any 2xx as a success; this one is not
                tally.steps[step].record(599, elapsed_ms, f"(2xx {response.status_code}) {detail}")
            else:
                tally.steps[step].record(response.status_code, elapsed_ms, detail)
        return None

    async def one(self, client: rawhttp.Connection, tally: Tally | None) -> None:
        """Run one lifecycle; stop at the first step that does not answer as it must."""
        gp, pharmacy, body = self.parties[self.sent % len(self.parties)]
        self.sent += 1
        began = time.perf_counter()
        if tally is not None:
            tally.started += 1
        headers = {**gp, "Idempotency-Key": str(uuid.uuid4())}
        created = await self._step(
            client,
            tally,
            "create",
            "/api/v1/referrals",
            body,
            headers,
            (201, {"status": "received", "version": 1}),
        )
        if created is None:
            return
        path = f"/api/v1/referrals/{created['id']}"
        accepted = await self._step(
            client,
            tally,
            "accept",
            f"{path}/accept",
            self.accept_body,
            pharmacy,
            (200, {"status": "accepted", "version": 2}),
        )
        if accepted is None:
            return
        consulted = await self._step(
            client,
            tally,
            "consultation",
            f"{path}/consultation",
            self.consultation_body,
            pharmacy,
            (201, {"referral_status": "completed", "referral_version": 3}),
        )
        if consulted is None:
            return
        if tally is not None:
            tally.completed += 1
            tally.lifecycle_ms.append((time.perf_counter() - began) * 1000)


async def closed_loop(
    lifecycles: Lifecycles,
    clients: list[rawhttp.Connection],
    tally: Tally | None,
    duration: float,
    ramp: float = 0.0,
) -> float:
    """Each worker owns one client (one connection); `ramp` spreads their first connects."""
    deadline = time.perf_counter() + duration

    async def worker(index: int, client: rawhttp.Connection) -> None:
        await asyncio.sleep(ramp * index / len(clients))
        while time.perf_counter() < deadline:
            await lifecycles.one(client, tally)

    begun = time.perf_counter()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(clients)))
    return time.perf_counter() - begun


def _latency(values: list[float]) -> dict[str, float]:
    lat = sorted(values)
    return {
        "p50": round(intake.percentile(lat, 50), 2),
        "p95": round(intake.percentile(lat, 95), 2),
        "p99": round(intake.percentile(lat, 99), 2),
        "max": round(lat[-1], 2) if lat else math.nan,
        "mean": round(sum(lat) / len(lat), 2) if lat else math.nan,
    }


def summarise(
    args: argparse.Namespace, tally: Tally, elapsed: float, cpu_seconds: float
) -> dict[str, Any]:
    steps = {}
    for step, r in tally.steps.items():
        steps[step] = {
            "requests": r.ok + r.non_2xx + r.transport_errors,
            "ok": r.ok,
            "non_2xx": r.non_2xx,
            "wrong_body": tally.wrong_body[step],
            "transport_errors": r.transport_errors,
            "statuses": r.statuses,
            "latency_ms": _latency(r.latencies_ms),
            "error_samples": r.error_samples,
        }
    requests = sum(s["requests"] for s in steps.values())
    ok = sum(s["ok"] for s in steps.values())
    return {
        "kind": "lifecycle",
        "senders": "single" if args.single else "demo ICB",
        "mode": "closed-loop",
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "elapsed_s": round(elapsed, 3),
        "lifecycles_started": tally.started,
        "lifecycles_completed": tally.completed,
        "lifecycles_failed": tally.started - tally.completed,
        "throughput_lps": round(tally.completed / elapsed, 1) if elapsed else 0.0,
        "requests": requests,
        "ok": ok,
        "errors": requests - ok,
        "request_throughput_rps": round(ok / elapsed, 1) if elapsed else 0.0,
        "lifecycle_latency_ms": _latency(tally.lifecycle_ms),
        "steps": steps,
        "loadgen_cpu_s": round(cpu_seconds, 2),
        "loadgen_cpu_pct_of_machine": round(100 * cpu_seconds / elapsed / (os.cpu_count() or 1), 1)
        if elapsed
        else 0.0,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.single:
        gp_token = args.token or mint("gp-practice", GP_ODS)
        pharmacy_token = args.pharmacy_token or mint("pharmacy", PHARMACY_ODS)
        lifecycles = Lifecycles(gp_token, pharmacy_token, referral_bodies(intake.BODY_VARIANTS))
    else:
        lifecycles = Lifecycles.spread(intake.BODY_VARIANTS)
    # One keep-alive connection per worker, through bench/rawhttp.py (a few tens of microseconds
    # of generator CPU a request, where httpx spent about a millisecond).
    clients = [rawhttp.Connection.for_url(args.url) for _ in range(args.concurrency)]
    try:
        if args.warmup > 0:
            # connections opened over half the warm-up spread over both server workers
            await closed_loop(lifecycles, clients, None, args.warmup, ramp=args.warmup / 2)
        tally = Tally()
        if args.markers:  # bench/run_lifecycle.py reads the server's CPU time at these lines
            print(intake.MEASURING, flush=True)
        cpu_before = intake.cpu_time()
        elapsed = await closed_loop(lifecycles, clients, tally, args.duration)
        cpu_seconds = intake.cpu_time() - cpu_before
        if args.markers:
            print(intake.MEASURED, flush=True)
    finally:
        for client in clients:
            client.close()
    return summarise(args, tally, elapsed, cpu_seconds)


def print_report(summary: dict[str, Any]) -> None:
    lat = summary["lifecycle_latency_ms"]
    print(
        f"lifecycles closed-loop, concurrency {summary['concurrency']}, "
        f"{summary['elapsed_s']:.1f} s"
    )
    print(
        f"  lifecycles started {summary['lifecycles_started']}  completed "
        f"{summary['lifecycles_completed']}  failed {summary['lifecycles_failed']}"
    )
    print(
        f"  throughput {summary['throughput_lps']:.1f} completed lifecycles/s "
        f"({summary['request_throughput_rps']:.1f} 2xx req/s)"
    )
    print(
        f"  lifecycle ms  p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  "
        f"max {lat['max']:.1f}"
    )
    for step, s in summary["steps"].items():
        sl = s["latency_ms"]
        print(
            f"  {step:<12} requests {s['requests']}  2xx {s['ok']}  errors "
            f"{s['non_2xx'] + s['transport_errors']} (wrong body {s['wrong_body']})  "
            f"statuses {s['statuses']}  ms p50 {sl['p50']:.1f}  p95 {sl['p95']:.1f}  "
            f"p99 {sl['p99']:.1f}  max {sl['max']:.1f}"
        )
        for sample in s["error_samples"]:
            print(f"    error: {sample}")
    print(
        f"  load generator CPU {summary['loadgen_cpu_s']:.1f} s "
        f"({summary['loadgen_cpu_pct_of_machine']:.0f}% of the machine)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, default=32, help="lifecycles in flight")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request seconds")
    parser.add_argument("--token", default=None, help="GP A81001 token (default: mint one)")
    parser.add_argument("--pharmacy-token", default=None, help="FA001 token (default: mint one)")
    parser.add_argument(
        "--single",
        action="store_true",
        help="A81001's referrals to FA001 only, every one in the same rollup rows (default: "
        "every practice of the demo ICB to the Pharmacy First pharmacies in turn)",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="write the figures here")
    parser.add_argument("--markers", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0:
        parser.error("--concurrency and --duration must be positive")
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
    return 0 if summary["lifecycles_completed"] and not summary["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
