"""FHIR Task: the pharmacy's work on a referral, searched by the ServiceRequest it is based on."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.task import Task
from sqlmodel import Session

from app.core.config import settings
from app.models.enums import Role
from app.models.referral import Referral
from tests.factories import make_referral
from tests.helpers import auth

GP = auth(Role.GP_PRACTICE, "A81001")
PHARMACY = auth(Role.PHARMACY, "FA001")


def tasks(client: TestClient, based_on: str, headers: dict[str, str] = GP) -> list[dict[str, Any]]:
    response = client.get("/fhir/Task", params={"based-on": based_on}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    Bundle.model_validate(body)
    assert body["type"] == "searchset"
    assert body["total"] == len(body["entry"])
    found = []
    for entry in body["entry"]:
        Task.model_validate(entry["resource"])
        assert entry["fullUrl"] == f"Task/{entry['resource']['id']}"
        found.append(entry["resource"])
    return found


def _post(client: TestClient, referral: Referral, action: str, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/referrals/{referral.id}/{action}",
        json={"version": referral.version, **body},
        headers=PHARMACY,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_search_returns_the_referrals_task(client: TestClient, session: Session) -> None:
    referral = make_referral(session)

    [task] = tasks(client, f"ServiceRequest/{referral.id}")

    assert task["id"] == str(referral.id)
    assert task["status"] == "requested"
    assert task["businessStatus"]["coding"][0]["code"] == "received"
    assert task["basedOn"] == [{"reference": f"ServiceRequest/{referral.id}"}]
    assert task["owner"]["identifier"]["value"] == "FA001"
    assert task["requester"]["identifier"]["value"] == "A81001"
    assert task["restriction"]["period"]["end"] == referral.due_at.isoformat()
    assert task["for"]["identifier"]["value"] == referral.patient_nhs_number
    assert tasks(client, f"ServiceRequest/{referral.id}", PHARMACY) == [task]


def test_task_follows_the_referral_through_its_lifecycle(
    client: TestClient, session: Session
) -> None:
    referral = make_referral(session)
    _post(client, referral, "accept")
    session.refresh(referral)

    [accepted] = tasks(client, f"ServiceRequest/{referral.id}")
    _post(client, referral, "no-contact", reason="Three calls unanswered")
    [closed] = tasks(client, f"ServiceRequest/{referral.id}")

    assert (accepted["status"], accepted["meta"]["versionId"]) == ("accepted", "2")
    assert closed["status"] == "failed"
    assert closed["businessStatus"]["coding"][0]["code"] == "no-contact"
    assert closed["statusReason"] == {"text": "Three calls unanswered"}
    assert closed["meta"]["versionId"] == "3"


def test_forwarded_referral_shows_both_pharmacies_tasks(
    client: TestClient, session: Session
) -> None:
    referral = make_referral(session)
    forwarded = _post(client, referral, "forward", pharmacy_ods="FA002")["forwarded"]

    chain = tasks(client, f"ServiceRequest/{referral.id}")

    assert [(t["id"], t["status"]) for t in chain] == [
        (str(referral.id), "cancelled"),
        (forwarded["id"], "requested"),
    ]
    assert chain[0]["businessStatus"]["coding"][0]["code"] == "forwarded"
    assert chain[1]["owner"]["identifier"]["value"] == "FA002"
    assert chain[1]["basedOn"] == [
        {"reference": f"ServiceRequest/{forwarded['id']}"},
        {"reference": f"ServiceRequest/{referral.id}"},
    ]
    assert [t["id"] for t in tasks(client, f"ServiceRequest/{forwarded['id']}")] == [
        forwarded["id"]
    ]
    # Each pharmacy sees only its own part.
    assert [t["id"] for t in tasks(client, f"ServiceRequest/{referral.id}", PHARMACY)] == [
        str(referral.id)
    ]
    other = auth(Role.PHARMACY, "FA002")
    assert tasks(client, f"ServiceRequest/{referral.id}", other) == []
    assert [t["id"] for t in tasks(client, f"ServiceRequest/{forwarded['id']}", other)] == [
        forwarded["id"]
    ]


@pytest.mark.parametrize(
    "headers",
    [auth(Role.GP_PRACTICE, "A81002"), auth(Role.PHARMACY, "FA002"), auth(Role.TRUST, "RX1")],
)
def test_other_organisations_get_an_empty_searchset(
    client: TestClient, session: Session, headers: dict[str, str]
) -> None:
    referral = make_referral(session)

    assert tasks(client, f"ServiceRequest/{referral.id}", headers) == []


@pytest.mark.parametrize(
    "based_on",
    [
        "ServiceRequest/2803eae0-9fb1-4197-a497-7f04b58ea75f",
        "ServiceRequest/not-one-of-ours",
    ],
)
def test_unknown_service_request_gives_an_empty_searchset(
    client: TestClient, based_on: str
) -> None:
    assert tasks(client, based_on) == []


def test_absolute_reference_to_this_server_is_accepted(
    client: TestClient, session: Session
) -> None:
    referral = make_referral(session)

    [task] = tasks(client, f"{settings.public_base_url}/fhir/ServiceRequest/{referral.id}")

    assert task["id"] == str(referral.id)


@pytest.mark.parametrize(
    "based_on",
    [
        "",
        "Patient/9990000018",
        "ServiceRequest/",
        "ServiceRequest/a/b",
        "ServiceRequest/has space",
        "2803eae0-9fb1-4197-a497-7f04b58ea75f",
        "https://elsewhere.example/fhir/ServiceRequest/2803eae0-9fb1-4197-a497-7f04b58ea75f",
    ],
)
def test_malformed_based_on_is_400(client: TestClient, based_on: str) -> None:
    response = client.get("/fhir/Task", params={"based-on": based_on}, headers=GP)

    assert response.status_code == 400, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "invalid"
    assert body["issue"][0]["expression"] == ["based-on"]


def test_missing_based_on_is_400(client: TestClient) -> None:
    response = client.get("/fhir/Task", headers=GP)

    assert response.status_code == 400
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == ["query.based-on"]


@pytest.mark.parametrize(("headers", "status"), [({}, 401), (auth(Role.ICB_ANALYST, "QXX"), 403)])
def test_search_needs_a_patient_data_role(
    client: TestClient, session: Session, headers: dict[str, str], status: int
) -> None:
    referral = make_referral(session)

    response = client.get(
        "/fhir/Task", params={"based-on": f"ServiceRequest/{referral.id}"}, headers=headers
    )

    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"


def test_read_task_by_id(client: TestClient, session: Session) -> None:
    referral = make_referral(session)

    response = client.get(f"/fhir/Task/{referral.id}", headers=PHARMACY)
    hidden = client.get(f"/fhir/Task/{referral.id}", headers=auth(Role.PHARMACY, "FA002"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    Task.model_validate(response.json())
    assert response.json() == tasks(client, f"ServiceRequest/{referral.id}")[0]
    assert hidden.status_code == 404
    assert hidden.json()["resourceType"] == "OperationOutcome"


def test_capability_statement_lists_task(client: TestClient) -> None:
    resources = client.get("/fhir/metadata").json()["rest"][0]["resource"]

    [task] = [r for r in resources if r["type"] == "Task"]
    assert [i["code"] for i in task["interaction"]] == ["read", "search-type"]
    assert [(p["name"], p["type"]) for p in task["searchParam"]] == [("based-on", "reference")]
