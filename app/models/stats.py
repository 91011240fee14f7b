"""Uptake statistics: the question asked and the published answer (read from the rollups)."""

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField

from app.models.enums import Pathway, ReferralSource, Service


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
    made: int | None
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


class UptakeReport(BaseModel):
    query: UptakeQuery
    disclosure: Disclosure
    rows: list[UptakeRow]
    totals: list[UptakeRow] = PydanticField(
        description="One all-groups row per period (and breakdown value)"
    )
