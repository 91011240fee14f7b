"""The statistics endpoints: roles, JSON and CSV, validation errors and disclosure over HTTP."""

import csv
import io
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.core.config import settings
from app.models.enums import Role
from tests.helpers import auth
from tests.stats_world import (
    ALDER,
    CEDAR,
    DOGWOOD,
    ICB,
    Clock,
    Referrals,
    at,
    build_world,
    install_clock,
)

ANALYST = auth(Role.ICB_ANALYST, ICB)
ADMIN = auth(Role.ADMIN, "X26")
DEMO_ANALYST = auth(Role.ICB_ANALYST, "QXX")
JAN = "from=2026-01-01&to=2026-01-31"
ENDPOINTS = [
    f"/api/v1/stats/uptake?{JAN}",
    f"/api/v1/stats/uptake?{JAN}&group_by=practice&breakdown=source&interval=none",
    f"/api/v1/stats/uptake?{JAN}&group_by=pharmacy&service=dms",
    f"/api/v1/stats/practices-without-referrals?{JAN}&service=pharmacy-first",
    f"/api/v1/stats/concentration?{JAN}&top_percent=20&share_percent=69",
    f"/api/v1/stats/month-on-month?{JAN}",
    f"/api/v1/stats/blood-pressure?{JAN}&group_by=place",
    f"/api/v1/stats/dms?{JAN}&interval=week",
]


@pytest.fixture
def history(session: Session, monkeypatch: pytest.MonkeyPatch) -> Referrals:
    build_world(session)
    clock: Clock = install_clock(monkeypatch)
    return Referrals(session, clock)


def csv_rows(text: str) -> list[dict[str, str]]:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return list(csv.DictReader(io.StringIO(body)))


@pytest.mark.usefixtures("history")
@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize("headers", [ANALYST, ADMIN], ids=["icb-analyst", "admin"])
def test_every_question_answers_in_json_and_csv(
    client: TestClient, url: str, headers: dict[str, str]
) -> None:
    as_json = client.get(url, headers=headers)
    as_csv = client.get(url, headers=headers | {"Accept": "text/csv"})

    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == "application/json"
    body = as_json.json()
    assert body["query"]["from_date"] == "2026-01-01"
    assert body["query"]["to_date"] == "2026-01-31"
    assert body["disclosure"]["exact"] is (headers is ADMIN)
    assert body["rows"]
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"].startswith("text/csv")
    lines = as_csv.text.splitlines()
    assert lines[0].startswith("# pharmref ")
    assert lines[1] == "# period: 2026-01-01 to 2026-01-31 (England local dates, inclusive)"
    assert lines[2].startswith("# filters: ")
    assert lines[3].startswith("# disclosure: ")
    assert len(csv_rows(as_csv.text)) == len(body["rows"]) + len(body.get("totals", []))


def test_an_analyst_gets_suppressed_cells_and_admin_exact_ones(
    client: TestClient, history: Referrals
) -> None:
    history.many(3, at(date(2026, 1, 12)), practice="Z00001")
    history.many(11, at(date(2026, 1, 12)), practice=DOGWOOD)
    url = f"/api/v1/stats/uptake?{JAN}"

    analyst = client.get(url, headers=ANALYST).json()
    admin = client.get(url, headers=ADMIN).json()
    table = csv_rows(client.get(url, headers=ANALYST | {"Accept": "text/csv"}).text)

    alder = next(r for r in analyst["rows"] if r["group_code"] == ALDER)
    assert (alder["made"], alder["per_1000_patients"]) == (None, None)
    assert {"made", "per_1000_patients"} <= set(alder["suppressed"])
    cedar = next(r for r in analyst["rows"] if r["group_code"] == CEDAR)
    assert cedar["made"] is None  # the other part with referrals: suppressed with Alder's 3
    assert analyst["totals"][0]["made"] == 15  # 14 rounded
    assert next(r for r in admin["rows"] if r["group_code"] == ALDER)["made"] == 3
    assert next(r for r in table if r["group_code"] == ALDER)["made"] == "[c]"
    assert next(r for r in table if r["row"] == "total")["made"] == "15"


