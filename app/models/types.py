"""Constrained types shared by the JSON schemas (one place, as the style guide asks)."""

import re
from datetime import date, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    StrictInt,
    StringConstraints,
)

from app.services import validation

OdsCode = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_upper=True, min_length=3, max_length=10),
    AfterValidator(validation.check_ods_code),
    Field(examples=["FA001"]),
]
NhsNumber = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    AfterValidator(validation.check_nhs_number),
    Field(examples=["9990000018"], description="10 digits, modulus 11 check digit"),
]
SnomedCode = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    AfterValidator(validation.check_snomed_code),
    Field(examples=["75367002"]),
]
DmdCode = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    AfterValidator(validation.check_snomed_code),
    Field(examples=["17346711000001106"], description="dm+d code (a SNOMED CT identifier)"),
]


_ISO_DATE_START = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_8601(value: object) -> object:
    """pydantic would also read a number, or a string of digits, as a Unix time (`since=0.5` is
    1970); pharmref's contract is ISO 8601 text, so anything else is refused."""
    if isinstance(value, date | datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE_START.match(value):
        raise ValueError("must be an ISO 8601 date or date-time text, e.g. 2026-11-20T09:30:00Z")
    return value


IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_8601)]
IsoDate = Annotated[date, BeforeValidator(_iso_8601)]

# The version an update is based on: a JSON integer only (lax validation read `true` as 1).
Version = Annotated[StrictInt, Field(ge=1)]
