"""The `pharmref` command: serve, migrate, seed-demo, import-directory, token, sweep, rollups,
export-openapi."""

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from app.core.config import settings
from app.models.enums import Role

OPENAPI_PATH = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"
GRACEFUL_SHUTDOWN_SECONDS = 10  # SIGTERM: in-flight requests get this long to finish
WORKER_HEALTHCHECK_SECONDS = 30


def _prepare_metrics_dir(workers: int) -> None:
    """Worker processes share one metrics directory (prometheus_client multiprocess mode): the
    one named by PROMETHEUS_MULTIPROC_DIR, emptied of the last run's files, or with several
    workers and none named, a new temporary one. Set before the workers start, which inherit it."""
    import os
    import tempfile

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
    elif workers > 1:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="pharmref-metrics-")


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from app.auth.tokens import ensure_local_key_pair
    from app.logging import log_config

    ensure_local_key_pair()  # before workers fork, so they all verify with one key
    _prepare_metrics_dir(args.workers)
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=log_config(args.log_level),
        access_log=False,  # the middleware writes pharmref.access lines (route, status, ms)
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # uvicorn kills a worker that has not answered its health ping within this; importing
        # the app takes several seconds on a busy host, and 5 (the default) restarts it in a loop.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )


def _migrate(_args: argparse.Namespace) -> None:
    from sqlmodel import Session

    from app.db import migrations
    from app.db.session import engine
    from app.services import rollup_rebuild

    migrations.upgrade(settings.database_url)
    print("database at the latest migration")
    with Session(engine) as session:
        if rollup_rebuild.rollups_missing(session=session):
            # upgraded from before the rollups existed: fill them once from the referrals
            rows = rollup_rebuild.rebuild_rollups(session=session)
            print(f"uptake rollups built from the existing referrals: {rows} rows")


def _import_directory(args: argparse.Namespace) -> None:
    from sqlmodel import Session

    from app.db.session import engine
    from app.services.directory_import import DirectoryImportError, import_directory

    with Session(engine) as session:
        try:
            summary = import_directory(session=session, directory=Path(args.directory))
        except DirectoryImportError as exc:
            for error in exc.errors:
                print(error, file=sys.stderr)
            raise SystemExit(1) from exc
    print(summary)


def _seed_demo(args: argparse.Namespace) -> None:
    from sqlmodel import Session, func, select

    from app.db.session import engine
    from app.models.referral import Referral
    from app.services import demo_history
    from app.services.demo_directory import demo_directory_path
    from app.services.directory_import import import_directory

    with Session(engine) as session:
        summary = import_directory(session=session, directory=demo_directory_path())
    print(summary)
    if not args.referrals:
        return
    with Session(engine) as session:
        if session.exec(select(func.count()).select_from(Referral)).one():
            # synthetic history never goes into a database that holds referrals already
            print("history: skipped, the database already has referrals")
            return
        history = demo_history.seed_history(
            session=session,
            referrals=args.referrals,
            months=args.months,
            seed=args.seed,
            lean=args.lean,
            progress=_progress(args.referrals),
        )
    print(history)


def _progress(total: int) -> Callable[[int], None]:
    step = max(total // 10, 1)
    reported = [0]

    def report(done: int) -> None:
        if done - reported[0] >= step and done < total:
            reported[0] = done
            print(f"  {done} of {total} referrals", file=sys.stderr, flush=True)

    return report


def _rollups(args: argparse.Namespace) -> None:
    from sqlmodel import Session

    from app.db.session import engine
    from app.services import rollup_rebuild

    assert args.action == "rebuild"
    with Session(engine) as session:
        rows = rollup_rebuild.rebuild_rollups(session=session)
    print(f"uptake rollups rebuilt: {rows} rows")


def _token(args: argparse.Namespace) -> None:
    from datetime import timedelta

    from app.auth.tokens import create_access_token

    print(
        create_access_token(
            subject=args.subject or f"{args.role}:{args.org}",
            org=args.org.upper(),
            role=Role(args.role),
            ttl=timedelta(minutes=args.minutes),
        )
    )


def _sweep(args: argparse.Namespace) -> None:
    from functools import partial

    import anyio

    from app.db.session import engine
    from app.logging import configure_logging
    from app.services import sweep

    if args.once:
        result = sweep.drain(bind=engine, limit=settings.sweep_batch_size)
        print(
            f"marked overdue: {result.marked_overdue}, "
            f"closed no-contact: {result.closed_no_contact}"
        )
        return
    configure_logging(settings.log_level)
    batch = partial(sweep.sweep_batch, bind=engine, limit=settings.sweep_batch_size)
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(partial(sweep.sweep_periodically, interval=args.interval, batch=batch))


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a number of seconds above 0")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive_count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _export_openapi(args: argparse.Namespace) -> None:
    from app.main import app

    target = Path(args.output)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(app.openapi(), indent=2, sort_keys=False) + "\n")
    print(f"wrote {target}")


