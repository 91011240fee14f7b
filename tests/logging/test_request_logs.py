"""Everything logged over a whole referral flow, with pharmref's logging configuration at DEBUG:
valid JSON lines carrying the caller's correlation id, and no patient-identifiable value."""

import io
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.logging import configure_logging
from app.models.enums import Role
from app.models.referral import Referral
from app.services import referrals as referral_service
from tests.factories import json_referral
from tests.helpers import auth, target_header

CORRELATION_ID = "5f0c7d3e-2a41-4b8e-9d6f-1c2b3a4d5e6f"
JSON_PATIENT = {
    "nhs_number": "9990000026",
    "family_name": "Quillfeather",
    "given_name": "Marisol",
    "birth_date": "1991-06-23",
    "phone": "07700900123",
}
FHIR_PATIENT = {
    "nhs_number": "9990000034",
    "family_name": "Wexcombe",
    "given_name": "Tamsin",
    "birth_date": "1962-09-17",
    "phone": "07700900456",
}
# An NHS-number-shaped value that fails modulus 11: refused, and must not be echoed into logs.
BAD_NHS_NUMBER = "9990000019"
PATIENT_VALUES = [
    *JSON_PATIENT.values(),
    *FHIR_PATIENT.values(),
    BAD_NHS_NUMBER,
    "1991",  # the year alone must not show either: nothing logs a birth date in any form
    "Testpatient",
]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
EXAMPLE = Path(__file__).resolve().parents[2] / "app" / "fhir" / "example_bp_referral.json"


def headers(role: Role, org: str, **extra: str) -> dict[str, str]:
    return {**auth(role, org), "X-Correlation-Id": CORRELATION_ID, **extra}


GP = headers(Role.GP_PRACTICE, "A81001")
PHARMACY = headers(Role.PHARMACY, "FA001")


def fhir_referral() -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads(EXAMPLE.read_text())
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    patient["identifier"][0]["value"] = FHIR_PATIENT["nhs_number"]
    patient["name"] = [
        {
            "use": "official",
            "family": FHIR_PATIENT["family_name"],
            "given": [FHIR_PATIENT["given_name"]],
        }
    ]
    patient["birthDate"] = FHIR_PATIENT["birth_date"]
    patient["telecom"] = [{"system": "phone", "value": FHIR_PATIENT["phone"], "use": "mobile"}]
    return bundle


def fhir_headers(**extra: str) -> dict[str, str]:
    return {
        **GP,
        "X-Request-Id": str(uuid.uuid4()),
        "NHSD-Target-Identifier": target_header("FA001"),
        "Content-Type": "application/fhir+json",
        **extra,
    }


def run_flow(client: TestClient) -> tuple[int, str]:
    """The whole flow; returns the number of requests made and the JSON referral's id."""
    calls: list[tuple[int, int]] = []

    def expect(response: Any, status: int) -> Any:
        calls.append((response.status_code, status))
        assert response.status_code == status, response.text
        return response.json()

    created = expect(
        client.post(
            "/api/v1/referrals",
            json=json_referral(patient={**JSON_PATIENT, "sex": "female"}),
            headers=GP,
        ),
        201,
    )
    expect(
        client.post(
            "/fhir/$process-message",
            content=json.dumps(fhir_referral()).encode(),
            headers=fhir_headers(),
        ),
        200,
    )
    referral_id = created["id"]
    expect(client.get("/api/v1/referrals?status=received", headers=GP), 200)
    expect(client.get(f"/api/v1/referrals/{referral_id}", headers=GP), 200)
    expect(client.get("/fhir/ServiceRequest?status=active", headers=PHARMACY), 200)
    expect(
        client.post(
            f"/api/v1/referrals/{referral_id}/accept", json={"version": 1}, headers=PHARMACY
        ),
        200,
    )
    consultation = expect(
        client.post(
            f"/api/v1/referrals/{referral_id}/consultation",
            json={
                "service": "pharmacy-first",
                "version": 2,
                "clinician_name": "Priya Example",
                "gphc_number": "2099999",
                "pathway": "minor-illness",
                "outcome": "advice-self-care",
            },
            headers=PHARMACY,
        ),
        201,
    )
    expect(client.get(f"/api/v1/referrals/{referral_id}/summary", headers=GP), 200)
    expect(client.get(f"/fhir/Bundle/{consultation['id']}", headers=GP), 200)
    expect(client.get(f"/api/v1/referrals/{referral_id}/history", headers=GP), 200)

    # Bad input carrying patient data: invalid fields, malformed JSON, a bad FHIR message.
    expect(
        client.post(
            "/api/v1/referrals",
            json=json_referral(
                patient={**JSON_PATIENT, "nhs_number": BAD_NHS_NUMBER, "birth_date": "1991-13-45"}
            ),
            headers=GP,
        ),
        422,
    )
    expect(
        client.post(
            "/api/v1/referrals",
            content=f'{{"patient": {{"nhs_number": "{JSON_PATIENT["nhs_number"]}", '.encode(),
            headers={**GP, "Content-Type": "application/json"},
        ),
        422,
    )
    bad_fhir = fhir_referral()
    next(e for e in bad_fhir["entry"] if e["resource"]["resourceType"] == "Patient")["resource"][
        "identifier"
    ][0]["value"] = BAD_NHS_NUMBER
    expect(
        client.post(
            "/fhir/$process-message",
            content=json.dumps(bad_fhir).encode(),
            headers=fhir_headers(),
        ),
        400,
    )
    expect(
        client.post(
            "/fhir/$process-message",
            content=f'{{"resourceType": "Bundle", "x": "{FHIR_PATIENT["family_name"]}'.encode(),
            headers=fhir_headers(),
        ),
        400,
    )
    expect(client.get(f"/api/v1/referrals/{uuid.uuid4()}", headers=GP), 404)
    expect(client.get("/api/v1/referrals", headers={"X-Correlation-Id": CORRELATION_ID}), 401)
    return len(calls), referral_id


@pytest.mark.usefixtures("preserve_logging")
def test_full_flow_logs_json_with_correlation_id_and_no_patient_data(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    configure_logging("debug", stream=stream)

    requests, referral_id = run_flow(client)

    # An unexpected failure whose exception message carries patient data.
    def explode(referral: Referral) -> None:
        raise RuntimeError(
            f"cannot render {referral.patient_nhs_number} {referral.patient_family_name} "
            f"{referral.patient_birth_date} {referral.patient_phone}"
        )

    monkeypatch.setattr(referral_service, "to_public", explode)
    failed = client.get(f"/api/v1/referrals/{referral_id}", headers=GP)
    assert failed.status_code == 500
    requests += 1

    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    access = [line for line in lines if line["logger"] == "pharmref.access"]
    assert len(access) == requests
    assert {line["correlation_id"] for line in lines} == {CORRELATION_ID}
    assert all(line["request_id"] for line in lines)
    assert {"method", "route", "status", "duration_ms"} <= access[0].keys()
    assert "/api/v1/referrals/{referral_id}" in {line["route"] for line in access}
    assert any(line.get("exc_type") == "builtins.RuntimeError" for line in lines)
    # The random ids the log carries (request ids, referral ids) are UUIDs, whose hex can hold
    # "1991" or a run of digits by chance: they are taken out before looking for patient data.
    searched = UUID.sub("<uuid>", output).lower()
    for value in PATIENT_VALUES:
        assert value.lower() not in searched, f"{value} was logged"
