"""Referral -> FHIR R4 Task: the receiving pharmacy's work on a referral (UK Core Task shape).

One Task per referral, with the referral's id. A forwarded referral is a new referral at the other
pharmacy, so it has its own Task; that Task is based on its own ServiceRequest and on the one it
was forwarded from, so searching `based-on` the original finds both.

| referral                      | Task                                                          |
|-------------------------------|---------------------------------------------------------------|
| id                            | id; basedOn and focus ServiceRequest/{id}                     |
| forwarded_from_id             | basedOn ServiceRequest/{forwarded_from_id} too                |
| reference                     | identifier (pharmref referral-reference)                      |
| status                        | status (see TASK_STATUS), businessStatus (pharmref's own code) |
| status_reason                 | statusReason.text                                             |
| priority                      | priority                                                      |
| referrer_ods / pharmacy_ods   | requester / owner (ODS identifiers)                           |
| patient_nhs_number            | for (NHS number identifier), when the patient has one         |
| created_at, updated_at        | authoredOn, lastModified (and meta.lastUpdated)               |
| due_at                        | restriction.period.end                                        |
| version                       | meta.versionId                                                |

Task status, by the FHIR task-status definitions:

| referral   | Task        | why                                                                    |
|------------|-------------|------------------------------------------------------------------------|
| received   | requested   | ready for the pharmacy; no action taken yet                            |
| accepted   | accepted    | the pharmacy has committed to do it (pharmref does not track a start)  |
| declined   | rejected    | the pharmacy decided not to do it before taking any action             |
| forwarded  | cancelled   | ended here without completion; the other pharmacy's Task carries on    |
| returned   | failed      | the pharmacy took it up but could not complete it; back to the referrer |
| cancelled  | cancelled   | withdrawn by the referrer                                              |
| no-contact | failed      | attempted, but the patient never made contact                          |
| completed  | completed   | done                                                                   |
"""

from datetime import datetime
from typing import Any

from app.fhir import systems
from app.fhir.resources import Bundle, Task
from app.models.enums import ReferralStatus
from app.models.referral import Referral

TASK_STATUS: dict[ReferralStatus, str] = {
    ReferralStatus.RECEIVED: "requested",
    ReferralStatus.ACCEPTED: "accepted",
    ReferralStatus.DECLINED: "rejected",
    ReferralStatus.FORWARDED: "cancelled",
    ReferralStatus.RETURNED: "failed",
    ReferralStatus.CANCELLED: "cancelled",
    ReferralStatus.NO_CONTACT: "failed",
    ReferralStatus.COMPLETED: "completed",
}

BUSINESS_STATUS_DISPLAY: dict[ReferralStatus, str] = {
    ReferralStatus.RECEIVED: "Received by the pharmacy",
    ReferralStatus.ACCEPTED: "Accepted by the pharmacy",
    ReferralStatus.DECLINED: "Declined by the pharmacy",
    ReferralStatus.FORWARDED: "Forwarded to another pharmacy",
    ReferralStatus.RETURNED: "Returned to the referrer",
    ReferralStatus.CANCELLED: "Cancelled by the referrer",
    ReferralStatus.NO_CONTACT: "Closed: the patient did not make contact",
    ReferralStatus.COMPLETED: "Completed",
}


def _instant(moment: datetime) -> str:
    return moment.isoformat()


def _organisation(ods_code: str) -> dict[str, Any]:
    return {
        "type": "Organization",
        "identifier": {"system": systems.ODS_ORGANISATION, "value": ods_code},
    }


def task_json(referral: Referral) -> dict[str, Any]:
    """The Task as FHIR JSON, for responses (conformance is proven in the tests)."""
    service_request = {"reference": f"ServiceRequest/{referral.id}"}
    based_on = [service_request]
    if referral.forwarded_from_id is not None:
        based_on.append({"reference": f"ServiceRequest/{referral.forwarded_from_id}"})
    display = BUSINESS_STATUS_DISPLAY[referral.status]
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": str(referral.id),
        "meta": {"versionId": str(referral.version), "lastUpdated": _instant(referral.updated_at)},
        "identifier": [
            {"system": systems.PHARMREF_REFERRAL_REFERENCE, "value": referral.reference}
        ],
        "basedOn": based_on,
        "status": TASK_STATUS[referral.status],
        "businessStatus": {
            "coding": [
                {
                    "system": systems.PHARMREF_REFERRAL_STATUS,
                    "code": str(referral.status),
                    "display": display,
                }
            ],
            "text": display,
        },
        "intent": "order",
        "priority": referral.priority,
        "code": {
            "coding": [
                {
                    "system": systems.TASK_CODE,
                    "code": "fulfill",
                    "display": "Fulfill the focal request",
                }
            ]
        },
        "focus": service_request,
        "authoredOn": _instant(referral.created_at),
        "lastModified": _instant(referral.updated_at),
        "requester": _organisation(referral.referrer_ods),
        "owner": _organisation(referral.pharmacy_ods),
        "restriction": {"period": {"end": _instant(referral.due_at)}},
    }
    if referral.patient_nhs_number:
        task["for"] = {
            "type": "Patient",
            "identifier": {"system": systems.NHS_NUMBER, "value": referral.patient_nhs_number},
        }
    if referral.status_reason:
        task["statusReason"] = {"text": referral.status_reason}
    return task


def to_task(referral: Referral) -> Task:
    """The same Task as a validated R4 model."""
    return Task.model_validate(task_json(referral))


def searchset_json(referrals: list[Referral], *, self_url: str) -> dict[str, Any]:
    """A searchset of the referrals' Tasks (never paged: a referral and its forwards)."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(referrals),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {"fullUrl": f"Task/{r.id}", "resource": task_json(r), "search": {"mode": "match"}}
            for r in referrals
        ],
    }


def to_searchset(referrals: list[Referral], *, self_url: str) -> Bundle:
    return Bundle.model_validate(searchset_json(referrals, self_url=self_url))
