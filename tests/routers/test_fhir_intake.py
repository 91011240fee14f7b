"""BaRS $process-message: the official examples, every header and layer of validation, cancellation."""

import base64
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from sqlalchemy import func, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from app.models.enums import ReferralStatus, Role
from app.models.referral import InboundMessage, Referral
from tests.helpers import bars_headers, load_example, target_header

PF, BP, OC = "REFREQ03", "REFREQ06", "REFREQ07"
TEST_NHS_NUMBER = "9990000018"
EXAMPLE_NHS_NUMBER = "3478526985"  # in all three official examples; fails modulus 11
ERROR_CODES = "https://fhir.nhs.uk/CodeSystem/http-error-codes"


def index_of(bundle: dict[str, Any], resource_type: str) -> int:
    return next(
        i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == resource_type
    )


def resource(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    found: dict[str, Any] = bundle["entry"][index_of(bundle, resource_type)]["resource"]
    return found


def synthetic(name: str, *, birth_date: str | None = None) -> dict[str, Any]:
    """An official example with its patient made synthetic: a test-range NHS number (the example's
    number fails modulus 11 and is not from the test range), optionally another birth date."""
    bundle = load_example(name)
    patient = resource(bundle, "Patient")
    patient["identifier"][0]["value"] = TEST_NHS_NUMBER
    if birth_date:
        patient["birthDate"] = birth_date
    return bundle


def post(client: TestClient, bundle: dict[str, Any] | bytes, **header_args: Any) -> Any:
    body = bundle if isinstance(bundle, bytes) else json.dumps(bundle).encode()
    return client.post("/fhir/$process-message", content=body, headers=bars_headers(**header_args))


def issues(response: Any) -> list[dict[str, Any]]:
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    OperationOutcome.model_validate(body)
    assert body["resourceType"] == "OperationOutcome"
    found: list[dict[str, Any]] = body["issue"]
    return found


def assert_error(
    response: Any, status: int, rec_code: str, issue_code: str, expression: str | None
) -> None:
    assert response.status_code == status, response.text
    found = issues(response)
    assert any(
        i["code"] == issue_code
        and i["details"]["coding"][0]
        == {
            "system": ERROR_CODES,
            "code": rec_code,
            "display": i["details"]["coding"][0]["display"],
        }
        and (expression is None or expression in i.get("expression", []))
        for i in found
    ), found


def counts(session: Session) -> tuple[int, int]:
    return (
        session.exec(select(func.count()).select_from(Referral)).one(),
        session.exec(select(func.count()).select_from(InboundMessage)).one(),
    )


def stored(session: Session, response: Any) -> Referral:
    bundle = response.json()
    service_request = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )
    referral = session.get(Referral, uuid.UUID(service_request["id"]))
    assert referral is not None
    return referral


# ---- the official examples ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "birth_date", "service", "task_warning"),
    [
        (PF, None, "pharmacy-first", False),
        (BP, None, "blood-pressure", True),
        (OC, "1990-05-04", "contraception", True),
    ],
)
def test_process_message_official_example_accepted(
    client: TestClient,
    session: Session,
    name: str,
    birth_date: str | None,
    service: str,
    task_warning: bool,
) -> None:
    bundle = synthetic(name, birth_date=birth_date)
    response = post(client, bundle)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    Bundle.model_validate(body)
    assert body["type"] == "message"
    header = body["entry"][0]["resource"]
    assert header["eventCoding"]["code"] == "servicerequest-response"
    assert header["response"] == {"identifier": bundle["id"], "code": "ok"}
    service_request = body["entry"][1]["resource"]
    assert service_request["resourceType"] == "ServiceRequest"
    assert service_request["status"] == "active"
    reference = service_request["identifier"][0]["value"]
    encounter = body["entry"][2]["resource"]
    assert encounter["status"] == "planned"
    assert encounter["identifier"][0]["value"] == reference

    referral = stored(session, response)
    assert referral.service == service
    assert referral.reference == reference
    assert referral.pharmacy_ods == "FA001"
    assert referral.referrer_ods == "A81001"
    assert referral.patient_nhs_number == TEST_NHS_NUMBER
    assert referral.patient_practice_ods == "G82080"
    assert referral.status is ReferralStatus.RECEIVED

    outcome = next(
        e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == "OperationOutcome"
    )
    warnings = outcome["issue"]
    assert all(w["severity"] == "warning" for w in warnings)
    task = index_of(bundle, "Task")
    task_path = f"Bundle.entry[{task}].resource.code.coding[0].code"
    assert any(task_path in w.get("expression", []) for w in warnings) is task_warning
    # The examples spell the ODS system with a lower-case "id"; pharmref normalises it and says so.
    assert any("normalised" in w["diagnostics"] for w in warnings)
    # MessageHeader.sender (RND) is not the authenticated practice: recorded, and the caller wins.
    assert any("Bundle.entry[0].resource.sender" in w.get("expression", []) for w in warnings)


