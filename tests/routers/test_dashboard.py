"""The dashboard page: filters, the ranked PCN table, the charts and their table alternatives,
with suppressed figures marked (never zero) for analysts and exact figures for admin."""

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.auth.cookies import SESSION_COOKIE
from app.core.config import settings
from app.models.enums import OrgKind, Role, Service
from app.models.organisation import Membership, Organisation
from app.services.dashboard import DAYS_PER_MONTH, format_figure
from tests.dashboard_history import Planned, make_history, remove_history
from tests.helpers import token_for

SVG = "{http://www.w3.org/2000/svg}"
NOW = datetime(2026, 11, 20, 10, tzinfo=UTC)


class Tables(HTMLParser):
    """Every <table id=...>: its caption and its body rows as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.captions: dict[str, str] = {}
        self._table: str | None = None
        self._in: str | None = None
        self._row: list[str] | None = None
        self._text: list[str] = []
        self._body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tbody":
            self._body = True
        elif tag == "tr" and self._body:
            self._row = []
        elif tag in ("td", "th", "caption"):
            self._in = tag
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._in:
            self._row.append(" ".join("".join(self._text).split()))
            self._in = None
        elif tag == "caption" and self._table is not None:
            self.captions[self._table] = " ".join("".join(self._text).split())
            self._in = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._body = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text.append(data)


def tables(html: str) -> Tables:
    parser = Tables()
    parser.feed(html)
    return parser


def svg(html: str, chart_id: str) -> ET.Element:
    match = re.search(rf'<svg [^>]*id="{chart_id}".*?</svg>', html, re.S)
    assert match, f"no chart {chart_id}"
    return ET.fromstring(match.group(0))


def by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if cls in (e.get("class") or "").split()]


def page(
    client: TestClient, role: Role = Role.ICB_ANALYST, org: str = "QXX", /, **params: str
) -> str:
    client.cookies.set(SESSION_COOKIE, token_for(role, org), path="/dashboard")
    response = client.get("/dashboard", params=params)
    assert response.status_code == 200, response.text
    return str(response.text)


PERIOD = {"from": "2026-06-01", "to": "2026-11-30"}
WITH_HISTORY = {"U00001", "U00002", "U00003"}


def pcns_of(session: Session, *places: str) -> set[str]:
    """The PCNs the directory puts in the given places (default: every place of ICB QXX)."""
    if not places:
        places = tuple(
            session.exec(select(Membership.member_ods).where(Membership.group_ods == "QXX")).all()
        )
    return set(
        session.exec(
            select(Membership.member_ods)
            .join(Organisation, col(Organisation.ods_code) == col(Membership.member_ods))
            .where(col(Membership.group_ods).in_(places), Organisation.kind == OrgKind.PCN)
        ).all()
    )


def code(row: list[str]) -> str:
    return row[1].split()[-1]


def assert_no_referrals(row: list[str], rank: str) -> None:
    """A PCN that made none: a true, published zero, ranked tied at the bottom."""
    assert row[0] == f"{rank}= (tied)"
    assert row[2:6] == ["0.00", "0", "0", "No referrals"]


@pytest.fixture(scope="module")
def history(engine: Engine) -> Iterator[None]:
    """Six months, committed once for the module (and removed after it): A81001 and A81002 (PCN
    U00001) refer 9 a month between them, 6 completed in 5 hours; M86194 (U00002) refers 2 a
    month; A89273 (U00003) once in all."""
    plan = []
    for month in range(6):
        at = NOW - timedelta(days=30 * month)
        plan += [Planned("A81001", at, completed_after=timedelta(hours=5))] * 6
        plan += [Planned("A81002", at)] * 3
        plan += [Planned("M86194", at)] * 2
    plan.append(Planned("A89273", NOW - timedelta(days=3), service=Service.CONTRACEPTION))
    with Session(engine, expire_on_commit=False) as session:
        referrals = make_history(session, plan)
    yield
    remove_history(engine, referrals)


@pytest.fixture
def target() -> Iterator[None]:
    saved = settings.target_per_1000
    yield
    settings.target_per_1000 = saved


@pytest.mark.usefixtures("history")
def test_admin_sees_exact_figures_ranked_by_rate(client: TestClient, session: Session) -> None:
    html = page(client, Role.ADMIN, "ADMIN", **PERIOD)

    rows = tables(html).tables["pcn-table"]
    by_code = {code(row): row for row in rows}
    everyone = pcns_of(session)
    assert len(everyone) > len(WITH_HISTORY)
    assert set(by_code) == everyone  # every PCN of the ICB, those that made none too
    assert len(rows) == len(everyone)
    # rank, PCN, per 1,000, made, completed, completion rate, median hours, registered patients
    assert by_code["U00001"][3:6] == ["54", "36", "67%"]
    assert 4.0 <= float(by_code["U00001"][6]) <= 6.0  # every completion took 5 hours
    assert by_code["U00002"][3:6] == ["12", "0", "0%"]
    assert by_code["U00003"][3:5] == ["1", "0"]
    rates = [float(row[2]) for row in rows]
    assert rates == sorted(rates, reverse=True)
    assert [code(row) for row in rows[:3]] == ["U00001", "U00002", "U00003"]
    assert [row[0] for row in rows[:3]] == ["1", "2", "3"]
    assert float(by_code["U00003"][2]) > 0  # one referral: a small rate, never shown as zero
    for row in rows[3:]:
        assert_no_referrals(row, "4")
    names = [row[1] for row in rows[3:]]
    assert names == sorted(names)  # ties by name
    patients = int(by_code["U00001"][7].replace(",", ""))
    assert float(by_code["U00001"][2]) == pytest.approx(54 * 1000 / patients, abs=0.005)
    assert "is withheld" not in html


@pytest.mark.usefixtures("history")
def test_analyst_sees_small_numbers_suppressed_and_marked_never_zero(
    client: TestClient, session: Session
) -> None:
    html = page(client, **PERIOD)

    rows = tables(html).tables["pcn-table"]
    by_code = {code(row): row for row in rows}
    assert set(by_code) == pcns_of(session)
    assert rows[0][:5] == ["1", "Riverside PCN U00001", "0.63", "55", "35"]  # 54, 36 rounded
    # U00003's one referral is withheld; U00002's 12 too, or the ICB total would give it away
    # (secondary suppression). Both unranked, after the rated PCNs and before those that made
    # none, since a withheld figure rests on at least one referral.
    assert [code(row) for row in rows[1:3]] == ["U00003", "U00002"]
    for withheld in rows[1:3]:
        assert withheld[0] == "-"
        assert withheld[2:4] == ["S (suppressed)", "S (suppressed)"]
        assert withheld[5] == "S (suppressed)"
    for row in rows[3:]:
        assert_no_referrals(row, "4")
    assert "it rests on between 1 and 7 referrals" in " ".join(html.split())
    chart = svg(html, "pcn-rate-chart")
    bars = by_class(chart, "rect", "bar")
    assert len(bars) == len(rows) - 2
    assert [float(b.get("data-value", "nan")) for b in bars[1:]] == [0.0] * (len(rows) - 3)
    gaps = by_class(chart, "g", "suppressed")
    assert len(gaps) == 2
    for gap, pcn in zip(gaps, ("U00003", "U00002"), strict=True):
        title = gap.find(f"{SVG}title")
        assert title is not None
        assert title.text is not None
        assert pcn in title.text
        assert "suppressed" in title.text
    alternative = {row[0]: row[1] for row in tables(html).tables["pcn-rate-table"]}
    assert alternative["Kingsside PCN (U00003)"] == "S (suppressed)"
    assert alternative["Rivergate PCN (U00002)"] == "S (suppressed)"


@pytest.mark.usefixtures("history")
def test_bar_chart_and_its_table_alternative_agree(client: TestClient) -> None:
    html = page(client, Role.ADMIN, "ADMIN", **PERIOD)

    chart = svg(html, "pcn-rate-chart")
    assert chart.get("role") == "img"
    assert chart.get("aria-labelledby") == "pcn-rate-chart-title pcn-rate-chart-desc"
    bars = by_class(chart, "rect", "bar")
    labels = [t.text for t in by_class(chart, "text", "x-label")]
    parsed = tables(html)
    alternative = parsed.tables["pcn-rate-table"]
    assert "Table for the chart above" in parsed.captions["pcn-rate-table"]
    assert labels == [row[0].split("(")[-1].rstrip(")") for row in alternative]
    assert [format_figure(float(b.get("data-value", "nan")), "rate") for b in bars] == [
        row[1] for row in alternative
    ]


@pytest.mark.usefixtures("history")
def test_trend_lines_per_service_with_a_table_alternative(client: TestClient) -> None:
    html = page(client, Role.ADMIN, "ADMIN", **PERIOD)

    chart = svg(html, "service-trend-chart")
    series = by_class(chart, "g", "series")
    assert [s.get("data-series") for s in series] == [
        "Pharmacy First",
        "Blood Pressure Check",
        "Contraception",
        "Discharge Medicines Service",
    ]
    pharmacy_first = series[0].find(f"{SVG}path")
    assert pharmacy_first is not None
    assert pharmacy_first.get("d", "").count("L") == 5  # six months, one unbroken line
    parsed = tables(html)
    trend = parsed.tables["trend-table"]
    assert [row[0] for row in trend] == [
        "Jun 2026",
        "Jul 2026",
        "Aug 2026",
        "Sep 2026",
        "Oct 2026",
        "Nov 2026",
    ]
    points = [float(p.get("data-value", "nan")) for p in by_class(series[0], "g", "point")]
    assert [row[1] for row in trend] == [format_figure(v, "rate") for v in points]
    assert all(v > 0 for v in points)
    assert "Table for the chart above" in parsed.captions["trend-table"]


@pytest.mark.usefixtures("history")
def test_analyst_trend_shows_suppressed_months_as_marked_gaps(client: TestClient) -> None:
    html = page(client, **PERIOD)

    chart = svg(html, "service-trend-chart")
    contraception = by_class(chart, "g", "series")[2]
    [gap] = by_class(contraception, "g", "suppressed")
    title = gap.find(f"{SVG}title")
    assert title is not None
    assert title.text == "Contraception, Nov 2026: suppressed (small number)"
    trend = {row[0]: row for row in tables(html).tables["trend-table"]}
    assert trend["Nov 2026"][3] == "S (suppressed)"
    assert trend["Oct 2026"][3] == "0.00"  # no referrals that month: a true zero


@pytest.mark.usefixtures("history")
def test_service_filter_limits_table_chart_and_trend(client: TestClient) -> None:
    html = page(client, Role.ADMIN, "ADMIN", service="contraception", **PERIOD)

    rows = tables(html).tables["pcn-table"]
    assert rows[0][:4] == ["1", "Kingsside PCN U00003", rows[0][2], "1"]
    assert float(rows[0][2]) > 0
    for row in rows[1:]:  # U00001 and U00002 referred only for Pharmacy First
        assert_no_referrals(row, "2")
    series = by_class(svg(html, "service-trend-chart"), "g", "series")
    assert [s.get("data-series") for s in series] == ["Contraception"]
    assert '<option value="contraception" selected>' in html


@pytest.mark.usefixtures("history")
def test_place_filter_shows_only_that_places_pcns(client: TestClient, session: Session) -> None:
    html = page(client, Role.ADMIN, "ADMIN", place="QXX02", **PERIOD)

    rows = tables(html).tables["pcn-table"]
    assert {code(row) for row in rows} == pcns_of(session, "QXX02")
    assert not {"U00001", "U00003"} & {code(row) for row in rows}
    assert rows[0][:4] == ["1", "Rivergate PCN U00002", "0.48", "12"]
    for row in rows[1:]:
        assert_no_referrals(row, "2")
    assert "PCNs in Central Place" in html
    trend = tables(html).tables["trend-table"]
    assert float(trend[0][1]) > 0


def test_analyst_place_options_are_the_places_of_their_icb(client: TestClient) -> None:
    html = page(client)

    assert re.findall(r'<option value="(QXX\d\d)"', html) == ["QXX02", "QXX01", "QXX03"]


@pytest.mark.usefixtures("history")
def test_analyst_of_another_icb_sees_none_of_this_icbs_pcns(client: TestClient) -> None:
    client.cookies.set(SESSION_COOKIE, token_for(Role.ICB_ANALYST, "QYY"), path="/dashboard")

    response = client.get("/dashboard", params=PERIOD)

    # QYY is no ICB in the directory: the statistics service refuses the token, and says so
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert "You cannot see these figures" in response.text
    assert "must name an ICB in the directory" in response.text
    assert "Signed in: icb-analyst QYY" in response.text
    assert 'id="pcn-table"' not in response.text
    assert not re.search(r"U000\d\d|QXX", response.text)


def test_default_period_is_the_last_twelve_months(client: TestClient) -> None:
    html = page(client)

    from_value = re.search(r'id="from" name="from" value="([^"]*)"', html)
    to_value = re.search(r'id="to" name="to" value="([^"]*)"', html)
    assert from_value
    assert to_value
    start, end = date.fromisoformat(from_value.group(1)), date.fromisoformat(to_value.group(1))
    assert start.day == 1
    assert (end.year - start.year) * 12 + end.month - start.month == 11
    assert len(tables(html).tables["trend-table"]) == 12


@pytest.mark.usefixtures("history")
@pytest.mark.usefixtures("target")
def test_target_line_is_the_monthly_target_scaled_to_the_period(client: TestClient) -> None:
    settings.target_per_1000 = 0.5

    html = page(client, Role.ADMIN, "ADMIN", **PERIOD)

    expected = 0.5 * 183 / DAYS_PER_MONTH
    [line] = [
        e
        for g in by_class(svg(html, "pcn-rate-chart"), "g", "target")
        for e in g.iter(f"{SVG}line")
    ]
    assert float(line.get("data-value", "nan")) == pytest.approx(expected)
    assert f"{format_figure(expected, 'rate')} for this period" in html
    against = {row[0]: row[2] for row in tables(html).tables["pcn-rate-table"]}
    assert set(against.values()) <= {"above", "below"}


@pytest.mark.usefixtures("history")
@pytest.mark.usefixtures("target")
def test_per_service_targets_add_up_for_all_services(client: TestClient) -> None:
    settings.target_per_1000 = {Service.PHARMACY_FIRST: 0.25, Service.DMS: 0.5}

    everything = page(client, Role.ADMIN, "ADMIN", **PERIOD)
    dms = page(client, Role.ADMIN, "ADMIN", service="dms", **PERIOD)
    contraception = page(client, Role.ADMIN, "ADMIN", service="contraception", **PERIOD)

    assert "ICB target: 0.75 referrals per 1,000 patients a month" in everything
    assert "ICB target: 0.50 referrals per 1,000 patients a month" in dms
    assert "No ICB target is set" in contraception


@pytest.mark.usefixtures("history")
def test_no_target_set_draws_no_target_line(client: TestClient) -> None:
    html = page(client, Role.ADMIN, "ADMIN", **PERIOD)

    assert by_class(svg(html, "pcn-rate-chart"), "g", "target") == []
    assert "No ICB target is set" in html


@pytest.mark.usefixtures("history")
def test_empty_filter_fields_mean_all(client: TestClient, session: Session) -> None:
    html = page(client, Role.ADMIN, "ADMIN", service="", source="", place="", **PERIOD)

    rows = tables(html).tables["pcn-table"]
    assert {code(row) for row in rows} == pcns_of(session)
    assert [row[3] for row in rows[:3]] == ["54", "12", "1"]  # every service, every source


@pytest.mark.usefixtures("history")
def test_a_question_too_big_for_the_statistics_service_is_explained_with_422(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "stats_max_rows", 3)
    client.cookies.set(SESSION_COOKIE, token_for(Role.ADMIN, "ADMIN"), path="/dashboard")

    response = client.get("/dashboard", params=PERIOD)

    assert response.status_code == 422, response.text
    assert "The filters cannot be used" in response.text
    assert "at most 3 are given at once" in response.text
    assert 'id="pcn-table"' not in response.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"service": "dentistry"}, "Service: choose a service from the list."),
        ({"source": "carrier-pigeon"}, "Source: choose a source from the list."),
        ({"from": "yesterday"}, "From: enter a date as YYYY-MM-DD."),
        ({"to": "2026-02-30"}, "To: enter a date as YYYY-MM-DD."),
        ({"from": "2026-05-01", "to": "2026-04-01"}, "must not be after the last day"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "at most 1098 days"),
        ({"place": "QXX99"}, "Place: choose a place from the list."),
        ({"place": "<script>"}, "Place: choose a place from the list."),
    ],
)
def test_bad_filters_are_explained_with_422(
    client: TestClient, params: dict[str, str], message: str
) -> None:
    client.cookies.set(SESSION_COOKIE, token_for(Role.ICB_ANALYST, "QXX"), path="/dashboard")

    response = client.get("/dashboard", params=params)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "The filters cannot be used" in response.text
    assert message in response.text
    assert "<script>" not in response.text
    assert 'id="pcn-table"' not in response.text
