"""Identifier checks: NHS number (modulus 11), ODS code format, SNOMED CT (Verhoeff).

Each check returns the value it was given or raises ValueError with a message that names
the rule but never echoes the value (the value may be patient-identifiable).
"""

import re

_ODS = re.compile(r"^[A-Z0-9]{3,10}$")
_DIGITS = re.compile(r"^[0-9]+$")

# Verhoeff tables (dihedral group D5), as used by SNOMED CT identifiers.
_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def nhs_number_is_valid(value: str) -> bool:
    if len(value) != 10 or not _DIGITS.fullmatch(value):
        return False
    total = sum(int(digit) * (10 - index) for index, digit in enumerate(value[:9]))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(value[9])


def verhoeff_is_valid(value: str) -> bool:
    if not _DIGITS.fullmatch(value):
        return False
    c = 0
    for index, digit in enumerate(reversed(value)):
        c = _D[c][_P[index % 8][int(digit)]]
    return c == 0


def snomed_code_is_valid(value: str) -> bool:
    """SNOMED CT identifiers: 6 to 18 digits, no leading zero, Verhoeff check digit."""
    return 6 <= len(value) <= 18 and value[0] != "0" and verhoeff_is_valid(value)


def ods_code_is_valid(value: str) -> bool:
    return bool(_ODS.fullmatch(value))


def check_nhs_number(value: str) -> str:
    if not nhs_number_is_valid(value):
        raise ValueError("not a valid NHS number (10 digits with a modulus 11 check digit)")
    return value


def check_ods_code(value: str) -> str:
    if not ods_code_is_valid(value):
        raise ValueError("not a valid ODS code (3 to 10 upper-case letters and digits)")
    return value


def check_no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL, so refuse it at the edge rather than fail on insert."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def check_snomed_code(value: str) -> str:
    if not snomed_code_is_valid(value):
        raise ValueError("not a valid SNOMED CT identifier (Verhoeff check digit fails)")
    return value
