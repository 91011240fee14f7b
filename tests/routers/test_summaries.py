"""Consultation summaries: pulled by the GP system (R4 or Update Record) and queued for push."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.STU3.bundle import Bundle as Stu3Bundle
from sqlmodel import Session, select

from app.models.delivery import MessageFormat, OutboxMessage
from app.models.enums import Role, Service
from tests.helpers import auth
from tests.routers.test_consultations import CLINICIAN, PHARMACY, accepted, dms

GP = auth(Role.GP_PRACTICE, "A81001")
ADVICE = {"service": "pharmacy-first", "pathway": "minor-illness", "outcome": "advice-self-care"}


def completed(
    client: TestClient,
    session: Session,
    body: dict[str, Any] = ADVICE,
    service: Service = Service.PHARMACY_FIRST,
) -> tuple[Any, dict[str, Any]]:
    referral = accepted(client, session, service)
    response = client.post(
        f"/api/v1/referrals/{referral.id}/consultation",
        json={**CLINICIAN, "version": referral.version, **body},
        headers=PHARMACY,
    )
    assert response.status_code == 201, response.text
    return referral, response.json()


def test_summary_pull_r4_document(client: TestClient, session: Session) -> None:
    referral, consultation = completed(client, session)

    response = client.get(f"/api/v1/referrals/{referral.id}/summary", headers=GP)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    Bundle.model_validate(bundle)
    assert (bundle["type"], bundle["id"]) == ("document", consultation["id"])
    composition = bundle["entry"][0]["resource"]
    assert composition["type"]["coding"][0]["code"] == "1577041000000109"


def test_summary_pull_update_record(client: TestClient, session: Session) -> None:
    referral, _ = completed(client, session)

    response = client.get(
        f"/api/v1/referrals/{referral.id}/summary?_format=gp-connect-update-record", headers=GP
    )

    assert response.status_code == 200, response.text
    message = response.json()
    Stu3Bundle.model_validate(message)
    assert message["entry"][0]["resource"]["event"]["code"] == "ITK014M"


def test_fhir_bundle_read_by_id_and_visibility(client: TestClient, session: Session) -> None:
    _, consultation = completed(client, session)

    own = client.get(f"/fhir/Bundle/{consultation['id']}", headers=GP)
    other = client.get(
        f"/fhir/Bundle/{consultation['id']}", headers=auth(Role.GP_PRACTICE, "A81002")
    )
    unknown = client.get("/fhir/Bundle/not-a-uuid", headers=GP)

    assert own.status_code == 200
    assert own.json()["id"] == consultation["id"]
    assert other.status_code == 404
    assert other.json()["resourceType"] == "OperationOutcome"
    assert unknown.status_code == 404


def test_dms_summary_has_no_update_record_form(client: TestClient, session: Session) -> None:
    referral, _ = completed(client, session, dms(1), Service.DMS)

    r4 = client.get(
        f"/api/v1/referrals/{referral.id}/summary", headers=auth(Role.PHARMACY, "FA001")
    )
    stu3 = client.get(
        f"/api/v1/referrals/{referral.id}/summary?_format=gp-connect-update-record",
        headers=auth(Role.PHARMACY, "FA001"),
    )

    assert r4.status_code == 200
    assert stu3.status_code == 422
    assert stu3.json()["fields"][0]["field"] == "_format"


def test_summary_before_any_consultation_is_404(client: TestClient, session: Session) -> None:
    referral = accepted(client, session)

    assert client.get(f"/api/v1/referrals/{referral.id}/summary", headers=GP).status_code == 404


@pytest.mark.parametrize("fmt", [MessageFormat.R4, MessageFormat.UPDATE_RECORD])
def test_summary_is_queued_in_the_endpoints_format(
    client: TestClient, session: Session, fmt: MessageFormat
) -> None:
    registered = client.post(
        "/api/v1/endpoints",
        json={"url": "https://gp.example/inbox", "format": fmt, "secret": "x" * 32},
        headers=GP,
    )
    assert registered.status_code == 201

    referral, _ = completed(client, session)

    row = session.exec(
        select(OutboxMessage).where(
            OutboxMessage.referral_id == referral.id, OutboxMessage.kind == "summary"
        )
    ).one()
    assert row.format is fmt
    body = json.loads(row.body)
    if fmt is MessageFormat.R4:
        Bundle.model_validate(body)
    else:
        Stu3Bundle.model_validate(body)


def test_dms_summary_goes_as_r4_to_an_update_record_endpoint(
    client: TestClient, session: Session
) -> None:
    trust = auth(Role.TRUST, "RX1")
    client.post(
        "/api/v1/endpoints",
        json={
            "url": "https://trust.example/inbox",
            "format": "gp-connect-update-record",
            "secret": "x" * 32,
        },
        headers=trust,
    )

    referral, _ = completed(client, session, dms(1), Service.DMS)

    row = session.exec(
        select(OutboxMessage).where(
            OutboxMessage.referral_id == referral.id, OutboxMessage.kind == "summary"
        )
    ).one()
    assert row.format is MessageFormat.R4
