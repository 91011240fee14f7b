"""Two pharmacists acting on one referral at the same moment, on real connections: one wins."""

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.core.errors import AppError
from app.db.session import make_engine
from app.models.delivery import OutboxMessage
from app.models.enums import ReferralStatus, Role
from app.models.event import ReferralEvent
from app.models.referral import InboundMessage, Referral
from app.models.rollup import UptakeRollup
from app.models.user import User
from app.services import lifecycle
from tests.factories import make_referral

PHARMACIST = User(subject="test:pharmacist", org="FA001", role=Role.PHARMACY)


@pytest.fixture
def committed_referral(engine: Engine) -> Iterator[Referral]:
    with Session(engine, expire_on_commit=False) as session:
        referral = make_referral(session)
    yield referral
    with Session(engine) as session:
        for table in (OutboxMessage, ReferralEvent, InboundMessage):
            session.execute(delete(table).where(table.referral_id == referral.id))  # type: ignore[arg-type]
        session.execute(delete(Referral).where(Referral.id == referral.id))  # type: ignore[arg-type]
        session.execute(delete(UptakeRollup))
        session.commit()


@pytest.mark.parametrize("rounds", range(5))
def test_concurrent_accept_and_decline_one_wins(
    engine: Engine, committed_referral: Referral, rounds: int
) -> None:
    del rounds
    # The application's own engine settings (on SQLite: WAL and a busy timeout, no read locks held),
    # not the test engine's savepoint mode.
    app_engine = make_engine(engine.url.render_as_string(hide_password=False))
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def act(action: str) -> None:
        with Session(app_engine, expire_on_commit=False) as session:
            referral = session.get(Referral, committed_referral.id)
            assert referral is not None
            barrier.wait()
            try:
                if action == "accept":
                    lifecycle.accept_referral(
                        session=session, referral=referral, caller=PHARMACIST, version=1
                    )
                else:
                    lifecycle.decline_referral(
                        session=session,
                        referral=referral,
                        caller=PHARMACIST,
                        version=1,
                        reason_code="no-capacity",
                        reason=None,
                    )
                outcomes.append(f"{action}:ok")
            except AppError as exc:
                session.rollback()
                outcomes.append(f"{action}:{exc.status_code}")

    threads = [threading.Thread(target=act, args=(a,)) for a in ("accept", "decline")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    app_engine.dispose()
    assert sorted(o.split(":")[1] for o in outcomes) == ["412", "ok"]
    with Session(engine) as session:
        referral = session.get(Referral, committed_referral.id)
        assert referral is not None
        assert referral.version == 2
        assert referral.status in (ReferralStatus.ACCEPTED, ReferralStatus.DECLINED)
        events = session.exec(
            select(ReferralEvent).where(ReferralEvent.referral_id == referral.id)
        ).all()
        assert sorted(e.action for e in events) == sorted(
            ["created", "accepted" if referral.status is ReferralStatus.ACCEPTED else "declined"]
        )