@pytest.mark.parametrize("role", [Role.GP_PRACTICE, Role.PHARMACY, Role.TRUST, Role.NHS111])
def test_other_roles_are_refused(client: TestClient, role: Role) -> None:
    response = client.get(f"/api/v1/stats/uptake?{JAN}", headers=auth(role, "A81001"))

    assert response.status_code == 403
    assert response.json()["error"] == "Forbidden"


def test_an_analyst_token_must_name_an_icb(client: TestClient) -> None:
    response = client.get(f"/api/v1/stats/uptake?{JAN}", headers=auth(Role.ICB_ANALYST, "A81001"))

    assert response.status_code == 403
    assert "ICB" in response.json()["detail"]


def test_no_token_is_401(client: TestClient) -> None:
    response = client.get(f"/api/v1/stats/uptake?{JAN}")

    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=2026-02-01&to=2026-01-01", "from"),
        ("from=2020-01-01&to=2026-01-01", "to"),
        (f"{JAN}&group_by=surgery", "query.group_by"),
        (f"{JAN}&interval=year", "query.interval"),
        (f"{JAN}&service=dentistry", "query.service"),
        ("to=2026-01-01", "query.from"),
        ("from=2026-01-01&to=31/01/2026", "query.to"),
    ],
)
def test_bad_questions_are_json_errors_naming_the_field(
    client: TestClient, query: str, field: str
) -> None:
    response = client.get(f"/api/v1/stats/uptake?{query}", headers=DEMO_ANALYST)

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "ValidationFailed"
    assert [f["field"] for f in body["fields"]] == [field]


@pytest.mark.parametrize(
    ("url", "field"),
    [
        (f"/api/v1/stats/concentration?{JAN}&top_percent=0", "query.top_percent"),
        (f"/api/v1/stats/concentration?{JAN}&share_percent=101", "query.share_percent"),
        (f"/api/v1/stats/practices-without-referrals?{JAN}&source=nhs111", "query.source"),
        ("/api/v1/stats/dms?from=2026-03-01&to=2026-01-01", "from"),
    ],
)
def test_bad_questions_on_the_other_endpoints(client: TestClient, url: str, field: str) -> None:
    response = client.get(url, headers=ADMIN)

    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == [field]


def test_the_longest_period_is_configurable(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "stats_max_days", 31)

    allowed = client.get(f"/api/v1/stats/uptake?{JAN}", headers=ADMIN)
    refused = client.get("/api/v1/stats/uptake?from=2026-01-01&to=2026-02-01", headers=ADMIN)

    assert allowed.status_code == 200
    assert refused.status_code == 422


def test_an_answer_too_large_is_refused(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "stats_max_rows", 100)

    response = client.get(
        f"/api/v1/stats/uptake?{JAN}&group_by=practice&interval=week", headers=DEMO_ANALYST
    )

    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == ["interval"]
    assert "shorter period" in response.json()["detail"]


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        ("text/csv", "text/csv"),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("text/*", "text/csv"),
        ("text/csv;q=0.5, application/json", "application/json"),
        ("application/json;q=0.2, text/csv;q=0.9", "text/csv"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json"),
    ],
)
def test_content_negotiation(client: TestClient, accept: str, media: str) -> None:
    response = client.get(f"/api/v1/stats/uptake?{JAN}", headers=ADMIN | {"Accept": accept})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media)


@pytest.mark.parametrize("accept", ["application/xml", "text/csv;q=0, application/json;q=0"])
def test_neither_json_nor_csv_acceptable_is_406(client: TestClient, accept: str) -> None:
    response = client.get(f"/api/v1/stats/uptake?{JAN}", headers=ADMIN | {"Accept": accept})

    assert response.status_code == 406
    assert response.json()["error"] == "NotAcceptable"


def test_documented_in_openapi(client: TestClient) -> None:
    spec: dict[str, Any] = client.get("/openapi.json").json()

    operation = spec["paths"]["/api/v1/stats/uptake"]["get"]
    assert {"401", "403", "406", "422"} <= set(operation["responses"])
    assert "text/csv" in operation["responses"]["200"]["content"]
    assert "application/json" in operation["responses"]["200"]["content"]
