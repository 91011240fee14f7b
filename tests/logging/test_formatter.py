"""JSON log lines: fields, request ids from the context, no exception messages, masking."""

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from app.logging import (
    JsonFormatter,
    RequestIds,
    bind_request,
    configure_logging,
    redact,
    reset_request,
)


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("pharmref.test", logging.WARNING, __file__, 1, message, args, None)


def render(entry: logging.LogRecord) -> dict[str, object]:
    line = JsonFormatter().format(entry)
    assert "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


@pytest.fixture
def request_ids() -> Iterator[RequestIds]:
    ids = RequestIds(request_id="req-1", correlation_id="conv-1")
    token = bind_request(ids)
    yield ids
    reset_request(token)


def test_line_has_the_standard_fields_and_no_ids_outside_a_request() -> None:
    entry = render(record("sent %s of %s", 3, 5))

    assert entry["level"] == "warning"
    assert entry["logger"] == "pharmref.test"
    assert entry["message"] == "sent 3 of 5"
    assert entry["request_id"] is None
    assert entry["correlation_id"] is None
    assert str(entry["time"]).endswith("Z")


@pytest.mark.usefixtures("request_ids")
def test_line_carries_the_ids_of_the_request_being_served() -> None:
    entry = render(record("inside"))

    assert (entry["request_id"], entry["correlation_id"]) == ("req-1", "conv-1")


def test_extra_fields_are_added() -> None:
    entry = record("GET /x 200")
    entry.__dict__.update({"method": "GET", "status": 200, "duration_ms": 1.5})

    rendered = render(entry)

    assert (rendered["method"], rendered["status"], rendered["duration_ms"]) == ("GET", 200, 1.5)


def test_exception_is_logged_as_type_and_frames_without_its_message() -> None:
    try:
        try:
            raise KeyError("9990000018")
        except KeyError as inner:
            raise ValueError("patient Quillfeather born 1990-04-01") from inner
    except ValueError:
        entry = logging.LogRecord(
            "pharmref.test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )

    rendered = render(entry)
    line = json.dumps(rendered)

    assert rendered["exc_type"] == "builtins.ValueError"
    assert rendered["exc_cause"] == "builtins.KeyError"
    assert any("test_formatter.py" in frame for frame in rendered["stack"])  # type: ignore[attr-defined]
    assert "Quillfeather" not in line
    assert "1990-04-01" not in line
    assert "9990000018" not in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nhs 9990000018 seen", "nhs [redacted] seen"),
        ("nhs 999 000 0018 seen", "nhs [redacted] seen"),
        ('{"phone": "07700900001"}', '{"phone": "[redacted]"}'),
        ("call +447700900001", "call [redacted]"),
        (
            "referral 2803eae0-9fb1-4197-a497-7f04b58ea75f",
            "referral 2803eae0-9fb1-4197-a497-7f04b58ea75f",
        ),
        (
            "took 123 ms, 4 rows, code 1577041000000109",
            "took 123 ms, 4 rows, code 1577041000000109",
        ),
        ("ods A81001", "ods A81001"),
    ],
)
def test_redact_masks_nhs_number_and_phone_shaped_digits(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_message_is_masked() -> None:
    assert render(record("lookup %s", "9990000018"))["message"] == "lookup [redacted]"


@pytest.mark.usefixtures("preserve_logging")
def test_configure_logging_writes_json_and_keeps_sql_parameters_out_at_debug() -> None:
    stream = io.StringIO()

    configure_logging("debug", stream=stream)
    logging.getLogger("pharmref.test").debug("debug line")
    logging.getLogger("sqlalchemy.engine.Engine").info("INSERT ... ('9990000018',)")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /x HTTP/1.1" 200')

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["debug line"]
