"""Input edges the contract fuzzing found. Text that PostgreSQL cannot store or compare (NUL) is
refused at the edge: a 422 naming the field, or the 404 any other unknown value gets (on
PostgreSQL all of these were 500s, so the PostgreSQL pass is where those tests bite). A version
is a JSON integer: `true` was read as 1."""

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import Session, select

from app.models.consultation import Consultation
from app.models.delivery import Endpoint
from app.models.enums import Role, Service
from app.routers.fhir_docs import PROCESS_MESSAGE_EXAMPLE
from tests.factories import make_referral
from tests.helpers import auth, bars_headers
from tests.routers.test_consultations import CLINICIAN, PHARMACY, accepted, dms


def test_endpoint_secret_with_nul_is_422(client: TestClient, session: Session) -> None:
    before = session.exec(select(func.count()).select_from(Endpoint)).one()

    response = client.post(
        "/api/v1/endpoints",
        json={"url": "https://gp-system.example.nhs.uk/inbox", "secret": "s" * 31 + "\x00"},
        headers=auth(Role.GP_PRACTICE, "A81001"),
    )

    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["field"] == "secret"
    assert "\x00" not in response.text
    assert session.exec(select(func.count()).select_from(Endpoint)).one() == before


NUL_IN_CONSULTATION: dict[str, tuple[dict[str, Any], str]] = {
    "issue-found": ({"issues_found": ["dose\x00changed"]}, "issues_found.0"),
    "could-not-complete-reason": (
        {"could_not_complete_reason": "patient\x00readmitted"},
        "could_not_complete_reason",
    ),
    "override-reason": (
        {"override": {"reason": "clinical judgement\x00 applies"}},
        "override.reason",
    ),
}


@pytest.mark.parametrize(("extra", "field"), NUL_IN_CONSULTATION.values(), ids=NUL_IN_CONSULTATION)
def test_consultation_text_with_nul_is_422(
    client: TestClient, session: Session, extra: dict[str, Any], field: str
) -> None:
    referral = accepted(client, session, Service.DMS)

    response = client.post(
        f"/api/v1/referrals/{referral.id}/consultation",
        json={**CLINICIAN, "version": referral.version, **dms(1), **extra},
        headers=PHARMACY,
    )

    assert response.status_code == 422, response.text
    assert any(f["field"].endswith(field) for f in response.json()["fields"])
    count = select(func.count()).select_from(Consultation)
    assert session.exec(count.where(Consultation.referral_id == referral.id)).one() == 0


NUL_IN_LOOKUPS: dict[str, tuple[str, int]] = {
    "json-organisation": ("/api/v1/organisations/FA%00", 404),
    "json-organisations-pcn": ("/api/v1/organisations?pcn=U0000%00", 422),
    "json-organisations-cursor": ("/api/v1/organisations?cursor=%00", 422),
    "fhir-organization": ("/fhir/Organization/FA%00", 404),
    "fhir-organization-search": (
        "/fhir/Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code|FA%00",
        200,  # an empty searchset
    ),
}


@pytest.mark.parametrize(("url", "status"), NUL_IN_LOOKUPS.values(), ids=NUL_IN_LOOKUPS)
def test_nul_in_a_looked_up_value_is_a_client_error(
    client: TestClient, url: str, status: int
) -> None:
    response = client.get(url, headers=auth(Role.GP_PRACTICE, "A81001"))

    assert response.status_code == status, response.text
    if status == 200:
        assert response.json()["total"] == 0


@pytest.mark.parametrize(
    "system",
    ["https://fhir.nhs.uk/Id/ods-organization-code", "https://fhir.nhs.uk/Id/dos-service-id"],
)
def test_nul_in_the_target_identifier_is_404(client: TestClient, system: str) -> None:
    target = json.dumps({"system": system, "value": "2000011\u0000"}).encode()
    headers = {**bars_headers(), "NHSD-Target-Identifier": base64.b64encode(target).decode()}

    response = client.post(
        "/fhir/$process-message",
        content=json.dumps(PROCESS_MESSAGE_EXAMPLE["value"]).encode(),
        headers=headers,
    )

    assert response.status_code == 404, response.text
    assert response.json()["issue"][0]["expression"] == ["NHSD-Target-Identifier"]


@pytest.mark.parametrize("version", [True, "1", 1.5], ids=["true", "string", "fraction"])
def test_version_that_is_not_a_json_integer_is_422(
    client: TestClient, session: Session, version: object
) -> None:
    referral = make_referral(session)

    response = client.post(
        f"/api/v1/referrals/{referral.id}/accept", json={"version": version}, headers=PHARMACY
    )

    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["field"] == "version"
    session.refresh(referral)
    assert referral.version == 1
