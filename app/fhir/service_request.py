"""Referral -> FHIR R4 ServiceRequest (UK Core), and the BaRS servicerequest-response message.

| referral                     | ServiceRequest                                                    |
|------------------------------|-------------------------------------------------------------------|
| id                           | id                                                                |
| reference                    | identifier (pharmref referral-reference), shown to the referrer   |
| status                       | status (see STATUS_TO_FHIR)                                       |
| service                      | category: referral + use case (a5t1/a5t2/a5t3, pharmref `dms`)    |
| service, pathway             | code (SNOMED service procedure), reasonCode (pathway condition)    |
| priority                     | priority                                                          |
| patient                      | contained Patient (NHS number, name, birth date, gender, phone)   |
| referrer_ods, pharmacy_ods   | requester / performer (ODS identifiers)                           |
| authored_at, due_at          | authoredOn, occurrencePeriod (created_at .. due_at)               |
| status_reason                | statusReason extension-free: note                                 |
| updated_at, version          | meta.lastUpdated, meta.versionId                                  |
"""

import uuid
from datetime import datetime
from typing import Any

from app.core.errors import Issue
from app.fhir import systems
from app.fhir.bars import CONDITION_FOR_PATHWAY, SERVICE_USE_CASE
from app.fhir.outcome import operation_outcome_json
from app.fhir.resources import Bundle, ServiceRequest
from app.models.enums import ReferralStatus, Service
from app.models.referral import Referral

STATUS_TO_FHIR: dict[ReferralStatus, str] = {
    ReferralStatus.RECEIVED: "active",
    ReferralStatus.ACCEPTED: "active",
    ReferralStatus.DECLINED: "revoked",
    ReferralStatus.FORWARDED: "completed",
    ReferralStatus.RETURNED: "revoked",
    ReferralStatus.CANCELLED: "revoked",
    ReferralStatus.NO_CONTACT: "completed",
    ReferralStatus.COMPLETED: "completed",
}

SERVICE_CODE: dict[Service, tuple[str, str]] = {
    Service.PHARMACY_FIRST: (
        "2140231000000104",
        "Referral to Community Pharmacy Pharmacy First Service",
    ),
    Service.BLOOD_PRESSURE: ("1659111000000107", "Community Pharmacy Blood Pressure Check Service"),
    Service.CONTRACEPTION: ("1659121000000101", "Community Pharmacy Contraception Service"),
    Service.DMS: ("dms", "Discharge Medicines Service"),
}


def _instant(moment: datetime) -> str:
    return moment.isoformat()


def _service_code(service: Service) -> dict[str, str]:
    code, display = SERVICE_CODE[service]
    system = systems.PHARMREF_USE_CASES if service is Service.DMS else systems.SNOMED
    return {"system": system, "code": code, "display": display}


def _patient(referral: Referral) -> dict[str, Any]:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "patient",
        "name": [
            {
                "use": "official",
                "family": referral.patient_family_name,
                "given": [referral.patient_given_name],
            }
        ],
        "gender": str(referral.patient_sex),
        "birthDate": referral.patient_birth_date.isoformat(),
    }
    if referral.patient_nhs_number:
        patient["identifier"] = [
            {"system": systems.NHS_NUMBER, "value": referral.patient_nhs_number}
        ]
    if referral.patient_phone:
        patient["telecom"] = [{"system": "phone", "value": referral.patient_phone, "rank": 1}]
    if referral.patient_practice_ods:
        patient["generalPractitioner"] = [
            {
                "identifier": {
                    "system": systems.ODS_ORGANISATION,
                    "value": referral.patient_practice_ods,
                }
            }
        ]
    return patient


def to_service_request(referral: Referral) -> ServiceRequest:
    """Render a stored referral as a FHIR R4 ServiceRequest model."""
    return ServiceRequest.model_validate(service_request_json(referral))


