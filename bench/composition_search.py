"""Time GET /fhir/Composition (consultation summary search) over many summaries in PostgreSQL.

1. drop and re-create the database (`--db`), `pharmref migrate`, `pharmref seed-demo`, then seed
   `--rows` referrals with bench/inbox.py's set-based SQL (skipped with --reuse when they are
   there already);
2. give every completed referral its consultations straight in SQL (one; a DMS referral one per
   stage, a day apart), recorded when the referral was last updated; VACUUM (ANALYZE);
3. in process, for each scenario below: run the search use-case and render its searchset as the
   route does (`--repeat` times; median and p95 printed), and EXPLAIN (ANALYZE, BUFFERS) the SQL it
   issues (the count for `total` and the page).

Scenarios: the busiest GP practice polling for what is new (`_lastUpdated=gt` an hour, and a
day, before the newest summary), the same practice listing everything from the start and then 20
pages further on (keyset cursor), one patient's summaries by NHS number, and the busiest pharmacy
polling.

Run from the project root (the database name must not be one the tests use):

    .venv/bin/python bench/composition_search.py --db bench_composition --rows 300000
"""

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

# isort: off
import intake  # noqa: F401  (installs the sniffio shim before httpx is imported)
import inbox
import run as bench_run

# isort: on

ROOT = bench_run.ROOT

CONSULTATIONS_SQL = """
INSERT INTO consultation (
    id, referral_id, service, stage, outcome, clinician_name, gphc_number, record, derived,
    override, recorded_by_org, recorded_by_subject, recorded_at
)
SELECT gen_random_uuid(), r.id, r.service, CASE WHEN r.service = 'dms' THEN s ELSE 0 END,
       CASE WHEN r.service = 'dms' THEN 'stage-' || s || '-complete' ELSE 'advice-self-care' END,
       'Priya Example', '2099999', '{}'::json, '{}'::json, NULL, r.pharmacy_ods, 'bench',
       r.updated_at - (3 - s) * interval '1 day'
FROM referral r CROSS JOIN generate_series(1, 3) AS s
WHERE r.status = 'completed' AND (r.service = 'dms' OR s = 3)
  AND NOT EXISTS (SELECT 1 FROM consultation c WHERE c.referral_id = r.id)
"""


