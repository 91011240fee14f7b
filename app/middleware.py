"""Pure ASGI middleware (no BaseHTTPMiddleware on the hot path): request and correlation ids,
security headers, header and body size limits, the access log, the request metrics, and closing
the request's database sessions."""

import logging
import re
import time
import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import AppError, HeadersTooLarge, PayloadTooLarge
from app.db.session import REQUEST_SESSIONS, close_request_sessions
from app.logging import RequestIds, bind_request, reset_request
from app.routers.errors import render_error, unhandled_error_handler
from app.services import metrics

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
# The interactive docs load their script from a CDN: every other response forbids all content.
_DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
)
_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
UNMATCHED_ROUTE = "unmatched"

access_logger = logging.getLogger("pharmref.access")


def route_template(scope: Scope) -> str:
    """The path template of the route that served the request (never the raw path, which may
    carry identifiers), or "unmatched"."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestContextMiddleware:
    """Echo X-Request-Id and X-Correlation-Id (generating a correlation id when none is sent)
    and make both visible to logging; add security headers to every response; refuse request
    headers over the configured size with 431 and bodies with 413; render an unhandled error
    as a 500 that carries the same headers; close the database sessions the request opened
    (app/db/session.py `get_session`) once it is answered; write one access log line and one
    latency observation per request."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        headers = dict(scope["headers"])
        echo: list[tuple[bytes, bytes]] = []
        request_id = headers.get(b"x-request-id")
        if request_id and _SAFE_ID.match(request_id):
            echo.append((b"x-request-id", request_id))
        else:
            request_id = None
        correlation_id = headers.get(b"x-correlation-id")
        if not (correlation_id and _SAFE_ID.match(correlation_id)):
            correlation_id = str(uuid.uuid4()).encode()
        echo.append((b"x-correlation-id", correlation_id))
        scope.setdefault("state", {})["correlation_id"] = correlation_id.decode()
        echo.extend(_SECURITY_HEADERS)
        replaced = {name for name, _ in echo}
        # A route that sets its own policy (the dashboard's pages) keeps it; every other response
        # gets the strict default, except the interactive docs, which load their scripts.
        default_csp = [_CSP] if scope["path"] not in _DOCS_PATHS else []
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                own = [(k, v) for k, v in message.get("headers", []) if k.lower() not in replaced]
                has_csp = any(k.lower() == _CSP[0] for k, _ in own)
                message["headers"] = [*own, *echo, *([] if has_csp else default_csp)]
            await send(message)

        token = bind_request(
            RequestIds(
                request_id=request_id.decode() if request_id else str(uuid.uuid4()),
                correlation_id=correlation_id.decode(),
            )
        )
        scope[REQUEST_SESSIONS] = []
        try:
            await self._limited(scope, receive, send_with_headers, headers)
        finally:
            try:
                await close_request_sessions(scope)
            finally:
                self._record(scope, status, time.perf_counter() - began)
                reset_request(token)

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes]
    ) -> None:
        header_bytes = sum(len(name) + len(value) for name, value in scope["headers"])
        if header_bytes > self.max_header_bytes:
            await self._reject(
                HeadersTooLarge(
                    f"The request headers are larger than {self.max_header_bytes} bytes."
                ),
                scope,
                receive,
                send,
            )
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._reject(self._too_large(), scope, receive, send)
            return
        received = 0
        too_large = started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # FastAPI turns any error while reading a JSON body into its own 400; once the limit
            # is hit, the app's response is dropped so the caller gets the 413 instead.
            if too_large and not started:
                return
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception as exc:
            if started:
                raise
            if not too_large:
                # Rendered here rather than by Starlette's outermost error middleware, so the
                # 500 carries the ids and security headers too.
                response = await unhandled_error_handler(Request(scope), exc)
                await response(scope, receive, send)
                return
        if too_large and not started:
            await self._reject(self._too_large(), scope, receive, send)

    def _too_large(self) -> AppError:
        return PayloadTooLarge(f"The request body is larger than {self.max_body_bytes} bytes.")

    async def _reject(self, error: AppError, scope: Scope, receive: Receive, send: Send) -> None:
        response = render_error(error, fhir=scope["path"].startswith("/fhir"))
        await response(scope, receive, send)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"]
        route = route_template(scope)
        metrics.observe_request(method=method, route=route, status=status, seconds=seconds)
        access_logger.info(
            "%s %s %s",
            method,
            route,
            status,
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
            },
        )


class _TooLarge(Exception):
    pass
