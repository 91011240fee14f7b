"""Summarise a `py-spy record -f raw` profile of the intake path: stages, packages, functions.

    .venv/bin/python bench/pyspy_summary.py /tmp/fhir.txt [--top 25]

Each sample is charged to the first stage below whose pattern appears anywhere in its stack, so
the stage shares add up to 100% (record with `--gil` to count only samples holding the GIL, which
approximates Python CPU time and leaves out waits on PostgreSQL and the network).
"""

import argparse
import re
from collections import Counter
from pathlib import Path

STAGES: list[tuple[str, str]] = [
    (
        "DB connect/close (pool overflow churn)",
        "_ConnectionRecord.__connect (sqlalchemy/pool/base.py|_close_connection (sqlalchemy/pool/",
    ),
    (
        "DB pool pre-ping (a SELECT 1 per checkout)",
        "_do_ping_w_event (sqlalchemy/engine/default.py",
    ),
    ("FHIR model validation (fhir.resources)", "_model_issues (app/fhir/bars.py"),
    ("FHIR raw-JSON checks", "check_raw_resource (app/fhir/raw_checks.py"),
    ("BaRS other checks (parse_message)", "parse_message (app/fhir/bars.py"),
    ("BaRS extraction (to_new_referral)", "to_new_referral (app/fhir/bars.py"),
    ("response Bundle build + validate (to_response_message)", "to_response_message (app/"),
    ("FHIR response serialise (model_dump_json)", "render (app/fhir/responses.py"),
    ("JWT verify (decode_token)", "decode_token (app/auth/tokens.py"),
    ("DB idempotency lookup (_existing_message)", "_existing_message (app/services/referrals.py"),
    ("DB commit (INSERT inbound_message + COMMIT)", "commit (sqlalchemy/orm/session.py"),
    ("DB flush (INSERT referral; autoflush)", "flush (sqlalchemy/orm/session.py"),
    ("DB organisation / service lookups", "(app/services/organisations.py"),
    ("DB session open/close (get_session)", "get_session (app/db/session.py"),
    ("JSON request body validation (pydantic)", "request_body_to_args (fastapi/"),
    ("JSON response model validation + serialise", "serialize_response (fastapi/"),
    ("app code (other)", "(app/services/|(app/fhir/|(app/routers/|(app/auth/|(app/models/"),
    (
        "framework: FastAPI, Starlette, uvicorn, anyio, middleware",
        "(fastapi/|(starlette/|(uvicorn/|(anyio/|(app/middleware.py",
    ),
    ("in-process client (httpx) and event loop", "(httpx/|(httpcore/|(asyncio/|(uvloop/"),
]

# Samples outside request handling (imports at start-up, idle supervisor threads) are dropped.
REQUEST_PATH = "WorkerThread.run|drive (|run_asgi (uvicorn/|data_received (uvicorn/"

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]+)(?::\d+)?\)$")


def package(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame or "?"
    parts = match["file"].split("site-packages/")[-1].split("/")
    if parts[0] == "app":
        return "/".join(parts[:2]).removesuffix(".py")
    return parts[0].removesuffix(".py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--all", action="store_true", help="keep samples outside request handling")
    args = parser.parse_args(argv)
    keep = re.compile(_regex(REQUEST_PATH))

    stages: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if not args.all and not keep.search(stack):
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        stage = next(
            (name for name, pattern in STAGES if re.search(_regex(pattern), stack)), "other"
        )
        stages[stage] += n
        packages[package(frames[-1])] += n
        functions[frames[-1]] += n
    if not total:
        raise SystemExit("no samples")

    def show(title: str, counter: Counter[str], top: int) -> None:
        print(f"\n{title} (% of {total} samples)")
        for name, n in counter.most_common(top):
            print(f"  {100 * n / total:5.1f}%  {name}")

    show("stage (first match in the stack)", stages, len(STAGES) + 1)
    show("package of the innermost frame (self time)", packages, args.top)
    show("innermost function (self time)", functions, args.top)
    return 0


def _regex(pattern: str) -> str:
    return "|".join(re.escape(part) for part in pattern.split("|"))


if __name__ == "__main__":
    raise SystemExit(main())
