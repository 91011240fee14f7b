"""Render every error as a JSON error body, or on /fhir routes as an OperationOutcome."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.core.errors import (
    AppError,
    BadRequest,
    Issue,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from app.fhir.outcome import operation_outcome_json
from app.fhir.responses import FHIRResponse

logger = logging.getLogger("pharmref.errors")


class MethodNotAllowed(AppError):
    status_code = 405
    issue_code = "not-supported"
    rec_code = "REC_METHOD_NOT_ALLOWED"


class NotAcceptable(AppError):
    status_code = 406
    issue_code = "not-supported"
    rec_code = "REC_NOT_ACCEPTABLE"


class UnsupportedMediaType(AppError):
    status_code = 415
    issue_code = "not-supported"
    rec_code = "REC_BAD_REQUEST"


def render_error(error: AppError, *, fhir: bool) -> Response:
    if fhir:
        return FHIRResponse(
            operation_outcome_json(error.issues, error.rec_code),
            status_code=error.fhir_status_code,
            headers=error.headers,
        )
    body: dict[str, object] = {"error": type(error).__name__, "detail": error.detail}
    fields = [
        {"field": issue.expression, "code": issue.code, "message": issue.diagnostics}
        for issue in error.issues
        if issue.expression
    ]
    if fields:
        body["fields"] = fields
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


def _is_fhir(request: Request) -> bool:
    return request.url.path.startswith("/fhir")


def _loc(loc: tuple[object, ...]) -> str:
    """body.patient.nhs_number -> patient.nhs_number; query parameters keep their prefix."""
    parts = list(loc[1:]) if loc and loc[0] == "body" else list(loc)
    return ".".join(str(p) for p in parts) or "body"


async def app_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return render_error(exc, fhir=_is_fhir(request))


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fhir = _is_fhir(request)
    issues = []
    for error in exc.errors()[:100]:
        message = str(error.get("msg", "invalid"))
        # pydantic echoes the bad value in a few messages; keep only the rule, never the value.
        message = message.split(", input_value=")[0][:200]
        code = "required" if error.get("type") == "missing" else "invalid"
        loc = tuple(error.get("loc", ()))
        if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, str(error.get("ctx", {}).get("discriminator", "")).strip("'"))
        issues.append(Issue(code, message, _loc(loc)))
    return render_error(ValidationFailed("The request is not valid.", issues=issues), fhir=fhir)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error: AppError
    if exc.status_code == 404:
        error = NotFound("No such endpoint.")
    elif exc.status_code == 405:
        error = MethodNotAllowed("Method not allowed for this endpoint.")
    elif exc.status_code == 406:
        error = NotAcceptable(str(exc.detail))
    elif exc.status_code == 415:
        error = UnsupportedMediaType(str(exc.detail))
    else:
        error = BadRequest(str(exc.detail))
        error.status_code = exc.status_code
    error.headers.update(dict(exc.headers or {}))
    if exc.status_code == 405:
        error.headers["Allow"] = _allowed_methods(request)
    return render_error(error, fhir=_is_fhir(request))


RETRY_AFTER_SECONDS = 2


def database_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The database is unavailable; retry shortly.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def database_error_handler(request: Request, exc: Exception) -> Response:
    """Connection refused or lost, pool exhausted, statement timed out: a 503 the caller may
    retry (intake is idempotent by X-Request-Id / Idempotency-Key), logged without a trace."""
    if isinstance(exc, DBAPIError) and not (
        isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated
    ):
        return await unhandled_error_handler(request, exc)
    logger.warning("database unavailable: %s", type(exc).__name__)
    return render_error(database_unavailable(), fhir=_is_fhir(request))


async def unhandled_error_handler(request: Request, exc: Exception) -> Response:
    logger.error(
        "unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc
    )
    error = AppError("An unexpected error occurred; it has been logged.")
    return render_error(error, fhir=_is_fhir(request))


def _allowed_methods(request: Request) -> str:
    """Every method the path supports: Starlette's own Allow names only the first route matched,
    and several routes (GET and POST /api/v1/referrals) share a path."""
    path = request.url.path
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if route.methods and regex is not None and regex.match(path):
            methods |= route.methods
    return ", ".join(sorted(methods))


_VALIDATION_ERROR_REF = "#/components/schemas/HTTPValidationError"


_BODY_ERRORS = {
    "400": "Malformed request (the body is not JSON)",
    "413": "Request body too large",
}


def document_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document say what the handlers above send, for every route, new ones too.

    FastAPI documents a default 422 (`HTTPValidationError`), a shape pharmref never sends: JSON
    routes get the JSON error body instead, FHIR routes nothing (their validation errors are a
    documented 400 OperationOutcome). A JSON route with a request body also answers 400 when the
    body is not JSON at all, and 413 (from the middleware) when it is too large."""
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref") == _VALIDATION_ERROR_REF:
                if path.startswith("/fhir"):
                    del responses["422"]
                else:
                    responses["422"]["description"] = "Invalid fields or a broken business rule"
                    content["schema"] = error_body
            if "requestBody" in operation and not path.startswith("/fhir"):
                for code, description in _BODY_ERRORS.items():
                    responses.setdefault(
                        code,
                        {
                            "description": description,
                            "content": {"application/json": {"schema": error_body}},
                        },
                    )
    components = schema.get("components", {}).get("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return schema


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, app_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(DBAPIError, database_error_handler)
    app.add_exception_handler(PoolTimeoutError, database_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
