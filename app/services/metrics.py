"""Prometheus metrics: request latency observed in each process, and database gauges computed
when scraped.

- `pharmref_http_request_duration_seconds{method, route, status_class}`: a histogram observed by
  the middleware for every request; `route` is the path template (`unmatched` when no route
  matched), so a referral id never becomes a label value.
- `pharmref_referrals{service, status}`: referrals by service and state, one GROUP BY per scrape.
- `pharmref_outbox_messages{status}`: outbox depth (pending, sending, dead; delivered messages
  are history, not depth), and `pharmref_outbox_oldest_undelivered_age_seconds` over the
  pending and sending ones (a dead message waits for a person, and is counted instead).

With several worker processes, set PROMETHEUS_MULTIPROC_DIR (before the processes start) to an
empty directory: the histogram is then kept in files there and every scrape, whichever worker
answers it, reads all of them. The database gauges are the same whichever process is asked;
each process keeps its last answer for `PHARMREF_METRICS_CACHE_SECONDS`.
"""

import os
import threading
import time
from collections.abc import Iterable
from datetime import datetime

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import Session, col, select

from app.db.base import utc_now
from app.models.delivery import DeliveryStatus, OutboxMessage
from app.models.enums import ReferralStatus, Service
from app.models.referral import Referral

# Seconds; 2.1 and 5 are the national answer-time targets (90% within 2.1 s, all within 5 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.1, 5.0, 10.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNDELIVERED = (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.DEAD)
IN_FLIGHT = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)

REQUEST_DURATION = Histogram(
    "pharmref_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status class.",
    ["method", "route", "status_class"],
    buckets=LATENCY_BUCKETS,
)


def observe_request(*, method: str, route: str, status: int, seconds: float) -> None:
    REQUEST_DURATION.labels(
        method=method if method in _METHODS else "other",
        route=route,
        status_class=f"{status // 100}xx",
    ).observe(seconds)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def process_metrics() -> bytes:
    """This process's metrics, or in multiprocess mode those of every worker process."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


class _Snapshot(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self.families


def _referral_gauge(session: Session) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(
        "pharmref_referrals", "Referrals by service and state.", labels=["service", "status"]
    )
    counts = {
        (service, status): count
        for service, status, count in session.exec(
            select(Referral.service, Referral.status, func.count()).group_by(
                col(Referral.service), col(Referral.status)
            )
        )
    }
    for service in Service:
        for status in ReferralStatus:
            gauge.add_metric([service.value, status.value], counts.get((service, status), 0))
    return gauge


def _outbox_gauges(session: Session, now: datetime) -> list[GaugeMetricFamily]:
    depth = GaugeMetricFamily(
        "pharmref_outbox_messages",
        "Outbox messages not delivered, by status (pending, sending, dead).",
        labels=["status"],
    )
    rows = session.exec(
        select(OutboxMessage.status, func.count(), func.min(OutboxMessage.created_at))
        .where(col(OutboxMessage.status).in_(UNDELIVERED))
        .group_by(col(OutboxMessage.status))
    ).all()
    by_status = {status: (count, oldest) for status, count, oldest in rows}
    for delivery_status in UNDELIVERED:
        depth.add_metric([delivery_status.value], by_status.get(delivery_status, (0, None))[0])
    in_flight = [by_status[s][1] for s in IN_FLIGHT if s in by_status]
    age = GaugeMetricFamily(
        "pharmref_outbox_oldest_undelivered_age_seconds",
        "Age of the oldest pending or sending outbox message (0 when there is none).",
        value=max(0.0, (now - min(in_flight)).total_seconds()) if in_flight else 0.0,
    )
    return [depth, age]


def database_gauges(*, session: Session, now: datetime) -> list[GaugeMetricFamily]:
    """Referrals by service and state, outbox depth, oldest undelivered age: two queries."""
    return [_referral_gauge(session), *_outbox_gauges(session, now)]


class _DatabaseCache:
    """The last rendering of the database gauges in this process, so frequent or concurrent
    scrapes cost one pair of queries per `max_age` seconds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rendered = b""
        self.at = float("-inf")

    def get(self, *, session: Session, max_age: float) -> bytes:
        with self.lock:
            if max_age <= 0 or time.monotonic() - self.at >= max_age:
                registry = CollectorRegistry()
                registry.register(_Snapshot(database_gauges(session=session, now=utc_now())))
                self.rendered = generate_latest(registry)
                self.at = time.monotonic()
            return self.rendered


_database = _DatabaseCache()


def render(*, session: Session, max_age: float) -> bytes:
    """The text exposition: this process's (or all processes') metrics and the database gauges."""
    return process_metrics() + _database.get(session=session, max_age=max_age)