def test_process_message_pharmacy_first_example_fields(
    client: TestClient, session: Session
) -> None:
    referral = stored(session, post(client, synthetic(PF)))

    assert referral.pathway == "minor-illness"
    assert referral.reason == "Vomiting"
    assert referral.patient_family_name == "Jones"
    assert referral.patient_phone == "07736312544"  # rank-1 phone of the rank-1 contact
    assert referral.clinician_name == "Marcy BLAKE"
    assert referral.clinician_id == "PT2489"
    assert referral.notes is not None
    assert "constipation" in referral.notes
    # The 24-hour timeframe the referral carries runs from receipt.
    assert (referral.due_at - referral.created_at).total_seconds() == 24 * 3600


def test_process_message_bp_example_reads_reading_and_abpm(
    client: TestClient, session: Session
) -> None:
    referral = stored(session, post(client, synthetic(BP)))

    assert (referral.bp_systolic, referral.bp_diastolic) == (120, 80)
    assert referral.abpm_requested is True


def test_process_message_contraception_example_reads_current_pill(
    client: TestClient, session: Session
) -> None:
    referral = stored(session, post(client, synthetic(OC, birth_date="1990-05-04")))

    assert referral.contraceptive_type == "coc"
    assert referral.contraceptive_dmd_code == "17346711000001106"
    assert referral.bmi == 46


def test_process_message_unmodified_example_rejected_only_for_its_nhs_number(
    client: TestClient, session: Session
) -> None:
    bundle = load_example(PF)
    before = counts(session)

    response = post(client, bundle)

    patient = index_of(bundle, "Patient")
    assert_error(
        response,
        400,
        "REC_BAD_REQUEST",
        "value",
        f"Bundle.entry[{patient}].resource.identifier[0].value",
    )
    assert len(issues(response)) == 1
    assert EXAMPLE_NHS_NUMBER not in response.text
    assert counts(session) == before


def test_process_message_contraception_example_patient_too_old_for_coc(client: TestClient) -> None:
    bundle = synthetic(OC)  # born 1959: 67 today, COC is supplied up to 49

    response = post(client, bundle)

    patient = index_of(bundle, "Patient")
    assert_error(
        response,
        422,
        "REC_UNPROCESSABLE_ENTITY",
        "business-rule",
        f"Bundle.entry[{patient}].resource.birthDate",
    )


def test_process_message_target_by_service_id(client: TestClient, session: Session) -> None:
    response = client.post(
        "/fhir/$process-message",
        content=json.dumps(synthetic(BP)).encode(),
        headers={
            **bars_headers(),
            "NHSD-Target-Identifier": target_header(
                "2000011002", "https://fhir.nhs.uk/Id/dos-service-id"
            ),
        },
    )

    assert response.status_code == 200, response.text
    assert stored(session, response).pharmacy_ods == "FA001"


def test_process_message_service_id_of_another_service_returns_422(client: TestClient) -> None:
    response = client.post(
        "/fhir/$process-message",
        content=json.dumps(synthetic(BP)).encode(),
        headers={
            **bars_headers(),
            "NHSD-Target-Identifier": target_header(
                "2000011001", "https://fhir.nhs.uk/Id/dos-service-id"
            ),
        },
    )

    assert_error(
        response, 422, "REC_UNPROCESSABLE_ENTITY", "business-rule", "NHSD-Target-Identifier"
    )


