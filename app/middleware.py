"""Pure ASGI middleware (no BaseHTTPMiddleware on the hot path): ids echo and body size limit."""

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import AppError, PayloadTooLarge
from app.routers.errors import render_error

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


class RequestContextMiddleware:
    """Echo X-Request-Id and X-Correlation-Id (generating a correlation id when none is sent),
    add security headers, and refuse bodies over the configured size with 413."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        echo: list[tuple[bytes, bytes]] = []
        request_id = headers.get(b"x-request-id")
        if request_id and _SAFE_ID.match(request_id):
            echo.append((b"x-request-id", request_id))
        correlation_id = headers.get(b"x-correlation-id")
        if not (correlation_id and _SAFE_ID.match(correlation_id)):
            correlation_id = str(uuid.uuid4()).encode()
        echo.append((b"x-correlation-id", correlation_id))
        scope.setdefault("state", {})["correlation_id"] = correlation_id.decode()
        echo.extend(
            [
                (b"x-content-type-options", b"nosniff"),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),
            ]
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *[
                        (k, v)
                        for k, v in message.get("headers", [])
                        if k.lower() not in {e[0] for e in echo}
                    ],
                    *echo,
                ]
            await send(message)

        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._reject(scope, receive, send_with_headers)
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
            await send_with_headers(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large or started:
                raise
        if too_large and not started:
            await self._reject(scope, receive, send_with_headers)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        error: AppError = PayloadTooLarge(
            f"The request body is larger than {self.max_body_bytes} bytes."
        )
        response = render_error(error, fhir=scope["path"].startswith("/fhir"))
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass
