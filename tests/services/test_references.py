"""Referral references: a service prefix and ten Crockford base32 symbols, every symbol possible
at every position."""

import re
from collections import Counter

import pytest

from app.models.enums import Service
from app.services.references import _REFERENCE_ALPHABET, REFERENCE_PREFIX, new_reference


@pytest.mark.parametrize("service", list(Service))
def test_a_reference_is_the_service_prefix_and_two_groups_of_five(service: Service) -> None:
    reference = new_reference(service)

    assert re.fullmatch(
        rf"{REFERENCE_PREFIX[service]}-[0-9A-HJKMNP-TV-Z]{{5}}-[0-9A-HJKMNP-TV-Z]{{5}}", reference
    )


def test_every_symbol_turns_up_at_every_position_about_as_often() -> None:
    draws = [new_reference(Service.PHARMACY_FIRST).replace("-", "")[2:] for _ in range(6400)]

    for position in range(10):
        seen = Counter(draw[position] for draw in draws)
        assert set(seen) == set(_REFERENCE_ALPHABET)
        # 200 expected per symbol; a uniform draw stays well inside this range
        assert min(seen.values()) > 120
        assert max(seen.values()) < 290
