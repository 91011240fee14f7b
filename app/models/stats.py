"""Uptake statistics: the question asked and the published answer (read from the rollups)."""

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField

from app.models.enums import Pathway, ReferralSource, Service
from app.models.stats_examples import (
    CONCENTRATION_REPORT_EXAMPLE,
    DMS_REPORT_EXAMPLE,
    INACTIVE_PRACTICES_EXAMPLE,
    SERVICE_COUNTS_REPORT_EXAMPLE,
    TREND_REPORT_EXAMPLE,
    UPTAKE_REPORT_EXAMPLE,
)


class GroupBy(StrEnum):
    PCN = "pcn"
    PRACTICE = "practice"
    PHARMACY = "pharmacy"
    PLACE = "place"
    ICB = "icb"


class Interval(StrEnum):
    MONTH = "month"
    WEEK = "week"
    NONE = "none"


class Breakdown(StrEnum):
    SOURCE = "source"
    PATHWAY = "pathway"


class UptakeQuery(BaseModel):
    """What an analyst asks: one row per group, period (and breakdown value)."""

    model_config = ConfigDict(extra="forbid")

    group_by: GroupBy = GroupBy.PCN
    service: Service | None = None
    source: ReferralSource | None = None
    pathway: Pathway | None = None
    from_date: date = PydanticField(description="First day (England local date), inclusive")
    to_date: date = PydanticField(description="Last day (England local date), inclusive")
    interval: Interval = Interval.MONTH
    breakdown: Breakdown | None = None


class Disclosure(BaseModel):
    """The small-number rule applied to a response (stated in every response)."""

    exact: bool = PydanticField(description="True only for admin: counts are not suppressed")
    suppress_from: int
    suppress_to: int
    round_to: int
    description: str


class UptakeRow(BaseModel):
    """One group in one period. A suppressed figure is null and named in `suppressed`; it is never
    published as zero."""

    group_kind: GroupBy | None = PydanticField(description="None on the all-groups total row")
    group_code: str
    group_name: str
    period_start: date
    period_end: date
    source: ReferralSource | None = None
    pathway: Pathway | None = None
    made: int | None = PydanticField(
        description="Referrals made (pharmacy rows: received, forwarded copies included)"
    )
    accepted: int | None
    declined: int | None
    forwarded: int | None
    returned: int | None
    cancelled: int | None
    no_contact: int | None
    completed: int | None
    completion_rate: float | None
    median_hours_to_completion: float | None
    p90_hours_to_completion: float | None
    registered_patients: int | None = PydanticField(
        description="List size in force for the period; none for pharmacy rows"
    )
    per_1000_patients: float | None
    suppressed: list[str] = PydanticField(default_factory=list)
    partial: bool = PydanticField(
        default=False, description="The period is cut short by the question's from or to date"
    )
    breakdown: Breakdown | None = PydanticField(
        default=None,
        description="Set on a breakdown row (then a null source or pathway means none); "
        "None on the group's whole row",
    )


class UptakeReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": UPTAKE_REPORT_EXAMPLE})

    query: UptakeQuery
    disclosure: Disclosure
    rows: list[UptakeRow]
    totals: list[UptakeRow] = PydanticField(
        description="One all-groups row per period (and breakdown value)"
    )


# ---- the questions ICB staff ask ----------------------------------------------------------------


class SourceScope(StrEnum):
    """Which referrals count as a practice's: those it made itself, or those of its registered
    patients from any source."""

    GP_PRACTICE = "gp-practice"
    ALL = "all"


class StatsRow(BaseModel):
    """A group in a period (the common columns of the group tables)."""

    group_kind: GroupBy | None = PydanticField(description="None on the all-groups total row")
    group_code: str
    group_name: str
    period_start: date
    period_end: date
    partial: bool = False
    suppressed: list[str] = PydanticField(default_factory=list)


class InactivePracticesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: Service | None = None
    source: SourceScope = SourceScope.GP_PRACTICE
    from_date: date
    to_date: date


class InactivePractice(BaseModel):
    """A practice that made no referral in the period (its PCN and place on the period's last
    day in scope)."""

    practice_code: str
    practice_name: str
    pcn_code: str | None
    pcn_name: str | None
    place_code: str | None
    place_name: str | None
    registered_patients: int | None


class InactivePracticesReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": INACTIVE_PRACTICES_EXAMPLE})

    query: InactivePracticesQuery
    disclosure: Disclosure
    practices_in_scope: int = PydanticField(description="Practices in the caller's scope")
    count: int = PydanticField(description="Practices that made no referral")
    rows: list[InactivePractice]


class ConcentrationQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: Service | None = None
    source: SourceScope = SourceScope.GP_PRACTICE
    from_date: date
    to_date: date
    top_percent: float = PydanticField(default=10.0, gt=0, le=100)
    share_percent: float = PydanticField(default=50.0, gt=0, le=100)


class ConcentrationRow(BaseModel):
    """How unevenly the practices of a place refer to a service."""

    service: Service | None = PydanticField(description="None: all services")
    place_code: str | None = PydanticField(description="None: all places in scope")
    place_name: str
    practices: int = PydanticField(description="Practices in the place during the period")
    practices_with_referrals: int
    referrals: int | None
    top_practices: int = PydanticField(description="The top top_percent of practices (rounded up)")
    top_referrals: int | None = PydanticField(description="Referrals made by the top practices")
    top_share: float | None = PydanticField(description="top_referrals / referrals (0-1)")
    practices_for_share: int | None = PydanticField(
        description="The fewest practices that made share_percent of the referrals"
    )
    practices_for_share_percent: float | None = PydanticField(
        description="practices_for_share as a percentage of practices"
    )
    suppressed: list[str] = PydanticField(default_factory=list)


class ConcentrationReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": CONCENTRATION_REPORT_EXAMPLE})

    query: ConcentrationQuery
    disclosure: Disclosure
    rows: list[ConcentrationRow]


class TrendQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_by: GroupBy = GroupBy.PCN
    service: Service | None = None
    source: ReferralSource | None = None
    pathway: Pathway | None = None
    from_date: date
    to_date: date


class TrendRow(StatsRow):
    """One group's month against the month before (whole calendar months)."""

    made: int | None
    previous_made: int | None = PydanticField(description="None when the group had no row then")
    change: int | None = PydanticField(description="made - previous_made, of the published values")
    change_percent: float | None = PydanticField(description="From unrounded counts")
    registered_patients: int | None
    per_1000_patients: float | None
    previous_per_1000_patients: float | None
    per_1000_change: float | None


class TrendReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": TREND_REPORT_EXAMPLE})

    query: TrendQuery
    disclosure: Disclosure
    rows: list[TrendRow]
    totals: list[TrendRow]


class ServiceCountsQuery(BaseModel):
    """A question about one service's own counters (blood pressure or DMS)."""

    model_config = ConfigDict(extra="forbid")

    group_by: GroupBy = GroupBy.PCN
    source: ReferralSource | None = None
    from_date: date
    to_date: date
    interval: Interval = Interval.MONTH


class BloodPressureRow(StatsRow):
    """Blood Pressure Check referrals of a period and what their checks led to."""

    made: int | None
    bp_checked: int | None = PydanticField(description="Clinic checks done")
    bp_abpm: int | None = PydanticField(description="Checks converted to ambulatory monitoring")
    bp_hypertension_confirmed: int | None
    abpm_rate: float | None = PydanticField(description="bp_abpm / bp_checked")
    hypertension_rate: float | None = PydanticField(
        description="bp_hypertension_confirmed / bp_checked"
    )
    hypertension_of_abpm_rate: float | None = PydanticField(
        description="bp_hypertension_confirmed / bp_abpm"
    )


class BloodPressureReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": SERVICE_COUNTS_REPORT_EXAMPLE})

    query: ServiceCountsQuery
    disclosure: Disclosure
    rows: list[BloodPressureRow]
    totals: list[BloodPressureRow]


class DmsRow(StatsRow):
    """Discharge Medicines Service referrals of a period and the stages completed."""

    made: int | None
    dms_stage1: int | None
    dms_stage1_within_72h: int | None = PydanticField(
        description="Stage 1 done within 72 hours of the referral"
    )
    dms_stage2: int | None
    dms_stage3: int | None
    stage1_within_72h_rate: float | None = PydanticField(
        description="dms_stage1_within_72h / dms_stage1"
    )
    stage3_rate: float | None = PydanticField(description="dms_stage3 / made")


class DmsReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": DMS_REPORT_EXAMPLE})

    query: ServiceCountsQuery
    disclosure: Disclosure
    rows: list[DmsRow]
    totals: list[DmsRow]
