"""Prometheus scrape endpoint (left out of the OpenAPI document: it is for the monitoring
system, not for API clients)."""

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.core.config import settings
from app.core.errors import Unauthorized
from app.db.session import SessionDep
from app.services import metrics

router = APIRouter(tags=["operations"], include_in_schema=False)


def _check_scraper(authorization: str | None) -> None:
    expected = settings.metrics_token
    if expected is None:
        return
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credentials.encode(), expected.get_secret_value().encode()
    ):
        raise Unauthorized("The metrics token is required.", headers={"WWW-Authenticate": "Bearer"})


@router.get("/metrics")
def read_metrics(
    session: SessionDep, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """Prometheus text exposition: request latency, referrals by state, outbox depth."""
    _check_scraper(authorization)
    body = metrics.render(session=session, max_age=settings.metrics_cache_seconds)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
