"""JSON intake and tracking: POST/GET /api/v1/referrals through the HTTP client."""

import base64
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import Session, select

from app.core.config import settings
from app.models.enums import ReferralStatus, Role, Service
from app.models.referral import InboundMessage, Referral
from tests.factories import (
    DMD_COC,
    FAMILY_NAME,
    GIVEN_NAME,
    NHS_NUMBERS,
    OMIT,
    birth_date_for_age,
    caller,
    json_referral,
    make_referral,
)
from tests.helpers import auth

URL = "/api/v1/referrals"
REFERENCE = re.compile(r"^(PF|BP|PC|DM)-[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$")


def gp(org: str = "A81001") -> dict[str, str]:
    return auth(Role.GP_PRACTICE, org)


def trust() -> dict[str, str]:
    return auth(Role.TRUST, "RX1")


def pharmacy(org: str = "FA001") -> dict[str, str]:
    return auth(Role.PHARMACY, org)


def row_counts(session: Session) -> tuple[int, int]:
    referrals = session.exec(select(func.count()).select_from(Referral)).one()
    messages = session.exec(select(func.count()).select_from(InboundMessage)).one()
    return referrals, messages


def post(
    client: TestClient, body: Any, headers: dict[str, str], key: str | None = None
) -> httpx.Response:
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    response: httpx.Response = client.post(URL, json=body, headers=headers)
    return response


