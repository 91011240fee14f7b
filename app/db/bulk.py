"""Helpers for bulk work an operator runs (`seed-demo`, `rollups rebuild`, the rebuild in
`migrate`), as against requests."""

from sqlalchemy import text
from sqlalchemy.orm import Session


def lift_statement_timeout(session: Session) -> None:
    """On PostgreSQL, no statement limit until the session's transaction ends (SET LOCAL). The
    limit every pooled connection carries (`PHARMREF_DB_STATEMENT_TIMEOUT_SECONDS`, see
    app/db/session.py) bounds what a request may wait; one aggregate over millions of referrals
    rightly takes longer."""
    if session.connection().dialect.name == "postgresql":
        session.execute(text("SET LOCAL statement_timeout = 0"))
