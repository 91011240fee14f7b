"""Recording consultations for all four services, the rules pharmref applies, and completion."""

from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import Session, select

from app.models.consultation import Consultation
from app.models.enums import ReferralStatus, Role, Service
from app.models.event import ReferralEvent
from app.models.referral import Referral
from tests.factories import birth_date_for_age, make_referral
from tests.helpers import auth

PHARMACY = auth(Role.PHARMACY, "FA001")
CLINICIAN = {"clinician_name": "Priya Example", "gphc_number": "2099999"}
PENICILLIN = {
    "dmd_code": "39695211000001102",
    "name": "Phenoxymethylpenicillin 250mg tablets",
    "dose": "Two tablets four times a day for 5 days",
    "quantity": 40,
    "unit": "tablet",
}


def accepted(
    client: TestClient,
    session: Session,
    service: Service = Service.PHARMACY_FIRST,
    **overrides: Any,
) -> Referral:
    referral = make_referral(session, service=service, **overrides)
    response = client.post(
        f"/api/v1/referrals/{referral.id}/accept", json={"version": 1}, headers=PHARMACY
    )
    assert response.status_code == 200, response.text
    session.refresh(referral)
    return referral


def record(
    client: TestClient, referral: Referral, body: dict[str, Any], headers: dict[str, str] = PHARMACY
) -> Any:
    payload = {**CLINICIAN, "version": referral.version, **body}
    return client.post(
        f"/api/v1/referrals/{referral.id}/consultation", json=payload, headers=headers
    )


def events(session: Session, referral: Referral, action: str) -> list[ReferralEvent]:
    return list(
        session.exec(
            select(ReferralEvent).where(
                ReferralEvent.referral_id == referral.id, ReferralEvent.action == action
            )
        ).all()
    )


def fields(response: Any) -> list[str]:
    return [f["field"] for f in response.json().get("fields", [])]


# ---- Pharmacy First ----------------------------------------------------------------------------------


def test_pharmacy_first_pgd_supply_completes(client: TestClient, session: Session) -> None:
    referral = accepted(client, session)

    response = record(
        client,
        referral,
        {
            "service": "pharmacy-first",
            "pathway": "sore-throat",
            "gateway_criteria_met": True,
            "outcome": "pgd-supply",
            "medicine": PENICILLIN,
        },
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["referral_status"], body["referral_version"]) == ("completed", 3)
    assert response.headers["ETag"] == 'W/"3"'
    assert body["record"]["medicine"]["dmd_code"] == PENICILLIN["dmd_code"]
    assert body["derived"] == {"pathway_age_band_met": True, "clinical_pathway": True}
    assert [e.to_status for e in events(session, referral, "completed")] == [
        ReferralStatus.COMPLETED
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pathway": "minor-illness", "outcome": "pgd-supply", "medicine": PENICILLIN}, "outcome"),
        (
            {
                "pathway": "sore-throat",
                "gateway_criteria_met": False,
                "outcome": "pgd-supply",
                "medicine": PENICILLIN,
            },
            "outcome",
        ),
        (
            {"pathway": "sore-throat", "gateway_criteria_met": True, "outcome": "pgd-supply"},
            "medicine",
        ),
        ({"pathway": "sore-throat", "outcome": "advice-self-care"}, "gateway_criteria_met"),
        (
            {
                "pathway": "shingles",
                "gateway_criteria_met": True,
                "outcome": "pgd-supply",
                "medicine": PENICILLIN,
            },
            "pathway",
        ),
    ],
)
def test_pharmacy_first_rules(
    client: TestClient, session: Session, body: dict[str, Any], field: str
) -> None:
    referral = accepted(client, session, patient={"birth_date": birth_date_for_age(16).isoformat()})

    response = record(client, referral, {"service": "pharmacy-first", **body})

    assert response.status_code == 422, response.text
    assert field in fields(response)
    session.refresh(referral)
    assert referral.status is ReferralStatus.ACCEPTED
    assert (
        session.exec(
            select(func.count())
            .select_from(Consultation)
            .where(Consultation.referral_id == referral.id)
        ).one()
        == 0
    )


