"""read audit and rate limit counters

The audit of reads of patient data (one read_audit row per read, one read_audit_referral row per
referral it disclosed), one rate_limit_counter row per client, and an index on referral (service,
status) for the /metrics count by service and state.

Revision ID: 643e33563cd7
Revises: 78495322b0a8
Create Date: 2026-11-22 11:05:56.174262
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import app.db.base
from alembic import op

revision: str = "643e33563cd7"
down_revision: str | None = "78495322b0a8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.create_index("ix_referral_service_status", ["service", "status"], unique=False)
    op.create_table(
        "rate_limit_counter",
        sa.Column("client_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("window_index", sa.Integer(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("client_key", name=op.f("pk_rate_limit_counter")),
    )
    op.create_table(
        "read_audit",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_subject", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("actor_org", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column(
            "actor_role",
            sa.Enum(
                "gp-practice",
                "pharmacy",
                "trust",
                "nhs111",
                "icb-analyst",
                "admin",
                name="role",
                native_enum=False,
            ),
            nullable=False,
        ),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("route", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("correlation_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("referral_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_read_audit")),
    )
    with op.batch_alter_table("read_audit", schema=None) as batch_op:
        batch_op.create_index("ix_read_audit_actor_org_id", ["actor_org", "id"], unique=False)
        batch_op.create_index(
            "ix_read_audit_actor_subject_id", ["actor_subject", "id"], unique=False
        )
        batch_op.create_index("ix_read_audit_at", ["at"], unique=False)

    op.create_table(
        "read_audit_referral",
        sa.Column(
            "read_audit_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("referral_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["read_audit_id"],
            ["read_audit.id"],
            name=op.f("fk_read_audit_referral_read_audit_id_read_audit"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "read_audit_id", "referral_id", name=op.f("pk_read_audit_referral")
        ),
    )
    with op.batch_alter_table("read_audit_referral", schema=None) as batch_op:
        batch_op.create_index(
            "ix_read_audit_referral_referral_id", ["referral_id", "read_audit_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("read_audit_referral", schema=None) as batch_op:
        batch_op.drop_index("ix_read_audit_referral_referral_id")

    op.drop_table("read_audit_referral")
    with op.batch_alter_table("read_audit", schema=None) as batch_op:
        batch_op.drop_index("ix_read_audit_at")
        batch_op.drop_index("ix_read_audit_actor_subject_id")
        batch_op.drop_index("ix_read_audit_actor_org_id")

    op.drop_table("read_audit")
    op.drop_table("rate_limit_counter")
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.drop_index("ix_referral_service_status")
