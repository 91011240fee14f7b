"""The Task mapper: R4 conformance, every status mapped, and the fields pharmacies and referrers
read."""

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from app.fhir import task as task_fhir
from app.fhir.resources import Resource, Task
from app.models.enums import Intake, ReferralSource, ReferralStatus, Service, Sex
from app.models.referral import Referral

# http://hl7.org/fhir/R4/valueset-task-status.html (fhir.resources does not check codes)
TASK_STATUSES = {
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
}
EXPECTED_STATUS = {
    ReferralStatus.RECEIVED: "requested",
    ReferralStatus.ACCEPTED: "accepted",
    ReferralStatus.DECLINED: "rejected",
    ReferralStatus.FORWARDED: "cancelled",
    ReferralStatus.RETURNED: "failed",
    ReferralStatus.CANCELLED: "cancelled",
    ReferralStatus.NO_CONTACT: "failed",
    ReferralStatus.COMPLETED: "completed",
}
CREATED = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"


def referral(**overrides: Any) -> Referral:
    values: dict[str, Any] = {
        "id": uuid.UUID("2803eae0-9fb1-4197-a497-7f04b58ea75f"),
        "reference": "PF-7NG49-TK37B",
        "service": Service.PHARMACY_FIRST,
        "status": ReferralStatus.RECEIVED,
        "source": ReferralSource.GP_PRACTICE,
        "intake": Intake.JSON,
        "priority": "routine",
        "referrer_ods": "A81001",
        "pharmacy_ods": "FA001",
        "patient_nhs_number": "9990000018",
        "patient_family_name": "Quillfeather",
        "patient_given_name": "Marisol",
        "patient_birth_date": date(1990, 4, 1),
        "patient_sex": Sex.FEMALE,
        "reason": "Sore throat for 3 days",
        "authored_at": CREATED,
        "due_at": CREATED + timedelta(hours=24),
        "version": 1,
        "created_at": CREATED,
        "updated_at": CREATED + timedelta(minutes=5),
    }
    return Referral(**(values | overrides))


def rendered(resource: Resource) -> dict[str, Any]:
    """The model as FHIR JSON: what a client would read."""
    body: dict[str, Any] = json.loads(resource.model_dump_json(exclude_none=True))
    return body


def test_every_referral_status_has_a_task_status_and_a_display() -> None:
    assert set(task_fhir.TASK_STATUS) == set(ReferralStatus)
    assert set(task_fhir.BUSINESS_STATUS_DISPLAY) == set(ReferralStatus)
    assert set(task_fhir.TASK_STATUS.values()) <= TASK_STATUSES


@pytest.mark.parametrize("status", list(ReferralStatus))
def test_each_status_maps_to_a_valid_task(status: ReferralStatus) -> None:
    task = rendered(task_fhir.to_task(referral(status=status, status_reason="Reason given")))

    assert task["status"] == EXPECTED_STATUS[status]
    assert task["businessStatus"] == {
        "coding": [
            {
                "system": "https://pharmref.nhs.example/CodeSystem/referral-status",
                "code": status.value,
                "display": task_fhir.BUSINESS_STATUS_DISPLAY[status],
            }
        ],
        "text": task_fhir.BUSINESS_STATUS_DISPLAY[status],
    }
    assert task["statusReason"] == {"text": "Reason given"}


def test_task_shows_the_pharmacy_work_on_the_referral() -> None:
    body = task_fhir.task_json(referral(priority="urgent", version=3))

    Task.model_validate(body)
    assert body["id"] == "2803eae0-9fb1-4197-a497-7f04b58ea75f"
    assert body["meta"] == {"versionId": "3", "lastUpdated": "2026-11-22T09:05:00+00:00"}
    assert body["identifier"] == [
        {"system": "https://pharmref.nhs.example/Id/referral-reference", "value": "PF-7NG49-TK37B"}
    ]
    assert body["basedOn"] == [{"reference": "ServiceRequest/2803eae0-9fb1-4197-a497-7f04b58ea75f"}]
    assert body["focus"] == body["basedOn"][0]
    assert (body["intent"], body["priority"]) == ("order", "urgent")
    assert body["code"]["coding"][0]["code"] == "fulfill"
    assert body["owner"] == {
        "type": "Organization",
        "identifier": {"system": ODS, "value": "FA001"},
    }
    assert body["requester"] == {
        "type": "Organization",
        "identifier": {"system": ODS, "value": "A81001"},
    }
    assert body["for"] == {
        "type": "Patient",
        "identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"},
    }
    assert body["restriction"] == {"period": {"end": "2026-11-23T09:00:00+00:00"}}
    assert body["authoredOn"] == "2026-11-22T09:00:00+00:00"
    assert body["lastModified"] == "2026-11-22T09:05:00+00:00"
    assert "statusReason" not in body


def test_task_for_a_patient_without_nhs_number_has_no_for() -> None:
    body = task_fhir.task_json(referral(patient_nhs_number=None))

    Task.model_validate(body)
    assert "for" not in body


def test_forwarded_referral_task_is_based_on_both_service_requests() -> None:
    original = uuid.uuid4()

    task = rendered(task_fhir.to_task(referral(forwarded_from_id=original)))

    assert [r["reference"] for r in task["basedOn"]] == [
        "ServiceRequest/2803eae0-9fb1-4197-a497-7f04b58ea75f",
        f"ServiceRequest/{original}",
    ]


def test_searchset_is_a_valid_bundle() -> None:
    first, second = referral(), referral(id=uuid.uuid4(), status=ReferralStatus.ACCEPTED)

    bundle = rendered(
        task_fhir.to_searchset([first, second], self_url="http://x/fhir/Task?based-on=a")
    )

    assert (bundle["type"], bundle["total"]) == ("searchset", 2)
    assert [e["fullUrl"] for e in bundle["entry"]] == [f"Task/{first.id}", f"Task/{second.id}"]
    assert [e["resource"]["status"] for e in bundle["entry"]] == ["requested", "accepted"]
    assert task_fhir.searchset_json([], self_url="http://x")["entry"] == []
