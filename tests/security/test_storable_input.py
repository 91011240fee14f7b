"""Text that PostgreSQL cannot store (NUL) is refused at the edge with a 422 naming the field, on
both databases; on PostgreSQL these were 500s (found by the contract fuzzing)."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import Session, select

from app.models.consultation import Consultation
from app.models.delivery import Endpoint
from app.models.enums import Role, Service
from tests.helpers import auth
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
