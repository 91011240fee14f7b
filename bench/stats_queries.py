"""Time the statistics questions against rollups the size of N referrals, on PostgreSQL.

The statistics read only the rollup table (app/models/rollup.py), so this fills that table
directly with what N referrals over 24 months would leave in it: for every demo practice, every
day and every service/source/pathway mix, a day row on the practice side (the practice's PCN,
place and ICB on that day) and on the pharmacy side, and the month rows that agree with them;
practices refer unevenly (a power-law weight per practice). Then it asks each question several
times, through the service (`stats.uptake(...)` and friends) and through the HTTP app in
process (JSON and CSV, with the router's validation and serialisation), and prints p50 and p95.

    createdb bench_stats   # any empty database
    PHARMREF_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench_stats \
        .venv/bin/python bench/stats_queries.py --referrals 10000000

--reuse skips the fill when the rollups are already there.
"""

import argparse
import os
import statistics
import time
import timeit
from collections.abc import Callable
from datetime import date
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session

from app.auth.tokens import create_access_token
from app.db import migrations
from app.db.session import engine
from app.main import app
from app.models.enums import Role
from app.models.rollup import COUNTERS
from app.models.stats import GroupBy, Interval, ServiceCountsQuery, UptakeQuery
from app.models.user import User
from app.services import stats
from app.services.demo_directory import demo_directory_path
from app.services.directory_import import import_directory

FIRST_DAY = date(2024, 12, 1)
DAYS = 730
# (service, source, pathway, share of referrals)
MIX = [
    *[("pharmacy-first", "gp-practice", p, 0.05) for p in (
        "sinusitis", "sore-throat", "acute-otitis-media", "infected-insect-bite", "impetigo",
        "shingles", "uncomplicated-uti", "minor-illness")],
    *[("pharmacy-first", "nhs111", p, 0.03) for p in ("sore-throat", "uncomplicated-uti", "minor-illness")],
    ("pharmacy-first", "urgent-care", "minor-illness", 0.05),
    ("pharmacy-first", "self-referral", "minor-illness", 0.05),
    ("blood-pressure", "gp-practice", "", 0.15),
    ("blood-pressure", "self-referral", "", 0.05),
    ("contraception", "gp-practice", "", 0.10),
    ("contraception", "self-referral", "", 0.05),
    ("dms", "trust", "", 0.06),
]  # fmt: skip

# What n referrals of a day leave in each counter (the rest 0)
EXPRESSIONS = {
    "made": "n",
    "received": "n",
    "accepted": "n * 9 / 10",
    "declined": "n / 20",
    "returned": "n / 20",
    "cancelled": "n / 30",
    "no_contact": "n / 40",
    "completed": "n * 8 / 10",
    "completion_hours_sum": "n * 8 / 10 * 20.0",
    "bp_checked": "CASE WHEN m.service = 'blood-pressure' THEN n * 9 / 10 ELSE 0 END",
    "bp_abpm": "CASE WHEN m.service = 'blood-pressure' THEN n / 5 ELSE 0 END",
    "bp_hypertension_confirmed": "CASE WHEN m.service = 'blood-pressure' THEN n / 10 ELSE 0 END",
    "dms_stage1": "CASE WHEN m.service = 'dms' THEN n * 9 / 10 ELSE 0 END",
    "dms_stage1_within_72h": "CASE WHEN m.service = 'dms' THEN n * 7 / 10 ELSE 0 END",
    "dms_stage2": "CASE WHEN m.service = 'dms' THEN n * 6 / 10 ELSE 0 END",
    "dms_stage3": "CASE WHEN m.service = 'dms' THEN n / 2 ELSE 0 END",
    "completed_h001": "n * 2 / 10",
    "completed_h004": "n * 3 / 10",
    "completed_h024": "n * 2 / 10",
    "completed_h072": "n * 8 / 10 - n * 2 / 10 - n * 3 / 10 - n * 2 / 10",
}
ADDITIVE = (*COUNTERS, "completion_hours_sum")
COLUMNS = ", ".join(ADDITIVE)
SUMS = ", ".join(f"sum({c})" for c in ADDITIVE)


