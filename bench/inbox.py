"""Time the pharmacy inbox with a million referrals in PostgreSQL.

1. drop and re-create the `bench` database, `pharmref migrate`, `pharmref seed-demo`
   (bench/run.py's reset; skipped with --reuse when the referrals are already there);
2. seed `--rows` referrals straight into the `referral` table with set-based SQL
   (`INSERT ... SELECT ... FROM generate_series(...)`, in batches), then `VACUUM (ANALYZE)`;
3. start `pharmref serve --workers 2` (bench/run.py's server start and stop), wait for a quiet
   machine, and time `GET /api/v1/referrals?status=received&order=urgency&limit=50` as several
   pharmacies, one request at a time over one keep-alive connection, checking every answer
   (status 200, page size, urgency order);
4. send the same request once through the app in process (httpx.ASGITransport) with a listener
   on the engine that captures the SQL it issues, run `EXPLAIN (ANALYZE, BUFFERS)` on it, and
   print the plans;
5. stop the server (always, also on errors and Ctrl-C/SIGTERM).

The data: pharmacies are the seeded demo pharmacies, ranked by ODS code, each row's pharmacy drawn
with a power-law skew (rank = n * u^skew, so the first pharmacy gets about 10 times the last's
share at the default skew 1.5); statuses mostly completed, with `--received-share` received and
`--accepted-share` accepted; ~5% urgent; services, pathways, sources and referrers spread over
the demo directory; synthetic patients with 999-range NHS numbers. The data is as the app's
timeframe sweep would leave it (each server worker runs the sweep): received referrals were made
within their service's due time plus no-contact grace, accepted ones in the last week, so due_at
lies around now; open referrals past due carry `overdue_at`. Open referrals are scattered through
the heap, not clustered at its end as a real table's recent rows would be: the pessimistic case
for the inbox query. The sweep's own two queries are EXPLAINed too.

Run from the project root:

    .venv/bin/python bench/inbox.py
"""

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# isort: off
# intake installs the sniffio shim when imported, which must happen before httpx is imported
import intake
import httpx
import psycopg
import run as bench_run

# isort: on

ROOT, BIN = bench_run.ROOT, bench_run.BIN
TARGET_P95_MS = 20.0
INBOX_QUERY = "status=received&order=urgency&limit=50"

FAMILY_NAMES = [
    "Testpatient", "Example", "Sample", "Dummy", "Fictional", "Specimen", "Placeholder", "Madeup",
    "Synthetic", "Notreal", "Mockby", "Trialson", "Demoward", "Fakeley", "Pretendon", "Testwood",
]  # fmt: skip
GIVEN_NAMES = [
    "Alex", "Sam", "Jo", "Charlie", "Robin", "Jamie", "Morgan", "Casey", "Riley", "Taylor",
    "Jordan", "Avery", "Quinn", "Rowan", "Sasha", "Frankie",
]  # fmt: skip

