"""area rollups

Uptake rollup rows of a third side, `area`: the practice side summed over the practices of each
PCN and over sources and pathways (org_ods, source and pathway ''), keyed by grain, period, PCN,
place, ICB and service (app/models/rollup.py). No schema change: this fills them from the practice
rows already there, for both grains; from now on every referral change writes them too.

Revision ID: e721986117e6
Revises: 643e33563cd7
Create Date: 2026-11-22 14:50:15.350719
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e721986117e6"
down_revision: str | None = "643e33563cd7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The additive columns of uptake_rollup at this revision.
_COUNTERS = (
    "made",
    "received",
    "accepted",
    "declined",
    "forwarded",
    "returned",
    "cancelled",
    "no_contact",
    "completed",
    "completion_hours_sum",
    "bp_checked",
    "bp_abpm",
    "bp_hypertension_confirmed",
    "dms_stage1",
    "dms_stage1_within_72h",
    "dms_stage2",
    "dms_stage3",
    *(
        f"completed_h{edge:03d}"
        for edge in (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 36, 48, 72, 96, 120, 168, 240, 336, 504, 720)
    ),
)
_KEYS = "grain, period_start, pcn_ods, place_ods, icb_ods, service"


def upgrade() -> None:
    op.execute(
        f"INSERT INTO uptake_rollup (grain, period_start, side, org_ods, pcn_ods, place_ods, "
        f"icb_ods, service, source, pathway, {', '.join(_COUNTERS)}) "
        f"SELECT grain, period_start, 'area', '', pcn_ods, place_ods, icb_ods, service, '', '', "
        f"{', '.join(f'sum({name})' for name in _COUNTERS)} "
        f"FROM uptake_rollup WHERE side = 'practice' GROUP BY {_KEYS}"
    )


def downgrade() -> None:
    op.execute("DELETE FROM uptake_rollup WHERE side = 'area'")
