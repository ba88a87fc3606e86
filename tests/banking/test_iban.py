"""IBAN and BIC checks: a valid one comes back compact and prints in fours; a wrong one says which check failed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.banking.iban import InvalidBIC, InvalidIBAN, format_iban, iban_country, normalise_bic, normalise_iban

VALID = ["BE68 5390 0754 7034", "NL91ABNA0417164300", "FR14 2004 1010 0505 0001 3M02 606", "DE89370400440532013000"]


@pytest.mark.parametrize("text", VALID)
def test_valid_ibans_come_back_compact_and_print_in_fours(text: str) -> None:
    compact = normalise_iban(text.lower())
    assert compact == text.replace(" ", "")
    printed = format_iban(compact)
    assert printed.replace(" ", "") == compact
    assert all(len(group) == 4 for group in printed.split(" ")[:-1])


def test_separators_people_type_are_accepted() -> None:
    assert normalise_iban(" be68-5390-0754-7034 ") == "BE68539007547034"
    assert iban_country("be68 5390 0754 7034") == "BE"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("BE68 5390 0754 703é", "only letters and digits"),
        ("1234", "two-letter country code"),
        ("XX68539007547034", "XX is not a country that uses IBANs"),
        ("BE6853900754703", "a BE IBAN has 16 characters, this one has 15"),
        ("BE68539007547035", "check digits do not match"),
        ("NL91ABNA04171643O0", "check digits do not match"),
        # Valid mod 97 overall, but the Belgian account number's own check digits are wrong.
        ("BE41 5390 0754 7035", "national check digits"),
        # Valid mod 97, but a Belgian account number is all digits.
        ("BE72 A390 0754 7034", "does not have the BE structure"),
    ],
)
def test_each_failed_check_is_named(text: str, message: str) -> None:
    with pytest.raises(InvalidIBAN, match=message) as caught:
        normalise_iban(text)
    assert caught.value.field == "iban"
    assert isinstance(caught.value, ValueError)


@given(position=st.integers(4, 15), delta=st.integers(1, 9))
def test_any_single_digit_typo_is_caught(position: int, delta: int) -> None:
    digits = list("BE68539007547034")
    digits[position] = str((int(digits[position]) + delta) % 10)
    with pytest.raises(InvalidIBAN):
        normalise_iban("".join(digits))


def test_bic() -> None:
    assert normalise_bic("gebabebb") == "GEBABEBB"
    assert normalise_bic("GEBA BE BB XXX") == "GEBABEBBXXX"
    with pytest.raises(InvalidBIC, match="8 or 11 characters, this one has 9") as caught:
        normalise_bic("GEBABEBB1")
    assert caught.value.field == "bic"
    with pytest.raises(InvalidBIC, match="'XX' .* is not a country code"):
        normalise_bic("GEBAXXBB")
    with pytest.raises(InvalidBIC, match="4 letters"):
        normalise_bic("1EBABEBB")
