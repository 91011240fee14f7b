"""Run the intake benchmark end to end and print a summary table.

1. drop and re-create the `bench` PostgreSQL database, `pharmref migrate`, `pharmref seed-demo`;
2. start `pharmref serve --workers 2 --port 8765 --log-level warning` and wait for /healthz;
3. run bench/intake.py: FHIR $process-message flat out, JSON referrals flat out, FHIR at 100 req/s;
4. stop the server (always, also on errors and Ctrl-C/SIGTERM) and print the figures.

Around each phase it reads per-process CPU time from /proc, so the table shows how the two cores
were shared between the server workers, PostgreSQL, the load generator and anything else running
on the machine. Run from the project root:

    .venv/bin/python bench/run.py
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import intake  # noqa: E402
from what_if import WHAT_IFS  # noqa: E402

BIN = ROOT / ".venv" / "bin"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    kind: str
    rate: float | None
    target: str


def phases(rate: float) -> list[Phase]:
    return [
        Phase("fhir-max", "fhir", None, ">= 250 req/s"),
        Phase("json-max", "json", None, ">= 600 req/s"),
        Phase(f"fhir-{rate:g}rps", "fhir", rate, "p99 < 50 ms"),
    ]


def target_met(phase: Phase, figures: dict[str, Any]) -> bool:
    clean = figures["ok"] > 0 and not figures["non_2xx"] and not figures["transport_errors"]
    if phase.name == "fhir-max":
        return clean and figures["throughput_rps"] >= 250
    if phase.name == "json-max":
        return clean and figures["throughput_rps"] >= 600
    on_rate = phase.rate is not None and figures["throughput_rps"] >= 0.97 * phase.rate
    return clean and on_rate and figures["latency_ms"]["p99"] < 50


# ---- CPU accounting from /proc --------------------------------------------------------------------


def machine_busy_ticks() -> int:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle  # user..steal; guest time is already inside user


@dataclass(frozen=True, slots=True)
class Proc:
    ppid: int
    cpu: int  # utime + stime, clock ticks
    reaped: int  # cutime + cstime: children that have exited and been waited for
    cmdline: str


def process_table() -> dict[int, Proc]:
    """pid -> Proc for every process we can read."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = Proc(
            int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14]), cmdline
        )
    return table


def descendants(table: dict[int, Proc], root: int) -> set[int]:
    found = {root}
    changed = True
    while changed:
        changed = False
        for pid, proc in table.items():
            if proc.ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found & table.keys()


def postgres_group(cmdline: str, db_name: str) -> str | None:
    """Classify a process: "ours" (our database's backends and PostgreSQL's shared processes),
    "other" (backends serving other databases, e.g. a test run) or None (not PostgreSQL)."""
    if cmdline.startswith("postgres: "):
        words = cmdline.split(": ", 2)[-1].split()
        is_backend = len(words) >= 3 and (words[2].endswith(")") or words[2] == "[local]")
        return "other" if is_backend and words[1] != db_name else "ours"
    if "/postgres " in cmdline and " -D " in cmdline:
        return "ours"
    return None


@dataclass(slots=True)
class CpuSnapshot:
    at: float
    busy: int
    table: dict[int, Proc]


def snapshot() -> CpuSnapshot:
    return CpuSnapshot(time.perf_counter(), machine_busy_ticks(), process_table())


def _ticks(before: CpuSnapshot, after: CpuSnapshot, pids: set[int]) -> int:
    return sum(after.table[p].cpu - (before.table[p].cpu if p in before.table else 0) for p in pids)


def _ours(after: CpuSnapshot, server_pid: int, db_name: str) -> tuple[set[int], set[int]]:
    server = descendants(after.table, server_pid)
    postgres = {
        p for p, proc in after.table.items() if postgres_group(proc.cmdline, db_name) == "ours"
    }
    return server, postgres


def _reaped_by_postmaster(before: CpuSnapshot, after: CpuSnapshot) -> int:
    """CPU of PostgreSQL backends that exited during the interval (connection churn)."""
    return sum(
        proc.reaped - before.table[p].reaped
        for p, proc in after.table.items()
        if p in before.table and "/postgres " in proc.cmdline and " -D " in proc.cmdline
    )