def _worker(args: argparse.Namespace) -> None:
    import signal
    import threading

    from app.db.session import engine
    from app.logging import configure_logging
    from app.services import delivery

    configure_logging(settings.log_level)
    if args.once:
        print(f"sent: {delivery.drain(engine=engine)}")
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    delivery.run_worker(engine=engine, stop=stop, interval=args.interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pharmref", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--log-level",
        default=settings.log_level,
        choices=["critical", "error", "warning", "info", "debug"],
        help="JSON log lines at this level and above (default: PHARMREF_LOG_LEVEL or info)",
    )
    serve.set_defaults(func=_serve)

    commands.add_parser("migrate", help="alembic upgrade head").set_defaults(func=_migrate)

    worker = commands.add_parser("worker", help="deliver queued messages to GP systems")
    worker.add_argument("--once", action="store_true", help="deliver what is due, then exit")
    worker.add_argument(
        "--interval",
        type=_positive_seconds,
        default=settings.delivery_poll_interval_seconds,
        help="seconds between polls when idle (default: PHARMREF_DELIVERY_POLL_INTERVAL_SECONDS)",
    )
    worker.set_defaults(func=_worker)
    seed = commands.add_parser(
        "seed-demo",
        help="load the demo ICB directory and, with --referrals, synthetic referral history",
    )
    seed.add_argument(
        "--referrals",
        type=_count,
        default=0,
        help="synthetic referrals to generate (only into a database without referrals)",
    )
    seed.add_argument("--months", type=_positive_count, default=12, help="months of history")
    seed.add_argument("--seed", type=int, default=1, help="random seed (same seed, same data)")
    seed.add_argument(
        "--lean",
        action="store_true",
        help="only what the statistics read: referrals, acceptances, BP and DMS consultations",
    )
    seed.set_defaults(func=_seed_demo)

    rollups = commands.add_parser("rollups", help="maintain the uptake statistics rollups")
    rollups.add_argument(
        "action",
        choices=["rebuild"],
        help="rebuild: recompute every rollup row from the referrals, events and consultations",
    )
    rollups.set_defaults(func=_rollups)

    importer = commands.add_parser(
        "import-directory", help="import directory CSV files from a folder"
    )
    importer.add_argument("directory")
    importer.set_defaults(func=_import_directory)

    token = commands.add_parser(
        "token", help="mint a signed JWT for local use (prints only the token)"
    )
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--org", required=True, help="ODS code of the caller's organisation")
    token.add_argument("--subject", default=None)
    token.add_argument("--minutes", type=int, default=480)
    token.set_defaults(func=_token)

    sweeper = commands.add_parser(
        "sweep", help="mark overdue referrals and close unanswered ones as no-contact"
    )
    sweeper.add_argument(
        "--once", action="store_true", help="sweep until nothing is left, print the counts, exit"
    )
    sweeper.add_argument(
        "--interval",
        type=_positive_seconds,
        default=settings.sweep_interval_seconds or 60.0,
        help="seconds between sweeps when running continuously (default: the setting, or 60)",
    )
    sweeper.set_defaults(func=_sweep)

    export = commands.add_parser("export-openapi", help="write openapi/openapi.json from the app")
    export.add_argument("--output", default=str(OPENAPI_PATH))
    export.set_defaults(func=_export_openapi)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
