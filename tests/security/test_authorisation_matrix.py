"""The authorisation matrix: every endpoint of the app, by every role, by own versus another
organisation, and without a token. The table is the specification; docs/security.md summarises it.

Columns: who calls, and whose resources the cell acts on.

    none     no token at all
    gp       gp-practice A81001, which made the referral
    gp-reg   gp-practice A81002, the patient's registered practice (it did not refer)
    gp-oth   gp-practice A81856, neither
    ph       pharmacy FA001, which receives the referral
    ph-oth   pharmacy FA002, another pharmacy
    tr       trust RX1, which made the referral (a trust referral)
    tr-oth   trust RX2, another trust
    111      nhs111 NHS11, which made the referral (an NHS 111 referral)
    111-oth  nhs111 NHS12, another NHS 111 provider (not in the directory)
    icb      icb-analyst QXX, the ICB of the referring practice
    icb-oth  icb-analyst QYY, another ICB
    adm      admin QXX
    adm-oth  admin QYY

Every referral goes to pharmacy FA001 for a patient registered at A81002; in the gp, ph, gp-*,
ph-*, icb*, adm* and none columns practice A81001 made it, in tr* trust RX1, in 111* NHS11.
Endpoints and deliveries belong to the organisation of the role's own column (A81001, FA001, RX1,
NHS11, QXX): the own column acts on its own, gp-reg and the -oth columns on another's. A new
referral names the own column's organisation as the referrer (JSON `referrer.organisation_ods`;
FHIR `MessageHeader.sender` in the shipped BaRS example): the JSON API refuses another
organisation with 403, the FHIR API takes the token's organisation as the referrer and warns.

Cells are status codes. On a list or search, `200` means the cell's resource is in the answer
and `200-` means the answer is a 200 without it (another organisation's).
"""

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.main import app
from app.models.delivery import DeliveryStatus, MessageFormat, OutboxMessage
from app.models.enums import Role
from app.models.referral import Referral
from app.models.user import User
from app.routers import health
from app.routers.fhir_docs import PROCESS_MESSAGE_EXAMPLE
from app.services import delivery as delivery_service
from tests.factories import caller, json_referral, make_referral
from tests.helpers import auth, bars_headers

