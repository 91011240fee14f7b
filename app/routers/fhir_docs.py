"""OpenAPI documentation fragments for the FHIR routes (FHIR payloads are not pydantic schemas here)."""

import json
from pathlib import Path
from typing import Any

from app.fhir.responses import FHIR_JSON

BUNDLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A FHIR R4 Bundle (see https://hl7.org/fhir/R4/bundle.html).",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string", "enum": ["Bundle"]}},
    "additionalProperties": True,
}

_EXAMPLE_FILE = Path(__file__).parents[1] / "fhir" / "example_bp_referral.json"
PROCESS_MESSAGE_EXAMPLE: dict[str, Any] = {
    "summary": "BaRS a5t3 blood pressure referral with ABPM (synthetic patient)",
    "value": json.loads(_EXAMPLE_FILE.read_text()),
}

_OUTCOME_EXAMPLE = {
    "resourceType": "OperationOutcome",
    "issue": [
        {
            "severity": "error",
            "code": "invalid",
            "details": {
                "coding": [
                    {
                        "system": "https://fhir.nhs.uk/CodeSystem/http-error-codes",
                        "code": "REC_BAD_REQUEST",
                        "display": "400: The Receiver has failed to process the request.",
                    }
                ]
            },
            "diagnostics": "Not a valid NHS number (10 digits with a modulus 11 check digit).",
            "expression": ["Bundle.entry[7].resource.identifier[0].value"],
        }
    ],
}


def fhir_response(resource_type: str, description: str = "") -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": f"A FHIR {resource_type}" + (f" ({description})" if description else ""),
            "content": {
                FHIR_JSON: {
                    "schema": {
                        "type": "object",
                        "properties": {"resourceType": {"type": "string", "enum": [resource_type]}},
                        "additionalProperties": True,
                    }
                }
            },
        }
    }


_OUTCOME = {
    "content": {
        FHIR_JSON: {
            "schema": {
                "type": "object",
                "properties": {"resourceType": {"type": "string", "enum": ["OperationOutcome"]}},
                "additionalProperties": True,
            },
            "example": _OUTCOME_EXAMPLE,
        }
    }
}

OPERATION_OUTCOME_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": description, **_OUTCOME}
    for code, description in {
        400: "REC_BAD_REQUEST: invalid headers or payload",
        401: "REC_UNAUTHORIZED: missing or invalid bearer token",
        403: "REC_FORBIDDEN: the caller's role may not do this",
        404: "REC_NOT_FOUND: unknown target, or a resource the caller may not see",
        409: "REC_CONFLICT: duplicate X-Request-Id, or a state conflict",
        413: "Body too large",
        422: "REC_UNPROCESSABLE_ENTITY: unsupported version or use case, or a business rule",
    }.items()
}
