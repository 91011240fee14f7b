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


_ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
_SERVICE_REQUEST_EXAMPLE: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "id": "2803eae0-9fb1-4197-a497-7f04b58ea75f",
    "meta": {"versionId": "1", "lastUpdated": "2026-11-22T09:00:00Z"},
    "identifier": [
        {"system": "https://pharmref.nhs.example/Id/referral-reference", "value": "BP-7NG49-TK37B"}
    ],
    "status": "active",
    "intent": "plan",
    "category": [
        {
            "coding": [
                {
                    "system": "https://fhir.nhs.uk/CodeSystem/message-category-servicerequest",
                    "code": "referral",
                },
                {
                    "system": "https://fhir.nhs.uk/CodeSystem/usecases-categories-bars",
                    "code": "a5t3",
                },
            ]
        }
    ],
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1659111000000107"}]},
    "subject": {"reference": "#patient"},
    "requester": {"identifier": {"system": _ODS, "value": "A81001"}},
    "performer": [{"identifier": {"system": _ODS, "value": "FA001"}}],
}
_ORGANIZATION_EXAMPLE: dict[str, Any] = {
    "resourceType": "Organization",
    "id": "A81001",
    "identifier": [{"system": _ODS, "value": "A81001"}],
    "active": True,
    "name": "Oak Lane Surgery",
    "partOf": {"identifier": {"system": _ODS, "value": "U00001"}},
}
_TASK_EXAMPLE: dict[str, Any] = {
    "resourceType": "Task",
    "id": "2803eae0-9fb1-4197-a497-7f04b58ea75f",
    "meta": {"versionId": "2", "lastUpdated": "2026-11-22T10:15:00Z"},
    "identifier": [
        {"system": "https://pharmref.nhs.example/Id/referral-reference", "value": "BP-7NG49-TK37B"}
    ],
    "basedOn": [{"reference": "ServiceRequest/2803eae0-9fb1-4197-a497-7f04b58ea75f"}],
    "status": "accepted",
    "businessStatus": {
        "coding": [
            {
                "system": "https://pharmref.nhs.example/CodeSystem/referral-status",
                "code": "accepted",
                "display": "Accepted by the pharmacy",
            }
        ],
        "text": "Accepted by the pharmacy",
    },
    "intent": "order",
    "priority": "routine",
    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
    "focus": {"reference": "ServiceRequest/2803eae0-9fb1-4197-a497-7f04b58ea75f"},
    "for": {
        "type": "Patient",
        "identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"},
    },
    "authoredOn": "2026-11-22T09:00:00Z",
    "lastModified": "2026-11-22T10:15:00Z",
    "requester": {"type": "Organization", "identifier": {"system": _ODS, "value": "A81001"}},
    "owner": {"type": "Organization", "identifier": {"system": _ODS, "value": "FA001"}},
    "restriction": {"period": {"end": "2026-11-29T09:00:00Z"}},
}
_COMPOSITION_ID = "5a0c1f9e-8d0b-4a4f-9c55-0d3b2f0f6a11"
_COMPOSITION_EXAMPLE: dict[str, Any] = {
    "resourceType": "Composition",
    "id": _COMPOSITION_ID,
    "meta": {"lastUpdated": "2026-11-22T10:15:00.123456+00:00"},
    "text": {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Elm Street Pharmacy - Community '
        "Pharmacist Consultation Service for minor illness, recorded "
        "2026-11-22T10:15:00.123456+00:00.</p><p>The whole summary is the document "
        f"Bundle/{_COMPOSITION_ID}.</p></div>",
    },
    "identifier": {
        "system": "https://pharmref.nhs.example/Id/consultation-summary",
        "value": "972c8196-4c0a-5eb4-a240-e5a84a33a572",
    },
    "status": "final",
    "type": {
        "coding": [
            {
                "system": "http://snomed.info/sct",
                "code": "1577041000000109",
                "display": "Community Pharmacist Consultation Service for minor illness",
            }
        ],
        "text": "Community Pharmacist Consultation Service for minor illness",
    },
    "subject": {
        "type": "Patient",
        "display": "Marisol Quillfeather",
        "identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"},
    },
    "date": "2026-11-22T10:15:00.123456+00:00",
    "author": [
        {
            "type": "Practitioner",
            "identifier": {"system": "https://fhir.hl7.org.uk/Id/gphc-number", "value": "2099999"},
            "display": "Priya Example",
        }
    ],
    "title": "Elm Street Pharmacy - Community Pharmacist Consultation Service for minor illness",
    "custodian": {
        "reference": "Organization/FA001",
        "type": "Organization",
        "identifier": {"system": _ODS, "value": "FA001"},
        "display": "Elm Street Pharmacy",
    },
}
_NHS_NUMBER_PARAMETER = "https://fhir.nhs.uk/Id/nhs-number|9990000018"
COMPOSITION_SEARCH_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "subject:identifier",
        "in": "query",
        "schema": {"type": "string"},
        "example": _NHS_NUMBER_PARAMETER,
        "description": "https://fhir.nhs.uk/Id/nhs-number|{NHS number} (or patient:identifier): "
        "one patient's summaries; omitted, every summary the caller may see.",
    },
    {
        "name": "_lastUpdated",
        "in": "query",
        "schema": {"type": "array", "items": {"type": "string"}},
        "example": ["gt2026-11-22T10:00:00Z"],
        "description": "When the summary was recorded; may repeat. gt, ge, lt, le with an instant "
        "(an exact point) or a date (YYYY, YYYY-MM, YYYY-MM-DD: the whole period in UTC); "
        "without a prefix (or eq) a date only.",
    },
    {
        "name": "_count",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0},
        "description": "Page size, 0 (total only) to PHARMREF_PAGE_SIZE_MAX; default "
        "PHARMREF_PAGE_SIZE_DEFAULT.",
    },
    {
        "name": "_cursor",
        "in": "query",
        "schema": {"type": "string"},
        "description": "From the next link.",
    },
]
EXAMPLES: dict[str, dict[str, Any]] = {
    "summary document": {
        "resourceType": "Bundle",
        "id": "5a0c1f9e-8d0b-4a4f-9c55-0d3b2f0f6a11",
        "type": "document",
        "entry": [
            {
                "fullUrl": "urn:uuid:5a0c1f9e-8d0b-4a4f-9c55-0d3b2f0f6a12",
                "resource": {"resourceType": "Composition"},
            }
        ],
    },
    "ServiceRequest": _SERVICE_REQUEST_EXAMPLE,
    "Task": _TASK_EXAMPLE,
    "Task searchset": {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "link": [
            {
                "relation": "self",
                "url": "http://localhost:8000/fhir/Task?based-on=ServiceRequest/2803eae0-9fb1-4197-a497-7f04b58ea75f",
            }
        ],
        "entry": [
            {
                "fullUrl": "Task/2803eae0-9fb1-4197-a497-7f04b58ea75f",
                "resource": _TASK_EXAMPLE,
                "search": {"mode": "match"},
            }
        ],
    },
    "Organization": _ORGANIZATION_EXAMPLE,
    "Composition": _COMPOSITION_EXAMPLE,
    "Composition searchset": {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 3,
        "link": [
            {
                "relation": "self",
                "url": "http://localhost:8000/fhir/Composition?subject:identifier="
                f"{_NHS_NUMBER_PARAMETER}&_lastUpdated=gt2026-11-22T10:00:00Z&_count=1",
            },
            {
                "relation": "next",
                "url": "http://localhost:8000/fhir/Composition?subject:identifier="
                f"{_NHS_NUMBER_PARAMETER}&_lastUpdated=gt2026-11-22T10:00:00Z&_count=1"
                "&_cursor=MjAyNi0xMS0yMlQxMDoxNTowMC4xMjM0NTYrMDA6MDB8NWEwYzFmOWUtOGQwYi00YTRmLTljNTUtMGQzYjJmMGY2YTEx",
            },
        ],
        "entry": [
            {
                "fullUrl": f"http://localhost:8000/fhir/Composition/{_COMPOSITION_ID}",
                "link": [
                    {
                        "relation": "related",
                        "url": f"http://localhost:8000/fhir/Bundle/{_COMPOSITION_ID}",
                    }
                ],
                "resource": _COMPOSITION_EXAMPLE,
                "search": {"mode": "match"},
            }
        ],
    },
    "CapabilityStatement": {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
    },
    "searchset": {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "self", "url": "http://localhost:8000/fhir/ServiceRequest?_count=1"}],
        "entry": [
            {
                "fullUrl": "ServiceRequest/2803eae0-9fb1-4197-a497-7f04b58ea75f",
                "resource": _SERVICE_REQUEST_EXAMPLE,
            }
        ],
    },
    "servicerequest-response message": {
        "resourceType": "Bundle",
        "type": "message",
        "entry": [
            {
                "fullUrl": "urn:uuid:4f767c17-d41d-42b8-bf32-e7573aeb52b5",
                "resource": {
                    "resourceType": "MessageHeader",
                    "eventCoding": {
                        "system": "https://fhir.nhs.uk/CodeSystem/message-events-bars",
                        "code": "servicerequest-response",
                    },
                    "source": {"endpoint": f"{_ODS}|FA001"},
                    "response": {
                        "identifier": "9ae77bb4-db12-42f3-a90c-733fe232f26c",
                        "code": "ok",
                    },
                },
            },
            {
                "fullUrl": "ServiceRequest/2803eae0-9fb1-4197-a497-7f04b58ea75f",
                "resource": _SERVICE_REQUEST_EXAMPLE,
            },
        ],
    },
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
                    },
                    "example": EXAMPLES[description or resource_type],
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
        429: "REC_TOO_MANY_REQUESTS: wait for Retry-After seconds",
    }.items()
}
