"""Consultation-time clinical rules, at every boundary of the national specifications."""

import pytest

from app.services.clinical_rules import (
    AbpmResult,
    BpCategory,
    Reading,
    abpm_result,
    bp_category,
    bp_recommended_outcome,
    clinic_reading,
    coc_supply_breaches,
    needs_urgent_escalation,
)


@pytest.mark.parametrize(
    ("systolic", "diastolic", "category"),
    [
        (89, 70, BpCategory.LOW),
        (90, 59, BpCategory.LOW),
        (90, 60, BpCategory.NORMAL),
        (139, 89, BpCategory.NORMAL),
        (140, 80, BpCategory.HIGH),
        (120, 90, BpCategory.HIGH),
        (140, 90, BpCategory.HIGH),
        (179, 119, BpCategory.HIGH),
        (180, 100, BpCategory.VERY_HIGH),
        (170, 120, BpCategory.VERY_HIGH),
        (180, 120, BpCategory.VERY_HIGH),
        (85, 95, BpCategory.HIGH),  # a high diastolic is not excused by a low systolic
    ],
)
def test_bp_category_boundaries(systolic: int, diastolic: int, category: BpCategory) -> None:
    assert bp_category(Reading(systolic, diastolic)) is category


def test_clinic_reading_is_the_lower_of_the_last_two() -> None:
    assert clinic_reading([Reading(170, 100), Reading(150, 95), Reading(145, 92)]) == Reading(
        145, 92
    )
    assert clinic_reading([Reading(150, 95), Reading(160, 99)]) == Reading(150, 95)
    assert clinic_reading([Reading(150, 95)]) == Reading(150, 95)
    with pytest.raises(ValueError, match="at least one"):
        clinic_reading([])


@pytest.mark.parametrize(
    ("readings", "average", "result"),
    [
        (13, Reading(150, 95), AbpmResult.TOO_FEW_READINGS),
        (14, Reading(134, 84), AbpmResult.NOT_CONFIRMED),
        (14, Reading(135, 80), AbpmResult.HYPERTENSION_CONFIRMED),
        (14, Reading(120, 85), AbpmResult.HYPERTENSION_CONFIRMED),
        (30, Reading(135, 85), AbpmResult.HYPERTENSION_CONFIRMED),
    ],
)
def test_abpm_result_boundaries(readings: int, average: Reading, result: AbpmResult) -> None:
    assert abpm_result(daytime_readings=readings, average=average) is result


@pytest.mark.parametrize(
    ("category", "irregular", "expected"),
    [
        (BpCategory.VERY_HIGH, False, True),
        (BpCategory.NORMAL, True, True),
        (BpCategory.HIGH, False, False),
        (BpCategory.LOW, False, False),
    ],
)
def test_urgent_escalation(category: BpCategory, irregular: bool, expected: bool) -> None:
    assert needs_urgent_escalation(category=category, irregular_pulse=irregular) is expected


@pytest.mark.parametrize(
    ("category", "irregular", "abpm", "pending", "outcome"),
    [
        (BpCategory.VERY_HIGH, False, AbpmResult.NOT_CONFIRMED, False, "referred-gp-same-day"),
        (BpCategory.NORMAL, True, None, False, "referred-gp-irregular-pulse"),
        (
            BpCategory.HIGH,
            False,
            AbpmResult.HYPERTENSION_CONFIRMED,
            False,
            "referred-gp-hypertension",
        ),
        (BpCategory.HIGH, False, AbpmResult.TOO_FEW_READINGS, False, "abpm-repeat"),
        (BpCategory.HIGH, False, AbpmResult.NOT_CONFIRMED, False, "advice-no-hypertension"),
        (BpCategory.HIGH, False, None, True, "abpm-fitted"),
        (BpCategory.HIGH, False, None, False, "abpm-offered"),
        (BpCategory.LOW, False, None, False, "advice-low-bp"),
        (BpCategory.NORMAL, False, None, False, "advice-normal-bp"),
    ],
)
def test_bp_recommended_outcome(
    category: BpCategory, irregular: bool, abpm: AbpmResult | None, pending: bool, outcome: str
) -> None:
    assert (
        bp_recommended_outcome(
            category=category, irregular_pulse=irregular, abpm=abpm, abpm_pending=pending
        )
        == outcome
    )


@pytest.mark.parametrize(
    ("reading", "bmi", "fields"),
    [
        (Reading(139, 89), 34.9, []),
        (Reading(140, 80), 25.0, ["blood_pressure"]),
        (Reading(120, 90), 25.0, ["blood_pressure"]),
        (Reading(142, 90), 25.0, ["blood_pressure"]),  # GP Connect contraception example 2
        (Reading(120, 70), 35.0, ["bmi"]),
        (None, 25.0, ["blood_pressure"]),
        (Reading(120, 70), None, ["bmi"]),
        (None, None, ["blood_pressure", "bmi"]),
    ],
)
def test_coc_supply_boundaries(
    reading: Reading | None, bmi: float | None, fields: list[str]
) -> None:
    assert [b.field for b in coc_supply_breaches(reading=reading, bmi=bmi)] == fields