# One statement per batch. Every random draw is made once per row in the inner subquery (OFFSET 0
# and the volatile random() keep PostgreSQL from flattening it, so each draw is evaluated once).
SEED_SQL = """
WITH p AS (
    SELECT %(pharmacies)s::text[] AS pharmacies, %(practices)s::text[] AS practices,
           %(trusts)s::text[] AS trusts, %(nhs)s::text[] AS nhs,
           %(family)s::text[] AS family, %(given)s::text[] AS given,
           now() AS now
), d AS (
    SELECT g, u_pharmacy, u_service, u_misc, u_age, u_when, u_priority, u_source, u_close,
        CASE WHEN u_status < %(received)s THEN 'received'
             WHEN u_status < %(received)s + %(accepted)s THEN 'accepted'
             WHEN u_status < 0.90 THEN 'completed'
             WHEN u_status < 0.92 THEN 'declined'
             WHEN u_status < 0.935 THEN 'forwarded'
             WHEN u_status < 0.95 THEN 'returned'
             WHEN u_status < 0.97 THEN 'cancelled'
             ELSE 'no-contact' END AS status,
        CASE WHEN u_service < 0.70 THEN 'pharmacy-first'
             WHEN u_service < 0.85 THEN 'blood-pressure'
             WHEN u_service < 0.95 THEN 'contraception'
             ELSE 'dms' END AS service
    FROM (
        SELECT g, random() AS u_pharmacy, random() AS u_status, random() AS u_service,
               random() AS u_misc, random() AS u_age, random() AS u_when, random() AS u_priority,
               random() AS u_source, random() AS u_close
        FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
        OFFSET 0
    ) AS u
), t AS (
    SELECT d.*,
        d.status IN ('received', 'accepted') AS open,
        CASE WHEN d.service = 'dms' THEN 'trust'
             WHEN d.u_source < 0.75 THEN 'gp-practice'
             WHEN d.u_source < 0.90 THEN 'nhs111'
             WHEN d.u_source < 0.96 THEN 'urgent-care'
             ELSE 'self-referral' END AS source,
        CASE WHEN d.u_priority < %(urgent)s THEN 'urgent' ELSE 'routine' END AS priority,
        p.pharmacies[1 + least(cardinality(p.pharmacies) - 1,
                               floor(cardinality(p.pharmacies) * power(d.u_pharmacy, %(skew)s))::int)]
            AS pharmacy_ods,
        p.practices[1 + (d.g %% cardinality(p.practices))::int] AS practice_ods,
        make_interval(hours => CASE d.service WHEN 'pharmacy-first' THEN %(due_pf)s
                                              WHEN 'blood-pressure' THEN %(due_bp)s
                                              WHEN 'contraception' THEN %(due_con)s
                                              ELSE %(due_dms)s END) AS due_in,
        -- received: inside the due time plus the no-contact grace (the sweep has not closed
        -- it); accepted: in the last week; closed: over the year before that
        p.now - CASE d.status
            WHEN 'received' THEN 0.95 * d.u_when * make_interval(hours => CASE d.service
                WHEN 'pharmacy-first' THEN %(due_pf)s + %(grace_pf)s
                WHEN 'blood-pressure' THEN %(due_bp)s + %(grace_bp)s
                WHEN 'contraception' THEN %(due_con)s + %(grace_con)s
                ELSE %(due_dms)s + %(grace_dms)s END)
            WHEN 'accepted' THEN d.u_when * interval '7 days'
            ELSE interval '7 days' + d.u_when * interval '358 days' END AS created_at
    FROM d CROSS JOIN p
)
INSERT INTO referral (
    id, reference, service, pathway, status, status_reason, source, intake, priority,
    referrer_ods, pharmacy_ods, patient_practice_ods, clinician_name, clinician_id,
    patient_nhs_number, patient_family_name, patient_given_name, patient_birth_date, patient_sex,
    patient_phone, reason, notes, bp_systolic, bp_diastolic, bp_measured_at, bmi, abpm_requested,
    contraceptive_type, contraceptive_dmd_code, contraceptive_name, discharged_at,
    discharge_medicines, forwarded_from_id, bars_bundle_id, correlation_id, authored_at, due_at,
    overdue_at, escalated_at, version, created_at, updated_at
)
SELECT
    gen_random_uuid(),
    'BN-' || to_char(t.g, 'FM0000000000'),
    t.service,
    CASE WHEN t.service = 'pharmacy-first' THEN (ARRAY[
        'minor-illness', 'minor-illness', 'minor-illness', 'sinusitis', 'sore-throat',
        'acute-otitis-media', 'infected-insect-bite', 'impetigo', 'shingles',
        'uncomplicated-uti'])[1 + floor(t.u_misc * 10)::int] END,
    t.status,
    CASE t.status WHEN 'declined' THEN 'no-capacity'
                  WHEN 'returned' THEN 'Needs a GP examination'
                  WHEN 'cancelled' THEN 'No longer needed'
                  WHEN 'forwarded' THEN 'Closer to the patient' END,
    t.source,
    CASE WHEN t.g %% 5 < 3 THEN 'fhir' ELSE 'json' END,
    t.priority,
    CASE t.source WHEN 'gp-practice' THEN t.practice_ods
                  WHEN 'nhs111' THEN 'NHS11'
                  WHEN 'self-referral' THEN t.pharmacy_ods
                  ELSE p.trusts[1 + (t.g %% cardinality(p.trusts))::int] END,
    t.pharmacy_ods,
    t.practice_ods,
    'Dr Sam Example',
    'G' || lpad((t.g %% 10000000)::text, 7, '0'),
    p.nhs[1 + (t.g %% cardinality(p.nhs))::int],
    p.family[1 + (t.g %% cardinality(p.family))::int],
    p.given[1 + ((t.g / 7) %% cardinality(p.given))::int],
    CASE WHEN t.service = 'contraception' THEN date '1977-01-01' + floor(t.u_age * 11000)::int
         ELSE date '1936-01-01' + floor(t.u_age * 31000)::int END,
    CASE WHEN t.service = 'contraception' OR t.g %% 2 = 0 THEN 'female' ELSE 'male' END,
    '07700 900' || lpad((t.g %% 1000)::text, 3, '0'),
    CASE t.service WHEN 'pharmacy-first' THEN 'Sore throat for 3 days, FeverPAIN 2'
                   WHEN 'blood-pressure' THEN 'Raised clinic reading; please arrange ABPM'
                   WHEN 'contraception' THEN 'Ongoing supply of the combined pill'
                   ELSE 'Discharged after admission for heart failure; new loop diuretic' END,
    CASE WHEN t.u_misc < 0.3 THEN 'Patient prefers a morning call.' END,
    CASE WHEN t.service = 'blood-pressure' THEN 125 + floor(t.u_misc * 50)::int END,
    CASE WHEN t.service = 'blood-pressure' THEN 75 + floor(t.u_misc * 30)::int END,
    CASE WHEN t.service = 'blood-pressure' THEN t.created_at - interval '1 day' END,
    CASE WHEN t.service = 'contraception' THEN round((19 + t.u_misc * 12)::numeric, 1) END,
    t.service = 'blood-pressure' AND t.u_misc < 0.5,
    CASE WHEN t.service = 'contraception' THEN CASE WHEN t.u_misc < 0.6 THEN 'coc' ELSE 'pop' END END,
    CASE WHEN t.service = 'contraception' THEN '17346711000001106' END,
    CASE WHEN t.service = 'contraception' THEN 'Rigevidon tablets' END,
    CASE WHEN t.service = 'dms' THEN t.created_at - interval '6 hours' END,
    CASE WHEN t.service = 'dms' THEN
        '[{"name": "Furosemide 40mg tablets", "dmd_code": "317971007", "dose": "One each morning", "change": "new"}]'::json
    END,
    NULL,
    CASE WHEN t.g %% 5 < 3 THEN md5(t.g::text) END,
    CASE WHEN t.g %% 5 < 3 THEN md5('c' || t.g::text) END,
    t.created_at,
    t.created_at + t.due_in,
    -- open and past due: marked overdue, as the sweep does within a minute
    CASE WHEN t.open AND t.created_at + t.due_in <= p.now
         THEN t.created_at + t.due_in + interval '30 seconds' END,
    NULL,
    CASE t.status WHEN 'received' THEN 1 WHEN 'accepted' THEN 2 ELSE 3 END,
    t.created_at,
    CASE WHEN t.status = 'received' THEN t.created_at
         WHEN t.status = 'accepted' THEN t.created_at + (p.now - t.created_at) * t.u_close
         ELSE t.created_at + t.u_close * interval '5 days' END
FROM t CROSS JOIN p
"""


