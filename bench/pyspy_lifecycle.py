"""Summarise a live py-spy profile of the lifecycle benchmark: stages, packages, functions, and
the endpoint each thread-side sample belongs to (also used for the inbox profile).

    .venv/bin/python bench/pyspy_lifecycle.py bench/results/.../pyspy-lifecycle.txt [--top 25]

bench/pyspy_summary.py with stages for create, accept and consultation (each sample is charged
to the first stage whose pattern appears anywhere in its stack). Record with
`bench/run_lifecycle.py --pyspy` (py-spy `--gil`: samples holding the GIL, about Python CPU time).
"""

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyspy_summary

STAGES: list[tuple[str, str]] = [
    (
        "DB connect/close (pool churn)",
        "_ConnectionRecord.__connect (sqlalchemy/pool/base.py|_close_connection (sqlalchemy/pool/",
    ),
    (
        "DB pool pre-ping (a SELECT 1 per checkout)",
        "_do_ping_w_event (sqlalchemy/engine/default.py",
    ),
    ("JWT verify (decode_token)", "decode_token (app/auth/tokens.py"),
    ("DB commit (flush of pending rows + COMMIT)", "commit (sqlalchemy/orm/session.py"),
    ("DB flush (autoflush before a query)", "flush (sqlalchemy/orm/session.py"),
    ("create: idempotency lookup", "_existing_message (app/services/referrals.py"),
    ("create: organisation / service lookups", "(app/services/organisations.py"),
    ("accept + consultation: load the referral", "get_visible_referral (app/services/referrals.py"),
    (
        "consultation: rules, stage lookup, rows",
        "record_consultation (app/services/consultations.py",
    ),
    ("accept: transition and event", "accept_referral (app/services/lifecycle.py"),
    (
        "create: mapping, rules, rows",
        "create_referral_from_json (app/services/referrals.py|create_referral (app/services/",
    ),
    ("inbox: query and ORM row loading (list_referrals)", "list_referrals (app/services/"),
    ("response: to_public / ConsultationPublic", "to_public (app/services/|_acted (app/routers/"),
    ("JSON response model validation + serialise", "serialize_response (fastapi/"),
    (
        "JSON request body read, parse, validate",
        "Request.body (starlette/|Request.json (starlette/|request_body_to_args (fastapi/",
    ),
    (
        "app code (other)",
        "(app/services/|(app/fhir/|(app/routers/|(app/auth/|(app/models/|(app/db/",
    ),
    (
        "threadpool hand-offs (anyio worker threads)",
        "run_sync_in_worker_thread (anyio/|WorkerThread.run (anyio/|run_in_threadpool (starlette/",
    ),
    (
        "framework: FastAPI, Starlette, uvicorn, middleware, dependency solving",
        "(fastapi/|(starlette/|(uvicorn/|(anyio/|(app/middleware.py",
    ),
]

ENDPOINTS = [
    ("create (POST /referrals)", "create_referral (app/routers/referrals.py"),
    ("accept (POST /{id}/accept)", "accept_referral (app/routers/referrals.py"),
    ("consultation (POST /{id}/consultation)", "create_consultation (app/routers/consultations.py"),
    (
        "referral load dependency (accept, consultation)",
        "get_visible_referral (app/routers/deps.py",
    ),
    ("inbox (GET /referrals)", "read_referrals (app/routers/referrals.py"),
]


def endpoint_split(profile: Path) -> None:
    keep = re.compile(pyspy_summary._regex(pyspy_summary.REQUEST_PATH))
    split: Counter[str] = Counter()
    total = 0
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or not keep.search(stack):
            continue
        total += int(count)
        name = next((n for n, pattern in ENDPOINTS if pattern in stack), "event loop (no endpoint)")
        split[name] += int(count)
    if total:
        print(f"\nendpoint on the stack (% of {total} samples)")
        for name, n in split.most_common():
            print(f"  {100 * n / total:5.1f}%  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    pyspy_summary.STAGES = STAGES
    status = pyspy_summary.main([str(args.profile), "--top", str(args.top)])
    endpoint_split(args.profile)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
