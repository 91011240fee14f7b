"""The pharmacy inbox: due and overdue filters, the urgency order and paging through it."""

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.enums import ReferralStatus, Role
from app.models.referral import Referral
from tests.factories import make_referral
from tests.helpers import auth

URL = "/api/v1/referrals"
PHARMACY = auth(Role.PHARMACY, "FA001")
GP = auth(Role.GP_PRACTICE, "A81001")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _referral(
    session: Session,
    *,
    priority: str = "routine",
    due_at: datetime = T0,
    status: ReferralStatus = ReferralStatus.RECEIVED,
) -> Referral:
    referral = make_referral(session, priority=priority)
    referral.due_at = due_at
    referral.status = status
    session.add(referral)
    session.commit()
    return referral


def _ids(client: TestClient, headers: dict[str, str], **params: Any) -> list[str]:
    response = client.get(URL, headers=headers, params=params)
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return [item["id"] for item in response.json()["data"]]


def _pages(client: TestClient, headers: dict[str, str], **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get(URL, headers=headers, params=query)
        assert response.status_code == 200, response.text
        pages.append([item["id"] for item in response.json()["data"]])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "paging does not end"


def test_urgency_order_puts_urgent_first_then_soonest_due(
    client: TestClient, session: Session
) -> None:
    routine_soon = _referral(session, due_at=T0 + timedelta(hours=1))
    urgent_late = _referral(session, priority="urgent", due_at=T0 + timedelta(hours=5))
    routine_late = _referral(session, due_at=T0 + timedelta(hours=3))
    urgent_soon = _referral(session, priority="urgent", due_at=T0 + timedelta(hours=2))
    routine_overdue = _referral(session, due_at=T0 - timedelta(hours=1))

    listed = _ids(client, PHARMACY, order="urgency")

    assert listed == [
        str(r.id) for r in (urgent_soon, urgent_late, routine_overdue, routine_soon, routine_late)
    ]


def test_urgency_order_breaks_equal_due_times_by_id(client: TestClient, session: Session) -> None:
    made = [_referral(session, due_at=T0) for _ in range(4)]

    assert _ids(client, PHARMACY, order="urgency") == sorted(
        (str(r.id) for r in made), key=uuid.UUID
    )


def test_default_order_is_still_newest_first(client: TestClient, session: Session) -> None:
    routine = _referral(session)
    urgent = _referral(session, priority="urgent")
    routine.created_at, urgent.created_at = T0 + timedelta(minutes=1), T0
    session.add_all([routine, urgent])
    session.commit()

    assert _ids(client, PHARMACY) == [str(routine.id), str(urgent.id)]
    assert _ids(client, PHARMACY, order="newest") == [str(routine.id), str(urgent.id)]


@pytest.mark.parametrize("limit", [1, 2, 3, 10])
def test_paging_over_urgency_order_returns_each_referral_once(
    client: TestClient, session: Session, limit: int
) -> None:
    specs = [
        ("urgent", T0),
        ("urgent", T0),  # a tie on rank and due time: the id decides
        ("urgent", T0 + timedelta(hours=2)),
        ("routine", T0 - timedelta(hours=2)),
        ("routine", T0),
        ("routine", T0),
        ("routine", T0 + timedelta(hours=1)),
    ]
    made = [_referral(session, priority=p, due_at=d) for p, d in specs]
    expected = [
        str(r.id) for r in sorted(made, key=lambda r: (r.priority != "urgent", r.due_at, r.id))
    ]

    pages = _pages(client, PHARMACY, order="urgency", limit=limit)

    assert [i for page in pages for i in page] == expected
    assert all(len(page) == limit for page in pages[:-1])


def test_inbox_combines_status_filter_and_urgency(client: TestClient, session: Session) -> None:
    accepted = _referral(session, priority="urgent", status=ReferralStatus.ACCEPTED)
    received_late = _referral(session, due_at=T0 + timedelta(hours=4))
    received_urgent = _referral(session, priority="urgent", due_at=T0 + timedelta(hours=8))

    assert _ids(client, PHARMACY, status="received", order="urgency") == [
        str(received_urgent.id),
        str(received_late.id),
    ]
    assert _ids(client, PHARMACY, status="accepted", order="urgency") == [str(accepted.id)]
    assert _ids(client, auth(Role.PHARMACY, "FA002"), order="urgency") == []


def test_due_and_overdue_filters_cover_open_referrals_only(
    client: TestClient, session: Session
) -> None:
    now = datetime.now(UTC)
    due = _referral(session, due_at=now + timedelta(hours=2))
    due_accepted = _referral(
        session, due_at=now + timedelta(days=3), status=ReferralStatus.ACCEPTED
    )
    overdue = _referral(session, due_at=now - timedelta(minutes=5))
    overdue_accepted = _referral(
        session, due_at=now - timedelta(days=2), status=ReferralStatus.ACCEPTED
    )
    for closed in (ReferralStatus.COMPLETED, ReferralStatus.DECLINED, ReferralStatus.NO_CONTACT):
        _referral(session, due_at=now - timedelta(hours=1), status=closed)
        _referral(session, due_at=now + timedelta(hours=1), status=closed)

    assert sorted(_ids(client, PHARMACY, due="due")) == sorted([str(due.id), str(due_accepted.id)])
    assert sorted(_ids(client, PHARMACY, due="overdue")) == sorted(
        [str(overdue.id), str(overdue_accepted.id)]
    )
    assert _ids(client, PHARMACY, due="overdue", status="accepted") == [str(overdue_accepted.id)]
    assert _ids(client, PHARMACY, due="overdue", status="completed") == []
    assert _ids(client, GP, due="overdue", order="urgency") == [
        str(overdue_accepted.id),
        str(overdue.id),
    ]


def test_paging_keeps_the_due_filter(client: TestClient, session: Session) -> None:
    now = datetime.now(UTC)
    overdue = [_referral(session, due_at=now - timedelta(hours=h)) for h in (1, 2, 3)]
    _referral(session, due_at=now + timedelta(hours=1))

    pages = _pages(client, PHARMACY, due="overdue", order="urgency", limit=2)

    assert [i for page in pages for i in page] == [str(r.id) for r in reversed(overdue)]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"due": "late"}, "query.due"),
        ({"due": ""}, "query.due"),
        ({"order": "oldest"}, "query.order"),
        ({"order": "URGENCY"}, "query.order"),
    ],
)
def test_bad_inbox_parameters_are_422(
    client: TestClient, params: dict[str, str], field: str
) -> None:
    response = client.get(URL, headers=PHARMACY, params=params)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationFailed"
    assert [f["field"] for f in response.json()["fields"]] == [field]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _b64(f"2026-11-20T09:00:00+00:00|{uuid.uuid4()}"),  # a newest-first cursor
        _b64(f"2|2026-11-20T09:00:00+00:00|{uuid.uuid4()}"),
        _b64(f"x|2026-11-20T09:00:00+00:00|{uuid.uuid4()}"),
        _b64(f"0|2026-11-20T09:00:00|{uuid.uuid4()}"),  # no offset
        _b64("0|2026-11-20T09:00:00+00:00|not-a-uuid"),
        "!!!!",
    ],
)
def test_bad_urgency_cursor_is_400(client: TestClient, cursor: str) -> None:
    response = client.get(URL, headers=PHARMACY, params={"order": "urgency", "cursor": cursor})

    assert response.status_code == 400, response.text
    assert response.json() == {"error": "BadRequest", "detail": "The paging cursor is not valid."}


def test_urgency_cursor_is_refused_by_newest_order(client: TestClient, session: Session) -> None:
    for _ in range(2):
        _referral(session)
    cursor = client.get(URL, headers=PHARMACY, params={"order": "urgency", "limit": 1}).json()[
        "next_cursor"
    ]

    response = client.get(URL, headers=PHARMACY, params={"cursor": cursor})

    assert cursor is not None
    assert response.status_code == 400