@pytest.mark.parametrize(
    "outcome",
    [
        "advice-self-care",
        "otc-product",
        "referred-gp-urgent",
        "referred-gp-routine",
        "signposted",
        "escalated-urgent-care",
    ],
)
def test_pharmacy_first_other_outcomes(client: TestClient, session: Session, outcome: str) -> None:
    referral = accepted(client, session)

    response = record(
        client,
        referral,
        {"service": "pharmacy-first", "pathway": "minor-illness", "outcome": outcome},
    )

    assert response.status_code == 201, response.text
    assert response.json()["outcome"] == outcome


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"gphc_number": "12345"}, "gphc_number"),
        ({"outcome": "magic"}, "pharmacy-first.outcome"),
        ({"pathway": "flu"}, "pharmacy-first.pathway"),
        ({"service": "dentistry"}, "service"),
    ],
)
def test_consultation_schema_errors_name_the_field(
    client: TestClient, session: Session, body: dict[str, Any], field: str
) -> None:
    referral = accepted(client, session)

    response = record(
        client,
        referral,
        {"service": "pharmacy-first", "pathway": "minor-illness", "outcome": "signposted", **body},
    )

    assert response.status_code == 422
    assert any(f.endswith(field) or f == field or field in f for f in fields(response)), fields(
        response
    )


# ---- Blood pressure ----------------------------------------------------------------------------------


def bp(readings: list[tuple[int, int]], outcome: str, **extra: Any) -> dict[str, Any]:
    return {
        "service": "blood-pressure",
        "clinic_readings": [{"systolic": s, "diastolic": d, "pulse": 70} for s, d in readings],
        "outcome": outcome,
        **extra,
    }


def test_bp_normal_reading_completes_with_derived_category(
    client: TestClient, session: Session
) -> None:
    referral = accepted(client, session, Service.BLOOD_PRESSURE)

    response = record(client, referral, bp([(132, 84), (128, 82)], "advice-normal-bp"))

    assert response.status_code == 201, response.text
    derived = response.json()["derived"]
    assert derived["clinic_reading"] == {"systolic": 128, "diastolic": 82}
    assert derived["category"] == "normal"
    assert derived["urgent_escalation"] is False
    assert events(session, referral, "urgent-escalation") == []


def test_bp_client_category_is_never_trusted(client: TestClient, session: Session) -> None:
    referral = accepted(client, session, Service.BLOOD_PRESSURE)

    response = record(client, referral, {**bp([(150, 95)], "abpm-offered"), "category": "normal"})

    assert response.status_code == 422
    assert "blood-pressure.category" in fields(response)


def test_bp_outcome_differing_from_rules_needs_an_override(
    client: TestClient, session: Session
) -> None:
    referral = accepted(client, session, Service.BLOOD_PRESSURE)

    refused = record(client, referral, bp([(150, 95)], "advice-normal-bp"))
    overridden = record(
        client,
        referral,
        bp(
            [(150, 95)],
            "advice-normal-bp",
            override={"reason": "White-coat effect: home readings all below 130/80 for 4 weeks"},
        ),
    )

    assert refused.status_code == 422
    assert fields(refused) == ["outcome"]
    assert overridden.status_code == 201, overridden.text
    body = overridden.json()
    assert body["derived"]["recommended_outcome"] == "abpm-offered"
    assert body["outcome"] == "advice-normal-bp"
    assert body["override"]["reason"].startswith("White-coat")
    assert body["override"]["by"] == "test:pharmacy:FA001"


@pytest.mark.parametrize(
    ("readings", "irregular", "outcome", "reason"),
    [
        ([(182, 110)], False, "referred-gp-same-day", "Very high"),
        ([(130, 80)], True, "referred-gp-irregular-pulse", "Irregular pulse"),
    ],
)
def test_bp_very_high_or_irregular_pulse_escalates_to_the_gp(
    client: TestClient,
    session: Session,
    readings: list[tuple[int, int]],
    irregular: bool,
    outcome: str,
    reason: str,
) -> None:
    referral = accepted(client, session, Service.BLOOD_PRESSURE)
    body = bp(readings, outcome)
    body["clinic_readings"][0]["irregular_pulse"] = irregular

    response = record(client, referral, body)

    assert response.status_code == 201, response.text
    escalations = events(session, referral, "urgent-escalation")
    assert len(escalations) == 1
    assert escalations[0].notify_referrer is True
    assert escalations[0].detail is not None
    assert escalations[0].detail["reason"].startswith(reason)
    session.refresh(referral)
    assert referral.escalated_at is not None