def test_process_message_pharmacy_not_registered_for_service_returns_422(
    client: TestClient,
) -> None:
    response = post(client, synthetic(BP), target="FA002")

    assert_error(
        response, 422, "REC_UNPROCESSABLE_ENTITY", "business-rule", "NHSD-Target-Identifier"
    )


# ---- headers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-Request-Id", "X-Correlation-Id"])
@pytest.mark.parametrize("value", [None, "not-a-uuid"])
def test_process_message_bad_tracking_header_returns_400(
    client: TestClient, header: str, value: str | None
) -> None:
    headers = bars_headers()
    if value is None:
        del headers[header]
    else:
        headers[header] = value

    response = client.post(
        "/fhir/$process-message", content=json.dumps(synthetic(PF)).encode(), headers=headers
    )

    assert_error(response, 400, "REC_BAD_REQUEST", "invalid", header)


def test_process_message_echoes_request_and_correlation_ids(client: TestClient) -> None:
    headers = bars_headers()

    response = client.post(
        "/fhir/$process-message", content=json.dumps(synthetic(PF)).encode(), headers=headers
    )

    assert response.headers["X-Request-Id"] == headers["X-Request-Id"]
    assert response.headers["X-Correlation-Id"] == headers["X-Correlation-Id"]


def test_process_message_repeated_request_id_returns_409_and_creates_nothing(
    client: TestClient, session: Session
) -> None:
    request_id = str(uuid.uuid4())
    first = post(client, synthetic(PF), request_id=request_id)
    assert first.status_code == 200
    after_first = counts(session)

    second = post(client, synthetic(PF), request_id=request_id)

    assert_error(second, 409, "REC_CONFLICT", "duplicate", None)
    assert counts(session) == after_first


def test_process_message_same_request_id_from_another_org_is_not_a_duplicate(
    client: TestClient,
) -> None:
    request_id = str(uuid.uuid4())
    assert post(client, synthetic(PF), request_id=request_id).status_code == 200

    response = post(client, synthetic(PF), request_id=request_id, org="A81002")

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("header", "status", "code"),
    [
        (None, 400, "REC_BAD_REQUEST"),
        ("%%%not-base64", 400, "REC_BAD_REQUEST"),
        (base64.b64encode(b"not json").decode(), 400, "REC_BAD_REQUEST"),
        (
            base64.b64encode(
                b'{"system": "https://fhir.nhs.uk/Id/ods-organization-code"}'
            ).decode(),
            400,
            "REC_BAD_REQUEST",
        ),
        (
            base64.b64encode(b'{"system": "urn:other", "value": "FA001"}').decode(),
            400,
            "REC_BAD_REQUEST",
        ),
        (target_header("FZ999"), 404, "REC_NOT_FOUND"),
        (target_header("A81001"), 404, "REC_NOT_FOUND"),  # a practice, not a pharmacy
        (target_header("99999999", "https://fhir.nhs.uk/Id/dos-service-id"), 404, "REC_NOT_FOUND"),
    ],
)
def test_process_message_bad_target_header(
    client: TestClient, session: Session, header: str | None, status: int, code: str
) -> None:
    headers = bars_headers()
    if header is None:
        del headers["NHSD-Target-Identifier"]
    else:
        headers["NHSD-Target-Identifier"] = header
    before = counts(session)

    response = client.post(
        "/fhir/$process-message", content=json.dumps(synthetic(PF)).encode(), headers=headers
    )

    assert response.status_code == status, response.text
    assert issues(response)[0]["details"]["coding"][0]["code"] == code
    assert issues(response)[0]["expression"] == ["NHSD-Target-Identifier"]
    assert counts(session) == before


def test_process_message_wrong_role_returns_403(client: TestClient) -> None:
    response = post(client, synthetic(PF), role=Role.ICB_ANALYST, org="QXX")

    assert_error(response, 403, "REC_FORBIDDEN", "forbidden", None)


def test_process_message_without_token_returns_401(client: TestClient) -> None:
    headers = bars_headers()
    del headers["Authorization"]

    response = client.post(
        "/fhir/$process-message", content=json.dumps(synthetic(PF)).encode(), headers=headers
    )

    assert_error(response, 401, "REC_UNAUTHORIZED", "login", None)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


# ---- Bundle.meta.versionId and the message header ----------------------------------------------------


