"""GET /metrics: the Prometheus exposition, parsed, changes with requests, referrals and the
outbox; the optional scrape token; left out of the OpenAPI document."""

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlmodel import Session

from app.core.config import settings
from app.db.base import utc_now
from app.main import app
from app.models.delivery import DeliveryStatus, Endpoint, MessageFormat, OutboxMessage
from app.models.enums import Role
from tests.factories import make_referral
from tests.helpers import auth

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(autouse=True)
def _fresh_database_gauges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "metrics_cache_seconds", 0)


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def latency_count(samples: Samples, route: str, status_class: str, method: str = "GET") -> float:
    labels = (("method", method), ("route", route), ("status_class", status_class))
    return samples.get(("pharmref_http_request_duration_seconds_count", labels), 0.0)


def referrals(samples: Samples, service: str, status: str) -> float:
    return samples[("pharmref_referrals", (("service", service), ("status", status)))]


def outbox(samples: Samples, status: str) -> float:
    return samples[("pharmref_outbox_messages", (("status", status),))]


def test_latency_histogram_counts_requests_by_route_template_and_status_class(
    client: TestClient,
) -> None:
    route = "/api/v1/organisations/{ods}"
    before = scrape(client)

    client.get("/api/v1/organisations/FA001", headers=auth(Role.PHARMACY, "FA001"))
    client.get("/api/v1/organisations/FA002", headers=auth(Role.PHARMACY, "FA001"))
    client.get("/api/v1/organisations/ZZZ999", headers=auth(Role.PHARMACY, "FA001"))
    after = scrape(client)

    assert latency_count(after, route, "2xx") - latency_count(before, route, "2xx") == 2
    assert latency_count(after, route, "4xx") - latency_count(before, route, "4xx") == 1
    names = {name for name, labels in after if dict(labels).get("route", "").endswith("FA001")}
    assert not names, "a raw path became a label value"
    buckets = {
        dict(labels)["le"]
        for name, labels in after
        if name == "pharmref_http_request_duration_seconds_bucket"
    }
    assert {"2.1", "5.0", "+Inf"} <= buckets


def test_unmatched_paths_share_one_label(client: TestClient) -> None:
    before = scrape(client)

    client.get(f"/nowhere/{uuid.uuid4()}")
    client.get(f"/nowhere/{uuid.uuid4()}")
    after = scrape(client)

    assert latency_count(after, "unmatched", "4xx") - latency_count(before, "unmatched", "4xx") == 2


def test_referral_gauge_follows_intake_and_lifecycle(client: TestClient, session: Session) -> None:
    before = scrape(client)

    referral = make_referral(session)
    make_referral(session, service="blood-pressure")
    middle = scrape(client)
    accepted = client.post(
        f"/api/v1/referrals/{referral.id}/accept",
        json={"version": 1},
        headers=auth(Role.PHARMACY, "FA001"),
    )
    assert accepted.status_code == 200
    after = scrape(client)

    assert referrals(middle, "pharmacy-first", "received") == (
        referrals(before, "pharmacy-first", "received") + 1
    )
    assert referrals(middle, "blood-pressure", "received") == (
        referrals(before, "blood-pressure", "received") + 1
    )
    assert referrals(after, "pharmacy-first", "received") == referrals(
        before, "pharmacy-first", "received"
    )
    assert referrals(after, "pharmacy-first", "accepted") == (
        referrals(before, "pharmacy-first", "accepted") + 1
    )
    assert referrals(after, "dms", "completed") == referrals(before, "dms", "completed")


def test_outbox_depth_and_oldest_undelivered_age(client: TestClient, session: Session) -> None:
    referral = make_referral(session)
    endpoint = Endpoint(
        org_ods="A81001", url="https://gp.example/inbox", format=MessageFormat.R4, secret="s" * 32
    )
    session.add(endpoint)
    session.flush()
    before = scrape(client)
    now = utc_now()
    for status, age in [
        (DeliveryStatus.PENDING, 30),
        (DeliveryStatus.PENDING, 600),
        (DeliveryStatus.SENDING, 10),
        (DeliveryStatus.DEAD, 86_400),
        (DeliveryStatus.DELIVERED, 90_000),
    ]:
        session.add(
            OutboxMessage(
                endpoint_id=endpoint.id,
                recipient_ods="A81001",
                referral_id=referral.id,
                kind="summary",
                format=MessageFormat.R4,
                body="{}",
                status=status,
                created_at=now - timedelta(seconds=age),
            )
        )
    session.commit()

    after = scrape(client)

    assert outbox(after, "pending") - outbox(before, "pending") == 2
    assert outbox(after, "sending") - outbox(before, "sending") == 1
    assert outbox(after, "dead") - outbox(before, "dead") == 1
    assert ("pharmref_outbox_messages", (("status", "delivered"),)) not in after
    oldest = after[("pharmref_outbox_oldest_undelivered_age_seconds", ())]
    assert 600 <= oldest < 3600  # the oldest pending one; the dead one waits for a person


def test_database_gauges_are_cached_between_scrapes(
    client: TestClient, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "metrics_cache_seconds", 3600)
    first = scrape(client)

    make_referral(session)
    second = scrape(client)

    assert referrals(second, "pharmacy-first", "received") == referrals(
        first, "pharmacy-first", "received"
    )


def test_scrape_token_required_when_configured(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "metrics_token", SecretStr("scrape-secret-of-some-length"))

    missing = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    jwt = client.get("/metrics", headers=auth(Role.ADMIN, "QXX"))
    right = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-of-some-length"})

    assert (missing.status_code, wrong.status_code, jwt.status_code) == (401, 401, 401)
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200
    assert "pharmref_referrals" in right.text


def test_metrics_not_in_the_openapi_document() -> None:
    assert "/metrics" not in app.openapi()["paths"]


def test_multiprocess_mode_sums_every_worker_process(tmp_path: Path) -> None:
    """Two processes observe requests into one PROMETHEUS_MULTIPROC_DIR; a third (the worker a
    scrape reaches) reports both."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    observe = (
        "from app.services import metrics\n"
        "metrics.observe_request(method='GET', route='/shared', status=200, seconds=0.02)\n"
    )
    report = "import sys\nfrom app.services import metrics\nsys.stdout.write(metrics.process_metrics().decode())\n"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", observe], cwd=ROOT, env=env, check=True)

    text = subprocess.run(
        [sys.executable, "-c", report], cwd=ROOT, env=env, check=True, capture_output=True
    ).stdout.decode()

    assert latency_count(parse(text), "/shared", "2xx") == 2
