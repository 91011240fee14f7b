"""A GP practice system reading pharmref with the fhirpy client, over real HTTP.

pharmref runs under uvicorn on a loopback port (in a thread, against the test database); referrals
and consultations are made through the JSON API; then fhirpy's SyncFHIRClient does what a practice
system does: finds new summaries by NHS number and _lastUpdated, follows the paging links, fetches
each document, polls again, and reads the referrals (ServiceRequest), the pharmacy's work (Task)
and the pharmacy (Organization). The data is committed, so it is deleted afterwards.
"""

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.db.session import get_session
from app.main import app
from app.models.consultation import Consultation
from app.models.delivery import OutboxMessage
from app.models.enums import Role, Service
from app.models.event import ReferralEvent
from app.models.referral import InboundMessage, Referral
from tests.factories import NHS_NUMBERS, json_referral
from tests.helpers import auth, token_for
from tests.routers.test_consultations import CLINICIAN, dms

PATIENT, OTHER_PATIENT = NHS_NUMBERS[0], NHS_NUMBERS[1]
NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
ADVICE = {"service": "pharmacy-first", "pathway": "minor-illness", "outcome": "advice-self-care"}
PHARMACY = auth(Role.PHARMACY, "FA001")


@pytest.fixture
def server(engine: Engine) -> Iterator[str]:
    """pharmref on a loopback port, its sessions on the test database; its base URL."""

    def session_on_test_database() -> Iterator[Session]:
        with Session(engine, expire_on_commit=False) as session:
            yield session

    app.dependency_overrides[get_session] = session_on_test_database
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", ws="none", log_level="warning", access_log=False)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if running.started or not thread.is_alive():
                break
            time.sleep(0.01)
        assert running.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join(timeout=30)
        listener.close()
        app.dependency_overrides.pop(get_session, None)


@pytest.fixture
def marker(engine: Engine) -> Iterator[str]:
    """A tag in the reason of every referral the test makes; they are all deleted afterwards."""
    tag = f"[fhirpy {uuid.uuid4()}]"
    yield tag
    with Session(engine) as session:
        referral_ids = select(Referral.id).where(col(Referral.reason).contains(tag))
        for table in (Consultation, OutboxMessage, ReferralEvent, InboundMessage):
            session.execute(delete(table).where(col(table.referral_id).in_(referral_ids)))
        session.execute(delete(Referral).where(col(Referral.reason).contains(tag)))
        session.commit()


class JsonApi:
    """The JSON API calls the test makes, as the referrers and as the pharmacy."""

    def __init__(self, http: httpx.Client, marker: str) -> None:
        self.http = http
        self.marker = marker

    def refer(
        self, headers: dict[str, str], service: Service = Service.PHARMACY_FIRST, **patient: Any
    ) -> str:
        body = json_referral(service, patient=patient)
        body["reason"] = f"{body['reason']} {self.marker}"
        response = self.http.post("/api/v1/referrals", json=body, headers=headers)
        assert response.status_code == 201, response.text
        referral_id: str = response.json()["id"]
        accepted = self.http.post(
            f"/api/v1/referrals/{referral_id}/accept", json={"version": 1}, headers=PHARMACY
        )
        assert accepted.status_code == 200, accepted.text
        return referral_id

    def consult(self, referral_id: str, body: dict[str, Any]) -> str:
        version = self.http.get(f"/api/v1/referrals/{referral_id}", headers=PHARMACY).json()[
            "version"
        ]
        response = self.http.post(
            f"/api/v1/referrals/{referral_id}/consultation",
            json={**CLINICIAN, "version": version, **body},
            headers=PHARMACY,
        )
        assert response.status_code == 201, response.text
        consultation_id: str = response.json()["id"]
        return consultation_id


def fhir_client(base_url: str, role: Role, org: str) -> SyncFHIRClient:
    return SyncFHIRClient(f"{base_url}/fhir", authorization=f"Bearer {token_for(role, org)}")


