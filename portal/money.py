"""Money as integer minor units plus an ISO 4217 currency code; never a float.

Amounts travel as decimal strings ("1234.50") with at most the currency's decimals. The number of decimals
comes from the CLDR data that Babel ships (EUR 2, JPY 0, KWD 3).
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache

from babel.numbers import get_currency_precision, list_currencies

# Digits, an optional fraction; no sign, exponent, separators or surrounding space. 15 integer digits keeps
# every amount inside a signed 64-bit minor-unit column for any currency exponent.
_AMOUNT = re.compile(r"(-?)(0|[1-9][0-9]{0,14})(?:\.([0-9]+))?")
_KNOWN_CURRENCIES = frozenset(list_currencies())


class MoneyError(ValueError):
    """The text is not an amount in that currency; the message says why in words a caller can show."""


def is_currency(code: str) -> bool:
    return code in _KNOWN_CURRENCIES


@cache
def exponent(currency: str) -> int:
    """How many decimals the currency has (cached: Babel looks it up in CLDR data each time)."""
    if currency not in _KNOWN_CURRENCIES:
        raise MoneyError(f"unknown currency {currency!r}")
    return int(get_currency_precision(currency))


def parse_minor(text: str, currency: str, *, allow_negative: bool = False) -> int:
    """ "12.30" EUR -> 1230. Raises MoneyError for anything that is not an exact amount in that currency."""
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise MoneyError("must be a decimal string such as \"1234.50\" (no exponent, sign or separators)")
    sign, whole, fraction = match.groups()
    if sign and not allow_negative:
        raise MoneyError("must not be negative")
    decimals = exponent(currency)
    fraction = fraction or ""
    if len(fraction) > decimals:
        raise MoneyError(f"{currency} amounts have at most {decimals} decimals")
    minor = int(whole) * 10**decimals + int(fraction.ljust(decimals, "0") or "0")
    return -minor if sign else minor


def format_minor(minor: int, currency: str) -> str:
    """1230 EUR -> "12.30"; the inverse of parse_minor."""
    decimals = exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**decimals)
    return f"{sign}{whole}.{fraction:0{decimals}d}" if decimals else f"{sign}{whole}"


def to_decimal(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))
