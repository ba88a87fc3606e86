"""Our minor units to each provider's amount format and back. Money is never a float.

Our minor units follow CLDR's decimals for the currency (EUR 2, JPY 0, KWD 3). Stripe mostly agrees, with
exceptions it documents: ISK is sent in a two-decimal form. Mollie takes a decimal string with exactly the
currency's decimals.
"""

from __future__ import annotations

from portal.money import format_minor, parse_minor

# Currencies Stripe counts in hundredths although they have no minor unit in use.
_STRIPE_TWO_DECIMAL_FORM = {"ISK": 100}


def to_stripe(minor: int, currency: str) -> int:
    return minor * _STRIPE_TWO_DECIMAL_FORM.get(currency.upper(), 1)


def from_stripe(amount: int, currency: str) -> int:
    factor = _STRIPE_TWO_DECIMAL_FORM.get(currency.upper(), 1)
    if amount % factor:
        raise ValueError(f"{amount} is not a whole amount of {currency}")
    return amount // factor


def to_mollie(minor: int, currency: str) -> dict[str, str]:
    return {"currency": currency, "value": format_minor(minor, currency)}


def from_mollie(amount: dict[str, str] | None, currency: str) -> int:
    if not amount:
        return 0
    return parse_minor(str(amount["value"]), str(amount.get("currency") or currency), allow_negative=True)