def pg_dsn(args: argparse.Namespace) -> str:
    return f"postgresql://postgres@{args.pg_host}:{args.pg_port}/{args.db}"


def timeframes() -> dict[str, int]:
    """The app's due hours and no-contact grace hours per service (its settings, defaults or env)."""
    sys.path.insert(0, str(ROOT))
    from app.core.config import settings
    from app.models.enums import Service

    short = {
        Service.PHARMACY_FIRST: "pf",
        Service.BLOOD_PRESSURE: "bp",
        Service.CONTRACEPTION: "con",
        Service.DMS: "dms",
    }
    grace_never = 7 * 24  # a service without a grace period is never closed: keep a week
    return {
        **{f"due_{k}": settings.due_hours[service] for service, k in short.items()},
        **{
            f"grace_{k}": settings.no_contact_grace_hours.get(service, grace_never)
            for service, k in short.items()
        },
    }


def seed(args: argparse.Namespace) -> dict[str, Any]:
    """Insert args.rows referrals in batches; VACUUM (ANALYZE) the table; return the timings."""
    with psycopg.connect(pg_dsn(args), autocommit=True) as conn:

        def codes(kind: str) -> list[str]:
            rows = conn.execute(
                "SELECT ods_code FROM organisation WHERE kind = %s AND active ORDER BY ods_code",
                (kind,),
            ).fetchall()
            return [r[0] for r in rows]

        pharmacies, practices, trusts = codes("pharmacy"), codes("gp-practice"), codes("trust")
        if not (pharmacies and practices and trusts):
            raise SystemExit("the demo directory is missing: run `pharmref seed-demo` first")
        if not conn.execute("SELECT 1 FROM organisation WHERE ods_code = 'NHS11'").fetchone():
            raise SystemExit("the demo NHS 111 provider NHS11 is missing")
        params: dict[str, Any] = {
            "pharmacies": pharmacies,
            "practices": practices,
            "trusts": trusts,
            "nhs": intake.test_range_nhs_numbers(10_000),
            "family": FAMILY_NAMES,
            "given": GIVEN_NAMES,
            "received": args.received_share,
            "accepted": args.accepted_share,
            "urgent": args.urgent_share,
            "skew": args.skew,
            **timeframes(),
        }
        start = conn.execute(
            "SELECT coalesce(max(substr(reference, 4)::bigint), 0) FROM referral "
            "WHERE reference LIKE 'BN-%%'"
        ).fetchone()
        assert start is not None
        first = int(start[0]) + 1
        print(
            f"seeding {args.rows:,} referrals over {len(pharmacies)} pharmacies in batches of "
            f"{args.batch:,}",
            flush=True,
        )
        began = time.perf_counter()
        done = 0
        while done < args.rows:
            n = min(args.batch, args.rows - done)
            t0 = time.perf_counter()
            conn.execute(SEED_SQL, {**params, "first": first + done, "last": first + done + n - 1})
            done += n
            print(f"  {done:>9,} rows  ({time.perf_counter() - t0:.1f} s)", flush=True)
        insert_s = time.perf_counter() - began
        t0 = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) referral")
        vacuum_s = time.perf_counter() - t0
        size = conn.execute(
            "SELECT pg_size_pretty(pg_table_size('referral')), "
            "pg_size_pretty(pg_indexes_size('referral'))"
        ).fetchone()
        assert size is not None
    print(
        f"seeded in {insert_s:.0f} s; VACUUM (ANALYZE) {vacuum_s:.0f} s; "
        f"table {size[0]}, indexes {size[1]}",
        flush=True,
    )
    return {
        "rows": args.rows,
        "insert_s": round(insert_s, 1),
        "vacuum_analyze_s": round(vacuum_s, 1),
        "table_size": size[0],
        "index_size": size[1],
    }


