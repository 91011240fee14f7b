"""Structured logging: one JSON object per line, carrying the request and correlation ids.

`context` holds the ids of the request being served (set by app/middleware.py), `formatter`
renders records as JSON without exception messages, and `config` is the logging configuration
`pharmref serve`, `worker` and `sweep` install (uvicorn's access log replaced by pharmref's own).
"""

from app.logging.config import configure_logging, log_config
from app.logging.context import RequestIds, bind_request, current_request, reset_request
from app.logging.formatter import JsonFormatter, redact

__all__ = [
    "JsonFormatter",
    "RequestIds",
    "bind_request",
    "configure_logging",
    "current_request",
    "log_config",
    "redact",
    "reset_request",
]
