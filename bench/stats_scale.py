"""Statistics at scale: how the 12-month, per-PCN, all-services uptake table answers as the
referral table grows (issue 5: < 100 ms p95 at 10 million referrals, and no more than twice the
time at 100,000).

For each size (default 100k, 1M and 10M referrals):

1. unless `--reuse` finds it already seeded, drop and create PostgreSQL database
   `bench_seed_<label>` (`--db-prefix` for another name), run `pharmref migrate` and time `pharmref seed-demo --referrals N --lean`
   (the demo ICB and N referrals over 12 months; lean: the referrals, acceptance events and the
   BP and DMS consultations, all the statistics read; the command prints its phases);
2. in a child process pointed at that database (PHARMREF_DATABASE_URL), after a warm-up, time
   `--runs` calls one after another of:
   - `rollup-none` / `rollup-month`: this script's own equivalent of the table, so the curve
     exists before the statistics service does: the month rollup rows of the practice side
     summed per PCN over 12 months (interval none) or per PCN and month (interval month), the
     PCN populations from the dated memberships and list sizes, and the median and 90th
     percentile completion hours read from the histogram; psycopg, no ORM;
   - `rollup-area-none` / `rollup-area-month`: the same of the area rows (per PCN, place, ICB and
     service: no practice, source or pathway), which the statistics service reads for this table;
   - `stats-uptake-none` / `stats-uptake-month`: `app.services.stats.uptake` for the same question
     as an ICB analyst;
   - `dashboard`: `GET /dashboard` in process through the ASGI app, signed in as an ICB analyst
     (the session cookie; the default filters: all services, the 12 months to today);
3. write the figures to `bench/results/<date>-stats-scale/<label>.json` (with the EXPLAIN
   ANALYZE of the rollup query) and plot them all to docs/stats-scale.png.

The machine is shared with other work: the load average is recorded with every figure.

    .venv/bin/python bench/stats_scale.py                       # 100k, 1M, 10M
    .venv/bin/python bench/stats_scale.py --sizes 100000 --runs 100
    .venv/bin/python bench/stats_scale.py --reuse               # time again without reseeding
    .venv/bin/python bench/stats_scale.py --plot-only           # re-plot from the JSON files
"""

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench" / "results" / f"{datetime.now(UTC).date()}-stats-scale"
PLOT = ROOT / "docs" / "stats-scale.png"
TARGET_MS = 100.0


def label(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}m"
    if size % 1_000 == 0:
        return f"{size // 1_000}k"
    return str(size)


def dsn(args: argparse.Namespace, db: str, driver: str = "postgresql") -> str:
    return f"{driver}://postgres@{args.pg_host}:{args.pg_port}/{db}"


def load() -> float:
    return os.getloadavg()[0]


# ---- seeding (parent) ---------------------------------------------------------------------------


