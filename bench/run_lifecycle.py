"""Run the referral lifecycle benchmark end to end and print a summary table.

The lifecycle counterpart of bench/run.py, built from its pieces (same database reset, server
start and stop, machine-quiet wait and CPU accounting from /proc):

1. drop and re-create the `bench` PostgreSQL database, `pharmref migrate`, `pharmref seed-demo`;
2. start `pharmref serve --workers 2 --port 8765 --log-level warning` and wait for /healthz;
3. run bench/lifecycle.py (create, accept, consultation; closed loop) `--runs` times;
4. stop the server (always, also on errors and Ctrl-C/SIGTERM) and print the figures.

`--pyspy` also records the live server with py-spy during each measured window (this costs CPU:
use it for a profile, not for the throughput figure). Run from the project root:

    .venv/bin/python bench/run_lifecycle.py
"""

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import intake
import run as bench_run
from what_if import WHAT_IFS

ROOT, BIN = bench_run.ROOT, bench_run.BIN
TARGET_LPS = 150.0


def mint(env: dict[str, str], role: str, org: str) -> str:
    return subprocess.run(
        [str(BIN / "pharmref"), "token", "--role", role, "--org", org],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def start_pyspy(args: argparse.Namespace, server_pid: int, out: Path) -> subprocess.Popen[bytes]:
    cmd = [str(BIN / "py-spy"), "record", "--gil", "--subprocesses", "--pid", str(server_pid)]
    cmd += ["-r", "250", "-d", str(int(args.duration)), "-f", "raw", "-o", str(out)]
    print("+", " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_phase(
    args: argparse.Namespace,
    tokens: tuple[str, str],
    name: str,
    server: subprocess.Popen[bytes],
    env: dict[str, str],
    out: Path,
) -> dict[str, Any]:
    figures_file = out / f"{name}.json"
    cmd = [
        str(BIN / "python"),
        str(ROOT / "bench" / "lifecycle.py"),
        "--url",
        f"http://127.0.0.1:{args.port}",
        "--concurrency",
        str(args.concurrency),
        "--duration",
        str(args.duration),
        "--json-out",
        str(figures_file),
        "--markers",
    ]
    secret = ["--token", tokens[0], "--pharmacy-token", tokens[1]]
    quiet = bench_run.wait_for_quiet(server.pid, args.db, args.quiet_wait, args.quiet_threshold)
    print(
        f"\n== {name} (target >= {TARGET_LPS:g} lifecycles/s); other load before: {quiet:.2f} cores",
        flush=True,
    )
    print("+", " ".join(cmd), "--token ... --pharmacy-token ...", flush=True)
    before = after = None
    pyspy = None
    with subprocess.Popen(
        cmd + secret, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    ) as loadgen:
        assert loadgen.stdout is not None
        try:
            for line in loadgen.stdout:
                if line.startswith(intake.MEASURING):
                    before = bench_run.snapshot()
                    if args.pyspy:
                        pyspy = start_pyspy(args, server.pid, out / f"pyspy-{name}.txt")
                elif line.startswith(intake.MEASURED):
                    after = bench_run.snapshot()
                else:
                    print(line, end="", flush=True)
        except BaseException:
            loadgen.kill()
            raise
        finally:
            if pyspy is not None:
                try:
                    pyspy.wait(timeout=args.duration + 30)
                except subprocess.TimeoutExpired:
                    pyspy.kill()
                    pyspy.wait()
    if server.poll() is not None:
        raise SystemExit(f"the server died during {name} (status {server.returncode})")
    if before is None or after is None or loadgen.returncode not in (0, 1):
        raise SystemExit(f"the load generator failed in {name} (status {loadgen.returncode})")
    figures = json.loads(figures_file.read_text())
    figures["cpu"] = bench_run.cpu_shares(
        before, after, server.pid, args.db, figures["loadgen_cpu_s"]
    )
    figures["other_load_before"] = round(quiet, 2)
    figures["phase"] = name
    figures["target"] = f">= {TARGET_LPS:g} lifecycles/s"
    figures["target_met"] = not figures["errors"] and figures["throughput_lps"] >= TARGET_LPS
    figures["pyspy"] = bool(args.pyspy)
    figures_file.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| phase | lifecycles/s | met | 2xx req/s | errors | create p50/p95/p99 ms | "
        "accept p50/p95/p99 ms | consultation p50/p95/p99 ms | lifecycle p50/p95/p99 ms | "
        "server cores (per worker) | postgres cores (exited backends) | load gen cores | "
        "other cores |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def pcts(lat: dict[str, float]) -> str:
        return f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f}"

    for r in results:
        cpu, steps = r["cpu"], r["steps"]
        workers = ", ".join(f"{c:.2f}" for c in cpu["server_worker_cores"])
        lines.append(
            f"| {r['phase']} | {r['throughput_lps']:.1f} | "
            f"{'yes' if r['target_met'] else '**no**'} | {r['request_throughput_rps']:.1f} | "
            f"{r['errors']} | {pcts(steps['create']['latency_ms'])} | "
            f"{pcts(steps['accept']['latency_ms'])} | "
            f"{pcts(steps['consultation']['latency_ms'])} | "
            f"{pcts(r['lifecycle_latency_ms'])} | {cpu['server_cores']:.2f} ({workers}) | "
            f"{cpu['postgres_cores']:.2f} ({cpu['postgres_exited_backend_cores']:.2f}) | "
            f"{cpu['loadgen_cores']:.2f} | {cpu['other_cores']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="bench", help="database to drop and re-create")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32, help="lifecycles in flight")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=1, help="measured runs on the same server")
    parser.add_argument(
        "--what-if",
        action="append",
        default=[],
        choices=sorted(WHAT_IFS),
        help="serve the app with this candidate optimisation patched in (bench/what_if.py)",
    )
    parser.add_argument(
        "--pyspy", action="store_true", help="record the server with py-spy while measuring"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest-lifecycle")
    parser.add_argument(
        "--quiet-wait", type=float, default=180.0, help="max s to wait for an idle machine"
    )
    parser.add_argument("--quiet-threshold", type=float, default=0.15, help="other load, in cores")
    args = parser.parse_args(argv)
    if args.db in {"test", "postgres", "template0", "template1"}:
        parser.error(f"refusing to drop the {args.db} database")
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    signal.signal(signal.SIGTERM, bench_run._raise_on_signal)
    signal.signal(signal.SIGHUP, bench_run._raise_on_signal)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PHARMREF_DATABASE_URL": f"postgresql+psycopg://postgres@{args.pg_host}:{args.pg_port}/{args.db}",
    }
    bench_run.reset_database(args, env)
    tokens = (mint(env, "gp-practice", "A81001"), mint(env, "pharmacy", "FA001"))
    results = []
    with bench_run.running_server(args, env, args.out / "server.log") as server:
        bench_run.wait_healthy(f"http://127.0.0.1:{args.port}", server)
        for i in range(1, args.runs + 1):
            name = "lifecycle" if args.runs == 1 else f"lifecycle-{i}"
            results.append(run_phase(args, tokens, name, server, env, args.out))
    for result in results:
        result["what_if"] = args.what_if
    summary = table(results)
    applied = f"; what-if {', '.join(args.what_if)}" if args.what_if else ""
    print(
        f"\n{bench_run.CORES} cores; {args.workers} server workers; {args.concurrency} lifecycles "
        f"in flight; {args.duration:g} s per run{applied}\n"
    )
    print(summary)
    (args.out / "summary.md").write_text(summary + "\n")
    (args.out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["target_met"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
