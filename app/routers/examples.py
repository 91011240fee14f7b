"""Request and response examples for the OpenAPI document (synthetic data, test-range NHS numbers)."""

from typing import Any

from app.models.common import ErrorBody

JSON_REFERRAL: dict[str, Any] = {
    "service": "pharmacy-first",
    "pathway": "sore-throat",
    "pharmacy_ods": "FA001",
    "priority": "routine",
    "patient": {
        "nhs_number": "9990000018",
        "family_name": "Testpatient",
        "given_name": "Alex",
        "birth_date": "1990-04-01",
        "sex": "female",
        "phone": "07700900001",
    },
    "referrer": {"clinician_name": "Dr Sam Example", "clinician_id": "G1234567"},
    "reason": "Sore throat for 3 days, FeverPAIN 2",
    "notes": "Patient prefers a morning call.",
}

BP_REFERRAL: dict[str, Any] = {
    **JSON_REFERRAL,
    "service": "blood-pressure",
    "pathway": None,
    "reason": "Raised clinic reading; please arrange ABPM",
    "blood_pressure": {"systolic": 152, "diastolic": 94, "measured_at": "2026-11-20T09:30:00Z"},
    "abpm_requested": True,
}

DMS_REFERRAL: dict[str, Any] = {
    **JSON_REFERRAL,
    "service": "dms",
    "pathway": None,
    "source": "trust",
    "reason": "Discharged after admission for heart failure; new loop diuretic",
    "discharged_at": "2026-11-21T16:00:00Z",
    "discharge_medicines": [
        {
            "name": "Furosemide 40mg tablets",
            "dmd_code": "317971007",
            "dose": "One each morning",
            "change": "new",
        },
        {"name": "Ramipril 2.5mg capsules", "dose": "One daily", "change": "unchanged"},
    ],
}


_DESCRIBED = {
    400: "Malformed request",
    401: "Missing, invalid or expired bearer token",
    403: "The caller's role or organisation may not do this",
    404: "Not found, or not visible to the caller",
    409: "Conflict with the current state or a duplicate request",
    412: "The referral changed since the version sent (stale If-Match or version)",
    413: "Request body too large",
    422: "Invalid fields or a broken business rule",
    428: "Send If-Match or a version field",
    429: "Too many requests from this client this minute: wait for Retry-After seconds",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses entries for the listed error status codes (JSON error body)."""
    return {code: {"model": ErrorBody, "description": _DESCRIBED[code]} for code in codes}


def json_error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The same for a JSON route whose success response is FHIR: FastAPI would file a `model` under
    the route's media type (application/fhir+json), so name application/json explicitly."""
    schema = {"$ref": "#/components/schemas/ErrorBody"}
    return {
        code: {"description": _DESCRIBED[code], "content": {"application/json": {"schema": schema}}}
        for code in codes
    }