def cpu_shares(
    before: CpuSnapshot, after: CpuSnapshot, server_pid: int, db_name: str, loadgen: float
) -> dict[str, Any]:
    """Average cores used during the interval, by group (the machine has CORES of them)."""
    seconds = after.at - before.at
    server, postgres = _ours(after, server_pid, db_name)
    workers = sorted(
        p
        for p in server
        if after.table[p].ppid == server_pid and "spawn_main" in after.table[p].cmdline
    )
    machine = (after.busy - before.busy) / CLK_TCK
    server_s = _ticks(before, after, server) / CLK_TCK
    pg_live = _ticks(before, after, postgres) / CLK_TCK
    pg_exited = _reaped_by_postmaster(before, after) / CLK_TCK
    other = max(0.0, machine - server_s - pg_live - pg_exited - loadgen)

    def cores(value: float) -> float:
        return round(value / seconds, 2)

    return {
        "seconds": round(seconds, 1),
        "machine_cores_busy": cores(machine),
        "server_cores": cores(server_s),
        "server_worker_cores": [cores(_ticks(before, after, {p}) / CLK_TCK) for p in workers],
        "postgres_cores": cores(pg_live + pg_exited),
        "postgres_exited_backend_cores": cores(pg_exited),
        "loadgen_cores": cores(loadgen),
        "other_cores": cores(other),
    }


def other_load(server_pid: int, db_name: str, seconds: float = 2.0) -> float:
    """Cores used by anything but our server and PostgreSQL over a short sample."""
    before = snapshot()
    time.sleep(seconds)
    after = snapshot()
    machine = (after.busy - before.busy) / CLK_TCK
    server, postgres = _ours(after, server_pid, db_name)
    mine = _ticks(before, after, server | postgres) + _reaped_by_postmaster(before, after)
    return max(0.0, machine - mine / CLK_TCK) / seconds


def wait_for_quiet(server_pid: int, db_name: str, limit: float, threshold: float) -> float:
    """Wait (up to `limit` s) until other processes use under `threshold` cores; return the last sample."""
    deadline = time.monotonic() + limit
    while True:
        load = other_load(server_pid, db_name)
        if load < threshold or time.monotonic() >= deadline:
            return load
        print(f"  machine busy with other work ({load:.2f} cores); waiting", flush=True)
        time.sleep(3)


# ---- database and server ----------------------------------------------------------------------------


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def _psql(args: argparse.Namespace) -> list[str]:
    server = ["-h", args.pg_host, "-p", str(args.pg_port), "-U", "postgres"]
    return ["psql", *server, "-v", "ON_ERROR_STOP=1", "-q"]


def reset_database(args: argparse.Namespace, env: dict[str, str]) -> None:
    run([*_psql(args), "-c", f'drop database if exists "{args.db}" with (force)'])
    run([*_psql(args), "-c", f'create database "{args.db}"'])
    run([str(BIN / "pharmref"), "migrate"], env)
    run([str(BIN / "pharmref"), "seed-demo"], env)
    analyze(args)


def analyze(args: argparse.Namespace) -> None:
    """Planner statistics, as autovacuum keeps them on a live database: measured straight after
    seeding, the directory reads were planned for empty tables."""
    run([*_psql(args), "-d", args.db, "-c", "ANALYZE"])


def wait_healthy(base_url: str, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode} before /healthz")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{base_url}/healthz did not answer within {timeout:.0f} s")


@contextmanager
def running_server(
    args: argparse.Namespace, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    options = ["--host", "127.0.0.1", "--port", str(args.port), "--workers", str(args.workers)]
    # A few tokens drive the whole load: lift the per-client rate limit so nothing is refused
    # (each request still pays for its counter), unless the environment sets one.
    env = {"PHARMREF_RATE_LIMIT_PER_MINUTE": "1000000000", **env}
    if args.what_if:
        # uvicorn directly, serving bench/what_if_app.py (the app with candidate fixes patched in)
        cmd = [str(BIN / "python"), "-m", "uvicorn", "what_if_app:app", *options]
        cmd += ["--log-level", "warning", "--timeout-graceful-shutdown", "10"]
        env = {
            **env,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT)]),
            "PHARMREF_BENCH_WHAT_IF": ",".join(args.what_if),
        }
        print(f"  what-if: {', '.join(args.what_if)}", flush=True)
    else:
        cmd = [str(BIN / "pharmref"), "serve", *options, "--log-level", "warning"]
    print("+", " ".join(cmd), f"> {log}", flush=True)
    with log.open("wb") as sink:
        # Its own session, so stopping it signals the supervisor and its workers and nothing else.
        server = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield server
    finally:
        stop_server(server)


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    with suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)  # any worker the supervisor left behind
    print(f"server stopped (exit status {server.returncode})", flush=True)


def _raise_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


# ---- the run ------------------------------------------------------------------------------------------


