"""PostgreSQL really stopped and restarted under load (run on demand, not in CI).

tests/faults/test_database_outage.py simulates the outage with a TCP proxy so that it never
touches the machine's shared PostgreSQL server. This script does the real thing, on a PostgreSQL
cluster of its own that it creates for the run and drops afterwards:

1. `pg_createcluster <version> pharmref-faults --port 5499` (trust auth on loopback), start it,
   create database `pharmref_faults`, `pharmref migrate`, `pharmref seed-demo`;
2. `pharmref serve --workers 2` against it, and wait until /readyz answers 200;
3. a load of JSON referrals from several threads, each client behaving as the API asks: a 503 is
   retried with the same Idempotency-Key after Retry-After; /readyz polled every 0.2 s;
4. after the warm-up, `pg_ctlcluster <version> pharmref-faults stop -m fast`, wait, then `start`;
   a probe opens a fresh connection every 0.1 s to time when PostgreSQL really went and came back
   (the phases below: before the stop, stopping, down, after it accepts connections again);
5. after the load, every key retried until accepted; then the database is counted: referrals
   against the ids the clients were given, and inbound messages per Idempotency-Key;
6. the server and the cluster are stopped and the cluster dropped (also on errors and Ctrl-C),
   unless --keep-cluster.

Needs root (or the postgres user) and the Debian postgresql-common tools. Run from the project
root (the token is signed with the key pair under ./var, which the server also reads):

    .venv/bin/python bench/faults.py            # --outage 5 --warmup 5 --after 10 --threads 8

It prints a summary and writes bench/results/<date>-faults/faults.json.
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
DB = "pharmref_faults"
HANG_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    key: str
    sent_at: float  # seconds since the load started
    seconds: float
    status: int | None  # None: no answer (transport error or timeout)
    referral_id: str | None
    retry_after: str | None
    error: str | None


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def pg_version() -> str:
    versions = sorted(Path("/etc/postgresql").iterdir(), key=lambda p: int(p.name))
    return versions[-1].name


class Cluster:
    def __init__(self, version: str, name: str, port: int) -> None:
        if name == "main" or port == 5432:
            raise SystemExit("refusing to use the main cluster or port 5432: other work shares it")
        self.version, self.name, self.port = version, name, port

    def ctl(self, action: str, *options: str) -> None:
        run(
            [
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                self.version,
                self.name,
                action,
                *options,
            ]
        )

    def create(self) -> None:
        listed = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True)
        if any(
            line.split()[:2] == [self.version, self.name] for line in listed.stdout.splitlines()
        ):
            self.drop()  # left over from an interrupted run of this script
        run(
            [
                "pg_createcluster",
                self.version,
                self.name,
                "--port",
                str(self.port),
                "--",
                "--auth-host=trust",
                "--auth-local=trust",
            ]
        )
        self.ctl("start")
        self.wait_ready()
        with psycopg.connect(self.url("postgres", driver=False), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{DB}"')

    def drop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            run(["pg_dropcluster", "--stop", self.version, self.name])

    def url(self, db: str = DB, *, driver: bool = True) -> str:
        scheme = "postgresql+psycopg" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{db}"

    def wait_ready(self, timeout: float = 60.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            ready = subprocess.run(
                ["pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-q"], check=False
            )
            if ready.returncode == 0:
                return time.monotonic() - started
            time.sleep(0.05)
        raise SystemExit(f"cluster {self.name} not ready within {timeout:.0f} s")


class Load:
    def __init__(self, base_url: str, token: str, threads: int) -> None:
        self.base_url, self.token = base_url, token
        self.started = time.monotonic()
        self.answers: list[Answer] = []
        self.readiness: list[tuple[float, int | None]] = []
        self.accepted: dict[str, str] = {}
        self.bodies: dict[str, int] = {}  # key -> the client (and so the body) that sent it
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(threads)
        ]
        self._threads.append(threading.Thread(target=self._probe, daemon=True))

    def now(self) -> float:
        return time.monotonic() - self.started

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=HANG_SECONDS * 2)

    def post(self, client: httpx.Client, key: str, body: dict[str, Any]) -> Answer:
        sent = self.now()
        try:
            response = client.post("/api/v1/referrals", json=body, headers={"Idempotency-Key": key})
        except httpx.HTTPError as exc:
            return Answer(key, sent, self.now() - sent, None, None, None, type(exc).__name__)
        ok = response.status_code in (200, 201)
        answer = Answer(
            key,
            sent,
            self.now() - sent,
            response.status_code,
            response.json()["id"] if ok else None,
            response.headers.get("Retry-After"),
            None if ok else response.text[:300],
        )
        with self._lock:
            self.answers.append(answer)
            if ok:
                self.accepted[key] = response.json()["id"]
        return answer

    def _client(self, number: int) -> None:
        body = referral_body(number)
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=HANG_SECONDS) as client:
            key = str(uuid.uuid4())
            while not self._stop.is_set():
                self.bodies[key] = number
                answer = self.post(client, key, body)
                if answer.status == 503:
                    self._stop.wait(float(answer.retry_after or 1))
                elif answer.status is None:
                    self._stop.wait(1)
                else:
                    key = str(uuid.uuid4())

    def _probe(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=HANG_SECONDS) as client:
            while not self._stop.wait(0.2):
                try:
                    status: int | None = client.get("/readyz").status_code
                except httpx.HTTPError:
                    status = None
                self.readiness.append((self.now(), status))


class DatabaseProbe:
    """When PostgreSQL really stops and starts accepting: a fresh connection and SELECT 1 every
    0.1 s (pg_ctlcluster returns some time after the server has started accepting)."""

    def __init__(self, url: str, clock: Any) -> None:
        self.url, self.clock = url, clock
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            at = self.clock()
            try:
                with psycopg.connect(self.url, connect_timeout=2) as connection:
                    connection.execute("SELECT 1")
                ok = True
            except psycopg.Error:
                ok = False
            self.samples.append((at, ok))

    def first(self, ok: bool, after: float) -> float | None:
        return next((t for t, state in self.samples if t >= after and state is ok), None)


def referral_body(number: int) -> dict[str, Any]:
    nhs_numbers = ("9990000018", "9990000026", "9990000034", "9990000042", "9990000050")
    return {
        "service": "pharmacy-first",
        "pathway": "sore-throat",
        "pharmacy_ods": "FA001",
        "patient": {
            "nhs_number": nhs_numbers[number % len(nhs_numbers)],
            "family_name": "Faultline",
            "given_name": "Robin",
            "birth_date": "1990-04-01",
            "sex": "female",
            "phone": "07700900001",
        },
        "referrer": {"clinician_name": "Dr Sam Example"},
        "reason": "Sore throat for 3 days, FeverPAIN 2",
    }


def wait_for(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer 200 within {timeout:.0f} s")


def summarise(load: Load, marks: dict[str, float], cluster: Cluster) -> dict[str, Any]:
    stop_at, down_at, up_at = marks["stop"], marks["stopped"], marks["accepting"]

    def phase(answer: Answer) -> str:
        if answer.sent_at < stop_at:
            return "before"
        if answer.sent_at < down_at:
            return "stopping"
        return "down" if answer.sent_at < up_at else "after"

    phases = ("before", "stopping", "down", "after")
    by_phase: dict[str, Counter[str]] = {p: Counter() for p in phases}
    for answer in load.answers:
        by_phase[phase(answer)][str(answer.status)] += 1
    unavailable = [a for a in load.answers if a.status == 503]
    first_ok_after = min(
        (a.sent_at + a.seconds for a in load.answers if a.status == 201 and a.sent_at >= up_at),
        default=None,
    )
    ready_again = min((t for t, s in load.readiness if t >= up_at and s == 200), default=None)
    with psycopg.connect(cluster.url(driver=False)) as connection:
        in_db = {str(row[0]) for row in connection.execute("SELECT id FROM referral")}
        per_key = dict(
            connection.execute(
                "SELECT key, count(*) FROM inbound_message WHERE key_kind = 'idempotency-key' "
                "GROUP BY key"
            ).fetchall()
        )
    keys = {a.key for a in load.answers}
    given = set(load.accepted.values())
    return {
        "timeline_s": {
            "stop_issued": round(stop_at, 2),
            "postgres_refusing": round(down_at, 2),
            "start_issued": round(marks["start"], 2),
            "postgres_accepting": round(up_at, 2),
            "first_201_after_restart": round(first_ok_after, 2) if first_ok_after else None,
            "readyz_200_after_restart": round(ready_again, 2) if ready_again else None,
        },
        "recovery_s_after_postgres_accepting": {
            "intake": round(first_ok_after - up_at, 2) if first_ok_after else None,
            "readyz": round(ready_again - up_at, 2) if ready_again else None,
        },
        "answers_by_phase": {p: dict(c) for p, c in by_phase.items()},
        "answers_total": len(load.answers),
        "status_500": sum(1 for a in load.answers if a.status == 500),
        "no_answer": sum(1 for a in load.answers if a.status is None),
        "slowest_answer_s": round(max(a.seconds for a in load.answers), 3),
        "slowest_503_s": round(max((a.seconds for a in unavailable), default=0.0), 3),
        "all_503_have_retry_after": all(a.retry_after for a in unavailable),
        "keys": len(keys),
        "keys_accepted": len(load.accepted),
        "referral_ids_given": len(given),
        "referrals_in_database": len(in_db),
        "database_equals_ids_given": in_db == given,
        "keys_with_more_than_one_message": sum(1 for n in per_key.values() if n > 1),
        "readiness_samples": len(load.readiness),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--version", default=None, help="PostgreSQL major version (newest installed)"
    )
    parser.add_argument("--cluster", default="pharmref-faults")
    parser.add_argument("--pg-port", type=int, default=5499)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before the stop")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds PostgreSQL stays down")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of load after the start")
    parser.add_argument("--keep-cluster", action="store_true")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    cluster = Cluster(args.version or pg_version(), args.cluster, args.pg_port)
    out = ROOT / "bench" / "results" / f"{date.today().isoformat()}-faults"
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PHARMREF_DATABASE_URL": cluster.url(),
        "PHARMREF_SWEEP_INTERVAL_SECONDS": "0",
    }
    server: subprocess.Popen[bytes] | None = None
    cluster.create()
    try:
        run([str(BIN / "pharmref"), "migrate"], env)
        run([str(BIN / "pharmref"), "seed-demo"], env)
        token = subprocess.run(
            [str(BIN / "pharmref"), "token", "--role", "gp-practice", "--org", "A81001"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        port = free_port()
        log = out / "serve.log"
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [
                    str(BIN / "pharmref"),
                    "serve",
                    "--port",
                    str(port),
                    "--workers",
                    str(args.workers),
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base_url = f"http://127.0.0.1:{port}"
        wait_for(base_url + "/readyz")

        load = Load(base_url, token, args.threads)
        probe = DatabaseProbe(cluster.url(driver=False), load.now)
        probe.start()
        load.start()
        time.sleep(args.warmup)
        marks = {"stop": load.now()}
        cluster.ctl("stop", "-m", "fast")
        time.sleep(args.outage)
        marks["start"] = load.now()
        cluster.ctl("start")
        cluster.wait_ready()
        time.sleep(args.after)
        load.stop()
        probe.stop()
        marks["stopped"] = probe.first(False, after=marks["stop"]) or marks["stop"]
        marks["accepting"] = probe.first(True, after=marks["stopped"]) or marks["start"]

        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=HANG_SECONDS
        ) as client:
            for key in {a.key for a in load.answers} - set(load.accepted):
                for _attempt in range(10):
                    answer = load.post(client, key, referral_body(load.bodies[key]))
                    if answer.status in (200, 201):
                        break
                    time.sleep(1)

        result = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": vars(args) | {"postgres_version": cluster.version},
            **summarise(load, marks, cluster),
            "tracebacks_in_server_log": log.read_text(errors="replace").count("Traceback"),
        }
        (out / "faults.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        print(f"wrote {out / 'faults.json'}")
    finally:
        if server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGKILL)
        if args.keep_cluster:
            print(f"cluster kept: {cluster.url(driver=False)}")
        else:
            cluster.drop()


if __name__ == "__main__":
    main()