def test_process_message_missing_version_returns_400_invariant(client: TestClient) -> None:
    bundle = synthetic(PF)
    del bundle["meta"]["versionId"]

    assert_error(post(client, bundle), 400, "REC_BAD_REQUEST", "invariant", "Bundle.meta.versionId")


def test_process_message_unsupported_version_returns_422_not_supported(client: TestClient) -> None:
    bundle = synthetic(PF)
    bundle["meta"]["versionId"] = "9.9.9"

    assert_error(
        post(client, bundle),
        422,
        "REC_UNPROCESSABLE_ENTITY",
        "not-supported",
        "Bundle.meta.versionId",
    )


def test_process_message_other_event_returns_422(client: TestClient) -> None:
    bundle = synthetic(PF)
    bundle["entry"][0]["resource"]["eventCoding"]["code"] = "booking-request"

    assert_error(
        post(client, bundle),
        422,
        "REC_UNPROCESSABLE_ENTITY",
        "not-supported",
        "Bundle.entry[0].resource.eventCoding",
    )


def test_process_message_unknown_use_case_returns_422(client: TestClient) -> None:
    bundle = synthetic(PF)
    resource(bundle, "ServiceRequest")["category"][0]["coding"][1]["code"] = "a1t1"

    assert_error(
        post(client, bundle),
        422,
        "REC_UNPROCESSABLE_ENTITY",
        "not-supported",
        "Bundle.entry[1].resource.category",
    )


def test_process_message_missing_reason_returns_400(client: TestClient) -> None:
    bundle = synthetic(PF)
    del bundle["entry"][0]["resource"]["reason"]

    assert_error(
        post(client, bundle), 400, "REC_BAD_REQUEST", "required", "Bundle.entry[0].resource.reason"
    )


def test_process_message_unresolvable_focus_returns_400(client: TestClient) -> None:
    bundle = synthetic(PF)
    bundle["entry"][0]["resource"]["focus"] = [
        {"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"}
    ]

    assert_error(
        post(client, bundle),
        400,
        "REC_BAD_REQUEST",
        "invariant",
        "Bundle.entry[0].resource.focus[0]",
    )


def test_process_message_first_entry_not_message_header_returns_400(client: TestClient) -> None:
    bundle = synthetic(PF)
    bundle["entry"].append(bundle["entry"].pop(0))

    assert_error(post(client, bundle), 400, "REC_BAD_REQUEST", "structure", "Bundle.entry[0]")


# ---- the validation layers -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"resourceType": "Patient"}'])
def test_process_message_body_not_a_bundle_returns_400(client: TestClient, body: bytes) -> None:
    response = post(client, body)

    assert response.status_code == 400
    assert issues(response)[0]["details"]["coding"][0]["code"] == "REC_BAD_REQUEST"


def test_process_message_raw_layer_string_for_boolean(client: TestClient) -> None:
    bundle = synthetic(PF)
    service = index_of(bundle, "HealthcareService")
    bundle["entry"][service]["resource"]["active"] = "true"

    assert_error(
        post(client, bundle),
        400,
        "REC_BAD_REQUEST",
        "value",
        f"Bundle.entry[{service}].resource.active",
    )


def test_process_message_raw_layer_null_and_empty(client: TestClient) -> None:
    bundle = synthetic(PF)
    patient = index_of(bundle, "Patient")
    bundle["entry"][patient]["resource"]["gender"] = None
    bundle["entry"][patient]["resource"]["address"] = []

    response = post(client, bundle)

    assert_error(
        response, 400, "REC_BAD_REQUEST", "invalid", f"Bundle.entry[{patient}].resource.gender"
    )
    assert_error(
        response, 400, "REC_BAD_REQUEST", "invalid", f"Bundle.entry[{patient}].resource.address"
    )


def test_process_message_model_layer_unknown_element_and_bad_date(client: TestClient) -> None:
    bundle = synthetic(PF)
    patient = index_of(bundle, "Patient")
    bundle["entry"][patient]["resource"]["favouriteColour"] = "blue"
    bundle["entry"][patient]["resource"]["birthDate"] = "1959-13-45"

    response = post(client, bundle)

    assert_error(
        response,
        400,
        "REC_BAD_REQUEST",
        "structure",
        f"Bundle.entry[{patient}].resource.favouriteColour",
    )
    assert_error(
        response, 400, "REC_BAD_REQUEST", "invalid", f"Bundle.entry[{patient}].resource.birthDate"
    )
    assert "1959-13-45" not in response.text