def test_bp_abpm_fitted_then_returned_in_two_stages(client: TestClient, session: Session) -> None:
    referral = accepted(client, session, Service.BLOOD_PRESSURE)
    fitted = date.today()

    first = record(
        client,
        referral,
        bp(
            [(152, 96), (148, 94)],
            "abpm-fitted",
            abpm={"offered_on": fitted.isoformat(), "fitted_on": fitted.isoformat()},
        ),
    )
    assert first.status_code == 201, first.text
    assert (first.json()["stage"], first.json()["referral_status"]) == (1, "accepted")
    session.refresh(referral)
    assert referral.due_at.date() == fitted + timedelta(days=7)

    second = record(
        client,
        referral,
        bp(
            [(152, 96), (148, 94)],
            "referred-gp-hypertension",
            abpm={
                "fitted_on": fitted.isoformat(),
                "returned_on": fitted.isoformat(),
                "daytime_readings": 14,
                "daytime_average_systolic": 135,
                "daytime_average_diastolic": 80,
            },
        ),
    )

    assert second.status_code == 201, second.text
    assert second.json()["stage"] == 2
    assert second.json()["derived"]["abpm_result"] == "hypertension-confirmed"
    assert second.json()["referral_status"] == "completed"


def test_bp_abpm_with_too_few_readings_is_not_a_result(
    client: TestClient, session: Session
) -> None:
    referral = accepted(client, session, Service.BLOOD_PRESSURE)
    abpm = {
        "fitted_on": "2026-11-01",
        "returned_on": "2026-11-02",
        "daytime_readings": 13,
        "daytime_average_systolic": 150,
        "daytime_average_diastolic": 95,
    }

    response = record(client, referral, bp([(150, 95)], "abpm-repeat", abpm=abpm))

    assert response.status_code == 201, response.text
    assert response.json()["derived"]["abpm_result"] == "too-few-readings"


def test_bp_returned_abpm_needs_its_figures(client: TestClient, session: Session) -> None:
    referral = accepted(client, session, Service.BLOOD_PRESSURE)

    response = record(
        client,
        referral,
        bp(
            [(150, 95)],
            "abpm-offered",
            abpm={"fitted_on": "2026-11-01", "returned_on": "2026-11-02"},
        ),
    )

    assert response.status_code == 422
    assert set(fields(response)) == {
        "abpm.daytime_readings",
        "abpm.daytime_average_systolic",
        "abpm.daytime_average_diastolic",
    }


# ---- Contraception ----------------------------------------------------------------------------------


def oc(outcome: str = "supplied", **extra: Any) -> dict[str, Any]:
    return {
        "service": "contraception",
        "supply_type": "ongoing",
        "pill": "coc",
        "product": {"dmd_code": "17346711000001106", "name": "Rigevidon tablets"},
        "months_supplied": 12,
        "blood_pressure": {"systolic": 118, "diastolic": 76},
        "bmi": 24.1,
        "outcome": outcome,
        **extra,
    }


def test_contraception_coc_supply_with_safe_bp_and_bmi(
    client: TestClient, session: Session
) -> None:
    referral = accepted(client, session, Service.CONTRACEPTION)

    response = record(client, referral, oc())

    assert response.status_code == 201, response.text
    assert response.json()["derived"]["coc_safe"] is True
    assert response.json()["referral_status"] == "completed"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"blood_pressure": {"systolic": 142, "diastolic": 90}}, "blood_pressure"),
        ({"blood_pressure": None}, "blood_pressure"),
        ({"bmi": 35.0}, "bmi"),
        ({"bmi": None}, "bmi"),
        ({"months_supplied": None}, "months_supplied"),
        ({"product": None}, "product"),
    ],
)
def test_contraception_coc_not_supplied_outside_the_safe_range(
    client: TestClient, session: Session, change: dict[str, Any], field: str
) -> None:
    referral = accepted(client, session, Service.CONTRACEPTION)
    body = {k: v for k, v in {**oc(), **change}.items() if v is not None}

    response = record(client, referral, body)
    with_override = record(
        client, referral, {**body, "override": {"reason": "I am confident this is fine for her"}}
    )

    assert response.status_code == 422
    assert field in fields(response)
    assert with_override.status_code == 422  # outside the PGD: no override supplies COC


