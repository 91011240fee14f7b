"""Where an intake request's time goes: a single-process, in-process loop with stage timers.

Sends `--requests` sequential requests through the real ASGI app (httpx.ASGITransport, so the
middleware, routing, dependencies, threadpool hop and response rendering all run) against the
PostgreSQL database in PHARMREF_DATABASE_URL, and times named stages of the request path by
wrapping functions in this process only (no app code changes). For each stage it reports wall and
thread-CPU milliseconds per request; wall minus CPU is mostly waiting on PostgreSQL.

    PHARMREF_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
        .venv/bin/python bench/profile_intake.py --kind fhir --requests 500

For a sampled profile of the same loop, run it under py-spy and summarise:

    .venv/bin/py-spy record --gil -r 500 -f raw -o /tmp/fhir.txt -- \\
        .venv/bin/python bench/profile_intake.py --kind fhir --requests 1500
    .venv/bin/python bench/pyspy_summary.py /tmp/fhir.txt
"""

import argparse
import asyncio
import functools
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench"

if os.environ.setdefault("PHARMREF_DATABASE_URL", BENCH_URL).rstrip("/").endswith("/test"):
    raise SystemExit("refusing to profile against the test database (the test suite owns it)")
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.chdir(ROOT)  # the JWT key pair lives under ./var

import httpx  # noqa: E402
import intake  # noqa: E402
from what_if import WHAT_IFS  # noqa: E402

# (module or "module:Class", attribute, label). Nested stages are inclusive of their children.
STAGES: list[tuple[str, str, str]] = [
    ("app.auth.deps", "decode_token", "JWT verify (python-jose RS256)"),
    ("app.fhir.bars", "parse_message", "BaRS parse_message (all validation layers)"),
    ("app.fhir.bars", "check_raw_resource", "  raw-JSON checks"),
    ("app.fhir.bars", "_model_issues", "  fhir.resources Bundle.model_validate"),
    ("app.fhir.bars", "to_new_referral", "BaRS extraction (to_new_referral)"),
    ("app.services.bars_intake", "resolve_target", "target lookup (DB)"),
    ("app.services.referrals", "create_referral_from_json", "create_referral_from_json"),
    ("app.services.referrals", "create_referral", "create_referral (rules + insert + commit)"),
    ("app.services.referrals", "_existing_message", "  idempotency lookup (DB)"),
    ("app.services.organisations", "get_organisation", "  organisation lookups (DB)"),
    ("app.services.organisations", "intake_directory", "  directory read, one statement (DB)"),
    ("app.services.organisations", "pharmacy_provides", "  pharmacy_provides (DB)"),
    ("app.services.rollups", "placement", "  rollup placement lookup (DB)"),
    ("app.services.rollups", "write_pending", "  rollup upsert (DB)"),
    ("sqlalchemy.orm:Session", "flush", "  Session.flush (INSERT referral)"),
    ("sqlalchemy.orm:Session", "commit", "  Session.commit (INSERT message + COMMIT)"),
    ("app.services.bars_intake", "to_response_message", "response Bundle build"),
    ("app.services.bars_intake", "response_message_json", "response Bundle build (JSON)"),
    ("app.services.referrals", "to_public", "to_public (response model)"),
    ("app.fhir.responses:FHIRResponse", "render", "FHIR response serialise"),
]


@dataclass(slots=True)
class Stage:
    label: str
    calls: int = 0
    wall: float = 0.0
    cpu: float = 0.0


def install_stage_timers() -> list[Stage]:
    stages = []
    for target, attribute, label in STAGES:
        module_name, _, class_name = target.partition(":")
        owner: Any = importlib.import_module(module_name)
        if class_name:
            owner = getattr(owner, class_name)
        original = getattr(owner, attribute, None)
        if original is None:
            continue
        stage = Stage(label)
        stages.append(stage)

        def timed(
            *args: Any, __fn: Callable[..., Any] = original, __s: Stage = stage, **kw: Any
        ) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return __fn(*args, **kw)
            finally:
                __s.calls += 1
                __s.wall += time.perf_counter() - wall
                __s.cpu += time.thread_time() - cpu

        setattr(owner, attribute, functools.wraps(original)(timed))
    return stages