MATRIX = """
endpoint                                          none gp  gp-reg gp-oth ph  ph-oth tr  tr-oth 111 111-oth icb icb-oth adm adm-oth
GET    /openapi.json                              200  200 200    200    200 200    200 200    200 200     200 200     200 200
GET    /docs                                      200  200 200    200    200 200    200 200    200 200     200 200     200 200
GET    /docs/oauth2-redirect                      200  200 200    200    200 200    200 200    200 200     200 200     200 200
GET    /redoc                                     200  200 200    200    200 200    200 200    200 200     200 200     200 200
GET    /healthz                                   200  200 200    200    200 200    200 200    200 200     200 200     200 200
GET    /readyz                                    200  200 200    200    200 200    200 200    200 200     200 200     200 200
GET    /api/v1/organisations                      401  200 200    200    200 200    200 200    200 200     200 200     200 200
GET    /api/v1/organisations/{ods}                401  200 200    200    200 200    200 200    200 200     200 200     200 200
POST   /api/v1/referrals                          401  201 403    403    201 403    201 403    201 403     403 403     403 403
GET    /api/v1/referrals                          401  200 200    200-   200 200-   200 200-   200 200-    403 403     200 200
GET    /api/v1/referrals/{referral_id}            401  200 200    404    200 404    200 404    200 404     403 403     200 200
GET    /api/v1/referrals/{referral_id}/history    401  200 200    404    200 404    200 404    200 404     403 403     200 200
POST   /api/v1/referrals/{referral_id}/accept     401  403 403    403    200 404    403 403    403 403     403 403     403 403
POST   /api/v1/referrals/{referral_id}/decline    401  403 403    403    200 404    403 403    403 403     403 403     403 403
POST   /api/v1/referrals/{referral_id}/forward    401  403 403    403    200 404    403 403    403 403     403 403     403 403
POST   /api/v1/referrals/{referral_id}/return     401  403 403    403    200 404    403 403    403 403     403 403     403 403
POST   /api/v1/referrals/{referral_id}/no-contact 401  403 403    403    200 404    403 403    403 403     403 403     403 403
POST   /api/v1/referrals/{referral_id}/cancel     401  200 403    404    403 404    200 404    200 404     403 403     403 403
POST   /api/v1/referrals/{referral_id}/consultation 401 403 403   403    201 404    403 403    403 403     403 403     403 403
GET    /api/v1/referrals/{referral_id}/consultations 401 200 200  404    200 404    200 404    200 404     403 403     200 200
GET    /api/v1/referrals/{referral_id}/summary    401  200 200    404    200 404    200 404    200 404     403 403     200 200
POST   /api/v1/endpoints                          401  201 201    201    201 201    201 201    201 403     403 403     403 403
GET    /api/v1/endpoints                          401  200 200-   200-   200 200-   200 200-   200 200-    403 403     403 403
DELETE /api/v1/endpoints/{endpoint_id}            401  204 404    404    204 404    204 404    204 404     403 403     403 403
GET    /api/v1/deliveries                         401  200 200-   200-   200 200-   200 200-   200 200-    403 403     200 200
POST   /api/v1/deliveries/{delivery_id}/retry     401  200 404    404    200 404    200 404    200 404     403 403     200 200
GET    /fhir/metadata                             200  200 200    200    200 200    200 200    200 200     200 200     200 200
POST   /fhir/$process-message                     401  200 200    200    200 422    200 200    200 403     403 403     403 403
GET    /fhir/ServiceRequest/{referral_id}         401  200 200    404    200 404    200 404    200 404     403 403     200 200
GET    /fhir/ServiceRequest                       401  200 200    200-   200 200-   200 200-   200 200-    403 403     200 200
GET    /fhir/Task/{referral_id}                   401  200 200    404    200 404    200 404    200 404     403 403     200 200
GET    /fhir/Task                                 401  200 200    200-   200 200-   200 200-   200 200-    403 403     200 200
GET    /fhir/Organization/{ods}                   401  200 200    200    200 200    200 200    200 200     200 200     200 200
GET    /fhir/Organization                         401  200 200    200    200 200    200 200    200 200     200 200     200 200
GET    /fhir/Bundle/{bundle_id}                   401  200 200    404    200 404    200 404    200 404     403 403     200 200
GET    /metrics                                   200  200 200    200    200 200    200 200    200 200     200 200     200 200
GET    /api/v1/audit/reads                        401  403 403    403    403 403    403 403    403 403     403 403     200 200
GET    /api/v1/stats/uptake                       401  403 403    403    403 403    403 403    403 403     200 403     200 200
GET    /api/v1/stats/practices-without-referrals  401  403 403    403    403 403    403 403    403 403     200 403     200 200
GET    /api/v1/stats/concentration                401  403 403    403    403 403    403 403    403 403     200 403     200 200
GET    /api/v1/stats/month-on-month               401  403 403    403    403 403    403 403    403 403     200 403     200 200
GET    /api/v1/stats/blood-pressure               401  403 403    403    403 403    403 403    403 403     200 403     200 200
GET    /api/v1/stats/dms                          401  403 403    403    403 403    403 403    403 403     200 403     200 200
GET    /fhir/Composition                          401  200 200    200-   200 200-   200 200-   200 200-    403 403     200 200
GET    /fhir/Composition/{composition_id}         401  200 200    404    200 404    200 404    200 404     403 403     200 200
"""