def seeded_count(args: argparse.Namespace, db: str) -> int | None:
    import psycopg

    try:
        with psycopg.connect(dsn(args, db), connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM referral").fetchone()
            return int(row[0]) if row else None
    except psycopg.Error:
        return None


def seed(args: argparse.Namespace, size: int, db: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(dsn(args, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"')
    env = {**os.environ, "PHARMREF_DATABASE_URL": dsn(args, db, "postgresql+psycopg")}
    subprocess.run([str(BIN / "pharmref"), "migrate"], env=env, check=True)
    command = [str(BIN / "pharmref"), "seed-demo", "--referrals", str(size), "--seed", "1"]
    if not args.full:
        command.append("--lean")
    print(f"seeding {db}: {' '.join(command[1:])} (load {load():.1f})", flush=True)
    began = time.perf_counter()
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    history = [line for line in done.stdout.splitlines() if line.startswith("history:")]
    print(f"  {seconds:.0f} s: {history[-1] if history else done.stdout}", flush=True)
    with psycopg.connect(dsn(args, db)) as conn:
        size_row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return {
        "seed_seconds": round(seconds, 1),
        "seed_output": history[-1] if history else done.stdout.strip(),
        "seed_load_before": round(load(), 2),
        "database_bytes": size_row[0] if size_row else None,
        "lean": not args.full,
    }


# ---- measuring (child, PHARMREF_DATABASE_URL set) -----------------------------------------------


def window(conn: Any) -> tuple[date, date]:
    """The last 12 whole calendar months that have rollups (the current month included)."""
    row = conn.execute(
        "SELECT max(period_start) FROM uptake_rollup WHERE grain = 'month'"
    ).fetchone()
    last: date = row[0]
    year, month = divmod(last.year * 12 + last.month - 1 - 11, 12)
    end = date(last.year + last.month // 12, last.month % 12 + 1, 1) - timedelta(days=1)
    return date(year, month + 1, 1), end


def percentile(histogram: list[int], edges: tuple[int, ...], fraction: float) -> float | None:
    """The completion hours below which `fraction` of completions fall (linear in the bucket)."""
    total = sum(histogram)
    if not total:
        return None
    wanted = fraction * total
    seen = 0
    for index, count in enumerate(histogram):
        if seen + count >= wanted and count:
            low = edges[index]
            high = edges[index + 1] if index + 1 < len(edges) else low * 2
            return low + (high - low) * (wanted - seen) / count
        seen += count
    return float(edges[-1])


def rollup_query(interval: str, side: str = "practice") -> str:
    """Sum the practice-side (or area-side) month rows per PCN (and month), then name the PCNs."""
    from app.models.rollup import HOUR_COLUMNS, OUTCOME_COUNTS

    period = ", period_start" if interval == "month" else ""
    columns = ("made", *OUTCOME_COUNTS, *HOUR_COLUMNS, "completion_hours_sum")
    sums = ", ".join(f"sum({c}) AS {c}" for c in columns)
    return (
        f"SELECT t.pcn_ods{period}, o.name, {', '.join(f't.{c}' for c in columns)} FROM ("
        f"SELECT pcn_ods{period}, {sums} FROM uptake_rollup "
        f"WHERE grain = 'month' AND side = '{side}' "
        "AND period_start BETWEEN %(first)s AND %(last)s "
        f"GROUP BY pcn_ods{period}) t "
        f"LEFT JOIN organisation o ON o.ods_code = t.pcn_ods ORDER BY t.pcn_ods{period}"
    )


# A temporary table named like the real one shadows it for this connection (pg_temp comes first
# in the search path), so the same query reads PCN-level month rows.
PCN_MONTHS_SQL = """
CREATE TEMPORARY TABLE uptake_rollup AS
SELECT grain, period_start, side, pcn_ods AS org_ods, pcn_ods, place_ods, icb_ods, service, source,
       pathway, {sums}
FROM public.uptake_rollup WHERE grain = 'month' AND side = 'practice'
GROUP BY grain, period_start, side, pcn_ods, place_ods, icb_ods, service, source, pathway;
CREATE INDEX ON uptake_rollup (grain, side, period_start);
ANALYZE uptake_rollup
"""

POPULATION_SQL = """
SELECT m.group_ods, sum(ls.registered_patients)
FROM membership m
JOIN organisation o ON o.ods_code = m.member_ods AND o.kind = 'gp-practice'
JOIN LATERAL (
    SELECT registered_patients FROM list_size l
    WHERE l.practice_ods = m.member_ods AND l.effective_date <= %(last)s
    ORDER BY l.effective_date DESC LIMIT 1
) ls ON true
WHERE m.start_date <= %(last)s AND (m.end_date IS NULL OR m.end_date >= %(last)s)
GROUP BY m.group_ods
"""


def _pcn_months_sql() -> str:
    from app.models.rollup import COUNTERS

    sums = ", ".join(
        [
            *(f"sum({c})::integer AS {c}" for c in COUNTERS),
            "sum(completion_hours_sum) AS completion_hours_sum",
        ]
    )
    return PCN_MONTHS_SQL.format(sums=sums)


def rollup_table(
    conn: Any, interval: str, first: date, last: date, side: str = "practice"
) -> list[dict[str, Any]]:
    """The per-PCN table from the rollups: counts, completion rate, median and p90 hours,
    population and referrals per 1,000 (what the statistics service computes, minus suppression)."""
    from app.models.rollup import HOUR_COLUMNS, HOUR_EDGES, OUTCOME_COUNTS

    params = {"first": first, "last": last}
    populations = dict(conn.execute(POPULATION_SQL, params).fetchall())
    rows = []
    width = 2 if interval == "none" else 3
    for record in conn.execute(rollup_query(interval, side), params).fetchall():
        counts = record[width : width + 1 + len(OUTCOME_COUNTS)]
        histogram = list(
            record[
                width + 1 + len(OUTCOME_COUNTS) : width
                + 1
                + len(OUTCOME_COUNTS)
                + len(HOUR_COLUMNS)
            ]
        )
        made, completed = counts[0], counts[-1]
        population = populations.get(record[0])
        rows.append(
            {
                "pcn": record[0],
                "made": made,
                "completed": completed,
                "completion_rate": completed / made if made else None,
                "median_hours": percentile(histogram, HOUR_EDGES, 0.5),
                "p90_hours": percentile(histogram, HOUR_EDGES, 0.9),
                "per_1000": 1000 * made / population if population else None,
            }
        )
    return rows


def stats_uptake(first: date, last: date, interval: str) -> Callable[[], Any] | None:
    """A call of app.services.stats.uptake for the question, or None when it does not exist."""
    try:
        from app.services import stats  # type: ignore[attr-defined]
    except ImportError:
        return None
    uptake = getattr(stats, "uptake", None)
    if uptake is None:
        return None
    from sqlmodel import Session

    from app.db.session import engine
    from app.models.enums import Role
    from app.models.stats import UptakeQuery
    from app.models.user import User

    query = UptakeQuery(group_by="pcn", from_date=first, to_date=last, interval=interval)
    analyst = User(subject="bench:icb-analyst", org="QXX", role=Role.ICB_ANALYST)

    def call() -> Any:
        with Session(engine) as session:
            kwargs: dict[str, Any] = {}
            for name, parameter in inspect.signature(uptake).parameters.items():
                if name == "session":
                    kwargs[name] = session
                elif name in ("query", "uptake_query", "question"):
                    kwargs[name] = query
                elif name in ("caller", "user", "viewer"):
                    kwargs[name] = analyst
                elif parameter.default is inspect.Parameter.empty:
                    raise RuntimeError(f"stats.uptake needs {name!r}: teach bench/stats_scale.py")
            return uptake(**kwargs)

    return call


def dashboard() -> tuple[Callable[[], Any] | None, str]:
    from fastapi.testclient import TestClient

    from app.auth.cookies import SESSION_COOKIE
    from app.auth.tokens import create_access_token
    from app.main import app
    from app.models.enums import Role

    client = TestClient(app, follow_redirects=False)  # a redirect would time the login page
    token = create_access_token(subject="bench:icb-analyst", org="QXX", role=Role.ICB_ANALYST)
    client.cookies.set(SESSION_COOKIE, token)
    probe = client.get("/dashboard")
    if probe.status_code != 200 or 'id="pcn-rate-chart"' not in probe.text:
        return None, f"GET /dashboard answered {probe.status_code} without the dashboard"

    def call() -> Any:
        response = client.get("/dashboard")
        assert response.status_code == 200, response.status_code
        return response

    return call, "ok"


CLK_TCK = os.sysconf("SC_CLK_TCK")


def backend_cpu_seconds(database: str) -> float:
    """CPU time used so far by the PostgreSQL backends connected to `database` (the same VM)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not cmdline.startswith("postgres: ") or f" {database} " not in f"{cmdline} ":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def timed(
    call: Callable[[], Any], runs: int, warmup: int, database: str | None = None
) -> dict[str, Any]:
    """Wall time per call (p50/p95/...), and CPU per call: this process plus the database's
    backends. On a shared machine wall time includes waiting for a core; CPU time does not
    (parallel query workers are not counted: see `serial_cpu`)."""
    for _ in range(warmup):
        call()
    samples = []
    loads = [load()]
    cpu_before = time.process_time() + (backend_cpu_seconds(database) if database else 0.0)
    for _ in range(runs):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    cpu_after = time.process_time() + (backend_cpu_seconds(database) if database else 0.0)
    loads.append(load())
    ordered = sorted(samples)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)

    return {
        "runs": runs,
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1], 2),
        "mean_ms": round(statistics.fmean(samples), 2),
        "cpu_ms_per_call": round((cpu_after - cpu_before) * 1000 / runs, 2),
        "load_average": [round(v, 2) for v in loads],
    }


def serial_cpu(conn: Any, call: Callable[[], Any], runs: int, database: str) -> float:
    """CPU per call with parallel query off, so all of it is this process and its backend."""
    conn.execute("SET max_parallel_workers_per_gather = 0")
    try:
        call()
        before = time.process_time() + backend_cpu_seconds(database)
        for _ in range(runs):
            call()
        after = time.process_time() + backend_cpu_seconds(database)
    finally:
        conn.execute("RESET max_parallel_workers_per_gather")
    return round((after - before) * 1000 / runs, 2)


def measure(args: argparse.Namespace) -> None:
    """Child process: time every available form of the table; print JSON."""
    import psycopg

    url = os.environ["PHARMREF_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    database = url.rsplit("/", 1)[1]
    figures: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        first, last = window(conn)
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM referral), (SELECT count(*) FROM uptake_rollup), "
            "(SELECT count(*) FROM uptake_rollup WHERE grain = 'month' AND side = 'practice' "
            "AND period_start BETWEEN %(first)s AND %(last)s)",
            {"first": first, "last": last},
        ).fetchone()
        assert counts is not None
        figures["referrals"], figures["rollup_rows"], figures["rows_read"] = counts
        figures["window"] = [str(first), str(last)]
        for interval in ("none", "month"):
            table = rollup_table(conn, interval, first, last)
            figures[f"rollup-{interval}"] = timed(
                lambda interval=interval: rollup_table(conn, interval, first, last),
                args.runs,
                args.warmup,
                database,
            ) | {
                "groups": len(table),
                "serial_cpu_ms_per_call": serial_cpu(
                    conn, lambda interval=interval: rollup_table(conn, interval, first, last),
                    max(args.runs // 4, 20), database,
                ),
            }  # fmt: skip
        plan = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS) " + rollup_query("none"), {"first": first, "last": last}
        ).fetchall()
        figures["rollup_plan"] = [line[0] for line in plan]
        # The area rows (per PCN, place, ICB and service), which stats.uptake reads for this table.
        area = conn.execute(
            "SELECT count(*) FROM uptake_rollup WHERE grain = 'month' AND side = 'area' "
            "AND period_start BETWEEN %(first)s AND %(last)s",
            {"first": first, "last": last},
        ).fetchone()
        figures["area_rows_read"] = area[0] if area else None
        for interval in ("none", "month"):
            figures[f"rollup-area-{interval}"] = timed(
                lambda interval=interval: rollup_table(conn, interval, first, last, "area"),
                args.runs,
                args.warmup,
                database,
            ) | {
                "serial_cpu_ms_per_call": serial_cpu(
                    conn, lambda interval=interval: rollup_table(conn, interval, first, last, "area"),
                    max(args.runs // 4, 20), database,
                ),
            }  # fmt: skip
        plan = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS) " + rollup_query("none", "area"),
            {"first": first, "last": last},
        ).fetchall()
        figures["rollup_area_plan"] = [line[0] for line in plan]
    # What if the rollups also kept month rows per PCN (not per practice)? A temporary copy of the
    # month rows summed by PCN, then the same question of it (on a connection of its own: the
    # temporary table shadows the real one, which prepared statements would trip over).
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_pcn_months_sql())
        pcn_rows = conn.execute(
            "SELECT count(*) FROM uptake_rollup WHERE period_start BETWEEN %(first)s AND %(last)s",
            {"first": first, "last": last},
        ).fetchone()
        figures["what-if-pcn-rows-read"] = pcn_rows[0] if pcn_rows else None
        figures["what-if-pcn-rollup-none"] = timed(
            lambda: rollup_table(conn, "none", first, last), args.runs, args.warmup, database
        ) | {
            "serial_cpu_ms_per_call": serial_cpu(
                conn, lambda: rollup_table(conn, "none", first, last), max(args.runs // 4, 20), database
            )
        }  # fmt: skip
    for interval in ("none", "month"):
        call = stats_uptake(first, last, interval)
        figures[f"stats-uptake-{interval}"] = (
            timed(call, args.runs, args.warmup, database)
            if call
            else "app.services.stats.uptake not found"
        )
    page, status = dashboard()
    figures["dashboard"] = timed(page, max(args.runs // 4, 20), 5, database) if page else status
    print(json.dumps(figures))


# ---- plotting -----------------------------------------------------------------------------------


def plot(results: dict[int, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results)
    figure, axis = plt.subplots(figsize=(10, 5.5))
    series = [
        ("stats-uptake-none", "stats.uptake, per PCN, 12 months (the table)"),
        ("stats-uptake-month", "stats.uptake, per PCN per month"),
        ("dashboard", "GET /dashboard"),
        ("rollup-area-none", "SQL: area rows, per PCN, 12 months (read now)"),
        ("rollup-area-month", "SQL: area rows, per PCN per month"),
        ("rollup-none", "SQL: practice rows, per PCN, 12 months (read before)"),
        ("rollup-month", "SQL: practice rows, per PCN per month"),
        ("what-if-pcn-rollup-none", "what-if: month rows per PCN, 12 months"),
    ]
    colours = plt.get_cmap("tab10").colors
    for (key, name), colour in zip(series, colours, strict=False):
        points = [(s, results[s][key]) for s in sizes if isinstance(results[s].get(key), dict)]
        if not points:
            continue
        xs = [s for s, _ in points]
        axis.plot(xs, [f["p95_ms"] for _, f in points], marker="o", color=colour, label=name)
        axis.plot(
            xs, [f["p50_ms"] for _, f in points], marker=".", linestyle=":", alpha=0.6,
            color=colour,
        )  # fmt: skip
    axis.axhline(TARGET_MS, color="red", linestyle="--", label="target: 100 ms p95 at 10M")
    smallest = sizes[0]
    table = results[smallest].get("stats-uptake-none")
    if isinstance(table, dict):
        axis.axhline(
            2 * table["p95_ms"], color="grey", linestyle="-.",
            label=f"limit: 2x the table's p95 at {label(smallest)}",
        )  # fmt: skip
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("referrals in the database")
    axis.set_ylabel("milliseconds per answer (solid: p95, dotted: p50)")
    axis.set_title("Uptake table: time against referral count (PostgreSQL, 2-core VM)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(PLOT, dpi=120)
    print(f"wrote {PLOT}")


def load_results() -> dict[int, dict[str, Any]]:
    found = {}
    for path in sorted(RESULTS.parent.glob("*-stats-scale/*.json")):
        figures = json.loads(path.read_text())
        found[int(figures["referrals_seeded"])] = figures
    return found


# ---- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="keep databases already seeded")
    parser.add_argument("--full", action="store_true", help="seed full histories, not lean")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", default="5432")
    parser.add_argument(
        "--db-prefix",
        default="bench_seed_",
        help="databases are named <prefix><size label>, e.g. bench_seed_100k (seeded unless --reuse "
        "finds them seeded with that many referrals)",
    )
    args = parser.parse_args()
    if args.measure:
        measure(args)
        return
    if args.plot_only:
        plot(load_results())
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    for size in (int(s) for s in args.sizes.split(",")):
        db = f"{args.db_prefix}{label(size)}"
        figures: dict[str, Any] = {"referrals_seeded": size, "database": db}
        if args.reuse and seeded_count(args, db) == size:
            print(f"reusing {db}", flush=True)
        else:
            figures |= seed(args, size, db)
        env = {**os.environ, "PHARMREF_DATABASE_URL": dsn(args, db, "postgresql+psycopg")}
        child = subprocess.run(
            [sys.executable, __file__, "--measure", "--runs", str(args.runs), "--warmup", str(args.warmup)],
            env=env, check=True, capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        figures |= json.loads(child.stdout.strip().splitlines()[-1])
        target = RESULTS / f"{label(size)}.json"
        previous = json.loads(target.read_text()) if target.exists() else {}
        for key in ("seed_seconds", "seed_output", "seed_load_before", "database_bytes", "lean"):
            if key not in figures and key in previous and previous.get("database") == db:
                figures[key] = previous[key]  # keep the seeding figures of an earlier run
        target.write_text(json.dumps(figures, indent=2) + "\n")
        summary = {
            k: (v["p50_ms"], v["p95_ms"], v.get("serial_cpu_ms_per_call", v["cpu_ms_per_call"]))
            if isinstance(v, dict) and "p95_ms" in v
            else v
            for k, v in figures.items()
            if k.startswith(("rollup-", "stats-", "dashboard", "what-if-pcn-rollup"))
        }
        print(f"{db}: {figures['referrals']} referrals, {figures['rows_read']} rollup rows read; "
              f"(p50, p95, serial cpu per call) ms: {summary}", flush=True)  # fmt: skip
    plot(load_results())


if __name__ == "__main__":
    main()
