"""The audit of reads: every read of patient data writes who, organisation, role, when, which
referrals, route and request ids; the admin query with filters and keyset paging; a failed audit
write is a 503 that shows no data."""

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from app.db.base import utc_now
from app.models.audit import ReadAudit, ReadAuditReferral
from app.models.enums import Role
from app.models.referral import Referral
from app.services import audit as audit_service
from tests.factories import caller, make_referral
from tests.helpers import auth
from tests.routers.test_summaries import completed

GP = auth(Role.GP_PRACTICE, "A81001")
PHARMACY = auth(Role.PHARMACY, "FA001")
ADMIN = auth(Role.ADMIN, "QXX")


def reads(session: Session) -> list[tuple[ReadAudit, list[uuid.UUID]]]:
    rows = session.exec(select(ReadAudit).order_by(col(ReadAudit.id))).all()
    return [
        (
            row,
            list(
                session.exec(
                    select(ReadAuditReferral.referral_id).where(
                        ReadAuditReferral.read_audit_id == row.id
                    )
                ).all()
            ),
        )
        for row in rows
    ]


# route template -> path, with {r} the referral id and {c} the consultation (Bundle) id
AUDITED = {
    "/api/v1/referrals": "/api/v1/referrals",
    "/api/v1/referrals/{referral_id}": "/api/v1/referrals/{r}",
    "/api/v1/referrals/{referral_id}/history": "/api/v1/referrals/{r}/history",
    "/api/v1/referrals/{referral_id}/consultations": "/api/v1/referrals/{r}/consultations",
    "/api/v1/referrals/{referral_id}/summary": "/api/v1/referrals/{r}/summary",
    "/fhir/ServiceRequest/{referral_id}": "/fhir/ServiceRequest/{r}",
    "/fhir/ServiceRequest": "/fhir/ServiceRequest",
    "/fhir/Task/{referral_id}": "/fhir/Task/{r}",
    "/fhir/Task": "/fhir/Task?based-on=ServiceRequest/{r}",
    "/fhir/Bundle/{bundle_id}": "/fhir/Bundle/{c}",
}


@pytest.mark.parametrize("route", AUDITED)
def test_read_of_patient_data_writes_one_audit_row(
    client: TestClient, session: Session, route: str
) -> None:
    referral, consultation = completed(client, session)
    before = len(reads(session))
    request_id = str(uuid.uuid4())

    response = client.get(
        AUDITED[route].format(r=referral.id, c=consultation["id"]),
        headers={**GP, "X-Request-Id": request_id, "X-Correlation-Id": "conv-audit-1"},
    )

    assert response.status_code == 200, response.text
    [(row, referral_ids)] = reads(session)[before:]
    assert (row.actor_subject, row.actor_org, row.actor_role) == (
        "test:gp-practice:A81001",
        "A81001",
        Role.GP_PRACTICE,
    )
    assert (row.method, row.route) == ("GET", route)
    assert (row.request_id, row.correlation_id) == (request_id, "conv-audit-1")
    assert referral.id in referral_ids
    assert row.referral_count == len(referral_ids)
    assert abs((utc_now() - row.at).total_seconds()) < 60


def test_search_records_every_referral_on_the_page(client: TestClient, session: Session) -> None:
    made = {make_referral(session).id for _ in range(3)}
    before = len(reads(session))

    response = client.get("/api/v1/referrals?limit=200", headers=PHARMACY)

    shown = {uuid.UUID(item["id"]) for item in response.json()["data"]}
    [(row, referral_ids)] = reads(session)[before:]
    assert made <= set(referral_ids)
    assert set(referral_ids) == shown
    assert row.actor_role is Role.PHARMACY


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/referrals?status=cancelled",
        "/fhir/ServiceRequest?status=revoked",
        f"/fhir/Task?based-on=ServiceRequest/{uuid.uuid4()}",
    ],
)
def test_search_that_finds_nothing_writes_nothing(
    client: TestClient, session: Session, path: str
) -> None:
    make_referral(session)
    before = len(reads(session))

    response = client.get(path, headers=auth(Role.PHARMACY, "FA002"))

    assert response.status_code == 200, response.text
    assert len(reads(session)) == before


def test_generated_request_id_recorded_when_none_sent(client: TestClient, session: Session) -> None:
    referral = make_referral(session)
    before = len(reads(session))

    client.get(f"/api/v1/referrals/{referral.id}", headers=GP)

    [(row, _)] = reads(session)[before:]
    assert row.request_id is not None
    assert uuid.UUID(row.request_id)


@pytest.mark.parametrize(
    ("headers", "status"),
    [(auth(Role.GP_PRACTICE, "A81002"), 404), (auth(Role.ICB_ANALYST, "QXX"), 403), ({}, 401)],
)
def test_refused_read_writes_nothing(
    client: TestClient, session: Session, headers: dict[str, str], status: int
) -> None:
    referral = make_referral(session)
    before = len(reads(session))

    response = client.get(f"/api/v1/referrals/{referral.id}", headers=headers)

    assert response.status_code == status
    assert len(reads(session)) == before