def fill(session: Session, referrals: int) -> None:
    practices = session.execute(
        text("SELECT count(*) FROM organisation WHERE kind = 'gp-practice'")
    ).scalar_one()
    per_row = referrals / (practices * DAYS)
    shares = sum(share for *_, share in MIX)
    values = ", ".join(EXPRESSIONS.get(c, "0") for c in ADDITIVE)
    mix = " UNION ALL ".join(
        f"SELECT '{s}' AS service, '{src}' AS source, '{p}' AS pathway, {share / shares} AS share"
        for s, src, p, share in MIX
    )
    session.execute(text("TRUNCATE uptake_rollup"))
    # practice weights: rank^-0.8 (uneven referral behaviour), scaled to mean 1
    session.execute(
        text(
            f"""
            CREATE TEMP TABLE bench_practice AS
            SELECT ods_code, w / avg(w) OVER () AS weight,
                   (SELECT ods_code FROM organisation ph WHERE ph.kind = 'pharmacy'
                    ORDER BY md5(ph.ods_code || o.ods_code) LIMIT 1) AS pharmacy
            FROM (SELECT ods_code, power(row_number() OVER (ORDER BY md5(ods_code)), -0.8) AS w
                  FROM organisation WHERE kind = 'gp-practice') o;
            CREATE TEMP TABLE bench_mix AS {mix};
            """
        )
    )
    session.execute(
        text(
            f"""
            INSERT INTO uptake_rollup (grain, period_start, side, org_ods, pcn_ods, place_ods,
                icb_ods, service, source, pathway, {COLUMNS})
            SELECT 'day', d.day, 'practice', p.ods_code, coalesce(pcn.group_ods, ''),
                   coalesce(place.group_ods, ''), coalesce(icb.group_ods, ''),
                   m.service, m.source, m.pathway, {values}
            FROM (SELECT CAST(:first AS date) + g AS day FROM generate_series(0, :days - 1) g) d
            CROSS JOIN bench_practice p CROSS JOIN bench_mix m
            CROSS JOIN LATERAL (SELECT floor(random() * 2 * :per_row * p.weight * m.share
                                             + random())::int AS n) r
            LEFT JOIN membership pcn ON pcn.member_ods = p.ods_code AND pcn.start_date <= d.day
                 AND (pcn.end_date IS NULL OR pcn.end_date >= d.day)
            LEFT JOIN membership place ON place.member_ods = pcn.group_ods
            LEFT JOIN membership icb ON icb.member_ods = place.group_ods
            WHERE n > 0
            """
        ),
        {"first": FIRST_DAY, "days": DAYS, "per_row": per_row},
    )
    session.execute(
        text(
            f"""
            INSERT INTO uptake_rollup (grain, period_start, side, org_ods, pcn_ods, place_ods,
                icb_ods, service, source, pathway, {COLUMNS})
            SELECT 'day', r.period_start, 'pharmacy', p.pharmacy, '', '', '', r.service,
                   r.source, r.pathway, {SUMS}
            FROM uptake_rollup r JOIN bench_practice p ON p.ods_code = r.org_ods
            WHERE r.grain = 'day' AND r.side = 'practice'
            GROUP BY r.period_start, p.pharmacy, r.service, r.source, r.pathway;
            INSERT INTO uptake_rollup (grain, period_start, side, org_ods, pcn_ods, place_ods,
                icb_ods, service, source, pathway, {COLUMNS})
            SELECT 'month', CAST(date_trunc('month', period_start) AS date), side, org_ods,
                   pcn_ods, place_ods, icb_ods, service, source, pathway,
                   {SUMS}
            FROM uptake_rollup WHERE grain = 'day'
            GROUP BY 2, side, org_ods, pcn_ods, place_ods, icb_ods, service, source, pathway;
            """
        )
    )
    session.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE uptake_rollup"))


def timed(runs: int, call: Callable[[], Any]) -> tuple[float, float]:
    call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--referrals", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    migrations.upgrade(str(engine.url.render_as_string(hide_password=False)))
    with Session(engine) as session:
        if not session.execute(text("SELECT count(*) FROM organisation")).scalar_one():
            import_directory(session=session, directory=demo_directory_path())
        if not args.reuse:
            start = time.perf_counter()
            fill(session, args.referrals)
            print(f"filled the rollups in {time.perf_counter() - start:.0f} s")
        made, rows = session.execute(
            text(
                "SELECT sum(made) FILTER (WHERE grain = 'day' AND side = 'practice'), count(*) "
                "FROM uptake_rollup"
            )
        ).one()
        print(f"rollups: {rows:,} rows for {made:,} referrals")
    calibration = min(
        timeit.repeat("sum(i * i for i in range(1000))", number=1000, repeat=5)
    )  # compare runs by it: the busier the machine, the higher
    print(f"load average {os.getloadavg()[0]:.1f}; calibration loop {calibration * 1000:.0f} ms")
    year = (date(2025, 12, 1), date(2026, 11, 30))
    ragged = (date(2025, 12, 15), date(2026, 11, 14))
    analyst = User(subject="bench", org="QXX", role=Role.ICB_ANALYST)
    admin = User(subject="bench", org="X26", role=Role.ADMIN)
    questions: list[tuple[str, Callable[[Session, User], Any]]] = [
        ("12 months per PCN, by month", lambda s, u: stats.uptake(session=s, caller=u, query=UptakeQuery(from_date=year[0], to_date=year[1]))),
        ("12 months per PCN, ragged edges", lambda s, u: stats.uptake(session=s, caller=u, query=UptakeQuery(from_date=ragged[0], to_date=ragged[1]))),
        ("12 months per practice, by month", lambda s, u: stats.uptake(session=s, caller=u, query=UptakeQuery(from_date=year[0], to_date=year[1], group_by=GroupBy.PRACTICE))),
        ("12 months per PCN, by ISO week", lambda s, u: stats.uptake(session=s, caller=u, query=UptakeQuery(from_date=year[0], to_date=year[1], interval=Interval.WEEK))),
        ("12 months per pharmacy, whole", lambda s, u: stats.uptake(session=s, caller=u, query=UptakeQuery(from_date=year[0], to_date=year[1], group_by=GroupBy.PHARMACY, interval=Interval.NONE))),
        ("blood pressure per PCN, by month", lambda s, u: stats.blood_pressure(session=s, caller=u, query=ServiceCountsQuery(from_date=year[0], to_date=year[1]))),
    ]  # fmt: skip
    print(f"{'question':38} {'who':12} {'p50 ms':>8} {'p95 ms':>8}")
    with Session(engine) as session:
        for name, ask in questions:
            for who in (analyst, admin):
                p50, p95 = timed(args.runs, lambda a=ask, w=who: a(session, w))
                print(f"{name:38} {who.role:12} {p50:8.1f} {p95:8.1f}")
    token = create_access_token(subject="bench", org="QXX", role=Role.ICB_ANALYST)
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/stats/uptake?group_by=pcn&from={year[0]}&to={year[1]}"
    with TestClient(app) as client:
        for media in ("application/json", "text/csv"):

            def get(m: str = media) -> None:
                response = client.get(url, headers=headers | {"Accept": m})
                assert response.status_code == 200, response.text

            p50, p95 = timed(args.runs, get)
            print(f"{'HTTP 12 months per PCN ' + media:51} {p50:8.1f} {p95:8.1f}")


if __name__ == "__main__":
    main()
