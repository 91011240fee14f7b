"""A change's writes (app/db/writes.py): written whole or not at all, on both databases; on
PostgreSQL as one statement that psycopg can keep parsed, carrying every value as the
statement-by-statement path would write it."""

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg.pq import Trace
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import Session, col, create_engine, select

from app.db import writes
from app.db.session import request_session
from app.models.enums import ReferralStatus, Role
from app.models.event import ReferralEvent
from app.models.referral import InboundMessage, Referral
from app.models.rollup import KEY_COLUMNS, UptakeRollup
from tests.factories import make_referral

_REFERRAL = Referral.__table__  # type: ignore[attr-defined]
_EVENT = ReferralEvent.__table__  # type: ignore[attr-defined]
_ROLLUP = UptakeRollup.__table__  # type: ignore[attr-defined]
ORG = "TESTWRITE"


def _key(**overrides: Any) -> dict[str, Any]:
    key: dict[str, Any] = dict.fromkeys(KEY_COLUMNS, "")
    key |= {"grain": "day", "period_start": date(2026, 1, 5), "side": "pharmacy", "org_ods": ORG}
    return key | overrides


def _event(referral: Referral, action: str, **overrides: Any) -> dict[str, Any]:
    return {
        "referral_id": referral.id,
        "action": action,
        "from_status": None,
        "to_status": None,
        "version": referral.version,
        "actor_subject": "test",
        "actor_org": "FA001",
        "actor_role": Role.PHARMACY,
        "notify_referrer": False,
        "detail": {"nested": [1, "two", None], "at": "x"},
        "at": datetime(2026, 1, 5, 9, 30, 1, 123456, tzinfo=UTC),
        **overrides,
    }


def _counts(session: Session, **key: Any) -> dict[str, Any] | None:
    query = select(UptakeRollup)
    for name, value in _key(**key).items():
        query = query.where(col(getattr(UptakeRollup, name)) == value)
    row = session.exec(query).first()
    return None if row is None else row.model_dump()


def _events(session: Session, referral: Referral) -> list[str]:
    return list(
        session.exec(
            select(ReferralEvent.action)
            .where(ReferralEvent.referral_id == referral.id)
            .order_by(col(ReferralEvent.id))
        )
    )


def _accept(session: Session, referral: Referral, version: int) -> None:
    writes.compare_and_set(
        session,
        _REFERRAL,
        key=referral.id,
        version=version,
        values={"status": ReferralStatus.ACCEPTED, "version": version + 1},
    )


def test_a_change_is_written_whole(session: Session) -> None:
    referral = make_referral(session)
    _accept(session, referral, 1)
    for action in ("first", "second", "third"):
        writes.insert_row(session, _EVENT, _event(referral, action))
    writes.add_counts(session, _ROLLUP, _key(), {"accepted": 1, "completion_hours_sum": 1.5})
    writes.add_counts(session, _ROLLUP, _key(), {"accepted": 2})
    writes.add_counts(session, _ROLLUP, _key(grain="month"), {"made": 1})

    writes.commit(session)

    session.refresh(referral)
    assert (referral.status, referral.version) == (ReferralStatus.ACCEPTED, 2)
    # rows of one table keep the order they were added in (their serial ids follow it)
    assert _events(session, referral)[-3:] == ["first", "second", "third"]
    day = _counts(session)
    assert day is not None
    assert (day["accepted"], day["completion_hours_sum"], day["made"]) == (3, 1.5, 0)
    month = _counts(session, grain="month")
    assert month is not None
    assert (month["made"], month["accepted"]) == (1, 0)


def test_counts_add_to_an_existing_row(session: Session) -> None:
    writes.add_counts(session, _ROLLUP, _key(), {"received": 1})
    writes.commit(session)
    writes.add_counts(session, _ROLLUP, _key(), {"received": 1, "declined": 1})
    writes.commit(session)

    row = _counts(session)
    assert row is not None
    assert (row["received"], row["declined"], row["accepted"]) == (2, 1, 0)


def test_a_stale_version_writes_nothing(session: Session) -> None:
    referral = make_referral(session)
    events_before = _events(session, referral)
    _accept(session, referral, 7)  # the referral is at version 1
    writes.insert_row(session, _EVENT, _event(referral, "never"))
    writes.add_counts(session, _ROLLUP, _key(), {"accepted": 1})

    with pytest.raises(writes.StaleWrite):
        writes.commit(session)

    session.refresh(referral)
    assert (referral.status, referral.version) == (ReferralStatus.RECEIVED, 1)
    assert _events(session, referral) == events_before
    assert _counts(session) is None
    assert not writes.pending(session)


