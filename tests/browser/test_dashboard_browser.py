"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver,
driven by selenium with no driver download) against a real uvicorn server on loopback and the test
database, holding a year of referral history made through the services.

Skipped only when Chromium or its driver is not installed (.ci/run installs both). Set
PHARMREF_DASHBOARD_SCREENSHOT to a path (e.g. docs/dashboard.png) to keep the screenshot there too.
"""

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import settings
from app.db.session import get_session
from app.main import app
from app.models.enums import Role, Service
from app.services.dashboard import default_period
from app.services.rollups import local_day
from tests.dashboard_history import Planned, make_history, remove_history
from tests.helpers import token_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)

pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)

# A practice in each of eight PCNs, and how many Pharmacy First referrals it makes a month.
MONTHLY = {
    "A81001": 4,
    "M86194": 3,
    "A89273": 3,
    "K88472": 2,
    "D88646": 2,
    "A84275": 1,
    "A84198": 1,
}


def plan_year(now: datetime) -> list[Planned]:
    """A year of uneven referral behaviour: busy and quiet practices, most referrals completed,
    a trickle of contraception referrals, and one PCN (U00008) with too few to publish."""
    start, _ = default_period(local_day(now))
    plan = []
    month = datetime(start.year, start.month, 10, 10, tzinfo=UTC)
    for index in range(12):
        for number, (practice, count) in enumerate(MONTHLY.items()):
            for one in range(count + (index + number) % 2):
                delay = timedelta(hours=2 + 5 * ((one + number) % 4)) if one % 3 != 2 else None
                at = month + timedelta(days=one, hours=number)
                plan.append(Planned(practice, min(at, now), completed_after=delay))
        if index % 2 == 0:
            plan.append(Planned("A81001", min(month, now), service=Service.CONTRACEPTION))
        month = (month + timedelta(days=31)).replace(day=10)
    plan += [Planned("E81986", now - timedelta(days=40))] * 3
    return plan


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[str]:
    """pharmref under uvicorn on a free loopback port, reading the test database, with a year of
    committed history and an ICB target; everything is removed afterwards."""
    now = datetime.now(UTC) - timedelta(minutes=5)
    with Session(engine, expire_on_commit=False) as session:
        referrals = make_history(session, plan_year(now))

    def test_session() -> Iterator[Session]:
        with Session(engine, expire_on_commit=False) as session:
            yield session

    saved_target = settings.target_per_1000
    settings.target_per_1000 = {Service.PHARMACY_FIRST: 0.04, Service.CONTRACEPTION: 0.005}
    app.dependency_overrides[get_session] = test_session
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if uvicorn_server.started:
            break
        time.sleep(0.05)
    try:
        assert uvicorn_server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        app.dependency_overrides.pop(get_session, None)
        settings.target_per_1000 = saved_target
        remove_history(engine, referrals)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def numbers(texts: list[str]) -> list[float]:
    return [float(t.replace(",", "")) for t in texts if t and t[0].isdigit()]


def test_analyst_signs_in_and_sees_charts_and_tables_with_data(
    server: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(f"{server}/dashboard")
    assert browser.current_url == f"{server}/dashboard/login"

    browser.find_element(By.ID, "token").send_keys(token_for(Role.ICB_ANALYST, "QXX"))
    browser.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()

    assert browser.current_url == f"{server}/dashboard"
    assert "Signed in: icb-analyst QXX" in browser.find_element(By.TAG_NAME, "header").text
    [cookie] = [c for c in browser.get_cookies() if c["name"] == "pharmref_dashboard"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        True,
        "Strict",
        "/dashboard",
    )
    assert browser.execute_script("return document.cookie") == ""

    banner = browser.find_element(By.CSS_SELECTOR, "header.banner")
    assert banner.value_of_css_property("background-color") == "rgba(0, 94, 184, 1)"

    ranked = [
        [" ".join(cell.text.split()) for cell in row.find_elements(By.CSS_SELECTOR, "td, th")]
        for row in browser.find_elements(By.CSS_SELECTOR, "#pcn-table tbody tr")
    ]
    pcns = len(ranked)  # every PCN of the ICB, those that made no referrals too
    assert pcns > len(MONTHLY) + 1
    # U00008's few referrals are withheld, and secondary suppression may withhold another's
    withheld = [row for row in ranked if row[2] == "S (suppressed)"]
    assert any("U00008" in row[1] for row in withheld)
    bars = browser.find_elements(By.CSS_SELECTOR, "#pcn-rate-chart rect.bar")
    assert len(bars) == pcns - len(withheld)  # a withheld rate is a hatched gap, not a bar
    gaps = browser.find_elements(By.CSS_SELECTOR, "#pcn-rate-chart g.suppressed")
    assert len(gaps) == len(withheld)
    referring = [row for row in ranked if row[2] not in ("S (suppressed)", "0.00")]
    assert len(referring) + len(withheld) == len(MONTHLY) + 1
    assert all(bar.size["height"] > 0 for bar in bars[: len(referring)])
    none = pcns - len(referring) - len(withheld)
    assert [bar.get_attribute("data-value") for bar in bars[len(referring) :]] == ["0.0"] * none
    assert browser.find_elements(By.CSS_SELECTOR, "#pcn-rate-chart g.target line")
    lines = browser.find_elements(By.CSS_SELECTOR, "#service-trend-chart path.line")
    assert len(lines) == 4
    pharmacy_first = lines[0].get_attribute("d") or ""
    assert pharmacy_first.count("L") == 11
    assert browser.find_elements(By.CSS_SELECTOR, "#service-trend-chart g.suppressed")
    chart = browser.find_element(By.ID, "pcn-rate-chart")
    assert chart.get_attribute("role") == "img"
    assert chart.size["width"] > 600

    rates = numbers([row[2] for row in ranked])
    assert rates == sorted(rates, reverse=True)
    assert all(rate > 0 for rate in rates[: len(referring)])
    assert rates[len(referring) :] == [0.0] * none
    # ranked PCNs with a rate, then the withheld ones unranked (each rests on at least one
    # referral), then those that made none, sharing the last rank
    assert ranked[: len(referring)] == referring
    assert [row[0] for row in referring] == [str(n) for n in range(1, len(referring) + 1)]
    assert ranked[len(referring) : len(referring) + len(withheld)] == withheld
    assert all(row[0] == "-" and row[3] == "S (suppressed)" for row in withheld)
    for row in ranked[len(referring) + len(withheld) :]:
        assert row[0] == f"{len(referring) + len(withheld) + 1}= (tied)"
        assert row[2:6] == ["0.00", "0", "0", "No referrals"]
    trend = browser.find_elements(By.CSS_SELECTOR, "#trend-table tbody tr")
    assert len(trend) == 12
    assert all(numbers([row.find_elements(By.TAG_NAME, "td")[0].text]) for row in trend)
    captions = [c.text for c in browser.find_elements(By.TAG_NAME, "caption")]
    assert len(captions) == 3

    problems = [
        entry["message"]
        for entry in browser.get_log("browser")  # type: ignore[no-untyped-call]
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]
    assert problems == []  # no CSP violations, no failed loads

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, int(height) + 120)
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("PHARMREF_DASHBOARD_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