PRACTICE = caller(Role.GP_PRACTICE, "A81001")
TRUST = caller(Role.TRUST, "RX1")
NHS111 = caller(Role.NHS111, "NHS11")
RECEIVING_PHARMACY = caller(Role.PHARMACY, "FA001")
REGISTERED_PRACTICE = "A81002"


@dataclass(frozen=True)
class Column:
    role: Role | None
    org: str
    maker: User  # made the cell's referral
    owner: str  # owns the cell's endpoint and delivery

    def headers(self) -> dict[str, str]:
        return auth(self.role, self.org) if self.role else {}


COLUMNS: dict[str, Column] = {
    "none": Column(None, "", PRACTICE, "A81001"),
    "gp": Column(Role.GP_PRACTICE, "A81001", PRACTICE, "A81001"),
    "gp-reg": Column(Role.GP_PRACTICE, REGISTERED_PRACTICE, PRACTICE, "A81001"),
    "gp-oth": Column(Role.GP_PRACTICE, "A81856", PRACTICE, "A81001"),
    "ph": Column(Role.PHARMACY, "FA001", PRACTICE, "FA001"),
    "ph-oth": Column(Role.PHARMACY, "FA002", PRACTICE, "FA001"),
    "tr": Column(Role.TRUST, "RX1", TRUST, "RX1"),
    "tr-oth": Column(Role.TRUST, "RX2", TRUST, "RX1"),
    "111": Column(Role.NHS111, "NHS11", NHS111, "NHS11"),
    "111-oth": Column(Role.NHS111, "NHS12", NHS111, "NHS11"),
    "icb": Column(Role.ICB_ANALYST, "QXX", PRACTICE, "QXX"),
    "icb-oth": Column(Role.ICB_ANALYST, "QYY", PRACTICE, "QXX"),
    "adm": Column(Role.ADMIN, "QXX", PRACTICE, "QXX"),
    "adm-oth": Column(Role.ADMIN, "QYY", PRACTICE, "QXX"),
}


def _parse(table: str) -> dict[str, dict[str, str]]:
    header, *lines = table.strip().splitlines()
    names = header.split()[1:]
    assert names == list(COLUMNS), "the table's columns are COLUMNS, in order"
    rows: dict[str, dict[str, str]] = {}
    for line in lines:
        method, path, *cells = line.split()
        assert len(cells) == len(names), f"{method} {path}: {len(cells)} cells"
        assert f"{method} {path}" not in rows, f"{method} {path} twice"
        rows[f"{method} {path}"] = dict(zip(names, cells, strict=True))
    return rows


EXPECTED = _parse(MATRIX)