def test_contraception_pop_needs_no_bp_or_bmi(client: TestClient, session: Session) -> None:
    referral = accepted(client, session, Service.CONTRACEPTION)
    body = {k: v for k, v in oc(pill="pop").items() if k not in ("blood_pressure", "bmi")}

    response = record(client, referral, body)

    assert response.status_code == 201, response.text
    assert response.json()["derived"]["coc_safe"] is False


def test_contraception_not_supplied_needs_a_reason(client: TestClient, session: Session) -> None:
    referral = accepted(client, session, Service.CONTRACEPTION)

    refused = record(
        client,
        referral,
        oc("not-supplied-referred", blood_pressure={"systolic": 142, "diastolic": 90}),
    )
    recorded = record(
        client,
        referral,
        oc(
            "not-supplied-referred",
            blood_pressure={"systolic": 142, "diastolic": 90},
            reason_not_supplied="BP 142/90: GP within 7 days",
        ),
    )

    assert refused.status_code == 422
    assert fields(refused) == ["reason_not_supplied"]
    assert recorded.status_code == 201, recorded.text
    assert recorded.json()["derived"]["coc_safe"] is False


@pytest.mark.parametrize("months", [0, 13])
def test_contraception_months_supplied_range(
    client: TestClient, session: Session, months: int
) -> None:
    referral = accepted(client, session, Service.CONTRACEPTION)

    response = record(client, referral, oc(months_supplied=months))

    assert response.status_code == 422
    assert any(f.endswith("months_supplied") for f in fields(response))


# ---- DMS ------------------------------------------------------------------------------------------------


def dms(stage: int, **extra: Any) -> dict[str, Any]:
    check = {1: "reconciled", 2: "prescription_checked", 3: "patient_consulted"}[stage]
    return {
        "service": "dms",
        "stage": stage,
        "completed_on": date.today().isoformat(),
        check: True,
        **extra,
    }


def test_dms_three_stages_then_complete(client: TestClient, session: Session) -> None:
    referral = accepted(client, session, Service.DMS)

    statuses = []
    for stage in (1, 2, 3):
        response = record(client, referral, dms(stage))
        assert response.status_code == 201, response.text
        statuses.append(response.json()["referral_status"])
        session.refresh(referral)

    assert statuses == ["accepted", "accepted", "completed"]
    first = client.get(f"/api/v1/referrals/{referral.id}/consultations", headers=PHARMACY).json()[0]
    assert first["derived"]["stage1_within_72_hours"] is True
    assert len(events(session, referral, "consultation-recorded")) == 2


def test_dms_stages_in_order(client: TestClient, session: Session) -> None:
    referral = accepted(client, session, Service.DMS)

    response = record(client, referral, dms(2))

    assert response.status_code == 422
    assert fields(response) == ["stage"]


def test_dms_stage_needs_its_check_or_a_reason(client: TestClient, session: Session) -> None:
    referral = accepted(client, session, Service.DMS)

    refused = record(client, referral, {**dms(1), "reconciled": False})
    ended = record(
        client,
        referral,
        {**dms(1), "reconciled": False, "could_not_complete_reason": "Patient readmitted"},
    )

    assert refused.status_code == 422
    assert fields(refused) == ["reconciled"]
    assert ended.status_code == 201, ended.text
    assert ended.json()["referral_status"] == "completed"
    assert ended.json()["outcome"] == "ended-early"


def test_dms_same_stage_twice_is_a_conflict(client: TestClient, session: Session) -> None:
    referral = accepted(client, session, Service.DMS)
    assert record(client, referral, dms(1)).status_code == 201
    session.refresh(referral)

    assert record(client, referral, dms(1)).status_code == 409


