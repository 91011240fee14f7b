"""Mutation fuzzing of intake: valid BaRS messages (pharmref's own example and the official NHS
England examples) and valid JSON referrals of every service, broken at random JSON paths (see
mutations.py). Every answer is a 2xx or a documented 4xx with an OperationOutcome (FHIR) or the
JSON error body, never a 5xx; and never a partial write: after a 4xx the referral, inbound
message and event tables are as they were, after a 2xx each has exactly one row more."""

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import func
from sqlmodel import Session, SQLModel, select

from app.main import app
from app.models.enums import Role, Service
from app.models.event import ReferralEvent
from app.models.referral import InboundMessage, Referral
from app.routers.fhir_docs import PROCESS_MESSAGE_EXAMPLE
from tests.factories import json_referral
from tests.fuzz.mutations import mutated
from tests.helpers import auth, bars_headers
from tests.routers.test_fhir_intake import BP, OC, PF, synthetic

FHIR_PATH, JSON_PATH = "/fhir/$process-message", "/api/v1/referrals"

FHIR_SEEDS: dict[str, Callable[[], dict[str, Any]]] = {
    "pharmref-bp-example": lambda: PROCESS_MESSAGE_EXAMPLE["value"],
    "official-pharmacy-first": lambda: synthetic(PF),
    "official-blood-pressure": lambda: synthetic(BP),
    "official-contraception": lambda: synthetic(OC, birth_date="1990-05-04"),
}
JSON_SEEDS: dict[str, tuple[dict[str, Any], tuple[Role, str]]] = {
    "pharmacy-first": (json_referral(Service.PHARMACY_FIRST), (Role.GP_PRACTICE, "A81001")),
    "blood-pressure": (json_referral(Service.BLOOD_PRESSURE), (Role.GP_PRACTICE, "A81001")),
    "contraception": (json_referral(Service.CONTRACEPTION), (Role.NHS111, "NHS11")),
    "dms": (json_referral(Service.DMS), (Role.TRUST, "RX1")),
}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def documented(path: str) -> set[int]:
    responses = app.openapi()["paths"][path]["post"]["responses"]
    return {int(code) for code in responses}


def counts(session: Session) -> tuple[int, int, int]:
    def count(table: type[SQLModel]) -> int:
        return session.exec(select(func.count()).select_from(table)).one()

    return count(Referral), count(InboundMessage), count(ReferralEvent)


def post_and_count(
    client: TestClient, session: Session, path: str, body: bytes, headers: dict[str, str]
) -> tuple[httpx.Response, tuple[int, int, int], tuple[int, int, int]]:
    before = counts(session)
    response = client.post(path, content=body, headers=headers)
    # What the request's own session left uncommitted dies with it, as in production.
    session.rollback()
    return response, before, counts(session)


def assert_whole_or_nothing(
    response: httpx.Response,
    before: tuple[int, int, int],
    after: tuple[int, int, int],
    *,
    fhir: bool,
    created: int,
) -> None:
    path = FHIR_PATH if fhir else JSON_PATH
    note(f"{response.status_code} {response.text[:500]}")
    assert response.status_code < 500, response.text
    if response.status_code < 300:
        assert response.status_code == created
        referrals, messages, events = (a - b for a, b in zip(after, before, strict=True))
        assert (referrals, messages, events) == (1, 1, 1), "one referral, message and event"
        return
    assert response.status_code in documented(path), f"undocumented {response.status_code}"
    assert after == before, "a refused request left rows behind"
    body = response.json()
    if fhir:
        assert response.headers["content-type"].startswith("application/fhir+json")
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"]
        assert any(i["severity"] in ("error", "fatal") for i in body["issue"])
    else:
        assert response.headers["content-type"].startswith("application/json")
        assert set(body) <= {"error", "detail", "fields"}
        assert body["error"]
        assert body["detail"]


