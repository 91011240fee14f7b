import json
import os
from pathlib import Path
from typing import Any

import pytest
from jose import jwt

from app.auth.tokens import decode_token
from app.cli import main
from app.core.config import settings
from app.main import app
from app.models.enums import Role
from app.services import sweep
from app.services.sweep import SweepResult


def test_token_prints_one_decodable_line(capsys: pytest.CaptureFixture[str]) -> None:
    main(["token", "--role", "gp-practice", "--org", "A81001"])

    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1
    assert out == lines[0] + "\n"
    assert err == ""
    user = decode_token(lines[0])
    assert (user.org, user.role) == ("A81001", Role.GP_PRACTICE)


def test_token_upper_cases_org_and_honours_minutes(capsys: pytest.CaptureFixture[str]) -> None:
    main(["token", "--role", "pharmacy", "--org", "fa001", "--minutes", "5", "--subject", "pos"])

    token = capsys.readouterr().out.strip()
    user = decode_token(token)
    assert (user.subject, user.org, user.role) == ("pos", "FA001", Role.PHARMACY)
    claims = jwt.get_unverified_claims(token)
    assert claims["exp"] - claims["iat"] == 300


def test_token_bad_role_exits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["token", "--role", "superuser", "--org", "A81001"])

    assert excinfo.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--role" in err


def test_token_missing_org_exits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["token", "--role", "pharmacy"])

    assert excinfo.value.code == 2
    assert capsys.readouterr().out == ""


def test_export_openapi_writes_app_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "nested" / "openapi.json"

    main(["export-openapi", "--output", str(target)])

    assert json.loads(target.read_text()) == json.loads(json.dumps(app.openapi()))
    assert capsys.readouterr().out == f"wrote {target}\n"


def test_sweep_once_prints_the_counts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    limits: list[int] = []

    def drain(*, bind: object, limit: int) -> SweepResult:
        assert bind is not None
        limits.append(limit)
        return SweepResult(marked_overdue=3, closed_no_contact=1)

    monkeypatch.setattr(sweep, "drain", drain)

    main(["sweep", "--once"])

    assert capsys.readouterr().out == "marked overdue: 3, closed no-contact: 1\n"
    assert limits == [settings.sweep_batch_size]


@pytest.mark.usefixtures("preserve_logging")
def test_sweep_runs_until_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def batch(*, bind: object, limit: int) -> SweepResult:
        assert (bind, limit) != (None, 0)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return SweepResult()

    monkeypatch.setattr(sweep, "sweep_batch", batch)

    main(["sweep", "--interval", "0.01"])

    assert len(calls) == 3


@pytest.mark.parametrize("interval", ["0", "-5", "soon"])
def test_sweep_interval_must_be_positive(capsys: pytest.CaptureFixture[str], interval: str) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["sweep", "--interval", interval])

    assert excinfo.value.code == 2
    assert "--interval" in capsys.readouterr().err


def test_serve_installs_json_logging_and_turns_the_uvicorn_access_log_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append({"app": app, **kwargs}))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)

    main(["serve", "--port", "8799", "--log-level", "warning"])

    [call] = calls
    assert call["app"] == "app.main:app"
    assert call["access_log"] is False
    config = call["log_config"]
    assert config["formatters"]["json"]["()"] == "app.logging.formatter.JsonFormatter"
    assert config["root"]["level"] == "WARNING"
    assert config["loggers"]["uvicorn.access"]["propagate"] is False
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # one worker: in-process metrics


def test_serve_with_workers_shares_a_fresh_metrics_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *_, **__: None)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    main(["serve", "--workers", "3"])
    created = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert created.is_dir()

    named = tmp_path / "metrics"
    named.mkdir()
    (named / "histogram_123.db").write_bytes(b"stale")
    (named / "keep.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(named))
    main(["serve", "--workers", "2"])

    assert sorted(p.name for p in named.iterdir()) == ["keep.txt"]
    created.rmdir()