def test_single_consultation_service_with_a_stored_consultation_is_a_conflict(
    client: TestClient, session: Session
) -> None:
    """Pharmacy First does not look up earlier consultations (its one consultation completes the
    referral); should an accepted one have one all the same, the unique index refuses the second
    and nothing of the request is written."""
    referral = accepted(client, session)
    session.add(
        Consultation(
            referral_id=referral.id,
            service=Service.PHARMACY_FIRST,
            stage=0,
            outcome="signposted",
            clinician_name="Priya Example",
            gphc_number="2099999",
            record={},
            derived={},
            recorded_by_org="FA001",
            recorded_by_subject="someone",
        )
    )
    session.commit()

    response = record(
        client,
        referral,
        {"service": "pharmacy-first", "pathway": "minor-illness", "outcome": "signposted"},
    )

    assert response.status_code == 409
    assert response.json()["detail"] == (
        "This consultation stage was recorded at the same time by someone else."
    )
    session.expire_all()
    stored = session.get(Referral, referral.id)
    assert stored is not None
    assert (stored.status, stored.version) == (ReferralStatus.ACCEPTED, 2)
    assert events(session, referral, "completed") == []
    count = session.exec(
        select(func.count())
        .select_from(Consultation)
        .where(Consultation.referral_id == referral.id)
    ).one()
    assert count == 1


# ---- state, versions, who may record -----------------------------------------------------------------------


def test_consultation_needs_an_accepted_referral(client: TestClient, session: Session) -> None:
    referral = make_referral(session)

    response = record(
        client,
        referral,
        {"service": "pharmacy-first", "pathway": "minor-illness", "outcome": "signposted"},
    )

    assert response.status_code == 409
    assert "received" in response.json()["detail"]


def test_consultation_for_another_service_is_refused(client: TestClient, session: Session) -> None:
    referral = accepted(client, session)

    response = record(client, referral, oc())

    assert response.status_code == 422
    assert fields(response) == ["service"]


def test_consultation_with_stale_version_is_refused(client: TestClient, session: Session) -> None:
    referral = accepted(client, session)

    response = record(
        client,
        referral,
        {
            "service": "pharmacy-first",
            "pathway": "minor-illness",
            "outcome": "signposted",
            "version": 1,
        },
    )

    assert response.status_code == 412


@pytest.mark.parametrize(
    ("headers", "status"),
    [(auth(Role.GP_PRACTICE, "A81001"), 403), (auth(Role.PHARMACY, "FA002"), 404)],
)
def test_only_the_receiving_pharmacy_records(
    client: TestClient, session: Session, headers: dict[str, str], status: int
) -> None:
    referral = accepted(client, session)

    response = record(
        client,
        referral,
        {"service": "pharmacy-first", "pathway": "minor-illness", "outcome": "signposted"},
        headers=headers,
    )

    assert response.status_code == status


def test_completed_referral_takes_no_second_consultation(
    client: TestClient, session: Session
) -> None:
    referral = accepted(client, session)
    assert (
        record(
            client,
            referral,
            {"service": "pharmacy-first", "pathway": "minor-illness", "outcome": "signposted"},
        ).status_code
        == 201
    )
    session.refresh(referral)

    response = record(
        client,
        referral,
        {"service": "pharmacy-first", "pathway": "minor-illness", "outcome": "signposted"},
    )

    assert response.status_code == 409


def test_referrer_reads_the_consultation_and_history(client: TestClient, session: Session) -> None:
    referral = accepted(client, session, Service.BLOOD_PRESSURE)
    record(client, referral, bp([(182, 110)], "referred-gp-same-day"))
    gp = auth(Role.GP_PRACTICE, "A81001")

    consultations = client.get(f"/api/v1/referrals/{referral.id}/consultations", headers=gp).json()
    history = client.get(f"/api/v1/referrals/{referral.id}/history", headers=gp).json()

    assert consultations[0]["derived"]["category"] == "very-high"
    assert [e["action"] for e in history["events"]] == [
        "created",
        "accepted",
        "completed",
        "urgent-escalation",
    ]
