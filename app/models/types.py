"""Constrained types shared by the JSON schemas (one place, as the style guide asks)."""

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

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
