"""index consultation recorded_at for summary search

Keyset paging of GET /fhir/Composition runs in (recorded_at, id) order.

Revision ID: 78495322b0a8
Revises: 974934e48e9a
Create Date: 2026-11-22 11:03:06.116980
"""

from collections.abc import Sequence

from alembic import op

revision: str = "78495322b0a8"
down_revision: str | None = "974934e48e9a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consultation", schema=None) as batch_op:
        batch_op.create_index("ix_consultation_recorded_at_id", ["recorded_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("consultation", schema=None) as batch_op:
        batch_op.drop_index("ix_consultation_recorded_at_id")