def test_practice_system_reads_summaries_referrals_tasks_and_organisations(
    server: str, marker: str
) -> None:
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    gp, other_gp = auth(Role.GP_PRACTICE, "A81001"), auth(Role.GP_PRACTICE, "A81002")
    with httpx.Client(base_url=server, timeout=30) as http:
        api = JsonApi(http, marker)
        ours = [api.refer(gp, nhs_number=PATIENT) for _ in range(3)]
        other_patient = api.refer(gp, nhs_number=OTHER_PATIENT)
        discharge = api.refer(
            auth(Role.TRUST, "RX1"),
            Service.DMS,
            nhs_number=PATIENT,
            registered_practice_ods="A81001",
        )
        theirs = api.refer(other_gp, nhs_number=PATIENT)
        summaries = [api.consult(referral_id, ADVICE) for referral_id in ours]
        summaries += [api.consult(discharge, dms(stage)) for stage in (1, 2)]
        api.consult(other_patient, ADVICE)
        their_summary = api.consult(theirs, ADVICE)

        practice = fhir_client(server, Role.GP_PRACTICE, "A81001")
        new_for_patient = (
            practice.resources("Composition")
            .search(**{"subject:identifier": f"{NHS_SYSTEM}|{PATIENT}"})
            .search(_lastUpdated__gt=since)
            .limit(2)
        )

        first_page = new_for_patient.fetch_raw()
        assert first_page["total"] == 5
        assert len(first_page["entry"]) == 2
        assert [link["relation"] for link in first_page["link"]] == ["self", "next"]

        found = new_for_patient.fetch_all()  # follows the next links
        assert [composition["id"] for composition in found] == summaries
        assert [c["meta"]["lastUpdated"] for c in found] == sorted(
            c["meta"]["lastUpdated"] for c in found
        )
        assert [c["title"].rsplit(", ", 1)[-1] for c in found[3:]] == ["stage 1", "stage 2"]

        for composition in found:
            document = practice.get("Bundle", composition["id"])
            assert document["type"] == "document"
            assert document["entry"][0]["resource"]["id"] == composition["id"]
            assert document["entry"][0]["resource"]["title"] == composition["title"]
            read = practice.reference("Composition", composition["id"]).to_resource()
            assert read["date"] == composition["date"]

        # Poll again from the newest summary seen: nothing new, then exactly the next one.
        newest = found[-1]["meta"]["lastUpdated"]
        poll = practice.resources("Composition").search(
            **{"subject:identifier": f"{NHS_SYSTEM}|{PATIENT}", "_lastUpdated": f"gt{newest}"}
        )
        assert poll.fetch_all() == []
        later = api.consult(discharge, dms(3))
        assert [c["id"] for c in poll.fetch_all()] == [later]

        referrals = practice.resources("ServiceRequest").search(_lastUpdated__gt=since)
        assert sorted(r["id"] for r in referrals.fetch_all()) == sorted(
            [*ours, other_patient, discharge]
        )
        task = practice.resources("Task").search(based_on=f"ServiceRequest/{ours[0]}").get()
        assert (task["status"], task["owner"]["identifier"]["value"]) == ("completed", "FA001")
        pharmacy = practice.resources("Organization").search(identifier=f"{ODS_SYSTEM}|FA001").get()
        assert pharmacy["name"] == found[0]["custodian"]["display"]
        assert practice.reference("Organization", "FA001").to_resource()["id"] == "FA001"

        neighbour = fhir_client(server, Role.GP_PRACTICE, "A81002")
        theirs_found = (
            neighbour.resources("Composition")
            .search(**{"subject:identifier": f"{NHS_SYSTEM}|{PATIENT}"})
            .fetch_all()
        )
        assert [c["id"] for c in theirs_found] == [their_summary]

        with pytest.raises(OperationOutcome) as refused:
            practice.resources("Composition").search(status="final").fetch()
        assert "status" in str(refused.value)