def test_process_message_unknown_resource_type_returns_400(client: TestClient) -> None:
    bundle = synthetic(PF)
    bundle["entry"][2]["resource"]["resourceType"] = "Nonsense"

    assert_error(
        post(client, bundle),
        400,
        "REC_BAD_REQUEST",
        "invalid",
        "Bundle.entry[2].resource.resourceType",
    )


def test_process_message_code_set_layer_gender(client: TestClient) -> None:
    bundle = synthetic(PF)
    patient = index_of(bundle, "Patient")
    bundle["entry"][patient]["resource"]["gender"] = "femail"

    assert_error(
        post(client, bundle),
        400,
        "REC_BAD_REQUEST",
        "code-invalid",
        f"Bundle.entry[{patient}].resource.gender",
    )


def test_process_message_code_set_layer_service_request_status(client: TestClient) -> None:
    bundle = synthetic(PF)
    resource(bundle, "ServiceRequest")["status"] = "bogus"

    assert_error(
        post(client, bundle),
        400,
        "REC_BAD_REQUEST",
        "code-invalid",
        "Bundle.entry[1].resource.status",
    )


@pytest.mark.parametrize(
    ("resource_type", "element", "value", "expression"),
    [
        ("CarePlan", "status", "active", "status"),
        ("Encounter", "status", "planned", "status"),
        ("ServiceRequest", "status", "draft", "status"),
    ],
)
def test_process_message_bars_status_rules(
    client: TestClient, resource_type: str, element: str, value: str, expression: str
) -> None:
    bundle = synthetic(PF)
    resource(bundle, resource_type)[element] = value

    assert_error(
        post(client, bundle),
        400,
        "REC_BAD_REQUEST",
        "invariant",
        f"Bundle.entry[{index_of(bundle, resource_type)}].resource.{expression}",
    )


def test_process_message_patient_without_nhs_number_accepted(
    client: TestClient, session: Session
) -> None:
    bundle = synthetic(PF)
    del resource(bundle, "Patient")["identifier"]

    response = post(client, bundle)

    assert response.status_code == 200, response.text
    assert stored(session, response).patient_nhs_number is None


def test_process_message_patient_without_phone_returns_400(client: TestClient) -> None:
    bundle = synthetic(PF)
    del resource(bundle, "Patient")["contact"]

    assert_error(
        post(client, bundle),
        400,
        "REC_BAD_REQUEST",
        "required",
        f"Bundle.entry[{index_of(bundle, 'Patient')}].resource.contact",
    )


def test_process_message_reports_every_content_error_at_once(client: TestClient) -> None:
    bundle = synthetic(PF)
    patient = resource(bundle, "Patient")
    patient["identifier"][0]["value"] = "9990000019"
    del patient["contact"]
    del patient["name"]

    response = post(client, bundle)

    assert response.status_code == 400
    assert len(issues(response)) == 3


def test_process_message_no_patient_data_in_diagnostics(client: TestClient) -> None:
    bundle = load_example(PF)  # the example's NHS number fails modulus 11
    del resource(bundle, "Patient")["contact"]

    response = post(client, bundle)

    assert response.status_code == 400
    for value in (EXAMPLE_NHS_NUMBER, "Jones", "Julie", "1959-05-04", "07736312544"):
        assert value not in response.text


# ---- Pharmacy First pathways from Condition codes ------------------------------------------------------


def pathway_bundle(code: str, *, birth_date: str, gender: str = "female") -> dict[str, Any]:
    bundle = synthetic(PF, birth_date=birth_date)
    resource(bundle, "Patient")["gender"] = gender
    resource(bundle, "Condition")["code"] = {
        "coding": [{"system": "http://snomed.info/sct", "code": code}],
        "text": "Sore throat",
    }
    return bundle


def test_process_message_pathway_from_condition_code(client: TestClient, session: Session) -> None:
    response = post(client, pathway_bundle("363746003", birth_date="2000-01-01"))

    assert response.status_code == 200, response.text
    assert stored(session, response).pathway == "sore-throat"