def service_request_json(referral: Referral) -> dict[str, Any]:
    """The ServiceRequest as FHIR JSON, for the hot path (conformance is proven in the tests)."""
    use_case_system, use_case = SERVICE_USE_CASE[referral.service]
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": str(referral.id),
        "meta": {"versionId": str(referral.version), "lastUpdated": _instant(referral.updated_at)},
        "contained": [_patient(referral)],
        "identifier": [
            {"system": systems.PHARMREF_REFERRAL_REFERENCE, "value": referral.reference}
        ],
        "status": STATUS_TO_FHIR[referral.status],
        "intent": "plan",
        "category": [
            {
                "coding": [
                    {
                        "system": systems.SERVICEREQUEST_CATEGORY,
                        "code": "referral",
                        "display": "Transfer of Care",
                    },
                    {"system": use_case_system, "code": use_case},
                ]
            }
        ],
        "priority": referral.priority,
        "code": {"coding": [_service_code(referral.service)]},
        "subject": {"reference": "#patient"},
        "occurrencePeriod": {
            "start": _instant(referral.created_at),
            "end": _instant(referral.due_at),
        },
        "authoredOn": _instant(referral.authored_at),
        "requester": {
            "identifier": {"system": systems.ODS_ORGANISATION, "value": referral.referrer_ods},
            "display": referral.clinician_name,
        },
        "performer": [
            {"identifier": {"system": systems.ODS_ORGANISATION, "value": referral.pharmacy_ods}}
        ],
    }
    if referral.pathway is not None:
        condition = CONDITION_FOR_PATHWAY.get(referral.pathway)
        concept: dict[str, Any] = {"text": str(referral.pathway)}
        if condition:
            concept["coding"] = [{"system": systems.SNOMED, "code": condition}]
        resource["reasonCode"] = [concept]
    notes = [{"text": referral.reason}]
    if referral.status_reason:
        notes.append({"text": f"{referral.status}: {referral.status_reason}"})
    resource["note"] = notes
    if referral.clinician_name is None:
        del resource["requester"]["display"]
    return resource


def response_message_json(
    *,
    referral: Referral,
    request_bundle_id: str | None,
    request_header: dict[str, Any],
    warnings: list[Issue],
    now: datetime,
) -> dict[str, Any]:
    """The synchronous BaRS servicerequest-response: stored ServiceRequest plus the referral reference."""
    service_request = service_request_json(referral)
    response: dict[str, Any] = {"identifier": request_bundle_id or "unknown", "code": "ok"}
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": str(uuid.uuid4()),
        "eventCoding": {"system": systems.MESSAGE_EVENTS, "code": "servicerequest-response"},
        "source": {
            "endpoint": f"{systems.ODS_ORGANISATION}|{referral.pharmacy_ods}",
            "name": "pharmref",
        },
        "destination": [
            {"endpoint": request_header.get("source", {}).get("endpoint") or "unknown"}
        ],
        "response": response,
        "focus": [{"reference": f"ServiceRequest/{referral.id}"}],
        "reason": request_header.get("reason")
        or {"coding": [{"system": systems.MESSAGE_REASON, "code": "new"}]},
    }
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"urn:uuid:{header['id']}", "resource": header},
        {"fullUrl": f"ServiceRequest/{referral.id}", "resource": service_request},
        {
            "fullUrl": f"Encounter/{referral.id}",
            "resource": {
                "resourceType": "Encounter",
                "id": str(referral.id),
                "identifier": [
                    {"system": systems.PHARMREF_REFERRAL_REFERENCE, "value": referral.reference}
                ],
                "status": "planned",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                    "display": "ambulatory",
                },
                "serviceProvider": {
                    "identifier": {
                        "system": systems.ODS_ORGANISATION,
                        "value": referral.pharmacy_ods,
                    }
                },
            },
        },
    ]
    if warnings:
        outcome = operation_outcome_json(warnings, None)
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": outcome})
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": now.isoformat()},
        "type": "message",
        "timestamp": now.isoformat(),
        "entry": entries,
    }


def searchset_json(
    referrals: list[Referral], *, self_url: str, next_url: str | None
) -> dict[str, Any]:
    """A searchset of ServiceRequests as plain JSON (rendered without re-validating each entry:
    the mappers' output is proven against R4B and the R4 schema in the tests)."""
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {
                "fullUrl": f"ServiceRequest/{r.id}",
                "resource": service_request_json(r),
                "search": {"mode": "match"},
            }
            for r in referrals
        ],
    }


def to_searchset(referrals: list[Referral], *, self_url: str, next_url: str | None) -> Bundle:
    return Bundle.model_validate(searchset_json(referrals, self_url=self_url, next_url=next_url))
