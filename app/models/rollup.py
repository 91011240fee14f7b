"""Uptake rollups: referral counts and timing histograms by period, kept up to date in the same
transaction as every referral change, so statistics never scan the referral table.

One row per (grain, period, side, organisation, PCN, place, ICB, service, source, pathway):
- `grain` is `day` or `month` (England local dates); month rows let a 12-month question read
  twelve rows per group instead of 365.
- `side` is `practice` (the patient's registered practice, with the PCN, place and ICB it belonged
  to on the referral's date), `pharmacy` (the receiving pharmacy; no hierarchy) or `area`: the
  practice side summed over the practices of each PCN and over sources and pathways (`org_ods`,
  `source` and `pathway` are ''), keyed by PCN, place, ICB and service only. Per-PCN, place or ICB
  questions without a source or pathway read these: their number grows with the directory and the
  months asked, not with the referrals (at most PCNs x services a month), where the practice rows
  multiply by practices, sources and pathways as more combinations fill in.
- Counts are by cohort: every outcome is counted in the period the referral was made in.
"""

from datetime import date

from sqlalchemy import Float, Index, Integer
from sqlmodel import Field, SQLModel

# Completion-time histogram: bucket i counts completions taking [EDGES[i], EDGES[i+1]) hours; the
# last bucket is open-ended.
HOUR_EDGES: tuple[int, ...] = (
    0,
    1,
    2,
    3,
    4,
    6,
    8,
    12,
    16,
    24,
    36,
    48,
    72,
    96,
    120,
    168,
    240,
    336,
    504,
    720,
)
HOUR_COLUMNS: tuple[str, ...] = tuple(f"completed_h{edge:03d}" for edge in HOUR_EDGES)

OUTCOME_COUNTS: tuple[str, ...] = (
    "accepted",
    "declined",
    "forwarded",
    "returned",
    "cancelled",
    "no_contact",
    "completed",
)
SERVICE_COUNTS: tuple[str, ...] = (
    "bp_checked",
    "bp_abpm",
    "bp_hypertension_confirmed",
    "dms_stage1",
    "dms_stage1_within_72h",
    "dms_stage2",
    "dms_stage3",
)
# Every additive column, in table order.
COUNTERS: tuple[str, ...] = (
    "made",
    "received",
    *OUTCOME_COUNTS,
    *SERVICE_COUNTS,
    *HOUR_COLUMNS,
)
KEY_COLUMNS: tuple[str, ...] = (
    "grain",
    "period_start",
    "side",
    "org_ods",
    "pcn_ods",
    "place_ods",
    "icb_ods",
    "service",
    "source",
    "pathway",
)


def _count() -> int:
    return Field(default=0, sa_type=Integer, nullable=False)  # type: ignore[no-any-return]


class UptakeRollup(SQLModel, table=True):
    """Additive counters per period and group. Empty strings, not NULLs, stand for "none" in the
    key (a patient with no registered practice, a practice in no PCN, a service with no pathway),
    so the primary key treats them as equal."""

    __tablename__ = "uptake_rollup"
    __table_args__ = (
        Index("ix_uptake_rollup_grain_side_period_start", "grain", "side", "period_start"),
    )

    grain: str = Field(primary_key=True, max_length=5)
    period_start: date = Field(primary_key=True)
    side: str = Field(primary_key=True, max_length=8)
    org_ods: str = Field(primary_key=True, max_length=10)
    pcn_ods: str = Field(primary_key=True, max_length=10)
    place_ods: str = Field(primary_key=True, max_length=10)
    icb_ods: str = Field(primary_key=True, max_length=10)
    service: str = Field(primary_key=True, max_length=20)
    source: str = Field(primary_key=True, max_length=20)
    pathway: str = Field(primary_key=True, max_length=30)

    made: int = _count()
    received: int = _count()
    accepted: int = _count()
    declined: int = _count()
    forwarded: int = _count()
    returned: int = _count()
    cancelled: int = _count()
    no_contact: int = _count()
    completed: int = _count()
    completion_hours_sum: float = Field(default=0.0, sa_type=Float, nullable=False)
    bp_checked: int = _count()
    bp_abpm: int = _count()
    bp_hypertension_confirmed: int = _count()
    dms_stage1: int = _count()
    dms_stage1_within_72h: int = _count()
    dms_stage2: int = _count()
    dms_stage3: int = _count()
    completed_h000: int = _count()
    completed_h001: int = _count()
    completed_h002: int = _count()
    completed_h003: int = _count()
    completed_h004: int = _count()
    completed_h006: int = _count()
    completed_h008: int = _count()
    completed_h012: int = _count()
    completed_h016: int = _count()
    completed_h024: int = _count()
    completed_h036: int = _count()
    completed_h048: int = _count()
    completed_h072: int = _count()
    completed_h096: int = _count()
    completed_h120: int = _count()
    completed_h168: int = _count()
    completed_h240: int = _count()
    completed_h336: int = _count()
    completed_h504: int = _count()
    completed_h720: int = _count()
