"""The FastAPI application: routers, error handlers and middleware. No logic here."""

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.core.config import settings
from app.middleware import RequestContextMiddleware
from app.routers import errors, fhir, health, organisations, referrals

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


def create_app() -> FastAPI:
    app = FastAPI(
        title="pharmref",
        version="0.1.0",
        description=DESCRIPTION,
        generate_unique_id_function=_operation_id,
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(organisations.router)
    app.include_router(referrals.router)
    app.include_router(fhir.router)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    return app


app = create_app()
