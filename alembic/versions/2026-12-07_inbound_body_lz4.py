"""inbound message bodies compressed with lz4

`inbound_message.body` keeps every message as it arrived. A BaRS message (about 20 KB) is
compressed as it is stored, and PostgreSQL's default method, pglz, cost 0.33-0.40 ms of server
CPU a message here, where lz4 costs 0.14 ms (stored size 6.4 KB against 5.3 KB). Only new
values are compressed with lz4; stored ones stay as they are, and both read back the same.

PostgreSQL 14 and later built with lz4 (the Debian, Ubuntu and official container builds)
take it; elsewhere the column keeps pglz and nothing else changes. SQLite has no such setting.

Revision ID: 3c8e5b7a1d40
Revises: 9d4e6a1f3c27
Create Date: 2026-12-07 22:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3c8e5b7a1d40"
down_revision: str | None = "9d4e6a1f3c27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or bind.dialect.server_version_info < (14,):
        return
    op.execute(
        f"""
        DO $$
        BEGIN
            ALTER TABLE inbound_message ALTER COLUMN body SET COMPRESSION {method};
        EXCEPTION WHEN feature_not_supported THEN
            RAISE NOTICE 'compression method {method} is not supported by this server';
        END $$
        """
    )


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")