def describe_data(args: argparse.Namespace) -> dict[str, Any]:
    with psycopg.connect(pg_dsn(args), autocommit=True) as conn:
        total = conn.execute("SELECT count(*) FROM referral").fetchone()
        statuses = conn.execute(
            "SELECT status, count(*) FROM referral GROUP BY status ORDER BY count(*) DESC"
        ).fetchall()
        urgent = conn.execute("SELECT count(*) FROM referral WHERE priority = 'urgent'").fetchone()
        inboxes = conn.execute(
            "SELECT o.ods_code, count(r.id) FILTER (WHERE r.status = 'received'), count(r.id) "
            "FROM organisation o LEFT JOIN referral r ON r.pharmacy_ods = o.ods_code "
            "WHERE o.kind = 'pharmacy' GROUP BY o.ods_code ORDER BY 2 DESC, 1"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'referral' ORDER BY indexname"
        ).fetchall()
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert total is not None
    assert urgent is not None
    return {
        "referrals": total[0],
        "statuses": dict(statuses),
        "urgent": urgent[0],
        "pharmacies": len(inboxes),
        "inboxes": [
            {"pharmacy": ods, "received": received, "all": n} for ods, received, n in inboxes
        ],
        "indexes": [row[0] for row in indexes],
        "alembic_revision": [row[0] for row in revision],
    }


