"""Run lifecycles cut after the first K steps, for instruction counts per step under valgrind.

10 full warm-up lifecycles, then N lifecycles that stop after step K (0: none, 1: create,
2: create and accept, 3: the whole lifecycle), in process through the real ASGI app as
bench/lifecycle_sql.py does. Instruction counts do not depend on what else the machine runs:

    export PHARMREF_RATE_LIMIT_PER_MINUTE=0 PYTHONMALLOC=malloc \\
        PHARMREF_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench
    for k in 0 1 2 3; do
        valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
            .venv/bin/python bench/lifecycle_steps.py $k 20 2>&1 | grep 'I *refs'
    done

Step k costs (I(k) - I(k - 1)) / N instructions.
"""

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.chdir(ROOT)  # the JWT key pair lives under ./var

# isort: off
import lifecycle  # noqa: E402  (installs the sniffio shim before httpx is imported)
import httpx  # noqa: E402

# isort: on


async def run(steps: int, lifecycles: int) -> None:
    from app.auth.tokens import create_access_token
    from app.main import app
    from app.models.enums import Role

    def token(role: Role, org: str) -> str:
        return create_access_token(subject="bench", org=org, role=role, ttl=timedelta(hours=1))

    runner = lifecycle.Lifecycles(
        token(Role.GP_PRACTICE, lifecycle.GP_ODS),
        token(Role.PHARMACY, lifecycle.PHARMACY_ODS),
        lifecycle.referral_bodies(50),
    )
    original = runner._step
    limit = len(lifecycle.STEPS)
    done = 0

    async def cut(client: httpx.AsyncClient, tally: Any, step: str, *rest: Any) -> Any:
        nonlocal done
        if lifecycle.STEPS.index(step) >= limit:
            return None  # Lifecycles.one stops at the first step that gives nothing
        answer = await original(client, tally, step, *rest)
        if answer is None:
            raise SystemExit(f"step {step} failed")
        done += 1
        return answer

    runner._step = cut  # type: ignore[method-assign]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for _ in range(10):
            await runner.one(client, None)
        limit = steps
        for _ in range(lifecycles):
            await runner.one(client, None)
    print(f"{done} steps run (30 warm-up, then {lifecycles} lifecycles cut after step {steps})")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not all(a.isdigit() for a in args) or int(args[0]) > 3:
        raise SystemExit("usage: lifecycle_steps.py STEPS(0-3) LIFECYCLES")
    asyncio.run(run(int(args[0]), int(args[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
