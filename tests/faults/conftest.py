"""Fixtures for the fault tests: PostgreSQL-only gates and clean-up of rows live processes commit."""

from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy.engine import Engine

from app.db.base import utc_now
from tests.faults.live import delete_referrals_since


@pytest.fixture
def postgres(engine: Engine) -> Engine:
    """The test engine, when it is PostgreSQL (these tests need real concurrent writers)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("needs PostgreSQL (set PHARMREF_TEST_DATABASE_URL)")
    return engine


@pytest.fixture
def live_rows(engine: Engine) -> Iterator[datetime]:
    """The moment the test started; referrals created from then on are deleted afterwards."""
    started = utc_now()
    yield started
    delete_referrals_since(engine, started)