def seed_consultations(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(CONSULTATIONS_SQL)
        conn.execute("VACUUM (ANALYZE) consultation")
        row = conn.execute("SELECT count(*) FROM consultation").fetchone()
    assert row is not None
    return int(row[0])


def busiest(dsn: str) -> dict[str, str]:
    """The practice and pharmacy with the most summaries, and a patient of that practice."""
    with psycopg.connect(dsn) as conn:
        practice = conn.execute(
            "SELECT r.referrer_ods FROM consultation c JOIN referral r ON r.id = c.referral_id "
            "WHERE r.source = 'gp-practice' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        pharmacy = conn.execute(
            "SELECT r.pharmacy_ods FROM consultation c JOIN referral r ON r.id = c.referral_id "
            "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        assert practice is not None
        assert pharmacy is not None
        patient = conn.execute(
            "SELECT r.patient_nhs_number FROM consultation c JOIN referral r "
            "ON r.id = c.referral_id WHERE r.referrer_ods = %s GROUP BY 1 "
            "ORDER BY count(*) DESC LIMIT 1",
            (practice[0],),
        ).fetchone()
        assert patient is not None
        newest = conn.execute("SELECT max(recorded_at) FROM consultation").fetchone()
        assert newest is not None
    return {
        "practice": practice[0],
        "pharmacy": pharmacy[0],
        "patient": patient[0],
        "newest": newest[0].isoformat(),
    }


def measure(args: argparse.Namespace, who: dict[str, str]) -> list[dict[str, Any]]:
    """Each scenario through the use-case and the mapper, timed, with its SQL EXPLAINed."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import event
    from sqlmodel import Session

    from app.db.session import engine
    from app.fhir import composition
    from app.models.enums import Role
    from app.models.user import User
    from app.services import summaries

    practice = User(subject="bench", org=who["practice"], role=Role.GP_PRACTICE)
    pharmacy = User(subject="bench", org=who["pharmacy"], role=Role.PHARMACY)
    newest = datetime.fromisoformat(who["newest"])

    def since(window: timedelta) -> summaries.SummaryFilter:
        return summaries.SummaryFilter(recorded=(("gt", newest - window),))

    def cursor_after(pages: int) -> str | None:
        cursor = None
        with Session(engine) as session:
            for _ in range(pages):
                page = summaries.search_summaries(
                    session=session,
                    caller=practice,
                    filters=summaries.SummaryFilter(),
                    cursor=cursor,
                    limit=args.count,
                )
                cursor = page.next_cursor
        return cursor

    hour, day = timedelta(hours=1), timedelta(days=1)
    scenarios: list[tuple[str, Any, summaries.SummaryFilter, str | None]] = [
        ("practice polls: the last hour's", practice, since(hour), None),
        ("practice polls: the last day's", practice, since(day), None),
        ("practice lists all: first page", practice, summaries.SummaryFilter(), None),
        ("practice lists all: page 21", practice, summaries.SummaryFilter(), cursor_after(20)),
        (
            "practice, one patient by NHS number",
            practice,
            summaries.SummaryFilter(nhs_number=who["patient"]),
            None,
        ),
        ("pharmacy polls: the last hour's", pharmacy, since(hour), None),
        ("pharmacy polls: the last day's", pharmacy, since(day), None),
    ]
    captured: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        captured.append((statement, parameters))

    results = []
    for name, caller, filters, cursor in scenarios:
        timings = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            with Session(engine) as session:
                page = summaries.search_summaries(
                    session=session, caller=caller, filters=filters, cursor=cursor, limit=args.count
                )
                body = orjson.dumps(
                    composition.searchset_json(
                        page.heads,
                        total=page.total,
                        base_url="http://bench/fhir",
                        self_url="http://bench/fhir/Composition",
                        next_url=None,
                    )
                )
            timings.append((time.perf_counter() - began) * 1000)
        captured.clear()
        event.listen(engine, "before_cursor_execute", grab)
        with Session(engine) as session:
            summaries.search_summaries(
                session=session, caller=caller, filters=filters, cursor=cursor, limit=args.count
            )
        event.remove(engine, "before_cursor_execute", grab)
        plans = []
        raw = engine.raw_connection()
        try:
            sql_cursor = raw.cursor()
            for statement, parameters in captured:
                sql_cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                plans.append([row[0] for row in sql_cursor.fetchall()])
            raw.rollback()
        finally:
            raw.close()
        timings.sort()
        results.append(
            {
                "scenario": name,
                "total": page.total,
                "entries": len(page.heads),
                "bytes": len(body),
                "median_ms": round(statistics.median(timings), 2),
                "p95_ms": round(timings[int(0.95 * (len(timings) - 1))], 2),
                "sql_ms": [inbox.plan_ms(plan, "Execution Time") for plan in plans],
                "plans": plans,
            }
        )
    engine.dispose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="bench_composition", help="database to drop and seed")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--rows", type=int, default=300_000, help="referrals to seed")
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--received-share", type=float, default=0.04)
    parser.add_argument("--accepted-share", type=float, default=0.02)
    parser.add_argument("--urgent-share", type=float, default=0.05)
    parser.add_argument("--skew", type=float, default=1.5)
    parser.add_argument("--count", type=int, default=50, help="_count")
    parser.add_argument("--repeat", type=int, default=50, help="timed runs per scenario")
    parser.add_argument("--reuse", action="store_true", help="keep an already seeded database")
    parser.add_argument("--plans", action="store_true", help="print the EXPLAIN plans")
    args = parser.parse_args(argv)
    if args.db in {"test", "postgres", "template0", "template1"}:
        parser.error(f"refusing to use the {args.db} database")
    dsn = inbox.pg_dsn(args)
    os.environ["PHARMREF_DATABASE_URL"] = f"postgresql+psycopg://{dsn.split('://')[1]}"
    present = 0
    if args.reuse:
        try:
            with psycopg.connect(dsn) as conn:
                row = conn.execute("SELECT count(*) FROM referral").fetchone()
                present = row[0] if row else 0
        except psycopg.Error:
            present = 0
    if present < args.rows:
        bench_run.reset_database(args, dict(os.environ))
        inbox.seed(args)
    summaries_count = seed_consultations(dsn)
    who = busiest(dsn)
    print(
        f"{summaries_count:,} summaries; busiest practice {who['practice']}, pharmacy "
        f"{who['pharmacy']}",
        flush=True,
    )
    for result in measure(args, who):
        print(
            f"{result['scenario']:<42} total {result['total']:>6,}  entries {result['entries']:>3}  "
            f"median {result['median_ms']:>6.2f} ms  p95 {result['p95_ms']:>6.2f} ms  "
            f"SQL (count, page) {result['sql_ms']} ms"
        )
        if args.plans:
            for plan in result["plans"]:
                print("    " + "\n    ".join(plan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