def assert_rejected(
    client: TestClient,
    session: Session,
    body: Any,
    headers: dict[str, str],
    *,
    status: int,
    error: str,
    field: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Post, expect a JSON error naming `field`, no patient data echoed, and no rows written."""
    before = row_counts(session)

    response = post(client, body, headers, key)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    payload: dict[str, Any] = response.json()
    assert payload["error"] == error
    assert isinstance(payload["detail"], str)
    assert payload["detail"]
    if field is not None:
        assert field in [f["field"] for f in payload["fields"]], payload
    for secret in (*NHS_NUMBERS, "9990000019", FAMILY_NAME, GIVEN_NAME):
        assert secret not in response.text
    assert row_counts(session) == before
    return payload


def field_entry(payload: dict[str, Any], field: str) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [f for f in payload["fields"] if f["field"] == field]
    assert len(entries) == 1, payload
    return entries[0]


def parse_instant(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    assert moment.tzinfo is not None
    return moment


# ---- create: one per service ------------------------------------------------------------------


CREATE_CASES = [
    pytest.param(Service.PHARMACY_FIRST, Role.GP_PRACTICE, "A81001", "PF", "gp-practice", id="pf"),
    pytest.param(Service.BLOOD_PRESSURE, Role.GP_PRACTICE, "A81001", "BP", "gp-practice", id="bp"),
    pytest.param(Service.CONTRACEPTION, Role.GP_PRACTICE, "A81001", "PC", "gp-practice", id="pc"),
    pytest.param(Service.DMS, Role.TRUST, "RX1", "DM", "trust", id="dms"),
]


@pytest.mark.parametrize(("service", "role", "org", "prefix", "source"), CREATE_CASES)
def test_create_referral_returns_201_with_the_stored_referral(
    client: TestClient,
    session: Session,
    service: Service,
    role: Role,
    org: str,
    prefix: str,
    source: str,
) -> None:
    body = json_referral(service)
    started = datetime.now(UTC)

    response = post(client, body, auth(role, org))

    finished = datetime.now(UTC)
    assert response.status_code == 201, response.text
    assert "Idempotent-Replayed" not in response.headers
    created = response.json()
    assert REFERENCE.match(created["reference"])
    assert created["reference"].startswith(f"{prefix}-")
    assert created["service"] == str(service)
    assert created["status"] == "received"
    assert created["status_reason"] is None
    assert created["source"] == source
    assert created["intake"] == "json"
    assert created["priority"] == "routine"
    assert created["referrer_ods"] == org
    assert created["pharmacy_ods"] == "FA001"
    assert created["clinician_name"] == body["referrer"]["clinician_name"]
    assert created["reason"] == body["reason"]
    assert created["version"] == 1
    assert created["warnings"] == []
    expected_practice = "A81001" if role is Role.GP_PRACTICE else None
    assert created["patient"] == {**body["patient"], "registered_practice_ods": expected_practice}
    created_at = parse_instant(created["created_at"])
    assert started <= created_at <= finished
    assert parse_instant(created["updated_at"]) == created_at
    assert parse_instant(created["authored_at"]) == created_at
    assert parse_instant(created["due_at"]) - created_at == timedelta(
        hours=settings.due_hours[service]
    )

    stored = session.get(Referral, uuid.UUID(created["id"]))
    assert stored is not None
    assert stored.reference == created["reference"]
    assert stored.patient_nhs_number == body["patient"]["nhs_number"]
    message = session.exec(
        select(InboundMessage).where(InboundMessage.referral_id == stored.id)
    ).one()
    assert (message.sender_ods, message.key_kind, message.action) == (
        org,
        "idempotency-key",
        "create",
    )
    assert message.key.startswith("auto:")


def test_create_pharmacy_first_is_due_in_24_hours(client: TestClient) -> None:
    created = post(client, json_referral(Service.PHARMACY_FIRST), gp()).json()

    due = parse_instant(created["due_at"]) - parse_instant(created["created_at"])

    assert due == timedelta(hours=24)


def test_create_dms_is_due_in_72_hours(client: TestClient) -> None:
    created = post(client, json_referral(Service.DMS), trust()).json()

    due = parse_instant(created["due_at"]) - parse_instant(created["created_at"])

    assert due == timedelta(hours=72)


def test_create_pharmacy_first_echoes_pathway_and_defaults_to_minor_illness(
    client: TestClient,
) -> None:
    with_pathway = post(client, json_referral(pathway="impetigo"), gp())
    without = post(client, json_referral(pathway=OMIT), gp())

    assert (with_pathway.status_code, without.status_code) == (201, 201)
    assert with_pathway.json()["pathway"] == "impetigo"
    assert without.json()["pathway"] == "minor-illness"


def test_create_blood_pressure_echoes_the_reading(client: TestClient) -> None:
    response = post(client, json_referral(Service.BLOOD_PRESSURE), gp())

    assert response.status_code == 201
    created = response.json()
    assert created["pathway"] is None
    assert created["blood_pressure"] == {
        "systolic": 152,
        "diastolic": 94,
        "measured_at": "2026-11-20T09:30:00Z",
    }
    assert created["abpm_requested"] is True


def test_create_contraception_echoes_the_current_contraceptive(client: TestClient) -> None:
    response = post(client, json_referral(Service.CONTRACEPTION), gp())

    assert response.status_code == 201
    created = response.json()
    assert created["current_contraceptive"] == {
        "type": "coc",
        "dmd_code": DMD_COC,
        "name": "Microgynon 30 tablets",
    }
    assert created["bmi"] == 23.5


def test_create_dms_echoes_the_discharge_medicines(client: TestClient) -> None:
    body = json_referral(Service.DMS)

    response = post(client, body, trust())

    assert response.status_code == 201
    created = response.json()
    assert created["discharged_at"] == "2026-11-21T16:00:00Z"
    assert created["discharge_medicines"] == [
        body["discharge_medicines"][0],
        {**body["discharge_medicines"][1], "dmd_code": None},
    ]


def test_create_referral_keeps_a_given_registered_practice(client: TestClient) -> None:
    response = post(client, json_referral(patient={"registered_practice_ods": "a81002"}), gp())

    assert response.status_code == 201
    assert response.json()["patient"]["registered_practice_ods"] == "A81002"


def test_create_referral_normalises_ods_codes(client: TestClient) -> None:
    body = json_referral(pharmacy_ods=" fa001 ", referrer={"organisation_ods": "a81001"})

    response = post(client, body, gp())

    assert response.status_code == 201, response.text
    assert response.json()["pharmacy_ods"] == "FA001"


@pytest.mark.parametrize("nhs_number", [OMIT, None], ids=["omitted", "null"])
def test_create_referral_without_nhs_number_is_accepted(
    client: TestClient, session: Session, nhs_number: object
) -> None:
    response = post(client, json_referral(patient={"nhs_number": nhs_number}), gp())

    assert response.status_code == 201, response.text
    assert response.json()["patient"]["nhs_number"] is None
    stored = session.get(Referral, uuid.UUID(response.json()["id"]))
    assert stored is not None
    assert stored.patient_nhs_number is None


def test_create_referral_then_read_it_back(client: TestClient) -> None:
    created = post(client, json_referral(Service.BLOOD_PRESSURE), gp()).json()

    response = client.get(f"{URL}/{created['id']}", headers=gp())

    assert response.status_code == 200
    assert response.json() == {k: v for k, v in created.items() if k != "warnings"}


def test_create_referral_from_nhs111(client: TestClient) -> None:
    response = post(client, json_referral(), auth(Role.NHS111, "NHS11"))

    assert response.status_code == 201, response.text
    assert response.json()["source"] == "nhs111"
    assert response.json()["patient"]["registered_practice_ods"] is None


# ---- Idempotency-Key --------------------------------------------------------------------------


def test_same_idempotency_key_and_body_replays_the_original(
    client: TestClient, session: Session
) -> None:
    body = json_referral()
    first = post(client, body, gp(), key="order-1")
    after_first = row_counts(session)

    replay = post(client, body, gp(), key="order-1")

    assert first.status_code == 201
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert row_counts(session) == after_first
    assert (
        session.exec(
            select(func.count()).select_from(Referral).where(Referral.referrer_ods == "A81001")
        ).one()
        == 1
    )


def test_same_idempotency_key_with_equivalent_json_replays(client: TestClient) -> None:
    body = json_referral()
    first = post(client, body, gp(), key="order-2")
    reordered = dict(reversed(list(body.items())))
    reordered["pharmacy_ods"] = "fa001"

    replay = post(client, reordered, gp(), key="order-2")

    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]


def test_same_idempotency_key_with_a_different_body_returns_409(
    client: TestClient, session: Session
) -> None:
    first = post(client, json_referral(), gp(), key="order-3")
    assert first.status_code == 201

    payload = assert_rejected(
        client,
        session,
        json_referral(reason="A different reason"),
        gp(),
        key="order-3",
        status=409,
        error="Conflict",
    )

    assert "Idempotency-Key" in payload["detail"] or "idempotency-key" in payload["detail"]


def test_idempotency_keys_are_scoped_to_the_sending_organisation(
    client: TestClient, session: Session
) -> None:
    body = json_referral()

    first = post(client, body, gp("A81001"), key="shared-key")
    second = post(client, body, gp("A81002"), key="shared-key")

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert second.json()["referrer_ods"] == "A81002"
    assert row_counts(session)[0] == 2


def test_rejected_request_does_not_use_up_its_idempotency_key(
    client: TestClient, session: Session
) -> None:
    assert_rejected(
        client,
        session,
        json_referral(Service.CONTRACEPTION, pharmacy_ods="FA002"),
        gp(),
        key="retry-me",
        status=422,
        error="Unprocessable",
    )

    response = post(client, json_referral(), gp(), key="retry-me")

    assert response.status_code == 201


def test_idempotency_key_too_long_is_422(client: TestClient, session: Session) -> None:
    assert_rejected(
        client,
        session,
        json_referral(),
        gp(),
        key="k" * 201,
        status=422,
        error="ValidationFailed",
        field="header.idempotency-key",
    )


# ---- field validation ---------------------------------------------------------------------------


def _without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


VALIDATION_CASES = [
    pytest.param(
        json_referral(patient={"nhs_number": "9990000019"}),
        "patient.nhs_number",
        "invalid",
        id="nhs-number-check-digit",
    ),
    pytest.param(
        json_referral(patient={"nhs_number": "999000001"}),
        "patient.nhs_number",
        "invalid",
        id="nhs-number-9-digits",
    ),
    pytest.param(
        json_referral(patient={"nhs_number": 9990000018}),
        "patient.nhs_number",
        "invalid",
        id="nhs-number-not-a-string",
    ),
    pytest.param(json_referral(pharmacy_ods="FA-01"), "pharmacy_ods", "invalid", id="bad-ods"),
    pytest.param(json_referral(pharmacy_ods="F1"), "pharmacy_ods", "invalid", id="short-ods"),
    pytest.param(
        json_referral(patient={"registered_practice_ods": "A8100!"}),
        "patient.registered_practice_ods",
        "invalid",
        id="bad-practice-ods",
    ),
    pytest.param(
        json_referral(
            Service.CONTRACEPTION,
            current_contraceptive={"type": "coc", "dmd_code": "17346711000001100"},
        ),
        "current_contraceptive.dmd_code",
        "invalid",
        id="bad-dmd-code",
    ),
    pytest.param(json_referral(colour="blue"), "colour", "invalid", id="extra-top-level-field"),
    pytest.param(
        json_referral(patient={"middle_name": "Jo"}),
        "patient.middle_name",
        "invalid",
        id="extra-patient-field",
    ),
    pytest.param(json_referral(reason=OMIT), "reason", "required", id="missing-reason"),
    pytest.param(json_referral(patient=OMIT), "patient", "required", id="missing-patient"),
    pytest.param(
        json_referral(patient={"birth_date": OMIT}),
        "patient.birth_date",
        "required",
        id="missing-birth-date",
    ),
    pytest.param(
        json_referral(referrer={"clinician_name": OMIT}),
        "referrer.clinician_name",
        "required",
        id="missing-clinician-name",
    ),
    pytest.param(json_referral(patient="Marisol"), "patient", "invalid", id="patient-not-object"),
    pytest.param(json_referral(service="dentistry"), "service", "invalid", id="unknown-service"),
    pytest.param(json_referral(pathway="earache"), "pathway", "invalid", id="unknown-pathway"),
    pytest.param(json_referral(priority="asap"), "priority", "invalid", id="unknown-priority"),
    pytest.param(json_referral(patient={"sex": "f"}), "patient.sex", "invalid", id="bad-sex"),
    pytest.param(
        json_referral(patient={"birth_date": "22/11/1990"}),
        "patient.birth_date",
        "invalid",
        id="bad-birth-date-format",
    ),
    pytest.param(
        json_referral(patient={"phone": "call me"}), "patient.phone", "invalid", id="bad-phone"
    ),
    pytest.param(
        json_referral(abpm_requested="maybe"), "abpm_requested", "invalid", id="bool-not-bool"
    ),
    pytest.param(json_referral(bmi="tall"), "bmi", "invalid", id="bmi-not-number"),
    pytest.param(json_referral(bmi=5), "bmi", "invalid", id="bmi-out-of-range"),
    pytest.param(
        json_referral(Service.BLOOD_PRESSURE, blood_pressure={"systolic": "high", "diastolic": 90}),
        "blood_pressure.systolic",
        "invalid",
        id="systolic-not-int",
    ),
    pytest.param(
        json_referral(Service.BLOOD_PRESSURE, blood_pressure={"systolic": 400, "diastolic": 90}),
        "blood_pressure.systolic",
        "invalid",
        id="systolic-out-of-range",
    ),
    pytest.param(json_referral(reason=""), "reason", "invalid", id="empty-reason"),
    pytest.param(
        json_referral(patient={"family_name": "Q" * 101}),
        "patient.family_name",
        "invalid",
        id="family-name-longer-than-stored",
    ),
    pytest.param(
        json_referral(patient={"given_name": "M" * 101}),
        "patient.given_name",
        "invalid",
        id="given-name-longer-than-stored",
    ),
    pytest.param(json_referral(reason="Sore throat\x00"), "reason", "invalid", id="nul-in-reason"),
    pytest.param(
        json_referral(patient={"family_name": "Quill\x00"}),
        "patient.family_name",
        "invalid",
        id="nul-in-name",
    ),
    pytest.param(
        json_referral(referrer={"clinician_id": "G12\x00"}),
        "referrer.clinician_id",
        "invalid",
        id="nul-in-clinician-id",
    ),
    pytest.param(
        json_referral(due_by="2026-11-30T09:00:00"),
        "due_by",
        "invalid",
        id="naive-due-by",
    ),
    pytest.param(
        json_referral(
            Service.BLOOD_PRESSURE,
            blood_pressure={"systolic": 150, "diastolic": 90, "measured_at": "2026-11-20T09:30:00"},
        ),
        "blood_pressure.measured_at",
        "invalid",
        id="naive-measured-at",
    ),
]


@pytest.mark.parametrize(("body", "field", "code"), VALIDATION_CASES)
def test_create_referral_invalid_field_returns_422_naming_it(
    client: TestClient, session: Session, body: dict[str, Any], field: str, code: str
) -> None:
    payload = assert_rejected(
        client, session, body, gp(), status=422, error="ValidationFailed", field=field
    )

    assert payload["detail"] == "The request is not valid."
    entry = field_entry(payload, field)
    assert entry["code"] == code
    assert entry["message"]


def test_extra_field_message_says_extra_inputs_are_forbidden(
    client: TestClient, session: Session
) -> None:
    payload = assert_rejected(
        client,
        session,
        json_referral(patient={"nhs": "9990000018"}),
        gp(),
        status=422,
        error="ValidationFailed",
        field="patient.nhs",
    )

    assert field_entry(payload, "patient.nhs")["message"] == "Extra inputs are not permitted"


def test_invalid_dmd_code_in_discharge_medicines_names_the_item(
    client: TestClient, session: Session
) -> None:
    body = json_referral(Service.DMS)
    body["discharge_medicines"][1]["dmd_code"] = "1091811000000100"

    assert_rejected(
        client,
        session,
        body,
        trust(),
        status=422,
        error="ValidationFailed",
        field="discharge_medicines.1.dmd_code",
    )


def test_naive_discharged_at_is_422(client: TestClient, session: Session) -> None:
    assert_rejected(
        client,
        session,
        json_referral(Service.DMS, discharged_at="2026-11-21T16:00:00"),
        trust(),
        status=422,
        error="ValidationFailed",
        field="discharged_at",
    )


def test_every_invalid_field_is_reported(client: TestClient, session: Session) -> None:
    body = json_referral(pharmacy_ods="F", patient={"nhs_number": "9990000019", "sex": "x"})

    payload = assert_rejected(client, session, body, gp(), status=422, error="ValidationFailed")

    assert sorted(f["field"] for f in payload["fields"]) == [
        "patient.nhs_number",
        "patient.sex",
        "pharmacy_ods",
    ]


def test_body_that_is_not_an_object_is_422(client: TestClient, session: Session) -> None:
    payload = assert_rejected(
        client, session, ["not", "a", "referral"], gp(), status=422, error="ValidationFailed"
    )

    assert payload["fields"]


def test_error_message_never_echoes_patient_values(client: TestClient, session: Session) -> None:
    body = json_referral(
        patient={"nhs_number": "9990000019", "birth_date": "1990-02-30", "phone": FAMILY_NAME}
    )

    payload = assert_rejected(client, session, body, gp(), status=422, error="ValidationFailed")

    assert {f["field"] for f in payload["fields"]} == {
        "patient.nhs_number",
        "patient.birth_date",
        "patient.phone",
    }
    assert "1990-02-30" not in str(payload)


def test_birth_date_in_the_future_is_422(client: TestClient, session: Session) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()

    payload = assert_rejected(
        client,
        session,
        json_referral(patient={"birth_date": tomorrow.isoformat()}),
        gp(),
        status=422,
        error="Unprocessable",
        field="patient.birth_date",
    )

    assert field_entry(payload, "patient.birth_date")["message"] == "Birth date is in the future."


# ---- eligibility and authorisation ------------------------------------------------------------


def test_uti_pathway_for_a_man_is_422(client: TestClient, session: Session) -> None:
    payload = assert_rejected(
        client,
        session,
        json_referral(pathway="uncomplicated-uti", patient={"sex": "male"}),
        gp(),
        status=422,
        error="Unprocessable",
        field="patient",
    )

    assert field_entry(payload, "patient")["code"] == "business-rule"


def test_uti_pathway_for_a_woman_in_band_is_201(client: TestClient) -> None:
    response = post(client, json_referral(pathway="uncomplicated-uti"), gp())

    assert response.status_code == 201


def test_combined_pill_for_a_50_year_old_is_422(client: TestClient, session: Session) -> None:
    body = json_referral(
        Service.CONTRACEPTION, patient={"birth_date": birth_date_for_age(50).isoformat()}
    )

    assert_rejected(
        client, session, body, gp(), status=422, error="Unprocessable", field="patient.birth_date"
    )


def test_progestogen_only_pill_for_a_50_year_old_is_201(client: TestClient) -> None:
    body = json_referral(
        Service.CONTRACEPTION,
        patient={"birth_date": birth_date_for_age(50).isoformat()},
        current_contraceptive={"type": "pop"},
    )

    response = post(client, body, gp())

    assert response.status_code == 201, response.text
    assert response.json()["current_contraceptive"] == {
        "type": "pop",
        "dmd_code": None,
        "name": None,
    }


def test_blood_pressure_for_a_17_year_old_is_422(client: TestClient, session: Session) -> None:
    body = json_referral(
        Service.BLOOD_PRESSURE, patient={"birth_date": birth_date_for_age(17).isoformat()}
    )

    payload = assert_rejected(
        client, session, body, gp(), status=422, error="Unprocessable", field="patient.birth_date"
    )

    assert "18 and over" in field_entry(payload, "patient.birth_date")["message"]


def test_blood_pressure_for_an_18_year_old_is_201(client: TestClient) -> None:
    body = json_referral(
        Service.BLOOD_PRESSURE, patient={"birth_date": birth_date_for_age(18).isoformat()}
    )

    assert post(client, body, gp()).status_code == 201


def test_blood_pressure_without_a_reading_is_422(client: TestClient, session: Session) -> None:
    assert_rejected(
        client,
        session,
        json_referral(Service.BLOOD_PRESSURE, blood_pressure=OMIT),
        gp(),
        status=422,
        error="Unprocessable",
        field="blood_pressure",
    )


def test_pathway_on_a_blood_pressure_referral_is_422(client: TestClient, session: Session) -> None:
    assert_rejected(
        client,
        session,
        json_referral(Service.BLOOD_PRESSURE, pathway="sinusitis"),
        gp(),
        status=422,
        error="Unprocessable",
        field="pathway",
    )


def test_dms_from_a_gp_practice_is_422(client: TestClient, session: Session) -> None:
    payload = assert_rejected(
        client,
        session,
        json_referral(Service.DMS),
        gp(),
        status=422,
        error="Unprocessable",
        field="service",
    )

    assert "trusts" in field_entry(payload, "service")["message"]


@pytest.mark.parametrize("medicines", [OMIT, None, []], ids=["omitted", "null", "empty"])
def test_dms_without_medicines_is_422(
    client: TestClient, session: Session, medicines: object
) -> None:
    assert_rejected(
        client,
        session,
        json_referral(Service.DMS, discharge_medicines=medicines),
        trust(),
        status=422,
        error="Unprocessable",
        field="discharge_medicines",
    )


def test_pharmacy_not_registered_for_the_service_is_422(
    client: TestClient, session: Session
) -> None:
    payload = assert_rejected(
        client,
        session,
        json_referral(Service.CONTRACEPTION, pharmacy_ods="FA002"),
        gp(),
        status=422,
        error="Unprocessable",
        field="pharmacy_ods",
    )

    assert "contraception" in payload["detail"]


def test_pharmacy_registered_for_the_service_is_201(client: TestClient) -> None:
    response = post(client, json_referral(pharmacy_ods="FA002"), gp())

    assert response.status_code == 201
    assert response.json()["pharmacy_ods"] == "FA002"


@pytest.mark.parametrize("ods", ["FZZ99", "A81002", "RX1"], ids=["unknown", "gp", "trust"])
def test_referral_to_something_not_a_pharmacy_is_422(
    client: TestClient, session: Session, ods: str
) -> None:
    assert_rejected(
        client,
        session,
        json_referral(pharmacy_ods=ods),
        gp(),
        status=422,
        error="Unprocessable",
        field="pharmacy_ods",
    )


def test_gp_claiming_another_practice_is_403(client: TestClient, session: Session) -> None:
    payload = assert_rejected(
        client,
        session,
        json_referral(referrer={"organisation_ods": "A81002"}),
        gp("A81001"),
        status=403,
        error="Forbidden",
        field="referrer.organisation_ods",
    )

    assert field_entry(payload, "referrer.organisation_ods")["code"] == "forbidden"


@pytest.mark.parametrize(
    ("role", "org"), [(Role.ICB_ANALYST, "QXX"), (Role.ADMIN, "QXX")], ids=["icb", "admin"]
)
def test_role_that_may_not_refer_is_403(
    client: TestClient, session: Session, role: Role, org: str
) -> None:
    payload = assert_rejected(
        client, session, json_referral(), auth(role, org), status=403, error="Forbidden"
    )

    assert str(role) in payload["detail"]


def test_role_not_matching_its_organisation_kind_is_403(
    client: TestClient, session: Session
) -> None:
    assert_rejected(
        client,
        session,
        json_referral(),
        auth(Role.GP_PRACTICE, "FA001"),
        status=403,
        error="Forbidden",
    )


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["none", "garbage", "basic"],
)
def test_create_without_a_valid_token_is_401(
    client: TestClient, session: Session, headers: dict[str, str]
) -> None:
    before = row_counts(session)

    response = client.post(URL, json=json_referral(), headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"] == "Unauthorized"
    assert row_counts(session) == before


def test_pharmacy_self_referral_is_201(client: TestClient) -> None:
    response = post(client, json_referral(pharmacy_ods="FA001"), pharmacy("FA001"))

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["source"] == "self-referral"
    assert created["referrer_ods"] == "FA001"
    assert created["pharmacy_ods"] == "FA001"
    assert created["patient"]["registered_practice_ods"] is None


def test_pharmacy_referral_to_another_pharmacy_is_422(client: TestClient, session: Session) -> None:
    assert_rejected(
        client,
        session,
        json_referral(pharmacy_ods="FA002"),
        pharmacy("FA001"),
        status=422,
        error="Unprocessable",
        field="pharmacy_ods",
    )


def test_trust_may_send_an_urgent_care_referral(client: TestClient) -> None:
    response = post(client, json_referral(source="urgent-care"), trust())

    assert response.status_code == 201, response.text
    assert response.json()["source"] == "urgent-care"
    assert response.json()["referrer_ods"] == "RX1"


@pytest.mark.parametrize("source", ["urgent-care", "trust", "self-referral", "nhs111"])
def test_gp_practice_may_not_claim_another_source(
    client: TestClient, session: Session, source: str
) -> None:
    assert_rejected(
        client,
        session,
        json_referral(source=source),
        gp(),
        status=422,
        error="Unprocessable",
        field="source",
    )


def test_gp_practice_may_state_its_own_source(client: TestClient) -> None:
    response = post(client, json_referral(source="gp-practice"), gp())

    assert response.status_code == 201
    assert response.json()["source"] == "gp-practice"


# ---- tracking -------------------------------------------------------------------------------


def list_ids(client: TestClient, headers: dict[str, str], **params: Any) -> list[str]:
    response = client.get(URL, headers=headers, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    return [item["id"] for item in body["data"]]


def test_gp_sees_only_its_own_referrals(client: TestClient, session: Session) -> None:
    own = [make_referral(session), make_referral(session, service=Service.BLOOD_PRESSURE)]
    other = make_referral(session, referrer=caller(Role.GP_PRACTICE, "A81002"))

    assert set(list_ids(client, gp("A81001"))) == {str(r.id) for r in own}
    assert list_ids(client, gp("A81002")) == [str(other.id)]


def test_gp_reads_its_own_referral(client: TestClient, session: Session) -> None:
    referral = make_referral(session)

    response = client.get(f"{URL}/{referral.id}", headers=gp("A81001"))

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(referral.id)
    assert body["reference"] == referral.reference
    assert body["patient"]["nhs_number"] == referral.patient_nhs_number


def test_another_practice_reading_a_referral_gets_404(client: TestClient, session: Session) -> None:
    referral = make_referral(session)

    response = client.get(f"{URL}/{referral.id}", headers=gp("A81002"))

    assert response.status_code == 404
    assert response.json() == {"error": "NotFound", "detail": "No referral with that id."}
    assert referral.reference not in response.text


def test_pharmacy_sees_only_referrals_sent_to_it(client: TestClient, session: Session) -> None:
    to_fa001 = make_referral(session)
    to_fa002 = make_referral(session, pharmacy_ods="FA002")

    assert list_ids(client, pharmacy("FA001")) == [str(to_fa001.id)]
    assert list_ids(client, pharmacy("FA002")) == [str(to_fa002.id)]
    assert client.get(f"{URL}/{to_fa001.id}", headers=pharmacy("FA001")).status_code == 200
    assert client.get(f"{URL}/{to_fa001.id}", headers=pharmacy("FA002")).status_code == 404


def test_trust_sees_its_dms_referrals(client: TestClient, session: Session) -> None:
    dms = make_referral(session, service=Service.DMS)
    make_referral(session)

    assert list_ids(client, trust()) == [str(dms.id)]
    response = client.get(f"{URL}/{dms.id}", headers=trust())
    assert response.status_code == 200
    assert response.json()["service"] == "dms"


def test_admin_sees_every_referral(client: TestClient, session: Session) -> None:
    made = [
        make_referral(session),
        make_referral(session, referrer=caller(Role.GP_PRACTICE, "A81002")),
        make_referral(session, service=Service.DMS),
        make_referral(session, referrer=caller(Role.PHARMACY, "FA001")),
    ]

    assert set(list_ids(client, auth(Role.ADMIN, "QXX"))) == {str(r.id) for r in made}
    response = client.get(f"{URL}/{made[1].id}", headers=auth(Role.ADMIN, "QXX"))
    assert response.status_code == 200


def test_icb_analyst_may_not_read_referrals(client: TestClient, session: Session) -> None:
    referral = make_referral(session)
    headers = auth(Role.ICB_ANALYST, "QXX")

    listed = client.get(URL, headers=headers)
    read = client.get(f"{URL}/{referral.id}", headers=headers)

    assert (listed.status_code, read.status_code) == (403, 403)
    assert listed.json()["error"] == "Forbidden"
    assert referral.patient_family_name not in listed.text + read.text


def test_reading_without_a_token_is_401(client: TestClient, session: Session) -> None:
    referral = make_referral(session)

    listed = client.get(URL)
    read = client.get(f"{URL}/{referral.id}")

    assert (listed.status_code, read.status_code) == (401, 401)
    assert listed.headers["WWW-Authenticate"].startswith("Bearer")
    assert read.json()["error"] == "Unauthorized"


@pytest.mark.parametrize("referral_id", ["not-a-uuid", "1234", str(uuid.uuid4())])
def test_read_unknown_or_malformed_id_is_404(client: TestClient, referral_id: str) -> None:
    response = client.get(f"{URL}/{referral_id}", headers=gp())

    assert response.status_code == 404
    assert response.json() == {"error": "NotFound", "detail": "No referral with that id."}


def _set(session: Session, referral: Referral, **values: Any) -> None:
    for name, value in values.items():
        setattr(referral, name, value)
    session.add(referral)
    session.commit()


def test_list_filters_by_status(client: TestClient, session: Session) -> None:
    received = make_referral(session)
    accepted = make_referral(session)
    _set(session, accepted, status=ReferralStatus.ACCEPTED)

    assert list_ids(client, gp(), status="accepted") == [str(accepted.id)]
    assert list_ids(client, gp(), status="received") == [str(received.id)]
    assert list_ids(client, gp(), status="completed") == []


def test_list_filters_by_service(client: TestClient, session: Session) -> None:
    pf = make_referral(session)
    bp = make_referral(session, service=Service.BLOOD_PRESSURE)

    assert list_ids(client, gp(), service="blood-pressure") == [str(bp.id)]
    assert list_ids(client, gp(), service="pharmacy-first") == [str(pf.id)]
    assert list_ids(client, gp(), service="dms") == []


def test_list_combines_filters(client: TestClient, session: Session) -> None:
    make_referral(session)
    bp_received = make_referral(session, service=Service.BLOOD_PRESSURE)
    bp_accepted = make_referral(session, service=Service.BLOOD_PRESSURE)
    _set(session, bp_accepted, status=ReferralStatus.ACCEPTED)

    assert list_ids(client, gp(), service="blood-pressure", status="received") == [
        str(bp_received.id)
    ]


def test_list_filters_by_since(client: TestClient, session: Session) -> None:
    t0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    made = [make_referral(session) for _ in range(3)]
    for hours, referral in enumerate(made):
        _set(session, referral, created_at=t0 + timedelta(hours=hours))
    newest_first = [str(r.id) for r in reversed(made)]

    assert list_ids(client, gp(), since=t0.isoformat()) == newest_first
    assert list_ids(client, gp(), since=(t0 + timedelta(hours=1)).isoformat()) == newest_first[:2]
    assert list_ids(client, gp(), since="2026-11-20T11:00:00Z") == newest_first[:1]
    plus_five = timezone(timedelta(hours=5))
    same_instant = (t0 + timedelta(hours=1)).astimezone(plus_five).isoformat()
    assert list_ids(client, gp(), since=same_instant) == newest_first[:2]
    assert list_ids(client, gp(), since="2026-11-20T11:00:01Z") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "lost"}, "query.status"),
        ({"service": "dentistry"}, "query.service"),
        ({"since": "yesterday"}, "query.since"),
        ({"since": "2026-11-20T09:00:00"}, "query.since"),  # no offset: not an instant
        ({"limit": 0}, "query.limit"),
        ({"limit": settings.page_size_max + 1}, "query.limit"),
    ],
)
def test_list_invalid_query_is_422(client: TestClient, params: dict[str, Any], field: str) -> None:
    response = client.get(URL, headers=gp(), params=params)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationFailed"
    assert [f["field"] for f in response.json()["fields"]] == [field]


def _pages(client: TestClient, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        response = client.get(URL, headers=gp(), params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["data"]])
        if body["next_cursor"] is None:
            return pages
        assert len(pages) < 10, "paging does not end"
        params = {"limit": limit, "cursor": body["next_cursor"]}


@pytest.mark.parametrize(("count", "sizes"), [(5, [2, 2, 1]), (4, [2, 2]), (1, [1]), (0, [0])])
def test_cursor_paging_returns_each_referral_once_newest_first(
    client: TestClient, session: Session, count: int, sizes: list[int]
) -> None:
    t0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    made = [make_referral(session) for _ in range(count)]
    for minutes, referral in enumerate(made):
        _set(session, referral, created_at=t0 + timedelta(minutes=minutes))

    pages = _pages(client, limit=2)

    assert [len(page) for page in pages] == sizes
    assert [i for page in pages for i in page] == [str(r.id) for r in reversed(made)]


def test_cursor_paging_with_equal_timestamps_breaks_ties_by_id(
    client: TestClient, session: Session
) -> None:
    same = datetime(2026, 11, 20, 9, 0, 0, 123456, tzinfo=UTC)
    made = [make_referral(session) for _ in range(5)]
    for referral in made:
        _set(session, referral, created_at=same)

    pages = _pages(client, limit=2)

    ids = [i for page in pages for i in page]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert ids == sorted((str(r.id) for r in made), key=uuid.UUID, reverse=True)


def test_cursor_paging_keeps_filters(client: TestClient, session: Session) -> None:
    bp = [make_referral(session, service=Service.BLOOD_PRESSURE) for _ in range(3)]
    make_referral(session)
    first = client.get(URL, headers=gp(), params={"limit": 2, "service": "blood-pressure"}).json()

    second = client.get(
        URL,
        headers=gp(),
        params={"limit": 2, "service": "blood-pressure", "cursor": first["next_cursor"]},
    ).json()

    listed = [item["id"] for item in first["data"] + second["data"]]
    assert sorted(listed) == sorted(str(r.id) for r in bp)
    assert second["next_cursor"] is None


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "!!!!",
        _b64("2026-11-20T09:00:00+00:00"),
        _b64(f"yesterday|{uuid.uuid4()}"),
        _b64("2026-11-20T09:00:00+00:00|not-a-uuid"),
        _b64(f"2026-11-20T09:00:00|{uuid.uuid4()}"),  # no offset
        base64.urlsafe_b64encode(b"\xff\xfe|\x00").decode(),
    ],
)
def test_bad_cursor_is_400(client: TestClient, session: Session, cursor: str) -> None:
    make_referral(session)

    response = client.get(URL, headers=gp(), params={"cursor": cursor})

    assert response.status_code == 400, response.text
    assert response.json() == {"error": "BadRequest", "detail": "The paging cursor is not valid."}