def pick_pharmacies(inboxes: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The busiest inbox, the second, then ranks spread down to the quietest."""
    n = len(inboxes)
    ranks = sorted({0, 1, n // 10, n // 4, n // 2, (3 * n) // 4, n - 1})
    if count < len(ranks):
        ranks = sorted({*ranks[:2], *ranks[-(count - 2) :]}) if count > 2 else ranks[:count]
    return [{**inboxes[r], "rank": r + 1} for r in ranks]


def check_page(body: Any, expected: int) -> str | None:
    """None when the page is a right inbox page: `expected` rows, received, urgency order."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return "no data list"
    rows = body["data"]
    if len(rows) != expected:
        return f"{len(rows)} rows, wanted {expected}"
    if any(r["status"] != "received" for r in rows):
        return "a row that is not received"
    keys = [(r["priority"] != "urgent", r["due_at"], r["id"]) for r in rows]
    keys = [(rank, datetime.fromisoformat(due), rid) for rank, due, rid in keys]
    if keys != sorted(keys):
        return "not in urgency order"
    return None


def time_inbox(
    args: argparse.Namespace, chosen: list[dict[str, Any]], tokens: dict[str, str]
) -> dict[str, Any]:
    """Sequential GETs, round robin over the chosen pharmacies; every answer is checked."""
    url = f"http://127.0.0.1:{args.port}/api/v1/referrals?{args.query}"
    per: dict[str, list[float]] = {c["pharmacy"]: [] for c in chosen}
    statuses: dict[str, int] = {}
    errors: list[str] = []
    limit = 50
    for part in args.query.split("&"):
        name, _, value = part.partition("=")
        if name == "limit":
            limit = int(value)
    check = args.query == INBOX_QUERY
    with httpx.Client(http1=True, timeout=30) as client:
        for i in range(args.warmup + args.requests):
            c = chosen[i % len(chosen)]
            headers = {"Authorization": f"Bearer {tokens[c['pharmacy']]}"}
            t0 = time.perf_counter()
            response = client.get(url, headers=headers)
            elapsed = (time.perf_counter() - t0) * 1000
            if i < args.warmup:
                continue
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
            problem = None if response.status_code == 200 else response.text[:300]
            if problem is None and check:
                problem = check_page(response.json(), min(limit, c["received"]))
            if problem is None:
                per[c["pharmacy"]].append(elapsed)
            elif len(errors) < intake.SHOW_ERRORS:
                errors.append(f"[{response.status_code} {c['pharmacy']}] {problem}")
    every = sorted(v for values in per.values() for v in values)
    return {
        "query": args.query,
        "requests": args.requests,
        "ok": len(every),
        "errors": args.requests - len(every),
        "statuses": statuses,
        "error_samples": errors,
        "latency_ms": latency(every),
        "per_pharmacy": [{**c, "latency_ms": latency(sorted(per[c["pharmacy"]]))} for c in chosen],
    }


def latency(lat: list[float]) -> dict[str, float]:
    return {
        "n": len(lat),
        "p50": round(intake.percentile(lat, 50), 2),
        "p95": round(intake.percentile(lat, 95), 2),
        "p99": round(intake.percentile(lat, 99), 2),
        "max": round(lat[-1], 2) if lat else math.nan,
        "mean": round(sum(lat) / len(lat), 2) if lat else math.nan,
    }


def explain(args: argparse.Namespace, chosen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Capture the SQL the endpoint issues (through the app in process) and EXPLAIN it.

    main() has pointed PHARMREF_DATABASE_URL at the bench database before the app is imported."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import event

    from app.auth.tokens import create_access_token
    from app.db.session import engine
    from app.main import app
    from app.models.enums import Role

    captured: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)

    async def one(ods: str) -> int:
        token = create_access_token(
            subject="bench", org=ods, role=Role.PHARMACY, ttl=timedelta(minutes=10)
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            response = await client.get(
                f"/api/v1/referrals?{args.query}", headers={"Authorization": f"Bearer {token}"}
            )
        return response.status_code

    plans = []
    for c in chosen:
        captured.clear()
        status = asyncio.run(one(c["pharmacy"]))
        # the inbox SELECT (the read audit's INSERT of the rows shown names referrals too)
        statements = [
            (s, p)
            for s, p in captured
            if s.lstrip().upper().startswith("SELECT") and "from referral" in s.lower()
        ]
        if status != 200 or not statements:
            raise SystemExit(f"in-process inbox request for {c['pharmacy']}: {status}, no SQL")
        statement, parameters = statements[-1]
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            for _ in range(3):  # the last of three: warm, as the timed requests were
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                plan = [row[0] for row in cursor.fetchall()]
            raw.rollback()
        finally:
            raw.close()
        plans.append(
            {
                "pharmacy": c["pharmacy"],
                "received": c["received"],
                "statements_per_request": len(captured),
                "other_statements": [s for s, _ in captured if "referral" not in s.lower()],
                "sql": statement,
                "parameters": {k: str(v) for k, v in dict(parameters).items()},
                "plan": plan,
                "execution_ms": plan_ms(plan, "Execution Time"),
                "planning_ms": plan_ms(plan, "Planning Time"),
            }
        )
    plans += explain_sweep(engine, captured)
    event.remove(engine, "before_cursor_execute", grab)
    engine.dispose()
    return plans


def explain_sweep(engine: Any, captured: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """EXPLAIN the sweep's two claim queries (each worker runs them every sweep interval)."""
    from sqlmodel import Session

    from app.db.base import utc_now
    from app.services import sweep

    plans = []
    now = utc_now()
    for name, query in (
        ("sweep: no-contact claim", sweep.no_contact_query(now=now, limit=100)),
        ("sweep: overdue claim", sweep.overdue_query(now=now, limit=100)),
    ):
        if query is None:
            continue
        captured.clear()
        with Session(engine) as session:
            claimed = len(session.exec(query).all())
            statement, parameters = captured[-1]
            cursor = session.connection().connection.cursor()
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plan = [row[0] for row in cursor.fetchall()]
            session.rollback()  # releases the FOR UPDATE locks; nothing was changed
        plans.append(
            {
                "pharmacy": name,
                "received": claimed,
                "sql": statement,
                "parameters": {k: str(v) for k, v in dict(parameters).items()},
                "plan": plan,
                "execution_ms": plan_ms(plan, "Execution Time"),
                "planning_ms": plan_ms(plan, "Planning Time"),
            }
        )
    return plans


def plan_ms(plan: list[str], label: str) -> float:
    for line in plan:
        if line.strip().startswith(label):
            return float(line.split(":")[1].split()[0])
    return math.nan


def mint_tokens(env: dict[str, str], codes: list[str]) -> dict[str, str]:
    return {
        ods: subprocess.run(
            [str(BIN / "pharmref"), "token", "--role", "pharmacy", "--org", ods],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for ods in codes
    }


def report(result: dict[str, Any]) -> str:
    t = result["timing"]
    lat = t["latency_ms"]
    lines = [
        f"GET /api/v1/referrals?{t['query']}: {t['ok']} of {t['requests']} requests ok "
        f"(statuses {t['statuses']}), one at a time over one connection",
        f"  all pharmacies: p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  "
        f"p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms  "
        f"(target p95 < {TARGET_P95_MS:g} ms: {'met' if result['target_met'] else 'NOT met'})",
        "",
        "| pharmacy | inbox rank | received | all referrals | n | p50 ms | p95 ms | p99 ms "
        "| SQL execution ms (EXPLAIN ANALYZE) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sql_ms = {p["pharmacy"]: p["execution_ms"] for p in result["explain"]}
    for c in t["per_pharmacy"]:
        cl = c["latency_ms"]
        lines.append(
            f"| {c['pharmacy']} | {c['rank']} | {c['received']:,} | {c['all']:,} | {cl['n']} | "
            f"{cl['p50']:.1f} | {cl['p95']:.1f} | {cl['p99']:.1f} | "
            f"{sql_ms.get(c['pharmacy'], math.nan):.2f} |"
        )
    for sample in t["error_samples"]:
        lines.append(f"  error: {sample}")
    cpu = result["cpu"]
    lines.append(
        f"\nCPU during timing (cores): server {cpu['server_cores']:.2f}, postgres "
        f"{cpu['postgres_cores']:.2f}, client {cpu['loadgen_cores']:.2f}, other "
        f"{cpu['other_cores']:.2f}; other load before {result['other_load_before']:.2f}"
    )
    busiest = result["explain"][0]
    lines += [
        f"\nSQL per request: {busiest['statements_per_request']} statement(s); "
        f"the inbox query for {busiest['pharmacy']} ({busiest['received']:,} received):",
        busiest["sql"],
        json.dumps(busiest["parameters"]),
        "",
        *busiest["plan"],
    ]
    for plan in result["explain"]:
        if plan["pharmacy"].startswith("sweep"):
            lines += [
                f"\n{plan['pharmacy']} ({plan['received']} rows claimed; the sweep runs it in "
                "each worker every interval):",
                *plan["plan"],
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="bench", help="database to drop, re-create and seed")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000, help="rows per INSERT statement")
    parser.add_argument("--received-share", type=float, default=0.04)
    parser.add_argument("--accepted-share", type=float, default=0.02)
    parser.add_argument("--urgent-share", type=float, default=0.05)
    parser.add_argument("--skew", type=float, default=1.5, help="pharmacy skew exponent")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the database when it already holds --rows referrals (no reset, no seeding)",
    )
    parser.add_argument("--pharmacies", type=int, default=7, help="inboxes to time (>= 2)")
    parser.add_argument("--requests", type=int, default=350, help="timed requests, all inboxes")
    parser.add_argument("--warmup", type=int, default=35, help="untimed requests first")
    parser.add_argument("--query", default=INBOX_QUERY, help="the query string to time")
    parser.add_argument(
        "--pyspy", action="store_true", help="record the server with py-spy while timing"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest-inbox")
    parser.add_argument("--quiet-wait", type=float, default=180.0)
    parser.add_argument("--quiet-threshold", type=float, default=0.15)
    args = parser.parse_args(argv)
    args.what_if = []  # bench/run.py's running_server: serve the app as it is
    if args.db in {"test", "postgres", "template0", "template1"}:
        parser.error(f"refusing to use the {args.db} database")
    if args.pharmacies < 2 or args.requests < 1:
        parser.error("--pharmacies must be at least 2 and --requests positive")

    signal.signal(signal.SIGTERM, bench_run._raise_on_signal)
    signal.signal(signal.SIGHUP, bench_run._raise_on_signal)
    args.out.mkdir(parents=True, exist_ok=True)
    # before anything imports the app's settings (timeframes() and explain() do, in process)
    os.environ["PHARMREF_DATABASE_URL"] = f"postgresql+psycopg://{pg_dsn(args).split('://')[1]}"
    env = dict(os.environ)
    seeding: dict[str, Any] = {"reused": True}
    present = 0
    if args.reuse:
        try:
            with psycopg.connect(pg_dsn(args)) as conn:
                row = conn.execute("SELECT count(*) FROM referral").fetchone()
                present = row[0] if row else 0
        except psycopg.Error:
            present = 0
    if present < args.rows:
        bench_run.reset_database(args, env)
        seeding = seed(args)
    data = describe_data(args)
    chosen = pick_pharmacies(data["inboxes"], args.pharmacies)
    print(
        f"{data['referrals']:,} referrals; statuses {data['statuses']}; urgent {data['urgent']:,}",
        flush=True,
    )
    print("inboxes timed: " + ", ".join(f"{c['pharmacy']} ({c['received']:,})" for c in chosen))
    tokens = mint_tokens(env, [c["pharmacy"] for c in chosen])
    with bench_run.running_server(args, env, args.out / "server.log") as server:
        bench_run.wait_healthy(f"http://127.0.0.1:{args.port}", server)
        quiet = bench_run.wait_for_quiet(server.pid, args.db, args.quiet_wait, args.quiet_threshold)
        print(f"other load before timing: {quiet:.2f} cores", flush=True)
        pyspy = None
        if args.pyspy:  # costs CPU: for a profile, not for the latency figures
            cmd = [str(BIN / "py-spy"), "record", "--gil", "--subprocesses", "--pid"]
            cmd += [str(server.pid), "-r", "250", "-f", "raw", "-o", str(args.out / "pyspy.txt")]
            print("+", " ".join(cmd), flush=True)
            pyspy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        before = bench_run.snapshot()
        client_cpu = intake.cpu_time()
        try:
            timing = time_inbox(args, chosen, tokens)
        finally:
            client_cpu = intake.cpu_time() - client_cpu
            if pyspy is not None:
                pyspy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                pyspy.wait(timeout=60)
        after = bench_run.snapshot()
        if server.poll() is not None:
            raise SystemExit(f"the server died while timing (status {server.returncode})")
    # this process is the load generator: its CPU is the client's (request, parse, check)
    cpu = bench_run.cpu_shares(before, after, server.pid, args.db, client_cpu)
    plans = explain(args, chosen)
    result = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": str(uuid.uuid4()),
        "seeding": seeding,
        "data": {k: v for k, v in data.items() if k != "inboxes"},
        "inbox_sizes": {
            "busiest": data["inboxes"][0],
            "median": data["inboxes"][len(data["inboxes"]) // 2],
            "quietest": data["inboxes"][-1],
        },
        "timing": timing,
        "target": f"p95 < {TARGET_P95_MS:g} ms",
        "target_met": timing["errors"] == 0 and timing["latency_ms"]["p95"] < TARGET_P95_MS,
        "cpu": cpu,
        "other_load_before": round(quiet, 2),
        "explain": plans,
    }
    text = report(result)
    print("\n" + text)
    (args.out / "inbox.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "summary.md").write_text(text + "\n")
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
