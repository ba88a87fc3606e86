"""Money: decimal strings in, integer minor units stored, the same strings out; never a float."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.money import MoneyError, exponent, format_minor, parse_minor


@pytest.mark.parametrize(("currency", "decimals"), [("EUR", 2), ("JPY", 0), ("KWD", 3), ("SEK", 2)])
def test_exponents_follow_the_currency(currency: str, decimals: int) -> None:
    assert exponent(currency) == decimals


@pytest.mark.parametrize(("text", "currency", "minor"), [
    ("1234.50", "EUR", 123450), ("10", "EUR", 1000), ("10.0", "EUR", 1000), ("0.01", "EUR", 1),
    ("1200", "JPY", 1200), ("1.234", "KWD", 1234), ("0", "KWD", 0),
])
def test_parse_exact_amounts(text: str, currency: str, minor: int) -> None:
    assert parse_minor(text, currency) == minor


@pytest.mark.parametrize(("text", "currency"), [
    ("12.345", "EUR"), ("1.5", "JPY"), ("1.2345", "KWD"), ("1e3", "EUR"), ("NaN", "EUR"), ("Infinity", "EUR"),
    ("-1.00", "EUR"), ("1,000.00", "EUR"), ("1 000", "EUR"), (" 1.00", "EUR"), ("+1.00", "EUR"), ("01.00", "EUR"),
    (".5", "EUR"), ("5.", "EUR"), ("1" * 30, "EUR"), ("", "EUR"), ("١٢", "EUR"),
])
def test_refuses_anything_but_an_exact_amount(text: str, currency: str) -> None:
    with pytest.raises(MoneyError):
        parse_minor(text, currency)


def test_negative_only_where_allowed() -> None:
    assert parse_minor("-5.00", "EUR", allow_negative=True) == -500
    assert format_minor(-500, "EUR") == "-5.00"


def test_unknown_currency() -> None:
    with pytest.raises(MoneyError):
        parse_minor("1.00", "XYZ")


@given(st.sampled_from(["EUR", "JPY", "KWD"]), st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1))
def test_round_trip_is_lossless(currency: str, minor: int) -> None:
    text = format_minor(minor, currency)
    assert "e" not in text.lower()
    assert parse_minor(text, currency, allow_negative=True) == minor
