"""The FastAPI application: routers, error handlers and middleware. No logic here."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.core.config import settings
from app.db.session import engine
from app.middleware import RequestContextMiddleware
from app.routers import (
    audit,
    consultations,
    dashboard,
    deliveries,
    errors,
    fhir,
    health,
    metrics,
    organisations,
    referrals,
    stats,
)
from app.routers.deps import RateLimited
from app.routers.examples import error_responses
from app.routers.fhir_docs import OPERATION_OUTCOME_RESPONSES
from app.services import delivery, sweep

DESCRIPTION = """
pharmref receives referrals to community pharmacy services (Pharmacy First, Blood Pressure Check,
Pharmacy Contraception Service, Discharge Medicines Service) as FHIR R4 BaRS messages or plain JSON,
and lets referrers track them.

Authentication: a bearer JWT (RS256) carrying `org` (ODS code) and `role` claims.
JSON errors have the shape `{"error", "detail", "fields"}`; FHIR errors are OperationOutcomes with
`https://fhir.nhs.uk/CodeSystem/http-error-codes` `REC_*` codes.
"""


def _operation_id(route: APIRoute) -> str:
    return route.name


def _freeze_start_up_heap() -> None:
    """Everything imported and built at start-up lives as long as the process: moved out of the
    collector's reach, a full collection no longer walks it (90-115 ms a time, a request's worth
    of latency, seen in the inbox benchmark). Once per process."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    # Sync routes run in anyio's thread pool; no more threads than pooled connections, so a busy
    # worker queues requests instead of opening and closing overflow connections per request.
    limiter = anyio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = settings.db_pool_size + settings.db_max_overflow
    async with anyio.create_task_group() as background:
        if settings.sweep_interval_seconds > 0:
            # Its batches take a thread (and so a connection) from the same limiter as requests.
            batch = partial(sweep.sweep_batch, bind=engine, limit=settings.sweep_batch_size)
            background.start_soon(
                partial(
                    sweep.sweep_periodically,
                    interval=settings.sweep_interval_seconds,
                    batch=batch,
                )
            )
        if settings.delivery_in_process:
            background.start_soon(
                partial(
                    delivery.deliver_periodically,
                    engine=engine,
                    interval=settings.delivery_poll_interval_seconds,
                )
            )
        _freeze_start_up_heap()
        yield
        background.cancel_scope.cancel()


def create_app() -> FastAPI:
    app = FastAPI(
        title="pharmref",
        version="0.1.0",
        description=DESCRIPTION,
        generate_unique_id_function=_operation_id,
        # pharmref has its own metrics (/metrics) and JSON logs; FastAPI's OpenTelemetry hooks,
        # with no provider configured, only cost each request their bookkeeping.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        lifespan=lifespan,
    )
    errors.install(app)
    # Health and metrics are not rate limited: load balancers and Prometheus poll them.
    app.include_router(health.router)
    app.include_router(metrics.router)
    for router in (
        organisations.router,
        referrals.router,
        consultations.router,
        deliveries.router,
        audit.router,
        stats.router,
    ):
        app.include_router(router, dependencies=[RateLimited], responses=error_responses(429))
    app.include_router(
        fhir.router,
        dependencies=[RateLimited],
        responses={429: OPERATION_OUTCOME_RESPONSES[429]},
    )
    app.include_router(dashboard.router, dependencies=[RateLimited])
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
    generate_openapi = app.openapi
    app.openapi = lambda: errors.document_error_responses(generate_openapi())  # type: ignore[method-assign]
    return app


app = create_app()