def test_a_unique_violation_writes_nothing_not_even_the_guard(session: Session) -> None:
    referral = make_referral(session)
    _accept(session, referral, 1)
    writes.add_counts(session, _ROLLUP, _key(), {"accepted": 1})
    duplicate = writes.row_of(referral)  # the same id and reference as a stored referral
    writes.insert_row(session, _REFERRAL, duplicate)

    with pytest.raises(IntegrityError):
        writes.commit(session)

    session.refresh(referral)
    assert (referral.status, referral.version) == (ReferralStatus.RECEIVED, 1)
    assert _counts(session) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"at": datetime(2026, 1, 5, 9, 30)},  # no time zone
        {"to_status": "finished"},  # not a ReferralStatus
    ],
)
def test_values_a_column_refuses_write_nothing(session: Session, bad: dict[str, Any]) -> None:
    referral = make_referral(session)
    events_before = _events(session, referral)
    writes.insert_row(session, _EVENT, _event(referral, "bad", **bad))
    writes.add_counts(session, _ROLLUP, _key(), {"made": 1})

    with pytest.raises((ValueError, LookupError, StatementError)):
        writes.commit(session)

    assert _events(session, referral) == events_before
    assert _counts(session) is None


def test_a_plain_commit_writes_what_is_pending_and_a_rollback_drops_it(session: Session) -> None:
    writes.add_counts(session, _ROLLUP, _key(), {"made": 1})
    session.commit()
    session.exec(select(UptakeRollup.made).limit(1))  # a transaction, which rolls back
    writes.add_counts(session, _ROLLUP, _key(), {"made": 5})
    session.rollback()
    writes.commit(session)

    row = _counts(session)
    assert row is not None
    assert row["made"] == 1


def test_row_of_leaves_a_serial_id_to_the_database() -> None:
    event_row = writes.row_of(
        ReferralEvent(
            referral_id=uuid.uuid4(),
            action="x",
            version=1,
            actor_subject="s",
            actor_org="FA001",
            actor_role=Role.PHARMACY,
        )
    )
    assert "id" not in event_row
    assert event_row["action"] == "x"


# ---- PostgreSQL: one statement ------------------------------------------------------------------


def _compiled(session: Session) -> tuple[str, dict[str, Any]]:
    """The text psycopg is given, and every parameter it names."""
    work = session.info[writes._PENDING]
    statement, parameters = writes._one_statement(work)
    sql, constants = statement.postgresql()
    return sql, constants | parameters


def test_the_statements_of_the_hot_changes_stay_within_psycopgs_parse_cache(
    session: Session,
) -> None:
    """psycopg re-parses a statement's placeholders on every execution when it is over 4,096
    bytes or 50 parameters (psycopg._queries); each table's rows travel as one JSON parameter."""
    referral = make_referral(session)
    # intake: the referral, its event, its inbound message, six rollup rows
    new = Referral.model_validate(referral.model_dump() | {"id": uuid.uuid4(), "reference": "X"})
    writes.insert(session, new)
    writes.insert_row(session, _EVENT, _event(new, "created"))
    writes.insert_row(session, _EVENT, _event(new, "second event"))
    for side in ("practice", "pharmacy", "area"):
        for grain in ("day", "month"):
            writes.add_counts(session, _ROLLUP, _key(side=side, grain=grain), {"received": 1})
    _accept(session, referral, 1)

    sql, parameters = _compiled(session)
    writes.discard(session)

    assert len(sql.encode()) <= 4096, sql
    assert len(parameters) <= 50


@pytest.fixture
def postgres(engine: Engine) -> Iterator[Engine]:
    if engine.dialect.name != "postgresql":
        pytest.skip("the one-statement write is PostgreSQL's")
    own = create_engine(engine.url.render_as_string(hide_password=False))
    yield own
    with Session(own) as cleanup:
        cleanup.execute(delete(UptakeRollup).where(col(UptakeRollup.org_ods) == ORG))
        cleanup.commit()
    own.dispose()


