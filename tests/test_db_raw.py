"""Statements run through the driver (app/db/raw.py): a model loaded from one is the model a query
gives, value for value and type for type; the session's own instance is reused; driver errors
are SQLAlchemy's exceptions."""

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from app.db import raw, writes
from app.models.enums import ReferralStatus
from app.models.referral import Referral
from tests.factories import make_referral

_TABLE = Referral.__table__  # type: ignore[attr-defined]
_ID = bindparam("id", type_=_TABLE.c.id.type)
BY_ID = raw.Statement(select(_TABLE).where(_TABLE.c.id == _ID))


def test_a_loaded_model_is_the_model_a_query_gives(session: Session) -> None:
    referral = make_referral(session)
    variant = Referral.model_validate(
        referral.model_dump()
        | {
            "id": uuid.uuid4(),
            "reference": "RAW-LOAD-1",
            "bmi": 27.25,
            "bp_measured_at": datetime(2026, 3, 1, 23, 30, 0, 654321, tzinfo=UTC),
            "discharge_medicines": [{"name": "Furosemide", "dose": None}],
            "status": ReferralStatus.ACCEPTED,
        }
    )
    writes.insert(session, variant)
    writes.commit(session)
    session.expunge_all()

    loaded = raw.load(session, Referral, BY_ID, {"id": variant.id})
    assert loaded is not None
    raw_values = loaded.model_dump()
    session.expunge_all()
    queried = session.get(Referral, variant.id)
    assert queried is not None

    assert raw_values == queried.model_dump()
    assert loaded.status is ReferralStatus.ACCEPTED  # the member, not its string
    assert loaded.bp_measured_at is not None
    assert loaded.bp_measured_at.tzinfo is not None
    assert loaded.bp_measured_at.utcoffset() == queried.bp_measured_at.utcoffset()  # type: ignore[union-attr]


def test_the_sessions_own_instance_is_reused(session: Session) -> None:
    referral = make_referral(session)

    loaded = raw.load(session, Referral, BY_ID, {"id": referral.id})

    assert loaded is referral


def test_a_loaded_model_is_held_by_the_session(session: Session) -> None:
    referral = make_referral(session)
    session.expunge_all()

    loaded = raw.load(session, Referral, BY_ID, {"id": referral.id})

    assert loaded in session
    assert session.get(Referral, referral.id) is loaded


def test_nothing_found_is_none(session: Session) -> None:
    assert raw.load(session, Referral, BY_ID, {"id": uuid.uuid4()}) is None


def test_a_driver_error_is_sqlalchemys_exception(session: Session) -> None:
    referral = make_referral(session)
    duplicate = raw.Statement(
        text("INSERT INTO referral SELECT * FROM referral WHERE id = :id").bindparams(
            bindparam("id", type_=_TABLE.c.id.type)
        )
    )

    with pytest.raises(IntegrityError):
        raw.commit(session, duplicate, {"id": referral.id})
    session.rollback()
