"""Log records as one JSON object per line.

Fields: time (UTC, ISO 8601), level, logger, message, request_id, correlation_id, then any
`extra=` fields (the access log adds method, route, status, duration_ms). Exceptions are logged
as their type and stack frames only: an exception's message can carry values (SQLAlchemy puts
statement parameters in its messages), so it is never written. Digit runs shaped like an NHS
number or a phone number are masked in messages as a second line of defence.
"""

import logging
import re
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson

from app.logging.context import current_request

_RECORD_FIELDS = frozenset(
    {
        *vars(logging.LogRecord("", 0, "", 0, "", None, None)),
        "message",
        "asctime",
        "taskName",
        "color_message",  # uvicorn's ANSI-coloured copy of the message
    }
)
# 10 digits (an NHS number, also spaced 3-3-4), 11 (a UK phone number) or +44 and 10 digits,
# not part of a longer number or word.
_IDENTIFIER_LIKE = re.compile(
    r"(?<![\w.+-])(?:\d{3}[ -]\d{3}[ -]\d{4}|\+\d{11,12}|\d{10,11})(?![\w-])"
)
_MAX_FRAMES = 40


def redact(text: str) -> str:
    return _IDENTIFIER_LIKE.sub("[redacted]", text)


def _frames(tb: TracebackType | None) -> list[str]:
    summary = traceback.extract_tb(tb)[-_MAX_FRAMES:]
    return [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in summary]


def _type_name(exc_type: type[BaseException]) -> str:
    return f"{exc_type.__module__}.{exc_type.__qualname__}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = current_request()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": ids.request_id if ids else None,
            "correlation_id": ids.correlation_id if ids else None,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            entry["exc_type"] = _type_name(exc_type)
            if exc is not None and exc.__cause__ is not None:
                entry["exc_cause"] = _type_name(type(exc.__cause__))
            entry["stack"] = _frames(tb)
        return orjson.dumps(entry, default=str).decode()
