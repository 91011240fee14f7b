"""`pharmref seed-demo --referrals`, `pharmref rollups rebuild` and the rollups `pharmref migrate`
builds for a database upgraded with referrals, each against a database of its own (a fresh
SQLite file: these commands commit)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Table, delete, func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

import app.db.session as db_session
from app.cli import main
from app.core.config import settings
from app.db import migrations
from app.models.referral import Referral
from app.services.demo_directory import demo_directory_path
from app.services.directory_import import import_directory
from app.services.rollup_rebuild import ROLLUP
from tests.factories import make_referral

REFERRAL: Table = Referral.__table__  # type: ignore[attr-defined]


@pytest.fixture
def own_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = db_session.make_engine(url)
    monkeypatch.setattr(settings, "database_url", url)
    monkeypatch.setattr(db_session, "engine", engine)
    yield engine
    engine.dispose()


def count(engine: Engine, table: Table) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


def test_seed_demo_adds_history_once(
    own_database: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["migrate"])
    capsys.readouterr()

    main(["seed-demo", "--referrals", "150", "--months", "2", "--seed", "3"])

    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("history: 150 referrals (")
    assert count(own_database, REFERRAL) == 150
    assert count(own_database, ROLLUP) > 0

    main(["seed-demo", "--referrals", "150"])

    assert capsys.readouterr().out.splitlines()[-1] == (
        "history: skipped, the database already has referrals"
    )
    assert count(own_database, REFERRAL) == 150


def test_plain_seed_demo_loads_only_the_directory(
    own_database: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["migrate"])
    main(["seed-demo"])

    assert "history" not in capsys.readouterr().out
    assert count(own_database, REFERRAL) == 0


def test_rollups_rebuild_recomputes_the_table(
    own_database: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    migrations.upgrade(settings.database_url)
    with Session(own_database) as session:
        import_directory(session=session, directory=demo_directory_path())
        make_referral(session)
        session.execute(delete(ROLLUP))
        session.commit()

    main(["rollups", "rebuild"])

    rows = count(own_database, ROLLUP)
    assert rows == 6  # day and month, practice, pharmacy and area side
    assert capsys.readouterr().out == f"uptake rollups rebuilt: {rows} rows\n"


def test_migrate_builds_rollups_for_existing_referrals(
    own_database: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["migrate"])
    assert capsys.readouterr().out == "database at the latest migration\n"
    with Session(own_database) as session:
        import_directory(session=session, directory=demo_directory_path())
        make_referral(session)
        session.execute(delete(ROLLUP))  # as a database migrated from before the rollups
        session.commit()

    main(["migrate"])

    assert capsys.readouterr().out.splitlines() == [
        "database at the latest migration",
        "uptake rollups built from the existing referrals: 6 rows",
    ]
    main(["migrate"])
    assert capsys.readouterr().out == "database at the latest migration\n"


@pytest.mark.parametrize(
    "args",
    [["--referrals", "-1"], ["--referrals", "many"], ["--months", "0"], ["--seed", "x"]],
)
def test_seed_demo_rejects_bad_numbers(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["seed-demo", *args])

    assert excinfo.value.code == 2
    assert args[0] in capsys.readouterr().err


def test_rollups_needs_a_known_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["rollups", "drop"])

    assert excinfo.value.code == 2
    assert "rebuild" in capsys.readouterr().err