def test_lifecycle_action_is_not_a_read(client: TestClient, session: Session) -> None:
    referral = make_referral(session)
    before = len(reads(session))

    response = client.post(
        f"/api/v1/referrals/{referral.id}/accept", json={"version": 1}, headers=PHARMACY
    )

    assert response.status_code == 200
    assert len(reads(session)) == before


def test_audit_failure_is_503_with_no_patient_data(client: TestClient, session: Session) -> None:
    referral = make_referral(session)
    before = len(reads(session))

    def unavailable(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "INSERT INTO read_audit" in statement:
            raise OperationalError(statement, {}, Exception("disk full"))

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", unavailable)
    try:
        response = client.get(f"/api/v1/referrals/{referral.id}", headers=GP)
        fhir = client.get(f"/fhir/ServiceRequest/{referral.id}", headers=GP)
    finally:
        event.remove(connection, "before_cursor_execute", unavailable)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"] == "ServiceUnavailable"
    assert referral.patient_family_name not in response.text
    assert fhir.status_code == 503
    assert fhir.json()["resourceType"] == "OperationOutcome"
    assert len(reads(session)) == before


# ---- the admin query --------------------------------------------------------------------------


def record(
    session: Session, *, role: Role, org: str, referrals: list[Referral], minutes_ago: int = 0
) -> int:
    audit_service.record_read(
        session=session,
        caller=caller(role, org),
        method="GET",
        route="/api/v1/referrals/{referral_id}",
        referral_ids=[r.id for r in referrals],
    )
    row = session.exec(select(ReadAudit).order_by(col(ReadAudit.id).desc())).first()
    assert row is not None
    assert row.id is not None
    row.at = utc_now() - timedelta(minutes=minutes_ago)
    session.add(row)
    session.commit()
    return row.id


def query(client: TestClient, params: str = "") -> Any:
    response = client.get(f"/api/v1/audit/reads?{params}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def test_query_filters_by_referral_org_user_and_time(client: TestClient, session: Session) -> None:
    first, second = make_referral(session), make_referral(session)
    old = record(session, role=Role.GP_PRACTICE, org="A81001", referrals=[first], minutes_ago=90)
    both = record(session, role=Role.PHARMACY, org="FA001", referrals=[first, second])
    other = record(session, role=Role.PHARMACY, org="FA001", referrals=[second])
    since = (utc_now() - timedelta(minutes=30)).isoformat().replace("+00:00", "Z")

    by_referral = query(client, f"referral={first.id}")["data"]
    by_org = query(client, "org=fa001")["data"]
    by_user = query(client, "user=test:gp-practice:A81001")["data"]
    recent_first = query(client, f"referral={first.id}&from={since}")["data"]
    older_first = query(client, f"referral={first.id}&to={since}")["data"]

    assert [r["id"] for r in by_referral] == [both, old]
    assert sorted(by_referral[0]["referral_ids"]) == sorted([str(first.id), str(second.id)])
    assert [r["id"] for r in by_org][:2] == [other, both]
    assert {r["actor_org"] for r in by_org} == {"FA001"}
    assert by_user[0]["id"] == old
    assert [r["id"] for r in recent_first] == [both]
    assert [r["id"] for r in older_first] == [old]
    assert by_referral[0]["route"] == "/api/v1/referrals/{referral_id}"


def test_query_pages_newest_first_with_a_keyset_cursor(
    client: TestClient, session: Session
) -> None:
    referral = make_referral(session)
    ids = [
        record(session, role=Role.GP_PRACTICE, org="A81001", referrals=[referral]) for _ in range(5)
    ]

    pages: list[int] = []
    cursor = ""
    for _ in range(3):
        page = query(client, f"referral={referral.id}&limit=2{cursor}")
        pages.extend(r["id"] for r in page["data"])
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"

    assert pages == sorted(ids, reverse=True)
    assert page["next_cursor"] is None


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), (GP, 403), (PHARMACY, 403), (auth(Role.ICB_ANALYST, "QXX"), 403)],
)
def test_query_is_for_admins_only(client: TestClient, headers: dict[str, str], status: int) -> None:
    assert client.get("/api/v1/audit/reads", headers=headers).status_code == status


@pytest.mark.parametrize(
    ("params", "status"),
    [("cursor=%%%", 400), ("cursor=bm90LWFuLWlk", 400), ("referral=nope", 422), ("limit=0", 422)],
)
def test_query_bad_parameters_are_4xx(client: TestClient, params: str, status: int) -> None:
    response = client.get(f"/api/v1/audit/reads?{params}", headers=ADMIN)

    assert response.status_code == status
    assert response.json()["error"] in {"BadRequest", "ValidationFailed"}


def test_reading_the_audit_is_not_itself_a_read_of_patient_data(
    client: TestClient, session: Session
) -> None:
    before = len(reads(session))

    query(client)

    assert len(reads(session)) == before
