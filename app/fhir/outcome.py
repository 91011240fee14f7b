"""OperationOutcome rendering with NHS `REC_*` http-error-codes (BaRS error handling)."""

from collections.abc import Sequence
from typing import Any

from app.core.errors import Issue
from app.fhir import systems

PROFILE = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-OperationOutcome"


def operation_outcome_json(issues: Sequence[Issue], rec_code: str | None) -> dict[str, Any]:
    """An OperationOutcome as FHIR JSON; rec_code names the http-error-code (None for warnings only)."""
    return {
        "resourceType": "OperationOutcome",
        "meta": {"profile": [PROFILE]},
        "issue": [_issue(issue, rec_code) for issue in issues],
    }


def _issue(issue: Issue, rec_code: str | None) -> dict[str, object]:
    body: dict[str, object] = {
        "severity": issue.severity,
        "code": issue.code,
        "diagnostics": issue.diagnostics,
    }
    if rec_code and issue.severity in ("error", "fatal"):
        coding = {"system": systems.HTTP_ERROR_CODES, "code": rec_code}
        if rec_code in _DISPLAY:
            coding["display"] = _DISPLAY[rec_code]
        body["details"] = {"coding": [coding]}
    if issue.expression:
        body["expression"] = [issue.expression]
    return body


_DISPLAY = {
    "REC_BAD_REQUEST": "400: The Receiver has failed to process the request.",
    "REC_UNAUTHORIZED": "401: The Receiver does not recognise the sender's credentials.",
    "REC_FORBIDDEN": "403: The Receiver has refused the request.",
    "REC_NOT_FOUND": "404: The Receiver has found nothing matching the request.",
    "REC_METHOD_NOT_ALLOWED": "405: The method is not allowed for this resource.",
    "REC_NOT_ACCEPTABLE": "406: The Receiver cannot produce a response in the requested format.",
    "REC_CONFLICT": "409: The request conflicts with the current state of the target resource.",
    "REC_UNPROCESSABLE_ENTITY": "422: The Receiver cannot process the contained instructions.",
    "REC_TOO_MANY_REQUESTS": "429: The Receiver is receiving too many requests.",
    "REC_SERVER_ERROR": "500: The Receiver has encountered an unexpected error.",
    "REC_UNAVAILABLE": "503: The Receiver is currently unavailable.",
}
