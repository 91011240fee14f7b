"""What one referral lifecycle costs per step: SQL statements, round trips and in-process CPU.

Runs `--lifecycles` lifecycles one after another through the real ASGI app in this process
(httpx.ASGITransport: middleware, routing, dependencies, threadpool hop and rendering all run),
against the PostgreSQL database in PHARMREF_DATABASE_URL (default: the `bench` database, which
must be migrated and seeded: run bench/run_lifecycle.py or `pharmref migrate && pharmref
seed-demo` first). A listener on the engine counts the statements each step issues, by kind.

    .venv/bin/python bench/lifecycle_sql.py --lifecycles 300
"""

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench"

if os.environ.setdefault("PHARMREF_DATABASE_URL", BENCH_URL).rstrip("/").endswith("/test"):
    raise SystemExit("refusing to run against the test database (the test suite owns it)")
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.chdir(ROOT)  # the JWT key pair lives under ./var

# isort: off
import lifecycle  # noqa: E402  (installs the sniffio shim before httpx is imported)
import httpx  # noqa: E402

# isort: on


def kind(statement: str) -> str:
    words = statement.lstrip().split(None, 1)
    verb = words[0].upper() if words else "?"
    if verb == "SELECT" and "FOR UPDATE" in statement.upper():
        return "SELECT FOR UPDATE"
    return verb


async def run(args: argparse.Namespace) -> None:
    from sqlalchemy import event

    from app.auth.tokens import create_access_token
    from app.db.session import engine
    from app.main import app
    from app.models.enums import Role

    def token(role: Role, org: str) -> str:
        return create_access_token(subject="bench", org=org, role=role, ttl=timedelta(hours=1))

    statements: Counter[str] = Counter()

    def on_execute(*params: Any) -> None:
        statements[kind(params[2])] += 1

    def on_commit(_conn: Any) -> None:
        statements["COMMIT"] += 1

    def on_rollback(_conn: Any) -> None:
        statements["ROLLBACK"] += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    event.listen(engine, "rollback", on_rollback)
    runner = lifecycle.Lifecycles(
        token(Role.GP_PRACTICE, lifecycle.GP_ODS),
        token(Role.PHARMACY, lifecycle.PHARMACY_ODS),
        lifecycle.referral_bodies(50),
    )
    per_step: dict[str, Counter[str]] = {step: Counter() for step in lifecycle.STEPS}
    cpu = dict.fromkeys(lifecycle.STEPS, 0.0)
    wall = dict.fromkeys(lifecycle.STEPS, 0.0)
    original = runner._step

    async def counted(client: httpx.AsyncClient, tally: Any, step: str, *rest: Any) -> Any:
        statements.clear()
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            return await original(client, tally, step, *rest)
        finally:
            cpu[step] += time.process_time() - c0
            wall[step] += time.perf_counter() - w0
            per_step[step].update(statements)

    runner._step = counted  # type: ignore[method-assign]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for _ in range(args.warmup):
            await runner.one(client, None)
        for counter in per_step.values():
            counter.clear()
        cpu.update(dict.fromkeys(cpu, 0.0))
        wall.update(dict.fromkeys(wall, 0.0))
        tally = lifecycle.Tally()
        for _ in range(args.lifecycles):
            await runner.one(client, tally)
    n = args.lifecycles
    if tally.completed != n:
        for step, results in tally.steps.items():
            for sample in results.error_samples:
                print(f"  {step} error: {sample}")
        raise SystemExit(f"only {tally.completed} of {n} lifecycles completed")
    print(f"{n} lifecycles in process, one at a time (per lifecycle step, averages)")
    print("| step | CPU ms | wall ms | statements (by kind) | round trips incl. COMMIT |")
    print("|---|---|---|---|---|")
    totals: Counter[str] = Counter()
    for step in lifecycle.STEPS:
        counts = per_step[step]
        totals.update(counts)
        kinds = ", ".join(f"{k} {v / n:g}" for k, v in sorted(counts.items()))
        print(
            f"| {step} | {1000 * cpu[step] / n:.2f} | {1000 * wall[step] / n:.2f} | {kinds} | "
            f"{sum(counts.values()) / n:g} |"
        )
    kinds = ", ".join(f"{k} {v / n:g}" for k, v in sorted(totals.items()))
    print(
        f"| lifecycle | {1000 * sum(cpu.values()) / n:.2f} | {1000 * sum(wall.values()) / n:.2f} "
        f"| {kinds} | {sum(totals.values()) / n:g} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifecycles", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
