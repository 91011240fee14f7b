import pytest
from pydantic import TypeAdapter, ValidationError

from app.models.types import DmdCode, NhsNumber, OdsCode
from app.services import validation

VALID_NHS_NUMBERS = ["9990000018", "9990000026", "9990000034", "9990000042", "9990000050"]
# 999000000 weighs to a remainder of 1, so its check digit would be 10: no digit can complete it.
CHECK_DIGIT_TEN_STEM = "999000000"

VALID_SNOMED = [
    "1659111000000107",
    "1659121000000101",
    "2140231000000104",
    "1577041000000109",
    "75367002",
    "1090711000000102",
]
INVALID_SNOMED_CHECK_DIGIT = ["1659111000000100", "1659121000000100", "1091811000000100"]


# ---- NHS number (modulus 11) -------------------------------------------------------------------


@pytest.mark.parametrize("value", VALID_NHS_NUMBERS)
def test_nhs_number_valid_examples_pass(value: str) -> None:
    assert validation.nhs_number_is_valid(value)
    assert validation.check_nhs_number(value) == value


@pytest.mark.parametrize("value", VALID_NHS_NUMBERS)
def test_nhs_number_every_other_check_digit_fails(value: str) -> None:
    wrong = [value[:9] + digit for digit in "0123456789" if digit != value[9]]
    assert [w for w in wrong if validation.nhs_number_is_valid(w)] == []


def test_nhs_number_wrong_check_digit_fails() -> None:
    assert not validation.nhs_number_is_valid("9990000019")


def test_nhs_number_remainder_zero_check_digit_is_zero() -> None:
    # 999000005: weighted sum 253 = 23 * 11, so 11 - 0 = 11 becomes check digit 0.
    assert validation.nhs_number_is_valid("9990000050")
    assert not validation.nhs_number_is_valid("9990000051")


@pytest.mark.parametrize("digit", list("0123456789"))
def test_nhs_number_check_digit_ten_is_never_valid(digit: str) -> None:
    assert not validation.nhs_number_is_valid(CHECK_DIGIT_TEN_STEM + digit)


@pytest.mark.parametrize(
    "value",
    [
        "999000001",  # 9 digits
        "99900000180",  # 11 digits
        "",
        "999 000 0018",
        "999-000-0018",
        "99900000I8",
        "+990000018",
        "999000001\n",
        "\n999000001",
        "９９９００００018",  # full-width digits  # noqa: RUF001
        "99900.0018",
    ],
)
def test_nhs_number_wrong_length_or_non_digits_fail(value: str) -> None:
    assert validation.nhs_number_is_valid(value) is False


def test_check_nhs_number_message_does_not_echo_the_value() -> None:
    with pytest.raises(ValueError, match="modulus 11") as raised:
        validation.check_nhs_number("9990000019")
    assert "9990000019" not in str(raised.value)


def test_nhs_number_type_strips_whitespace_then_checks() -> None:
    adapter: TypeAdapter[str] = TypeAdapter(NhsNumber)
    assert adapter.validate_python(" 9990000018 ") == "9990000018"
    with pytest.raises(ValidationError):
        adapter.validate_python("9990000019")


# ---- SNOMED CT (Verhoeff) ----------------------------------------------------------------------


@pytest.mark.parametrize("value", VALID_SNOMED)
def test_snomed_valid_codes_pass(value: str) -> None:
    assert validation.verhoeff_is_valid(value)
    assert validation.snomed_code_is_valid(value)
    assert validation.check_snomed_code(value) == value


@pytest.mark.parametrize("value", INVALID_SNOMED_CHECK_DIGIT)
def test_snomed_wrong_check_digit_fails(value: str) -> None:
    assert not validation.verhoeff_is_valid(value)
    assert not validation.snomed_code_is_valid(value)


@pytest.mark.parametrize("value", VALID_SNOMED)
def test_snomed_transposed_digits_fail(value: str) -> None:
    swaps = [
        value[:i] + value[i + 1] + value[i] + value[i + 2 :]
        for i in range(len(value) - 1)
        if value[i] != value[i + 1]
    ]
    assert [s for s in swaps if validation.verhoeff_is_valid(s)] == []


def test_snomed_leading_zero_fails_even_with_a_valid_check_digit() -> None:
    assert validation.verhoeff_is_valid("075367002")  # a leading zero does not change Verhoeff
    assert not validation.snomed_code_is_valid("075367002")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0",
        "12",  # passes Verhoeff, far too short
        "10005",  # 5 digits
        "1" * 19,
    ],
)
def test_snomed_wrong_length_fails(value: str) -> None:
    assert validation.snomed_code_is_valid(value) is False


def test_snomed_short_and_long_limits_are_inclusive() -> None:
    six = _with_verhoeff("10000")
    eighteen = _with_verhoeff("1" * 17)
    assert (len(six), len(eighteen)) == (6, 18)
    assert validation.snomed_code_is_valid(six)
    assert validation.snomed_code_is_valid(eighteen)


@pytest.mark.parametrize("value", ["75367002\n", "7536700 2", "75367O02", "-75367002", "7536.7002"])
def test_snomed_non_digits_fail(value: str) -> None:
    assert validation.verhoeff_is_valid(value) is False
    assert validation.snomed_code_is_valid(value) is False


def test_check_snomed_code_message_does_not_echo_the_value() -> None:
    with pytest.raises(ValueError, match="Verhoeff") as raised:
        validation.check_snomed_code("1659111000000100")
    assert "1659111000000100" not in str(raised.value)


def test_dmd_code_type_checks_verhoeff() -> None:
    adapter: TypeAdapter[str] = TypeAdapter(DmdCode)
    assert adapter.validate_python(" 17346711000001106 ") == "17346711000001106"
    with pytest.raises(ValidationError):
        adapter.validate_python("17346711000001100")


def _with_verhoeff(stem: str) -> str:
    for digit in "0123456789":
        if validation.verhoeff_is_valid(stem + digit):
            return stem + digit
    raise AssertionError("every stem has exactly one Verhoeff check digit")


# ---- ODS code format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["A81001", "FA001", "RX1", "QXX", "U00001", "NHS11", "QXX01", "ABCDEFGH12"]
)
def test_ods_code_valid_formats_pass(value: str) -> None:
    assert validation.ods_code_is_valid(value)
    assert validation.check_ods_code(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "RX",  # 2 characters
        "ABCDEFGH123",  # 11 characters
        "a81001",  # lower case is normalised by the schema type, not accepted here
        "A81 001",
        "A81-001",
        " A81001",
        "A81001\n",
        "FÄ001",
    ],
)
def test_ods_code_invalid_formats_fail(value: str) -> None:
    assert validation.ods_code_is_valid(value) is False


def test_check_ods_code_message_does_not_echo_the_value() -> None:
    with pytest.raises(ValueError, match="ODS code") as raised:
        validation.check_ods_code("a8-1001")
    assert "a8-1001" not in str(raised.value)


def test_ods_code_type_normalises_case_and_whitespace() -> None:
    adapter: TypeAdapter[str] = TypeAdapter(OdsCode)
    assert adapter.validate_python(" fa001 ") == "FA001"
    with pytest.raises(ValidationError):
        adapter.validate_python("FA-001")