def _sent(trace: Path) -> list[str]:
    """The messages libpq sent the server (its protocol trace): Parse, Bind, Query and so on."""
    messages = [line.split("\t") for line in trace.read_text().splitlines()]
    return [parts[2] for parts in messages if parts[0] == "F"]


def test_a_request_writes_its_change_in_one_autocommitted_statement(
    postgres: Engine, tmp_path: Path
) -> None:
    session = request_session(postgres)
    trace = tmp_path / "libpq.trace"
    try:
        writes.add_counts(session, _ROLLUP, _key(), {"made": 1, "completion_hours_sum": 0.25})
        writes.add_counts(session, _ROLLUP, _key(grain="month"), {"made": 1})
        driver = session.get_bind().connection.driver_connection
        assert driver is not None
        with trace.open("w") as sink:
            driver.pgconn.trace(sink.fileno())
            driver.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
            writes.commit(session)
            driver.pgconn.untrace()
        assert not session.in_database_transaction()
    finally:
        session.close()

    sent = _sent(trace)
    assert sent.count("Bind") == 1  # one statement
    assert "Query" not in sent  # no BEGIN or COMMIT
    with Session(postgres) as other:  # committed: another connection sees it
        row = _counts(other)
    assert row is not None
    assert (row["made"], row["completion_hours_sum"]) == (1, 0.25)


def test_json_carries_every_value_as_the_statement_by_statement_path_writes_it(
    session: Session,
) -> None:
    """The same rows written both ways read back equal, column by column: timestamps to the
    microsecond with their zone, dates, floats, booleans, enums, NULLs and nested JSON."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("the JSON carriage is PostgreSQL's")
    referral = make_referral(session)
    base = referral.model_dump() | {
        "bmi": 23.456789,
        "bp_measured_at": datetime(2026, 1, 5, 23, 59, 59, 999999, tzinfo=UTC),
        "discharged_at": datetime(2026, 1, 4, 8, 0, tzinfo=UTC) + timedelta(microseconds=1),
        "discharge_medicines": [{"name": "Médicament “quoted”", "dose": None, "n": 2.5}],
        "abpm_requested": True,
        "notes": "line one\nline two \\ backslash",
        "patient_phone": None,
    }
    rows = []
    for way in ("one statement", "statement by statement"):
        model = Referral.model_validate(base | {"id": uuid.uuid4(), "reference": way[:20]})
        writes.insert(session, model)
        if way == "one statement":
            writes.commit(session)
        else:
            writes.write_pending(session)
            session.commit()
        stored = session.exec(select(Referral).where(col(Referral.id) == model.id)).one()
        rows.append(stored.model_dump(exclude={"id", "reference"}))
        session.expunge(stored)

    assert rows[0] == rows[1]


def test_construct_gives_the_model_its_constructor_would() -> None:
    given: dict[str, Any] = {
        "sender_ods": "A81001",
        "key_kind": "idempotency-key",
        "key": "k-1",
        "body_sha256": "0" * 64,
        "referral_id": uuid.uuid4(),
        "action": "create",
        "body": "{}",
        "received_at": datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    }

    built = writes.construct(InboundMessage, **given)
    made = InboundMessage(**given)

    assert built.model_dump() == made.model_dump()
    assert writes.row_of(built) == writes.row_of(made)


def test_construct_fills_defaults_and_refuses_a_missing_required_value() -> None:
    referral = writes.construct(Referral, **_required_referral_values())

    assert isinstance(referral.id, uuid.UUID)  # default_factory
    assert referral.version == 1
    assert referral.overdue_at is None
    values = _required_referral_values()
    del values["reason"]
    with pytest.raises(TypeError, match="reason"):
        writes.construct(Referral, **values)


def _required_referral_values() -> dict[str, Any]:
    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    return {
        "reference": "PF-TEST1-TEST2",
        "service": "pharmacy-first",
        "status": ReferralStatus.RECEIVED,
        "source": "gp-practice",
        "intake": "json",
        "priority": "routine",
        "referrer_ods": "A81001",
        "pharmacy_ods": "FA001",
        "patient_family_name": "Quillfeather",
        "patient_given_name": "Marisol",
        "patient_birth_date": date(1990, 1, 1),
        "patient_sex": "female",
        "reason": "Sore throat",
        "authored_at": now,
        "due_at": now,
        "created_at": now,
        "updated_at": now,
    }
