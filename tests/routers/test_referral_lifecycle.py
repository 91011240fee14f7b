"""The referral lifecycle over JSON: every transition, versions and ETags, forwarding, history."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import func
from sqlmodel import Session, select

from app.models.delivery import OutboxMessage
from app.models.enums import ReferralStatus, Role, Service
from app.models.event import ReferralEvent
from app.models.referral import Referral
from app.services import lifecycle
from tests.factories import make_referral
from tests.helpers import auth

PHARMACY = auth(Role.PHARMACY, "FA001")
GP = auth(Role.GP_PRACTICE, "A81001")

ACTIONS: dict[str, tuple[dict[str, Any], ReferralStatus]] = {
    "accept": ({}, ReferralStatus.ACCEPTED),
    "decline": (
        {"reason_code": "no-capacity", "reason": "No pharmacist today"},
        ReferralStatus.DECLINED,
    ),
    "forward": ({"pharmacy_ods": "FA002"}, ReferralStatus.FORWARDED),
    "return": ({"reason": "Needs a GP examination"}, ReferralStatus.RETURNED),
    "no-contact": ({}, ReferralStatus.NO_CONTACT),
    "cancel": ({"reason": "Seen by the GP"}, ReferralStatus.CANCELLED),
}


def act(
    client: TestClient,
    referral: Referral,
    action: str,
    *,
    version: int | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    body, _ = ACTIONS[action]
    who = headers or (GP if action == "cancel" else PHARMACY)
    payload = {**body, "version": referral.version if version is None else version}
    return client.post(f"/api/v1/referrals/{referral.id}/{action}", json=payload, headers=who)


def set_status(session: Session, referral: Referral, status: ReferralStatus) -> None:
    referral.status = status
    session.add(referral)
    session.commit()


@pytest.mark.parametrize(("action", "spec"), ACTIONS.items())
def test_action_from_received(client: TestClient, session: Session, action: str, spec: Any) -> None:
    referral = make_referral(session)

    response = act(client, referral, action)

    assert response.status_code == 200, response.text
    body = response.json()
    original = body["original"] if action == "forward" else body
    assert original["status"] == spec[1]
    assert original["version"] == 2
    assert response.headers["ETag"] == 'W/"2"'


@pytest.mark.parametrize("current", list(ReferralStatus))
@pytest.mark.parametrize("action", list(ACTIONS))
def test_every_transition_follows_the_table(
    client: TestClient, session: Session, current: ReferralStatus, action: str
) -> None:
    referral = make_referral(session)
    set_status(session, referral, current)
    target = ACTIONS[action][1]

    response = act(client, referral, action)

    if target in lifecycle.TRANSITIONS[current]:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "InvalidTransition"
        assert f"The referral is {current}" in response.json()["detail"]


def test_completed_is_reached_only_from_accepted() -> None:
    assert [
        s for s, targets in lifecycle.TRANSITIONS.items() if ReferralStatus.COMPLETED in targets
    ] == [ReferralStatus.ACCEPTED]
    assert all(not lifecycle.TRANSITIONS[s] for s in ReferralStatus if s not in lifecycle.OPEN)


def test_stale_version_returns_412_and_changes_nothing(
    client: TestClient, session: Session
) -> None:
    referral = make_referral(session)
    assert act(client, referral, "accept").status_code == 200

    response = act(client, referral, "return", version=1)

    assert response.status_code == 412
    assert response.json()["error"] == "PreconditionFailed"
    session.refresh(referral)
    assert (referral.status, referral.version) == (ReferralStatus.ACCEPTED, 2)


def test_if_match_etag_is_honoured(client: TestClient, session: Session) -> None:
    referral = make_referral(session)
    etag = client.get(f"/api/v1/referrals/{referral.id}", headers=PHARMACY).headers["ETag"]

    ok = client.post(
        f"/api/v1/referrals/{referral.id}/accept", headers={**PHARMACY, "If-Match": etag}
    )
    stale = client.post(
        f"/api/v1/referrals/{referral.id}/no-contact", headers={**PHARMACY, "If-Match": etag}
    )

    assert ok.status_code == 200
    assert stale.status_code == 412


def test_missing_version_returns_428(client: TestClient, session: Session) -> None:
    referral = make_referral(session)

    response = client.post(f"/api/v1/referrals/{referral.id}/accept", headers=PHARMACY)

    assert response.status_code == 428
    assert response.json()["error"] == "PreconditionRequired"


def test_malformed_if_match_returns_400(client: TestClient, session: Session) -> None:
    referral = make_referral(session)

    response = client.post(
        f"/api/v1/referrals/{referral.id}/accept", headers={**PHARMACY, "If-Match": "abc"}
    )

    assert response.status_code == 400


def test_two_pharmacists_accepting_at_once_one_wins(client: TestClient, session: Session) -> None:
    """Both read version 1; the second compare-and-set finds version 2 and loses."""
    referral = make_referral(session)
    first = act(client, referral, "accept", version=1)
    second = act(client, referral, "decline", version=1)

    assert first.status_code == 200
    assert second.status_code == 412
    events = session.exec(
        select(func.count())
        .select_from(ReferralEvent)
        .where(ReferralEvent.referral_id == referral.id)
    ).one()
    assert events == 2  # created + accepted


@pytest.mark.parametrize(
    ("action", "headers", "status"),
    [
        ("accept", GP, 403),  # the referrer cannot act for the pharmacy
        ("accept", auth(Role.PHARMACY, "FA002"), 404),  # another pharmacy cannot see it
        ("cancel", PHARMACY, 403),  # the pharmacy cannot cancel for the referrer
        ("cancel", auth(Role.GP_PRACTICE, "A81002"), 404),
        ("accept", auth(Role.ICB_ANALYST, "QXX"), 403),
    ],
)
def test_actions_are_for_the_right_party(
    client: TestClient, session: Session, action: str, headers: dict[str, str], status: int
) -> None:
    referral = make_referral(session)

    assert act(client, referral, action, headers=headers).status_code == status
    session.refresh(referral)
    assert referral.status is ReferralStatus.RECEIVED


def test_decline_needs_a_known_reason_code(client: TestClient, session: Session) -> None:
    referral = make_referral(session)

    response = client.post(
        f"/api/v1/referrals/{referral.id}/decline",
        json={"version": 1, "reason_code": "bored"},
        headers=PHARMACY,
    )

    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "reason_code"


def test_forward_creates_a_received_referral_at_the_other_pharmacy(
    client: TestClient, session: Session
) -> None:
    referral = make_referral(session)

    response = act(client, referral, "forward")

    forwarded = response.json()["forwarded"]
    assert forwarded["pharmacy_ods"] == "FA002"
    assert forwarded["status"] == "received"
    assert forwarded["reference"] != referral.reference
    assert forwarded["patient"] == response.json()["original"]["patient"]
    inbox = client.get(
        "/api/v1/referrals?status=received", headers=auth(Role.PHARMACY, "FA002")
    ).json()
    assert [r["id"] for r in inbox["data"]] == [forwarded["id"]]
    mine = client.get("/api/v1/referrals", headers=GP).json()
    assert {r["status"] for r in mine["data"]} == {"forwarded", "received"}


@pytest.mark.parametrize(
    ("pharmacy", "reason"),
    [("FA001", "Same pharmacy"), ("FZ999", "Unknown"), ("A81001", "Unknown")],
)
def test_forward_to_invalid_pharmacy_returns_422(
    client: TestClient, session: Session, pharmacy: str, reason: str
) -> None:
    referral = make_referral(session)
    before = session.exec(select(func.count()).select_from(Referral)).one()

    response = client.post(
        f"/api/v1/referrals/{referral.id}/forward",
        json={"version": 1, "pharmacy_ods": pharmacy},
        headers=PHARMACY,
    )

    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "pharmacy_ods"
    assert reason in response.json()["fields"][0]["message"]
    assert session.exec(select(func.count()).select_from(Referral)).one() == before


def test_forward_to_pharmacy_not_registered_for_service_returns_422(
    client: TestClient, session: Session
) -> None:
    referral = make_referral(session, service=Service.BLOOD_PRESSURE)

    response = act(client, referral, "forward")  # FA002 does not do blood pressure checks

    assert response.status_code == 422
    session.refresh(referral)
    assert referral.status is ReferralStatus.RECEIVED


def test_history_shows_the_whole_timeline_to_both_parties(
    client: TestClient, session: Session
) -> None:
    referral = make_referral(session)
    act(client, referral, "accept")
    session.refresh(referral)
    act(client, referral, "return")

    for headers in (GP, PHARMACY):
        history = client.get(f"/api/v1/referrals/{referral.id}/history", headers=headers).json()
        assert [(e["action"], e["to_status"], e["actor_org"]) for e in history["events"]] == [
            ("created", "received", "A81001"),
            ("accepted", "accepted", "FA001"),
            ("returned", "returned", "FA001"),
        ]
        assert history["events"][2]["notify_referrer"] is True
        assert history["events"][2]["detail"] == {"reason": "Needs a GP examination"}
    assert (
        client.get(
            f"/api/v1/referrals/{referral.id}/history", headers=auth(Role.GP_PRACTICE, "A81002")
        ).status_code
        == 404
    )


def test_decline_is_addressed_to_the_referrer(client: TestClient, session: Session) -> None:
    referral = make_referral(session)

    act(client, referral, "decline")

    event = session.exec(
        select(ReferralEvent).where(
            ReferralEvent.action == "declined", ReferralEvent.referral_id == referral.id
        )
    ).one()
    assert event.notify_referrer is True
    assert event.detail == {"reason": "No pharmacist today", "reason_code": "no-capacity"}
    assert (event.actor_org, event.actor_role, event.version) == ("FA001", Role.PHARMACY, 2)


def test_events_record_the_state_each_transition_left(client: TestClient, session: Session) -> None:
    referral = make_referral(session)
    act(client, referral, "accept")
    session.refresh(referral)
    act(client, referral, "return")

    history = client.get(f"/api/v1/referrals/{referral.id}/history", headers=GP).json()

    assert [(e["from_status"], e["to_status"]) for e in history["events"]] == [
        (None, "received"),
        ("received", "accepted"),
        ("accepted", "returned"),
    ]


def test_decline_is_queued_for_the_referrers_endpoint_in_the_same_transaction(
    client: TestClient, session: Session
) -> None:
    registered = client.post(
        "/api/v1/endpoints",
        json={"url": "https://gp.example/inbox", "format": "fhir-r4", "secret": "x" * 32},
        headers=GP,
    )
    assert registered.status_code == 201, registered.text
    assert "secret" not in registered.json()
    referral = make_referral(session)

    act(client, referral, "decline")

    deliveries = client.get("/api/v1/deliveries", headers=GP).json()["data"]
    assert [(d["kind"], d["status"], d["priority"]) for d in deliveries] == [
        ("declined", "pending", 1)
    ]
    row = session.exec(select(OutboxMessage).where(OutboxMessage.referral_id == referral.id)).one()
    Bundle.model_validate_json(row.body)
    resources = {
        e["resource"]["resourceType"]: e["resource"] for e in json.loads(row.body)["entry"]
    }
    assert resources["MessageHeader"]["eventCoding"]["code"] == "declined"
    assert resources["Task"]["status"] == "rejected"
    assert resources["ServiceRequest"]["status"] == "revoked"
    assert (
        client.get("/api/v1/deliveries", headers=auth(Role.GP_PRACTICE, "A81002")).json()["data"]
        == []
    )


def test_accept_is_not_pushed(client: TestClient, session: Session) -> None:
    client.post(
        "/api/v1/endpoints",
        json={"url": "https://gp.example/inbox", "secret": "x" * 32},
        headers=GP,
    )
    referral = make_referral(session)

    act(client, referral, "accept")

    assert client.get("/api/v1/deliveries", headers=GP).json()["data"] == []


@pytest.mark.parametrize("url", ["http://gp.example/inbox", "ftp://gp.example/inbox"])
def test_endpoint_must_be_https(client: TestClient, url: str) -> None:
    response = client.post("/api/v1/endpoints", json={"url": url, "secret": "x" * 32}, headers=GP)

    assert response.status_code == 422
