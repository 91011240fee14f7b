"""SNOMED CT codes with a bad check digit in elements pharmref does not interpret: warnings, named
by where they stand (the official examples carry such codes)."""

from app.core.config import settings
from app.fhir import bars
from tests.fhir.test_raw_checks import (
    OBSERVATION,
    PATIENT,
    SERVICE_REQUEST,
    load,
    with_bad_codes,
)

CHECK_DIGIT = "SNOMED CT code fails its check digit"


def warned(bundle: dict[str, object]) -> list[str | None]:
    message = bars.parse_message(bundle, supported_versions=settings.supported_bars_versions)
    return [w.expression for w in message.warnings if w.diagnostics.startswith(CHECK_DIGIT)]


def test_bad_codes_are_warned_where_they_stand_and_skipped_where_interpreted() -> None:
    before = warned(load())

    after = warned(with_bad_codes(load()))

    added = [expression for expression in after if expression not in before]
    assert added == [
        f"Bundle.entry[{SERVICE_REQUEST}].resource.contained[0].code.coding[0].code",
        f"Bundle.entry[{PATIENT}].resource.extension[0].valueCoding.code",
    ]
    # Observation.component is interpreted: a bad code there is the referral layer's error.
    assert not any(f"entry[{OBSERVATION}].resource.component" in e for e in after if e)
