"""IBAN and BIC: validate what a person typed, keep the compact form, print in groups of four.

Applies wherever the seller's account (or a debtor's, read from a bank statement) is entered or shown: the
organization's bank-transfer settings, the pay page, the EPC QR code. The checks are python-stdnum's
(``stdnum.iban``, ``stdnum.bic``), run one at a time so the error says which one failed.

A bank code that python-stdnum's registry does not know (it lists Belgian banks, for instance) is accepted:
registries lag behind new banks, and the check digits already catch typing errors.
"""

from __future__ import annotations

import re

from stdnum import bic as stdnum_bic
from stdnum import iban as stdnum_iban
from stdnum import numdb
from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidLength, ValidationError
from stdnum.iso7064 import mod_97_10

_IBAN_REGISTRY = numdb.get("iban")
# ISO 13616 BBAN structure notation: "3!n7!n2!n" is 3 digits, 7 digits, 2 digits.
_STRUCTURE_PART = re.compile(r"(\d+)!([nac])")


class BankDetailsError(ValueError):
    """An IBAN or BIC failed a check. ``field`` is "iban" or "bic"; the message names the check."""

    field = ""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidIBAN(BankDetailsError):
    field = "iban"


class InvalidBIC(BankDetailsError):
    field = "bic"


def _bban_length(structure: str) -> int:
    return sum(int(count) for count, _ in _STRUCTURE_PART.findall(structure))


def normalise_iban(text: str) -> str:
    """The IBAN in compact form (``BE68539007547034``); InvalidIBAN naming the failed check otherwise."""
    number = stdnum_iban.compact(text)
    if not number:
        raise InvalidIBAN("the IBAN is empty")
    if not (number.isascii() and number.isalnum()):
        raise InvalidIBAN("an IBAN has only letters and digits (spaces are allowed between groups)")
    if len(number) < 5 or not (number[:2].isalpha() and number[2:4].isdigit()):
        raise InvalidIBAN("an IBAN starts with a two-letter country code and two check digits, e.g. BE68")
    country = number[:2]
    structure = _IBAN_REGISTRY.info(country)[0][1].get("bban")
    if structure is None:
        raise InvalidIBAN(f"{country} is not a country that uses IBANs")
    expected = 4 + _bban_length(structure)
    if len(number) != expected:
        raise InvalidIBAN(f"a {country} IBAN has {expected} characters, this one has {len(number)}")
    if not mod_97_10.is_valid(number[4:] + number[:4]):
        raise InvalidIBAN("the IBAN check digits do not match (mod 97): a character is probably mistyped")
    try:
        stdnum_iban.validate(number, check_country=False)
    except ValidationError:
        raise InvalidIBAN(f"the account part does not have the {country} structure ({structure})") from None
    try:
        stdnum_iban.validate(number, check_country=True)
    except InvalidChecksum:
        raise InvalidIBAN(f"the national check digits of this {country} account number do not match") from None
    except InvalidComponent:
        pass  # an unknown bank code: see the module docstring
    return number


def format_iban(text: str) -> str:
    """The print format, in groups of four: ``BE68 5390 0754 7034``. Validates first."""
    return stdnum_iban.format(normalise_iban(text))


def iban_country(text: str) -> str:
    """The IBAN's two-letter country code."""
    return normalise_iban(text)[:2]


def normalise_bic(text: str) -> str:
    """The BIC in upper case without spaces (8 or 11 characters); InvalidBIC naming the failed check otherwise."""
    try:
        return stdnum_bic.validate(text)
    except InvalidLength:
        raise InvalidBIC(f"a BIC has 8 or 11 characters, this one has {len(stdnum_bic.compact(text))}") from None
    except InvalidComponent:
        raise InvalidBIC(f"{stdnum_bic.compact(text)[4:6]!r} (characters 5-6) is not a country code") from None
    except ValidationError:
        raise InvalidBIC(
            "a BIC is 4 letters (bank), 2 letters (country), 2 letters or digits (location) and optionally 3 "
            "letters or digits (branch)"
        ) from None
