"""The ids of the request being served, visible to every log record made while serving it
(contextvars follow the request into anyio's worker threads)."""

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestIds:
    request_id: str  # X-Request-Id when the caller sent a safe one, else generated here
    correlation_id: str  # X-Correlation-Id when sent, else generated (and echoed)


_current: ContextVar[RequestIds | None] = ContextVar("pharmref_request", default=None)


def bind_request(ids: RequestIds) -> Token[RequestIds | None]:
    return _current.set(ids)


def reset_request(token: Token[RequestIds | None]) -> None:
    _current.reset(token)


def current_request() -> RequestIds | None:
    return _current.get()
