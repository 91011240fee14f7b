"""pharmref's benchmark suite in one command: `python -m bench` from the project root.

1. drops and re-creates the `bench` PostgreSQL database, migrates it and loads the demo directory
   (and, with `--history N`, N referrals of synthetic history for the statistics phases);
2. measures the ceiling: bench/ceiling.py, a bare ASGI app that only parses the same JSON and
   inserts one row, under the same uvicorn with the same number of workers;
3. starts `pharmref serve --workers N` and runs each phase with a load generator on the same
   machine: FHIR and JSON intake flat out, FHIR at a fixed rate, whole lifecycles (create, accept,
   consultation), reads (pharmacy inbox, FHIR search), statistics (uptake table) and the dashboard
   page when those routes exist, and push delivery (bench/delivery.py) when present;
4. prints one table (each intake figure also as a fraction of its ceiling), writes
   bench/results/<date>.json and draws docs/bench-throughput.png and docs/bench-latency.png.

Every phase records how the machine's cores were shared (server, PostgreSQL, load generator,
anything else) from /proc, as bench/run.py does. Results vary by about 10-15 % between runs on a
shared VM: docs/performance.md says how to read them.

    .venv/bin/python -m bench                      # everything, 20 s per phase
    .venv/bin/python -m bench --duration 5 --only ceiling-json,json-max
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import intake
import run as bench_run
import run_lifecycle

ROOT, BIN = bench_run.ROOT, bench_run.BIN
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    group: str  # ceiling | intake | lifecycle | read | stats | delivery
    kind: str = "json"  # intake.py --kind
    path: str = ""  # for kind get
    role: tuple[str, str] = ("gp-practice", "A81001")
    rate: float | None = None
    concurrency: int | None = None  # default: --concurrency
    target: str = ""
    ceiling: str | None = None  # the ceiling phase this one is a fraction of
    needs: str | None = None  # an OpenAPI path (or file) that must exist for the phase to run
    meets: Any = field(default=None, compare=False)


def _throughput_at_least(value: float) -> Any:
    return lambda f: f["throughput_rps"] >= value


def _p95_under(ms: float) -> Any:
    return lambda f: f["latency_ms"]["p95"] < ms


def _p99_under_on_rate(ms: float, rate: float) -> Any:
    return lambda f: f["throughput_rps"] >= 0.97 * rate and f["latency_ms"]["p99"] < ms


def phases(args: argparse.Namespace) -> list[Phase]:
    today = date.today()
    year_ago = (today.replace(day=1) - timedelta(days=365)).replace(day=1)
    uptake = f"/api/v1/stats/uptake?group_by=pcn&interval=month&from={year_ago}&to={today}"
    return [
        Phase("ceiling-json", "ceiling", kind="json", target="(the ceiling)"),
        Phase("ceiling-fhir", "ceiling", kind="fhir", target="(the ceiling)"),
        Phase(
            "fhir-max",
            "intake",
            kind="fhir",
            target=">= 250 msgs/s",
            ceiling="ceiling-fhir",
            meets=_throughput_at_least(250),
        ),
        Phase(
            "json-max",
            "intake",
            kind="json",
            target=">= 600 referrals/s",
            ceiling="ceiling-json",
            meets=_throughput_at_least(600),
        ),
        Phase(
            f"fhir-{args.rate:g}rps",
            "intake",
            kind="fhir",
            rate=args.rate,
            target="p99 < 50 ms",
            meets=_p99_under_on_rate(50, args.rate),
        ),
        Phase("lifecycle", "lifecycle", target=">= 150 lifecycles/s"),
        Phase(
            "inbox",
            "read",
            kind="get",
            path="/api/v1/referrals?status=received&order=urgency&limit=50",
            role=("pharmacy", "FA001"),
            concurrency=args.read_concurrency,
            target="p95 < 20 ms",
            meets=_p95_under(20),
        ),
        Phase(
            "fhir-search",
            "read",
            kind="get",
            path="/fhir/ServiceRequest?_count=50",
            role=("pharmacy", "FA001"),
            concurrency=args.read_concurrency,
            target="(no target)",
        ),
        Phase(
            "stats-uptake",
            "stats",
            kind="get",
            path=uptake,
            role=("icb-analyst", "QXX"),
            concurrency=args.read_concurrency,
            target="p95 < 100 ms",
            needs="/api/v1/stats/uptake",
            meets=_p95_under(100),
        ),
        Phase(
            "dashboard",
            "stats",
            kind="get",
            path="/dashboard",
            role=("icb-analyst", "QXX"),
            concurrency=args.read_concurrency,
            target="p95 < 300 ms",
            needs="app/routers/dashboard.py",
            meets=_p95_under(300),
        ),
        Phase(
            "delivery",
            "delivery",
            target=">= 300 deliveries/s",
            needs="bench/delivery.py",
        ),
    ]


# ---- processes -------------------------------------------------------------------------------


@contextmanager
def ceiling_server(
    args: argparse.Namespace, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [str(BIN / "python"), "-m", "uvicorn", "ceiling:app", "--app-dir", str(ROOT / "bench")]
    cmd += ["--host", "127.0.0.1", "--port", str(args.ceiling_port)]
    cmd += ["--workers", str(args.workers), "--log-level", "warning"]
    log = args.out / "ceiling.log"
    print("+", " ".join(cmd), f"> {log}", flush=True)
    with log.open("wb") as sink:
        server = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        bench_run.wait_healthy(f"http://127.0.0.1:{args.ceiling_port}", server)
        yield server
    finally:
        bench_run.stop_server(server)


def mint(env: dict[str, str], role: str, org: str) -> str:
    return run_lifecycle.mint(env, role, org)


def openapi_paths() -> set[str]:
    spec = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    return set(spec["paths"])


def available(phase: Phase, paths: set[str]) -> bool:
    if phase.needs is None:
        return True
    if phase.needs.startswith("/"):
        return phase.needs in paths
    return (ROOT / phase.needs).exists()


# ---- one phase -------------------------------------------------------------------------------


def load_phase(
    args: argparse.Namespace,
    phase: Phase,
    server: subprocess.Popen[bytes],
    port: int,
    env: dict[str, str],
    token: str,
) -> dict[str, Any]:
    """Drive one HTTP phase with bench/intake.py and account the machine's CPU around it."""
    figures_file = args.out / f"{phase.name}.json"
    concurrency = phase.concurrency or args.concurrency
    cmd = [str(BIN / "python"), str(ROOT / "bench" / "intake.py")]
    cmd += ["--url", f"http://127.0.0.1:{port}", "--kind", phase.kind]
    cmd += ["--concurrency", str(concurrency), "--duration", str(args.duration)]
    cmd += ["--json-out", str(figures_file), "--markers"]
    if phase.path:
        cmd += ["--path", phase.path]
    if phase.rate:
        cmd += ["--rate", f"{phase.rate:g}"]
    quiet = bench_run.wait_for_quiet(server.pid, args.db, args.quiet_wait, args.quiet_threshold)
    print(f"\n== {phase.name} (target {phase.target}); other load before: {quiet:.2f} cores")
    print("+", " ".join(cmd), "--token ...", flush=True)
    before = after = None
    with subprocess.Popen(
        [*cmd, "--token", token], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    ) as loadgen:
        assert loadgen.stdout is not None
        try:
            for line in loadgen.stdout:
                if line.startswith(intake.MEASURING):
                    before = bench_run.snapshot()
                elif line.startswith(intake.MEASURED):
                    after = bench_run.snapshot()
                else:
                    print(line, end="", flush=True)
        except BaseException:
            loadgen.kill()
            raise
    if server.poll() is not None:
        raise SystemExit(f"the server died during {phase.name} (status {server.returncode})")
    if before is None or after is None or loadgen.returncode not in (0, 1):
        raise SystemExit(f"the load generator failed in {phase.name} (status {loadgen.returncode})")
    figures: dict[str, Any] = json.loads(figures_file.read_text())
    figures["cpu"] = bench_run.cpu_shares(
        before, after, server.pid, args.db, figures["loadgen_cpu_s"]
    )
    figures["other_load_before"] = round(quiet, 2)
    figures["concurrency"] = concurrency
    return figures