def run_phase(
    args: argparse.Namespace,
    token: str,
    phase: Phase,
    server: subprocess.Popen[bytes],
    env: dict[str, str],
    out: Path,
) -> dict[str, Any]:
    cmd = [
        str(BIN / "python"),
        str(ROOT / "bench" / "intake.py"),
        "--url",
        f"http://127.0.0.1:{args.port}",
        "--kind",
        phase.kind,
        "--concurrency",
        str(args.concurrency),
        "--duration",
        str(args.duration),
        "--json-out",
        str(out / f"{phase.name}.json"),
    ]
    if phase.rate:
        cmd += ["--rate", f"{phase.rate:g}"]
    cmd += ["--markers", "--token", token]
    quiet = wait_for_quiet(server.pid, args.db, args.quiet_wait, args.quiet_threshold)
    print(
        f"\n== {phase.name} (target {phase.target}); other load before: {quiet:.2f} cores",
        flush=True,
    )
    print("+", " ".join(cmd[:-2]), "--token ...", flush=True)
    before = after = None
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as loadgen:
        assert loadgen.stdout is not None
        try:
            for line in loadgen.stdout:
                if line.startswith(intake.MEASURING):
                    before = snapshot()
                elif line.startswith(intake.MEASURED):
                    after = snapshot()
                else:
                    print(line, end="", flush=True)
        except BaseException:
            loadgen.kill()  # interrupted: do not wait for it to finish its run
            raise
    if server.poll() is not None:
        raise SystemExit(f"the server died during {phase.name} (status {server.returncode})")
    if before is None or after is None or loadgen.returncode not in (0, 1):
        raise SystemExit(f"the load generator failed in {phase.name} (status {loadgen.returncode})")
    figures = json.loads((out / f"{phase.name}.json").read_text())
    figures["cpu"] = cpu_shares(before, after, server.pid, args.db, figures["loadgen_cpu_s"])
    figures["other_load_before"] = round(quiet, 2)
    figures["phase"] = phase.name
    figures["target"] = phase.target
    figures["target_met"] = target_met(phase, figures)
    (out / f"{phase.name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| phase | target | met | 2xx req/s | p50 ms | p95 ms | p99 ms | max ms | non-2xx | "
        "server cores (per worker) | postgres cores (exited backends) | load gen cores | other cores |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        lat, cpu = r["latency_ms"], r["cpu"]
        workers = ", ".join(f"{c:.2f}" for c in cpu["server_worker_cores"])
        lines.append(
            f"| {r['phase']} | {r['target']} | {'yes' if r['target_met'] else '**no**'} | "
            f"{r['throughput_rps']:.1f} | {lat['p50']:.1f} | {lat['p95']:.1f} | {lat['p99']:.1f} | "
            f"{lat['max']:.1f} | {r['non_2xx'] + r['transport_errors']} | "
            f"{cpu['server_cores']:.2f} ({workers}) | {cpu['postgres_cores']:.2f} "
            f"({cpu['postgres_exited_backend_cores']:.2f}) | "
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
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument(
        "--what-if",
        action="append",
        default=[],
        choices=sorted(WHAT_IFS),
        help="serve the app with this candidate optimisation patched in (bench/what_if.py)",
    )
    parser.add_argument(
        "--phases",
        default="fhir-max,json-max,fhir-rate",
        help="comma-separated subset of fhir-max, json-max, fhir-rate",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest")
    parser.add_argument(
        "--quiet-wait", type=float, default=180.0, help="max s to wait for an idle machine"
    )
    parser.add_argument("--quiet-threshold", type=float, default=0.15, help="other load, in cores")
    args = parser.parse_args(argv)
    if args.db in {"test", "postgres", "template0", "template1"}:
        parser.error(f"refusing to drop the {args.db} database")

    signal.signal(signal.SIGTERM, _raise_on_signal)
    signal.signal(signal.SIGHUP, _raise_on_signal)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PHARMREF_DATABASE_URL": f"postgresql+psycopg://postgres@{args.pg_host}:{args.pg_port}/{args.db}",
    }
    reset_database(args, env)
    token = subprocess.run(
        [str(BIN / "pharmref"), "token", "--role", "gp-practice", "--org", "A81001"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    results = []
    with running_server(args, env, args.out / "server.log") as server:
        wait_healthy(f"http://127.0.0.1:{args.port}", server)
        wanted = set(args.phases.split(","))
        for phase in phases(args.rate):
            if phase.name not in wanted and not (phase.rate and "fhir-rate" in wanted):
                continue
            results.append(run_phase(args, token, phase, server, env, args.out))
    for result in results:
        result["what_if"] = args.what_if
    summary = table(results)
    applied = f"; what-if {', '.join(args.what_if)}" if args.what_if else ""
    print(
        f"\n{CORES} cores; {args.workers} server workers; concurrency {args.concurrency}; "
        f"{args.duration:g} s per phase{applied}\n"
    )
    print(summary)
    (args.out / "summary.md").write_text(summary + "\n")
    (args.out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["target_met"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
