"""Converting API bodies to domain inputs: the quick reading of amounts agrees with portal.money."""

from __future__ import annotations

import itertools

import pytest

from portal.errors import InvalidInput
from portal.money import MoneyError, parse_minor
from portal.schemas.convert import invoice_input
from portal.schemas.models import InvoiceBody

TRICKY = ["0", "00", "01", "1", "12", "12.", ".5", "12.3", "12.30", "12.305", "-1", "-0.5", "+1", "1e3", " 1", "1 ",
          "１２", "²", "1.²", "0.00", "0.001", "999999999999999", "1000000000000000", "999999999999999.99", "",
          ".", "1..2", "1.2.3", "٣", "0x1", "1_000", "NaN", "12.3\n"]
# Every string of up to four characters over the characters amounts are made of, and some that are not.
SHORT = ["".join(chars) for n in range(5) for chars in itertools.product("01.9-", repeat=n)]


def read(text: str, currency: str, *, in_line: bool) -> object:
    """The amount as invoice_input reads it, as the total or as a line's unit price: minor units or the
    error's message."""
    line = {"description": "x", "quantity": "1", "unit_price": text if in_line else "0", "vat_rate": "21",
            "total": "0"}
    body = InvoiceBody.model_validate({"customer": "C", "status": "open", "currency": currency,
                                       "total": "0" if in_line else text, "lines": [line]})
    try:
        item = invoice_input("X", body)
    except InvalidInput as exc:
        return {error.path: error.message for error in exc.errors}
    return item.lines[0]["unit_price_minor"] if in_line else item.total_minor


def parsed(text: str, currency: str, path: str, *, allow_negative: bool) -> object:
    try:
        return parse_minor(text, currency, allow_negative=allow_negative)
    except MoneyError as exc:
        return {path: str(exc)}


@pytest.mark.parametrize("currency", ["EUR", "JPY", "KWD"])
def test_amounts_read_as_parse_minor_reads_them(currency: str) -> None:
    for text in TRICKY + SHORT:
        assert read(text, currency, in_line=False) == parsed(text, currency, "/total", allow_negative=False), text
        assert read(text, currency, in_line=True) == parsed(
            text, currency, "/lines/0/unit_price", allow_negative=True), text

