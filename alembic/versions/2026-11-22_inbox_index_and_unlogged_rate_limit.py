"""inbox index in inbox order; rate limit counters unlogged on PostgreSQL

The pharmacy inbox orders by urgency (priority descending: "urgent" before "routine"), then due
time and id. The index on referral (pharmacy_ods, status, due_at) found a pharmacy's received
referrals but left every one of them to be fetched and sorted; its replacement holds them in the
inbox's order, so a page of 50 reads 51 index entries. It still serves every lookup by pharmacy
and state.

The rate limit's counters are disposable (a crash may forget at most a minute's counts), so on
PostgreSQL their table is UNLOGGED: an update writes no WAL and its commit waits for no disk
flush, where before each request had to ask for that with its own SET LOCAL round trip.

Revision ID: 5b0f1c7e2d94
Revises: e721986117e6
Create Date: 2026-11-22 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "5b0f1c7e2d94"
down_revision: str | None = "e721986117e6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.create_index(
            "ix_referral_pharmacy_ods_status_priority_due_at",
            ["pharmacy_ods", "status", sa.desc(sa.column("priority")), "due_at", "id"],
            unique=False,
        )
        batch_op.drop_index("ix_referral_pharmacy_ods_status_due_at")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rate_limit_counter SET UNLOGGED")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rate_limit_counter SET LOGGED")
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.create_index(
            "ix_referral_pharmacy_ods_status_due_at",
            ["pharmacy_ods", "status", "due_at"],
            unique=False,
        )
        batch_op.drop_index("ix_referral_pharmacy_ods_status_priority_due_at")
