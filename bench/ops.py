"""What the operations features cost on PostgreSQL with a million referrals.

1. drop and re-create the database (`--db`, default `test_ops_bench`), `pharmref migrate`,
   `pharmref seed-demo`, then seed `--rows` referrals with bench/inbox.py's set-based SQL and
   `VACUUM (ANALYZE)` (skipped with --reuse when the referrals are already there);
2. time the /metrics database gauges in process (the referral GROUP BY and the outbox query),
   `--repeat` times, and print `EXPLAIN (ANALYZE, BUFFERS)` of the GROUP BY; then the same
   without the index on (service, status) that serves it (dropped for the comparison and
   created again);
3. time, one call after another, what a request pays for the rate limit (one upsert and its
   commit) and for the audit of a read (one referral, and a page of 50), next to a `SELECT 1`
   and commit for the machine's round-trip cost at the time;
4. print a table and write `--out` (JSON).

Run from the project root:

    .venv/bin/python bench/ops.py
"""

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import inbox  # noqa: E402
import psycopg  # noqa: E402
import run as bench_run  # noqa: E402

GROUP_BY = "SELECT service, status, count(*) FROM referral GROUP BY service, status"
INDEX = "ix_referral_service_status"
CREATE_INDEX = f"CREATE INDEX {INDEX} ON referral (service, status)"


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    fn()  # warm the cache and the connection
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return {
        "n": repeat,
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[max(0, int(0.95 * repeat) - 1)], 2),
        "max_ms": round(samples[-1], 2),
    }


def explain(args: argparse.Namespace) -> str:
    with psycopg.connect(inbox.pg_dsn(args), autocommit=True) as conn:
        rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {GROUP_BY}").fetchall()
    return "\n".join(row[0] for row in rows)


def gauges(args: argparse.Namespace) -> dict[str, Any]:
    from sqlmodel import Session

    from app.db.base import utc_now
    from app.db.session import make_engine
    from app.services import metrics

    engine = make_engine(inbox.pg_dsn(args).replace("postgresql://", "postgresql+psycopg://"))

    def scrape() -> None:
        with Session(engine) as session:
            metrics.database_gauges(session=session, now=utc_now())

    result = {"database_gauges": timed(scrape, args.repeat), "plan": explain(args)}
    engine.dispose()
    return result


def request_costs(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import text
    from sqlmodel import Session, select

    from app.db.base import utc_now
    from app.db.session import make_engine
    from app.models.enums import Role
    from app.models.referral import Referral
    from app.models.user import User
    from app.services import audit, rate_limit

    engine = make_engine(inbox.pg_dsn(args).replace("postgresql://", "postgresql+psycopg://"))
    caller = User(subject="bench:gp-practice:A81001", org="A81001", role=Role.GP_PRACTICE)
    key = f"client:BENCH:{uuid.uuid4()}"
    with Session(engine, expire_on_commit=False) as session:
        ids = list(session.exec(select(Referral.id).limit(50)).all())

        def round_trip() -> None:
            session.execute(text("SELECT 1"))
            session.commit()

        def hit() -> None:
            rate_limit.hit(session=session, key=key, limit=10**9, now=utc_now())

        def read(count: int) -> Callable[[], None]:
            def record() -> None:
                audit.record_read(
                    session=session,
                    caller=caller,
                    method="GET",
                    route="/api/v1/referrals",
                    referral_ids=ids[:count],
                )

            return record

        result = {
            "baseline_select_1_and_commit": timed(round_trip, args.repeat),
            "rate_limit_hit": timed(hit, args.repeat),
            "audit_one_referral": timed(read(1), args.repeat),
            "audit_page_of_50": timed(read(50), args.repeat),
        }
    with psycopg.connect(inbox.pg_dsn(args), autocommit=True) as conn:
        conn.execute("DELETE FROM rate_limit_counter WHERE client_key = %s", (key,))
        conn.execute("DELETE FROM read_audit WHERE actor_subject = %s", (caller.subject,))
    engine.dispose()
    return result


def present(args: argparse.Namespace) -> int:
    """Referrals already in the database when --reuse is given (else 0: reset and seed)."""
    if not args.reuse:
        return 0
    try:
        with psycopg.connect(inbox.pg_dsn(args)) as conn:
            row = conn.execute("SELECT count(*) FROM referral").fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="test_ops_bench")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--received-share", type=float, default=0.04)
    parser.add_argument("--accepted-share", type=float, default=0.02)
    parser.add_argument("--urgent-share", type=float, default=0.05)
    parser.add_argument("--skew", type=float, default=1.5)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--reuse", action="store_true", help="keep a database already seeded")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "latest-ops" / "ops.json"
    )
    args = parser.parse_args(argv)
    if args.db in {"test", "postgres", "template0", "template1"}:
        parser.error(f"refusing to use the {args.db} database")

    # before anything imports the app's settings (inbox.seed reads the timeframes from them)
    os.environ["PHARMREF_DATABASE_URL"] = inbox.pg_dsn(args)
    env = dict(os.environ)
    seeded: dict[str, Any] = {"reused": True}
    if present(args) < args.rows:
        bench_run.reset_database(args, env)
        seeded = inbox.seed(args)

    results: dict[str, Any] = {"rows": args.rows, "seed": seeded}
    results["metrics"] = gauges(args)
    with psycopg.connect(inbox.pg_dsn(args), autocommit=True) as conn:
        conn.execute(f"DROP INDEX {INDEX}")
    try:
        results["metrics_without_service_status_index"] = gauges(args)
    finally:
        with psycopg.connect(inbox.pg_dsn(args), autocommit=True) as conn:
            conn.execute(CREATE_INDEX)
            conn.execute("VACUUM (ANALYZE) referral")
    results["per_request"] = request_costs(args)

    print(f"\n{args.rows:,} referrals; {args.repeat} calls each, one after another")
    print(f"{'what':<48} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    rows = [
        ("/metrics database gauges", results["metrics"]["database_gauges"]),
        (
            "  ... without the (service, status) index",
            results["metrics_without_service_status_index"]["database_gauges"],
        ),
        *[(name.replace("_", " "), figures) for name, figures in results["per_request"].items()],
    ]
    for name, figures in rows:
        print(f"{name:<48} {figures['p50_ms']:>8} {figures['p95_ms']:>8} {figures['max_ms']:>8}")
    print("\nGROUP BY plan:\n" + results["metrics"]["plan"])
    print("\nwithout the index:\n" + results["metrics_without_service_status_index"]["plan"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