def lifecycle_phase(
    args: argparse.Namespace, server: subprocess.Popen[bytes], env: dict[str, str]
) -> dict[str, Any]:
    tokens = (mint(env, "gp-practice", "A81001"), mint(env, "pharmacy", "FA001"))
    args.pyspy = False
    figures = run_lifecycle.run_phase(args, tokens, "lifecycle", server, env, args.out)
    return {
        **figures,
        "throughput_rps": figures["throughput_lps"],
        "latency_ms": figures["lifecycle_latency_ms"],
        "ok": figures["lifecycles_completed"],
        "non_2xx": figures["errors"],
        "transport_errors": 0,
        "unit": "lifecycles/s",
    }


def delivery_phase(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """bench/delivery.py prints its own figures; it writes them as JSON with --json-out."""
    figures_file = args.out / "delivery.json"
    cmd = [
        str(BIN / "python"),
        str(ROOT / "bench" / "delivery.py"),
        "--json-out",
        str(figures_file),
    ]
    print("\n== delivery\n+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    figures: dict[str, Any] = json.loads(figures_file.read_text())
    # the report's columns: the median drain rate, and the cores of the median run
    runs = sorted(figures["throughput"], key=lambda run: run["per_second"])
    middle = runs[len(runs) // 2]
    cores = middle.get("cores", {})
    return {
        **figures,
        "throughput_rps": middle["per_second"],
        "cpu": {
            "server_cores": cores.get("worker"),
            "postgres_cores": cores.get("postgres"),
            "loadgen_cores": cores.get("bench"),
            "other_cores": cores.get("other"),
        },
    }


# ---- the report ------------------------------------------------------------------------------


def finish(phase: Phase, figures: dict[str, Any], ceilings: dict[str, float]) -> dict[str, Any]:
    clean = (
        figures.get("ok", 1) > 0
        and not figures.get("non_2xx")
        and not figures.get("transport_errors")
    )
    if phase.meets is not None:
        met: bool | None = clean and bool(phase.meets(figures))
    elif phase.group == "lifecycle":
        met = clean and figures["throughput_rps"] >= 150
    elif phase.group == "delivery":
        met = clean and figures.get("throughput_rps", 0) >= 300
    else:
        met = None
    ceiling = ceilings.get(phase.ceiling or "")
    return {
        **figures,
        "phase": phase.name,
        "group": phase.group,
        "target": phase.target,
        "target_met": met,
        "ceiling_phase": phase.ceiling,
        "fraction_of_ceiling": round(figures["throughput_rps"] / ceiling, 3) if ceiling else None,
    }


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| phase | target | met | throughput /s | of ceiling | p50 ms | p95 ms | p99 ms | errors | "
        "server cores | postgres cores | load gen cores | other cores |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        lat = r.get("latency_ms") or {}
        cpu = r.get("cpu") or {}
        met = {True: "yes", False: "**no**", None: "-"}[r["target_met"]]
        fraction = f"{100 * r['fraction_of_ceiling']:.0f} %" if r["fraction_of_ceiling"] else "-"

        def ms(key: str, values: dict[str, Any] = lat) -> str:
            value = values.get(key)
            return f"{value:.1f}" if isinstance(value, int | float) else "-"

        def cores(key: str, values: dict[str, Any] = cpu) -> str:
            value = values.get(key)
            return f"{value:.2f}" if isinstance(value, int | float) else "-"

        errors = (r.get("non_2xx") or 0) + (r.get("transport_errors") or 0)
        lines.append(
            f"| {r['phase']} | {r['target']} | {met} | {r['throughput_rps']:.1f} | {fraction} | "
            f"{ms('p50')} | {ms('p95')} | {ms('p99')} | {errors} | {cores('server_cores')} | "
            f"{cores('postgres_cores')} | {cores('loadgen_cores')} | {cores('other_cores')} |"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], run_date: str) -> list[Path]:
    """Throughput against targets and ceilings, and latency percentiles, as PNGs in docs/."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[dev]')")
        return []
    written = []
    rows = [r for r in results if r["group"] in ("ceiling", "intake", "lifecycle", "delivery")]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    names = [r["phase"] for r in rows]
    values = [r["throughput_rps"] for r in rows]
    colours = [
        "#9e9e9e" if r["group"] == "ceiling" else ("#2e7d32" if r["target_met"] else "#c62828")
        for r in rows
    ]
    ax.barh(names, values, color=colours)
    for index, r in enumerate(rows):
        target = "".join(ch for ch in r["target"].split("/")[0] if ch.isdigit() or ch == ".")
        if r["target"].startswith(">=") and target:
            ax.plot([float(target)] * 2, [index - 0.4, index + 0.4], color="black", linewidth=2)
        ax.annotate(f"{r['throughput_rps']:.0f}", (r["throughput_rps"], index), va="center")
    ax.invert_yaxis()
    ax.set_xlabel("per second (bars: measured; black ticks: target; grey: ceiling)")
    ax.set_title(f"pharmref throughput, {run_date}")
    fig.tight_layout()
    path = DOCS / "bench-throughput.png"
    fig.savefig(path, dpi=110)
    written.append(path)
    plt.close(fig)

    rows = [r for r in results if r.get("latency_ms") and r["group"] != "ceiling"]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    for index, r in enumerate(rows):
        lat = r["latency_ms"]
        for key, marker in (("p50", "o"), ("p95", "s"), ("p99", "^")):
            if isinstance(lat.get(key), int | float):
                ax.scatter(lat[key], index, marker=marker, label=key if index == 0 else None)
    ax.set_yticks(range(len(rows)), [r["phase"] for r in rows])
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("latency, ms (log scale; flat-out phases include queueing)")
    ax.set_title(f"pharmref latency percentiles, {run_date}")
    ax.legend()
    fig.tight_layout()
    path = DOCS / "bench-latency.png"
    fig.savefig(path, dpi=110)
    written.append(path)
    plt.close(fig)
    return written


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="bench", help="database to drop and re-create")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--ceiling-port", type=int, default=8766)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32, help="in flight, flat-out phases")
    parser.add_argument("--read-concurrency", type=int, default=4, help="in flight, read phases")
    parser.add_argument("--duration", type=float, default=20.0, help="measured s per phase")
    parser.add_argument("--rate", type=float, default=100.0, help="the fixed-rate FHIR phase")
    parser.add_argument("--history", type=int, default=0, help="referrals of seeded history")
    parser.add_argument("--only", default="", help="comma-separated phase names")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest-suite")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--quiet-wait", type=float, default=120.0)
    parser.add_argument("--quiet-threshold", type=float, default=0.15)
    args = parser.parse_args(argv)
    if args.db in {"test", "postgres", "template0", "template1"}:
        parser.error(f"refusing to drop the {args.db} database")
    args.what_if = []
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, bench_run._raise_on_signal)
    signal.signal(signal.SIGHUP, bench_run._raise_on_signal)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PHARMREF_DATABASE_URL": f"postgresql+psycopg://postgres@{args.pg_host}:{args.pg_port}/{args.db}",
        # The generator is one client by design: a limit it never reaches, so every request is
        # still counted (as in production, where the limit is on) but none is refused.
        "PHARMREF_RATE_LIMIT_PER_MINUTE": "1000000000",
    }
    started = time.monotonic()
    bench_run.reset_database(args, env)
    if args.history:
        bench_run.run([str(BIN / "pharmref"), "seed-demo", "--referrals", str(args.history)], env)
        bench_run.analyze(args)
    wanted = {name for name in args.only.split(",") if name}
    paths = openapi_paths()
    chosen = []
    for phase in phases(args):
        if wanted and phase.name not in wanted:
            continue
        if not available(phase, paths):
            print(f"skipping {phase.name}: {phase.needs} is not part of this build")
            continue
        chosen.append(phase)

    results: list[dict[str, Any]] = []
    ceilings: dict[str, float] = {}
    gp_token = mint(env, "gp-practice", "A81001")
    if any(p.group == "ceiling" for p in chosen):
        with ceiling_server(args, env) as server:
            for phase in (p for p in chosen if p.group == "ceiling"):
                figures = load_phase(args, phase, server, args.ceiling_port, env, gp_token)
                ceilings[phase.name] = figures["throughput_rps"]
                results.append(finish(phase, figures, ceilings))
    served = [p for p in chosen if p.group in ("intake", "lifecycle", "read", "stats")]
    if served:
        tokens = {p.role: mint(env, *p.role) for p in served}
        with bench_run.running_server(args, env, args.out / "server.log") as server:
            bench_run.wait_healthy(f"http://127.0.0.1:{args.port}", server)
            for phase in served:
                if phase.group == "lifecycle":
                    figures = lifecycle_phase(args, server, env)
                else:
                    figures = load_phase(args, phase, server, args.port, env, tokens[phase.role])
                results.append(finish(phase, figures, ceilings))
    for phase in (p for p in chosen if p.group == "delivery"):
        results.append(finish(phase, delivery_phase(args, env), ceilings))

    run_date = datetime.now(UTC).date().isoformat()
    summary = table(results)
    header = (
        f"{bench_run.CORES} cores; {args.workers} server workers; concurrency {args.concurrency} "
        f"(reads {args.read_concurrency}); {args.duration:g} s per phase; "
        f"history {args.history} referrals; {time.monotonic() - started:.0f} s in all"
    )
    print(f"\n{header}\n\n{summary}")
    record = {
        "date": run_date,
        "finished_at": datetime.now(UTC).isoformat(),
        "settings": {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
        },
        "header": header,
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{run_date}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (args.out / "summary.md").write_text(f"{header}\n\n{summary}\n")
    if not args.no_plots:
        for path in plot(results, run_date):
            print(f"wrote {path.relative_to(ROOT)}")
    print(f"wrote bench/results/{run_date}.json")
    return 0 if all(r["target_met"] is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