class Cell:
    """One cell's world, built on demand in the test's rolled-back session."""

    def __init__(self, column: Column, client: TestClient, session: Session) -> None:
        self.column, self.client, self.session = column, client, session

    @cached_property
    def referral(self) -> Referral:
        return make_referral(
            self.session,
            referrer=self.column.maker,
            patient={"registered_practice_ods": REGISTERED_PRACTICE},
        )

    @cached_property
    def accepted(self) -> Referral:
        response = self.client.post(
            f"/api/v1/referrals/{self.referral.id}/accept",
            headers={**auth(Role.PHARMACY, "FA001"), "If-Match": 'W/"1"'},
        )
        assert response.status_code == 200, response.text
        self.session.refresh(self.referral)
        return self.referral

    @cached_property
    def consultation_id(self) -> str:
        response = self.client.post(
            f"/api/v1/referrals/{self.accepted.id}/consultation",
            headers=auth(Role.PHARMACY, "FA001"),
            json={
                "service": "pharmacy-first",
                "version": self.accepted.version,
                "clinician_name": "Priya Example",
                "gphc_number": "2099999",
                "pathway": "minor-illness",
                "outcome": "advice-self-care",
            },
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    @cached_property
    def completed(self) -> Referral:
        assert self.consultation_id
        return self.accepted

    @cached_property
    def endpoint_id(self) -> uuid.UUID:
        endpoint = delivery_service.register_endpoint(
            session=self.session,
            caller=caller(self.column.role or Role.ADMIN, self.column.owner),
            url="https://gp-system.example.nhs.uk/inbox",
            fmt=MessageFormat.R4,
            secret="s" * 32,
        )
        return endpoint.id

    @cached_property
    def delivery_id(self) -> uuid.UUID:
        message = OutboxMessage(
            endpoint_id=self.endpoint_id,
            recipient_ods=self.column.owner,
            referral_id=self.referral.id,
            kind="declined",
            format=MessageFormat.R4,
            body="{}",
            status=DeliveryStatus.DEAD,
            attempts=8,
        )
        self.session.add(message)
        self.session.flush()
        return message.id


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


@dataclass(frozen=True)
class Row:
    call: Callable[[Cell], Call]
    listed: Callable[[Any, Cell], bool] | None = None  # lists: is the cell's resource in the body?
    given: Callable[[Cell], object] | None = None  # what must exist before the call


def _get(path: str) -> Row:
    return Row(lambda _cell: Call("GET", path))


def _referral_get(suffix: str = "") -> Row:
    return Row(lambda cell: Call("GET", f"/api/v1/referrals/{cell.referral.id}{suffix}"))


def _action(name: str, body: dict[str, Any]) -> Row:
    return Row(
        lambda cell: Call(
            "POST", f"/api/v1/referrals/{cell.referral.id}/{name}", {"version": 1, **body}
        )
    )


def _json_referral(cell: Cell) -> Call:
    # The own column's organisation as the referrer (a pharmacy self-refers to itself).
    referrer_org = cell.column.owner if cell.column.role is not Role.PHARMACY else "FA001"
    body = json_referral(
        referrer={"clinician_name": "Dr Sam Example", "organisation_ods": referrer_org}
    )
    return Call("POST", "/api/v1/referrals", body)


def _bars_message(_cell: Cell) -> Call:
    headers = bars_headers()
    headers.pop("Authorization")
    body = json.dumps(PROCESS_MESSAGE_EXAMPLE["value"]).encode()
    return Call("POST", "/fhir/$process-message", headers=headers, raw=body)


def _ids(body: Any) -> set[str]:
    if isinstance(body, list):
        return {str(item["id"]) for item in body}
    if "data" in body:
        return {str(item["id"]) for item in body["data"]}
    return {str(entry["resource"]["id"]) for entry in body.get("entry", [])}


ROWS: dict[str, Row] = {
    "GET /openapi.json": _get("/openapi.json"),
    "GET /docs": _get("/docs"),
    "GET /docs/oauth2-redirect": _get("/docs/oauth2-redirect"),
    "GET /redoc": _get("/redoc"),
    "GET /healthz": _get("/healthz"),
    "GET /readyz": _get("/readyz"),
    "GET /api/v1/organisations": _get("/api/v1/organisations?kind=pharmacy&limit=3"),
    "GET /api/v1/organisations/{ods}": _get("/api/v1/organisations/FA001"),
    "POST /api/v1/referrals": Row(_json_referral),
    "GET /api/v1/referrals": Row(
        lambda _cell: Call("GET", "/api/v1/referrals?limit=200"),
        lambda body, cell: str(cell.referral.id) in _ids(body),
        given=lambda cell: cell.referral,
    ),
    "GET /api/v1/referrals/{referral_id}": _referral_get(),
    "GET /api/v1/referrals/{referral_id}/history": _referral_get("/history"),
    "POST /api/v1/referrals/{referral_id}/accept": _action("accept", {}),
    "POST /api/v1/referrals/{referral_id}/decline": _action(
        "decline", {"reason_code": "no-capacity"}
    ),
    "POST /api/v1/referrals/{referral_id}/forward": _action("forward", {"pharmacy_ods": "FA002"}),
    "POST /api/v1/referrals/{referral_id}/return": _action(
        "return", {"reason": "Needs a GP examination"}
    ),
    "POST /api/v1/referrals/{referral_id}/no-contact": _action("no-contact", {}),
    "POST /api/v1/referrals/{referral_id}/cancel": _action("cancel", {"reason": "Recovered"}),
    "POST /api/v1/referrals/{referral_id}/consultation": Row(
        lambda cell: Call(
            "POST",
            f"/api/v1/referrals/{cell.accepted.id}/consultation",
            {
                "service": "pharmacy-first",
                "version": 2,
                "clinician_name": "Priya Example",
                "gphc_number": "2099999",
                "pathway": "minor-illness",
                "outcome": "advice-self-care",
            },
        )
    ),
    "GET /api/v1/referrals/{referral_id}/consultations": Row(
        lambda cell: Call("GET", f"/api/v1/referrals/{cell.completed.id}/consultations")
    ),
    "GET /api/v1/referrals/{referral_id}/summary": Row(
        lambda cell: Call("GET", f"/api/v1/referrals/{cell.completed.id}/summary")
    ),
    "POST /api/v1/endpoints": Row(
        lambda _cell: Call(
            "POST",
            "/api/v1/endpoints",
            {"url": "https://gp-system.example.nhs.uk/inbox", "secret": "s" * 32},
        )
    ),
    "GET /api/v1/endpoints": Row(
        lambda _cell: Call("GET", "/api/v1/endpoints"),
        lambda body, cell: str(cell.endpoint_id) in _ids(body),
        given=lambda cell: cell.endpoint_id,
    ),
    "DELETE /api/v1/endpoints/{endpoint_id}": Row(
        lambda cell: Call("DELETE", f"/api/v1/endpoints/{cell.endpoint_id}")
    ),
    "GET /api/v1/deliveries": Row(
        lambda _cell: Call("GET", "/api/v1/deliveries?limit=200"),
        lambda body, cell: str(cell.delivery_id) in _ids(body),
        given=lambda cell: cell.delivery_id,
    ),
    "POST /api/v1/deliveries/{delivery_id}/retry": Row(
        lambda cell: Call("POST", f"/api/v1/deliveries/{cell.delivery_id}/retry")
    ),
    "GET /fhir/metadata": _get("/fhir/metadata"),
    "POST /fhir/$process-message": Row(_bars_message),
    "GET /fhir/ServiceRequest/{referral_id}": Row(
        lambda cell: Call("GET", f"/fhir/ServiceRequest/{cell.referral.id}")
    ),
    "GET /fhir/ServiceRequest": Row(
        lambda _cell: Call("GET", "/fhir/ServiceRequest?_count=200"),
        lambda body, cell: str(cell.referral.id) in _ids(body),
        given=lambda cell: cell.referral,
    ),
    "GET /fhir/Task/{referral_id}": Row(lambda cell: Call("GET", f"/fhir/Task/{cell.referral.id}")),
    "GET /fhir/Task": Row(
        lambda cell: Call("GET", f"/fhir/Task?based-on=ServiceRequest/{cell.referral.id}"),
        lambda body, cell: str(cell.referral.id) in _ids(body),
    ),
    "GET /fhir/Organization/{ods}": _get("/fhir/Organization/FA001"),
    "GET /fhir/Organization": _get(
        "/fhir/Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code|FA001"
    ),
    "GET /metrics": _get("/metrics"),
    "GET /api/v1/audit/reads": _get("/api/v1/audit/reads"),
    "GET /api/v1/stats/uptake": _get("/api/v1/stats/uptake?from=2026-01-01&to=2026-06-30"),
    "GET /api/v1/stats/practices-without-referrals": _get(
        "/api/v1/stats/practices-without-referrals?from=2026-01-01&to=2026-06-30&service=pharmacy-first"
    ),
    "GET /api/v1/stats/concentration": _get(
        "/api/v1/stats/concentration?from=2026-01-01&to=2026-06-30"
    ),
    "GET /api/v1/stats/month-on-month": _get(
        "/api/v1/stats/month-on-month?from=2026-01-01&to=2026-06-30"
    ),
    "GET /api/v1/stats/blood-pressure": _get(
        "/api/v1/stats/blood-pressure?from=2026-01-01&to=2026-06-30"
    ),
    "GET /api/v1/stats/dms": _get("/api/v1/stats/dms?from=2026-01-01&to=2026-06-30"),
    "GET /fhir/Composition": Row(
        lambda _cell: Call("GET", "/fhir/Composition?_count=200"),
        lambda body, cell: cell.consultation_id in _ids(body),
        given=lambda cell: cell.consultation_id,
    ),
    "GET /fhir/Composition/{composition_id}": Row(
        lambda cell: Call("GET", f"/fhir/Composition/{cell.consultation_id}")
    ),
    "GET /fhir/Bundle/{bundle_id}": Row(
        lambda cell: Call("GET", f"/fhir/Bundle/{cell.consultation_id}")
    ),
}


def app_endpoints() -> set[str]:
    """Every bearer-token endpoint. The dashboard's pages (/dashboard...) take no bearer token at
    all: they sign in by cookie, and tests/routers/test_dashboard_auth.py is their matrix (every
    forged, expired and wrong-role token refused; the cookie refused by /api and /fhir)."""
    return {
        f"{method} {route.path}"
        for route in iter_route_contexts(app.routes)
        for method in route.methods or ()
        if method != "HEAD" and not (route.path or "").startswith("/dashboard")
    }


def test_every_endpoint_of_the_app_has_a_matrix_row() -> None:
    endpoints = app_endpoints()

    assert endpoints - EXPECTED.keys() == set(), "add a row to MATRIX for each new endpoint"
    assert EXPECTED.keys() - endpoints == set(), "MATRIX names an endpoint the app does not have"
    assert ROWS.keys() == EXPECTED.keys()


@pytest.fixture
def ready_on_test_database(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """/readyz checks the application's engine: point it at the (migrated) test database."""
    monkeypatch.setattr(health, "engine", engine)


def _outcome(
    response: Any, url: str, listed: Callable[[Any, Cell], bool] | None, cell: Cell
) -> str:
    """The cell as observed, in the table's notation, with the shape of any error checked."""
    status = str(response.status_code)
    if response.status_code >= 400:
        body = response.json()
        if url.startswith("/fhir"):
            assert body["resourceType"] == "OperationOutcome", body
            assert response.headers["content-type"].startswith("application/fhir+json")
        else:
            assert {"error", "detail"} <= body.keys(), body
        if response.status_code == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
    if listed is not None and response.status_code == 200 and not listed(response.json(), cell):
        status += "-"
    return status


@pytest.mark.usefixtures("ready_on_test_database")
@pytest.mark.parametrize("endpoint", EXPECTED)
def test_authorisation_matrix_row(client: TestClient, session: Session, endpoint: str) -> None:
    row = ROWS[endpoint]
    observed: dict[str, str] = {}
    for name, column in COLUMNS.items():
        cell = Cell(column, client, session)
        if row.given is not None:
            row.given(cell)
        call = row.call(cell)
        response = client.request(
            call.method,
            call.url,
            json=call.body,
            content=call.raw,
            headers={**call.headers, **column.headers()},
        )
        observed[name] = _outcome(response, call.url, row.listed, cell)

    assert observed == EXPECTED[endpoint], _diff(endpoint, observed)


def _diff(endpoint: str, observed: dict[str, str]) -> str:
    wrong = {
        name: f"expected {EXPECTED[endpoint][name]}, got {got}"
        for name, got in observed.items()
        if got != EXPECTED[endpoint][name]
    }
    return f"{endpoint}: {json.dumps(wrong, indent=1)}"