def test_process_message_pathway_age_band_enforced(client: TestClient) -> None:
    bundle = pathway_bundle(
        "1090711000000102", birth_date="1980-01-01", gender="male"
    )  # UTI: women 16-64

    response = post(client, bundle)

    assert_error(
        response,
        422,
        "REC_UNPROCESSABLE_ENTITY",
        "business-rule",
        f"Bundle.entry[{index_of(bundle, 'Patient')}].resource",
    )


def test_process_message_bad_check_digit_in_interpreted_code_is_an_error(
    client: TestClient,
) -> None:
    bundle = pathway_bundle("363746004", birth_date="2000-01-01")

    assert_error(
        post(client, bundle),
        400,
        "REC_BAD_REQUEST",
        "code-invalid",
        f"Bundle.entry[{index_of(bundle, 'Condition')}].resource.code.coding[0].code",
    )


# ---- cancellation (reason update) -------------------------------------------------------------------------


def cancel_bundle(
    referral_id: str, status: str = "revoked", last_updated: str | None = None
) -> dict[str, Any]:
    bundle = synthetic(PF)
    bundle["entry"][0]["resource"]["reason"]["coding"][0]["code"] = "update"
    request = resource(bundle, "ServiceRequest")
    request["id"] = referral_id
    request["status"] = status
    request["reasonCode"] = [{"text": "Patient seen by GP instead"}]
    request["meta"]["lastUpdated"] = last_updated or "2099-01-01T00:00:00+00:00"
    return bundle


def make_fhir_referral(client: TestClient) -> str:
    response = post(client, synthetic(PF))
    assert response.status_code == 200
    referral_id: str = response.json()["entry"][1]["resource"]["id"]
    return referral_id


def test_process_message_update_revoked_cancels(client: TestClient, session: Session) -> None:
    referral_id = make_fhir_referral(client)

    response = post(client, cancel_bundle(referral_id))

    assert response.status_code == 200, response.text
    assert response.json()["entry"][1]["resource"]["status"] == "revoked"
    referral = session.get(Referral, uuid.UUID(referral_id))
    assert referral is not None
    session.refresh(referral)
    assert referral.status is ReferralStatus.CANCELLED
    assert referral.status_reason == "Patient seen by GP instead"
    assert referral.version == 2


def test_process_message_update_entered_in_error_cancels(
    client: TestClient, session: Session
) -> None:
    referral_id = make_fhir_referral(client)

    response = post(client, cancel_bundle(referral_id, status="entered-in-error"))

    assert response.status_code == 200, response.text
    referral = session.get(Referral, uuid.UUID(referral_id))
    assert referral is not None
    assert referral.status is ReferralStatus.CANCELLED


def test_process_message_cancel_twice_returns_409_naming_state(client: TestClient) -> None:
    referral_id = make_fhir_referral(client)
    assert post(client, cancel_bundle(referral_id)).status_code == 200

    response = post(client, cancel_bundle(referral_id))

    assert_error(response, 409, "REC_CONFLICT", "business-rule", None)
    assert "cancelled" in issues(response)[0]["diagnostics"]


def test_process_message_cancel_completed_referral_returns_409(
    client: TestClient, session: Session
) -> None:
    referral_id = make_fhir_referral(client)
    referral = session.get(Referral, uuid.UUID(referral_id))
    assert referral is not None
    referral.status = ReferralStatus.COMPLETED
    session.add(referral)
    session.commit()

    assert_error(
        post(client, cancel_bundle(referral_id)), 409, "REC_CONFLICT", "business-rule", None
    )


def test_process_message_cancel_other_orgs_referral_returns_404(client: TestClient) -> None:
    referral_id = make_fhir_referral(client)

    assert_error(
        post(client, cancel_bundle(referral_id), org="A81002"),
        404,
        "REC_NOT_FOUND",
        "not-found",
        None,
    )


def test_process_message_cancel_unknown_referral_returns_404(client: TestClient) -> None:
    assert_error(
        post(client, cancel_bundle(str(uuid.uuid4()))), 404, "REC_NOT_FOUND", "not-found", None
    )