@pytest.mark.parametrize("seed", FHIR_SEEDS.values(), ids=FHIR_SEEDS.keys())
def test_fhir_seed_is_accepted(
    client: TestClient, session: Session, seed: Callable[[], dict[str, Any]]
) -> None:
    response, before, after = post_and_count(
        client, session, FHIR_PATH, json.dumps(seed()).encode(), bars_headers()
    )

    assert response.status_code == 200, response.text
    assert after[0] == before[0] + 1


@pytest.mark.parametrize("seed", JSON_SEEDS.values(), ids=JSON_SEEDS.keys())
def test_json_seed_is_accepted(
    client: TestClient, session: Session, seed: tuple[dict[str, Any], tuple[Role, str]]
) -> None:
    body, referrer = seed
    headers = {**auth(*referrer), "Content-Type": "application/json"}
    response, before, after = post_and_count(
        client, session, JSON_PATH, json.dumps(body).encode(), headers
    )

    assert response.status_code == 201, response.text
    assert after[0] == before[0] + 1


@FUZZ
@given(data=st.data(), seed=st.sampled_from(sorted(FHIR_SEEDS)))
def test_mutated_bars_message_is_whole_or_nothing(
    client: TestClient, session: Session, data: st.DataObject, seed: str
) -> None:
    broken = data.draw(mutated(FHIR_SEEDS[seed]()), label="mutations")
    headers = bars_headers(request_id=str(uuid.uuid4()))

    response, before, after = post_and_count(client, session, FHIR_PATH, broken.body, headers)

    assert_whole_or_nothing(response, before, after, fhir=True, created=200)


@FUZZ
@given(data=st.data(), seed=st.sampled_from(sorted(JSON_SEEDS)))
def test_mutated_json_referral_is_whole_or_nothing(
    client: TestClient, session: Session, data: st.DataObject, seed: str
) -> None:
    document, referrer = JSON_SEEDS[seed]
    broken = data.draw(mutated(document), label="mutations")
    headers = {**auth(*referrer), "Content-Type": "application/json"}

    response, before, after = post_and_count(client, session, JSON_PATH, broken.body, headers)

    assert_whole_or_nothing(response, before, after, fhir=False, created=201)


# Retyping a time to a number found this: pydantic reads a number (or a string of digits) as a
# Unix time, so `"birth_date": 0` made a patient born on 1 January 1970. Times are ISO 8601 text.
RETYPED_TIMES: dict[str, tuple[dict[str, Any], tuple[Role, str]]] = {
    "birth-date-zero": (json_referral(patient={"birth_date": 0}), (Role.GP_PRACTICE, "A81001")),
    "birth-date-digits": (json_referral(patient={"birth_date": "0"}), (Role.GP_PRACTICE, "A81001")),
    "due-by-number": (json_referral(due_by=1.9e9), (Role.GP_PRACTICE, "A81001")),
    "measured-at-number": (
        json_referral(
            Service.BLOOD_PRESSURE,
            blood_pressure={"systolic": 152, "diastolic": 94, "measured_at": 1_790_000_000},
        ),
        (Role.GP_PRACTICE, "A81001"),
    ),
    "discharged-at-number": (
        json_referral(Service.DMS, discharged_at=1_790_000_000),
        (Role.TRUST, "RX1"),
    ),
}


@pytest.mark.parametrize("case", RETYPED_TIMES.values(), ids=RETYPED_TIMES.keys())
def test_json_referral_time_given_as_a_number_is_422(
    client: TestClient, session: Session, case: tuple[dict[str, Any], tuple[Role, str]]
) -> None:
    body, referrer = case
    headers = {**auth(*referrer), "Content-Type": "application/json"}

    response, before, after = post_and_count(
        client, session, JSON_PATH, json.dumps(body).encode(), headers
    )

    assert response.status_code == 422, response.text
    assert "ISO 8601" in response.json()["fields"][0]["message"]
    assert after == before
