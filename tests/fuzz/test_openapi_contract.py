"""Contract fuzzing: schemathesis drives every operation of the app's own OpenAPI document in
process (ASGI), with every check on, as a signed-in caller from the demo directory.

Each operation gets 25 derandomized examples (positive and negative) plus its documented
examples, which keeps the run to well under a minute per database. `PHARMREF_FUZZ_DEEP=1` adds
schemathesis's coverage phase (every boundary and missing value of every parameter, unexpected
methods) and 200 examples per operation: minutes, for a local run after changing the API."""

import os
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.main import app
from app.models.enums import ReferralStatus, Role
from app.models.referral import Referral
from app.routers import health
from app.services import lifecycle
from tests.factories import caller, make_referral
from tests.helpers import token_for

# The OpenAPI schema cannot say "an NHS number with a modulus 11 check digit", "an opaque cursor
# pharmref issued" or "a pharmacy registered for the service", so schema-valid data may still get
# the documented 400 (malformed header, cursor or reference), 412/428 (If-Match) or 422 (business
# rule). Every other check keeps its defaults.
ACCEPTED_FOR_SCHEMA_VALID_DATA = ["2xx", "400", "401", "403", "404", "409", "412", "422", "428"]

PHARMACY_OPERATIONS = {
    "accept_referral",
    "decline_referral",
    "forward_referral",
    "return_referral",
    "record_no_contact",
    "create_consultation",
}


RECEIVING_PHARMACY = caller(Role.PHARMACY, "FA001")
DEEP = os.environ.get("PHARMREF_FUZZ_DEEP") == "1"

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"max-examples": 200 if DEEP else 25, "deterministic": True},
        "phases": {"coverage": {"enabled": DEEP}},
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ACCEPTED_FOR_SCHEMA_VALID_DATA},
        },
    }
)
schema = schemathesis.openapi.from_dict(app.openapi(), config=CONFIG)
schema.app = app


@schema.auth(refresh_interval=None)
class CallerToken:
    """Practice A81001 by default; the pharmacy FA001 for what only the receiving pharmacy does."""

    def get(self, case: schemathesis.Case[Any], _ctx: schemathesis.AuthContext) -> str:
        if case.operation.definition.raw.get("operationId") in PHARMACY_OPERATIONS:
            return token_for(Role.PHARMACY, "FA001")
        return token_for(Role.GP_PRACTICE, "A81001")

    def set(self, case: schemathesis.Case[Any], data: str, _ctx: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


@pytest.fixture
def referral(session: Session) -> Referral:
    """A referral from practice A81001 to pharmacy FA001, so referral routes get past the 404."""
    return make_referral(session)


@pytest.fixture
def ready_on_test_database(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """/readyz checks the application's engine: point it at the (migrated) test database."""
    monkeypatch.setattr(health, "engine", engine)


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.usefixtures("ready_on_test_database")
def test_operation_meets_its_contract(
    case: schemathesis.Case[Any], client: TestClient, session: Session, referral: Referral
) -> None:
    assert client  # the session override: every write rolls back with the test
    operation = case.operation.definition.raw.get("operationId")
    if operation == "create_consultation" and referral.status is ReferralStatus.RECEIVED:
        # Consultations need an accepted referral; otherwise every body stops at the 409.
        lifecycle.accept_referral(
            session=session, referral=referral, caller=RECEIVING_PHARMACY, version=1
        )
    if "referral_id" in (case.path_parameters or {}):
        case.path_parameters["referral_id"] = str(referral.id)
    case.call_and_validate()