def test_process_message_update_other_status_returns_400(client: TestClient) -> None:
    referral_id = make_fhir_referral(client)

    assert_error(
        post(client, cancel_bundle(referral_id, status="active")),
        400,
        "REC_BAD_REQUEST",
        "invariant",
        "Bundle.entry[1].resource.status",
    )


def test_process_message_stale_update_returns_409_conflict(client: TestClient) -> None:
    referral_id = make_fhir_referral(client)

    response = post(client, cancel_bundle(referral_id, last_updated="2001-01-01T00:00:00+00:00"))

    assert_error(response, 409, "REC_CONFLICT", "conflict", None)


# ---- one stored shape, whichever channel ---------------------------------------------------------------------


CONTENT_FIELDS = (
    "service",
    "pathway",
    "status",
    "source",
    "priority",
    "referrer_ods",
    "pharmacy_ods",
    "patient_practice_ods",
    "patient_nhs_number",
    "patient_family_name",
    "patient_given_name",
    "patient_birth_date",
    "patient_sex",
    "patient_phone",
    "clinician_name",
    "clinician_id",
    "reason",
    "notes",
    "bp_systolic",
    "bp_diastolic",
    "bp_measured_at",
    "bmi",
    "abpm_requested",
    "contraceptive_type",
    "version",
)


def test_fhir_and_json_intake_store_identical_referrals(
    client: TestClient, session: Session
) -> None:
    bundle = json.loads(
        (Path(__file__).parents[2] / "app" / "fhir" / "example_bp_referral.json").read_text()
    )
    via_fhir = stored(session, post(client, copy.deepcopy(bundle)))
    json_body = {
        "service": "blood-pressure",
        "pharmacy_ods": "FA001",
        "patient": {
            "nhs_number": "9990000018",
            "family_name": "Testpatient",
            "given_name": "Alex",
            "birth_date": "1971-03-14",
            "sex": "female",
            "phone": "07700900001",
            "registered_practice_ods": "A81001",
        },
        "referrer": {"clinician_name": "Marcy BLAKE", "clinician_id": "PT2489"},
        "reason": "High blood pressure",
        "notes": via_fhir.notes,
        "blood_pressure": {"systolic": 120, "diastolic": 80, "measured_at": "2024-08-20T15:53:00Z"},
        "abpm_requested": True,
    }
    response = client.post("/api/v1/referrals", json=json_body, headers=bars_headers())
    assert response.status_code == 201, response.text
    via_json = session.get(Referral, uuid.UUID(response.json()["id"]))
    assert via_json is not None

    assert {f: getattr(via_fhir, f) for f in CONTENT_FIELDS} == {
        f: getattr(via_json, f) for f in CONTENT_FIELDS
    }
    assert (via_fhir.intake, via_json.intake) == ("fhir", "json")


def test_process_message_nul_character_returns_400_not_500(
    client: TestClient, session: Session
) -> None:
    bundle = synthetic(PF)
    resource(bundle, "Condition")["code"]["text"] = "Vomi\x00ting"
    before = counts(session)

    response = post(client, bundle)

    assert_error(
        response,
        400,
        "REC_BAD_REQUEST",
        "value",
        f"Bundle.entry[{index_of(bundle, 'Condition')}].resource.code.text",
    )
    assert counts(session) == before


def test_a_stored_message_body_is_compressed_with_lz4_on_postgresql(
    client: TestClient, session: Session
) -> None:
    """The message as it arrived (about 20 KB) is stored lz4-compressed where the server has lz4
    (cheaper than pglz; alembic revision 3c8e5b7a1d40), and reads back byte for byte."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("column compression is PostgreSQL's")
    try:
        with session.begin_nested():
            session.execute(text("CREATE TEMP TABLE lz4_probe (x text COMPRESSION lz4)"))
    except DBAPIError:
        pytest.skip("this server has no lz4 (PostgreSQL 14 or later built with it)")
    body = json.dumps(synthetic(BP)).encode()

    response = post(client, body)

    assert response.status_code == 200, response.text
    method, stored_body = session.execute(
        text(
            "SELECT pg_column_compression(body), body FROM inbound_message WHERE referral_id = :id"
        ),
        {"id": stored(session, response).id},
    ).one()
    assert method == "lz4"
    assert stored_body == body.decode()
