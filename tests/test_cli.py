import json
from pathlib import Path

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