def prepare(kind: str) -> tuple[Any, intake.Workload]:
    """Import the app (outside the measured loop) and build the requests."""
    from app.auth.tokens import create_access_token
    from app.main import app
    from app.models.enums import Role

    token = create_access_token(
        subject="bench", org="A81001", role=Role.GP_PRACTICE, ttl=timedelta(hours=1)
    )
    single = intake.Senders(practices=[intake.SENDER_ODS], tokens={intake.SENDER_ODS: token})
    if kind == "healthz":
        return app, intake.healthz_workload()
    build = intake.fhir_workload if kind == "fhir" else intake.json_workload
    return app, build(single, True)


async def drive(
    app: Any, workload: intake.Workload, warmup: int, requests: int
) -> tuple[float, float, dict[str, int]]:
    """Send warm-up then measured requests one at a time; (wall s, process CPU s, statuses)."""
    statuses: dict[str, int] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def send(i: int) -> None:
            headers = {**workload.headers, workload.per_request_header: str(uuid.uuid4())}
            if workload.body_headers:
                headers.update(workload.body_headers[i % len(workload.body_headers)])
            body = workload.bodies[i % len(workload.bodies)]
            response = await client.request(
                workload.method, workload.path, content=body or None, headers=headers
            )
            key = str(response.status_code)
            statuses[key] = statuses.get(key, 0) + 1
            if response.status_code >= 300 and statuses[key] == 1:
                print(f"unexpected {key}: {response.text[:500]}")

        for i in range(warmup):
            await send(i)
        statuses.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(requests):
            await send(warmup + i)
        return time.perf_counter() - wall, time.process_time() - cpu, statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["fhir", "json", "healthz"], required=True)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--no-stages", action="store_true", help="no stage timers (less overhead)")
    parser.add_argument(
        "--what-if",
        action="append",
        default=[],
        choices=sorted(WHAT_IFS),
        help="apply a candidate optimisation in this process (see bench/what_if.py)",
    )
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)

    app, workload = prepare(args.kind)
    for name in args.what_if:
        WHAT_IFS[name]()
    stages = [] if args.no_stages else install_stage_timers()
    if args.warmup:
        asyncio.run(drive(app, workload, args.warmup, 0))
        for stage in stages:
            stage.calls, stage.wall, stage.cpu = 0, 0.0, 0.0
    wall, cpu, statuses = asyncio.run(drive(app, workload, 0, args.requests))

    n = args.requests
    applied = f", what-if {'+'.join(args.what_if)}" if args.what_if else ""
    print(f"{args.kind}: {n} sequential in-process requests{applied}, statuses {statuses}")
    print(f"  wall {1000 * wall / n:.2f} ms/request, process CPU {1000 * cpu / n:.2f} ms/request")
    print(f"  => one fully busy core would serve about {n / cpu:.0f} req/s")
    rows = []
    if stages:
        print(f"  {'stage':<48} {'calls/req':>9} {'wall ms':>8} {'CPU ms':>7} {'% CPU':>6}")
        for stage in stages:
            if not stage.calls:
                continue
            row = {
                "stage": stage.label.strip(),
                "calls_per_request": round(stage.calls / n, 2),
                "wall_ms": round(1000 * stage.wall / n, 3),
                "cpu_ms": round(1000 * stage.cpu / n, 3),
                "cpu_pct_of_request": round(100 * stage.cpu / cpu, 1),
            }
            rows.append(row)
            print(
                f"  {stage.label:<48} {row['calls_per_request']:>9} {row['wall_ms']:>8.2f} "
                f"{row['cpu_ms']:>7.2f} {row['cpu_pct_of_request']:>5.1f}%"
            )
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "kind": args.kind,
                    "what_if": args.what_if,
                    "requests": n,
                    "statuses": statuses,
                    "wall_ms_per_request": round(1000 * wall / n, 3),
                    "cpu_ms_per_request": round(1000 * cpu / n, 3),
                    "stages": rows,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
