"""Lifecycle notifications to the referrer as FHIR R4 message Bundles (pharmref's own event codes).

A notification carries a MessageHeader whose event is the lifecycle action (declined, returned,
forwarded, no-contact, overdue, urgent-escalation), the Task showing the pharmacy's work and its
business status, and the ServiceRequest as it now stands.
"""

import uuid
from datetime import datetime
from typing import Any

from app.fhir import systems
from app.fhir.service_request import service_request_json
from app.fhir.task import task_json
from app.models.referral import Referral

EVENT_SYSTEM = "https://pharmref.nhs.example/CodeSystem/referral-event"


def notification_json(
    *, referral: Referral, action: str, detail: dict[str, Any] | None, now: datetime
) -> dict[str, Any]:
    task = task_json(referral)
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": str(uuid.uuid4()),
        "eventCoding": {"system": EVENT_SYSTEM, "code": action},
        "source": {
            "name": "pharmref",
            "endpoint": f"{systems.ODS_ORGANISATION}|{referral.pharmacy_ods}",
        },
        "focus": [{"reference": f"Task/{task['id']}"}],
    }
    reason = (detail or {}).get("reason")
    if reason:
        header["reason"] = {"text": str(reason)}
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "message",
        "timestamp": now.isoformat(),
        "entry": [
            {"fullUrl": f"urn:uuid:{header['id']}", "resource": header},
            {"fullUrl": f"Task/{task['id']}", "resource": task},
            {
                "fullUrl": f"ServiceRequest/{referral.id}",
                "resource": service_request_json(referral),
            },
        ],
    }
