"""Structured payment references: the Belgian OGM/VCS and the ISO 11649 RF creditor reference.

Applies when a debtor pays by bank transfer to the seller's own account: the reference stands for the
selection of invoices (an expected transfer), is printed on the page and in the EPC QR code, and comes back
on the bank statement, where it is matched exactly. Belgian organizations use the Belgian structured
communication (``+++123/4567/89002+++``, what Belgian banks and debtors expect); every other organization uses
RF (``RF18 5390 0754 7034``), which every SEPA bank carries.

Check digits and validation come from python-stdnum (``stdnum.be.ogm_vcs``, ``stdnum.iso11649`` and, for
generating RF check digits, which that module does not offer, ``stdnum.iso7064.mod_97_10``, the same ISO 7064
computation the library's own IBAN module uses).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from stdnum import iso11649
from stdnum.be import ogm_vcs
from stdnum.exceptions import InvalidChecksum, InvalidLength, ValidationError
from stdnum.iso7064 import mod_97_10

Kind = Literal["ogm", "rf"]

OGM_BASE_DIGITS = 10  # an OGM is 10 digits of our choosing plus 2 check digits
RF_MAX_PAYLOAD = 21  # an RF reference is "RF", 2 check digits and up to 21 letters or digits


class BankReferenceError(ValueError):
    """Base class of this module's errors; never raised itself."""


class InvalidReference(BankReferenceError):
    """Text that was given as a structured reference is not one; the message says which check failed."""


class ReferenceOverflow(BankReferenceError):
    """A number (with its prefix) does not fit in the reference format."""


@dataclass(frozen=True)
class StructuredReference:
    """A valid structured reference.

    ``value`` is the electronic form a bank carries in ``CdtrRefInf/Ref`` and the EPC QR code's structured
    field: 12 digits for an OGM, ``RF`` + check digits + payload for RF (upper case, no spaces). Two references
    are equal exactly when they stand for the same payment, however the debtor wrote them.
    """

    kind: Kind
    value: str

    def __post_init__(self) -> None:
        # Only canonical, valid references exist, so one built by hand cannot reach a QR code or a match.
        try:
            valid = ogm_vcs.validate(self.value) if self.kind == "ogm" else iso11649.validate(self.value)
        except ValidationError:
            valid = None
        if self.kind not in ("ogm", "rf") or valid != self.value:
            raise InvalidReference(f"{self.value!r} is not a valid {self.kind} reference in its electronic form")

    @property
    def display(self) -> str:
        """The form people read and copy: ``+++123/4567/89002+++`` or ``RF18 5390 0754 7034``."""
        if self.kind == "ogm":
            return f"+++{ogm_vcs.format(self.value)}+++"
        return iso11649.format(self.value)

    def __str__(self) -> str:
        return self.display


def ogm_reference(number: int, prefix: str = "") -> StructuredReference:
    """The Belgian structured communication for ``number`` (e.g. an expected transfer's id).

    ``prefix`` (digits) leads the 10-digit base so an organization can keep its references apart from others it
    issues elsewhere (its accounting package's, say); the number fills the rest, zero-padded.
    """
    if prefix and not (prefix.isascii() and prefix.isdigit()):
        raise ReferenceOverflow(f"an OGM prefix must be digits, got {prefix!r}")
    if number < 0:
        raise ReferenceOverflow("the number must not be negative")
    room = OGM_BASE_DIGITS - len(prefix)
    digits = str(number)
    if room < 1 or len(digits) > room:
        raise ReferenceOverflow(
            f"{number} does not fit in an OGM after the prefix {prefix!r}: {room} digit(s) left of {OGM_BASE_DIGITS}"
        )
    base = prefix + digits.rjust(room, "0")
    if int(base) == 0:
        raise ReferenceOverflow("an OGM must not be all zeros")
    return StructuredReference("ogm", ogm_vcs.validate(base + ogm_vcs.calc_check_digits(base)))


def rf_reference(number: int, prefix: str = "") -> StructuredReference:
    """The ISO 11649 creditor reference for ``number``, after an optional alphanumeric ``prefix``."""
    prefix = prefix.upper()
    if prefix and not (prefix.isascii() and prefix.isalnum()):
        raise ReferenceOverflow(f"an RF prefix must be letters and digits, got {prefix!r}")
    if number < 0:
        raise ReferenceOverflow("the number must not be negative")
    payload = f"{prefix}{number}"
    if len(payload) > RF_MAX_PAYLOAD:
        raise ReferenceOverflow(
            f"{payload!r} is {len(payload)} characters; an RF reference carries at most {RF_MAX_PAYLOAD}"
        )
    # ISO 11649: the check digits make payload + "RF" + check digits valid under ISO 7064 mod 97-10.
    check = mod_97_10.calc_check_digits(payload + "RF")
    return StructuredReference("rf", iso11649.validate(f"RF{check}{payload}"))


def reference_for(country: str, number: int, prefix: str = "") -> StructuredReference:
    """OGM for an organization in Belgium, RF for one anywhere else."""
    if country.upper() == "BE":
        return ogm_reference(number, prefix)
    return rf_reference(number, prefix)


def normalise_reference(text: str) -> StructuredReference:
    """The structured reference a debtor or a bank wrote, in its canonical form; InvalidReference if it is none.

    Accepts the usual ways of writing them: ``+++123/4567/89002+++``, ``***123/4567/89002***``,
    ``123/4567/89002``, ``123456789002``, ``RF18 5390 0754 7034``, ``rf18539007547034``.
    """
    cleaned = text.strip()
    if cleaned[:2].upper() == "RF":
        try:
            return StructuredReference("rf", iso11649.validate(cleaned))
        except InvalidChecksum:
            raise InvalidReference(f"{text!r}: the RF check digits do not match (ISO 11649, mod 97)") from None
        except InvalidLength:
            raise InvalidReference(f"{text!r}: an RF reference has 5 to 25 characters") from None
        except ValidationError:
            raise InvalidReference(f"{text!r}: an RF reference is RF, 2 check digits, then letters or digits") from None
    # Some banks and debtors write the Belgian delimiters as *** instead of +++.
    ogm_text = cleaned.replace("*", "+")
    try:
        return StructuredReference("ogm", ogm_vcs.validate(ogm_text))
    except InvalidChecksum:
        raise InvalidReference(f"{text!r}: the OGM check digits do not match (mod 97)") from None
    except InvalidLength:
        raise InvalidReference(f"{text!r}: a Belgian structured communication has 12 digits") from None
    except ValidationError:
        raise InvalidReference(
            f"{text!r} is neither an RF creditor reference nor a Belgian structured communication (+++123/4567/89002+++)"
        ) from None


# Where references hide in free remittance text. Each pattern's group 1 is handed to normalise_reference, so
# only candidates whose check digits hold are returned. The strongest forms come first.
# re.ASCII: \d is 0-9 only, as in the references themselves.
_OGM_DELIMITED = re.compile(r"([+*]{3} *\d{3} */ *\d{4} */ *\d{5} *[+*]{3})", re.ASCII)
_OGM_SLASHED = re.compile(r"(?<![\d/])(\d{3}/\d{4}/\d{5})(?![\d/])", re.ASCII)
# A bare run of exactly 12 digits, not part of a longer number or an IBAN (BE68 5390 ... is grouped by four).
_OGM_BARE = re.compile(r"(?<![0-9A-Za-z])(\d{12})(?![0-9A-Za-z])", re.ASCII)
_RF_START = re.compile(r"(?<![0-9A-Za-z])(RF\d\d)", re.IGNORECASE | re.ASCII)
# The print format groups an RF reference by four: "RF18 5390 0754 7034"; only the last group may be shorter.
_RF_GROUP = re.compile(r" ([0-9A-Za-z]{1,4})(?![0-9A-Za-z])")


def _rf_candidates(text: str, start: int) -> list[str]:
    """The reference starting at ``start`` (at "RF" and two digits), longest first.

    Written compact ("RF18539007547034") it is one run of letters and digits. Written in the print format, the
    following groups of four belong to it, up to 25 characters; a word after it is not taken in unless it
    happens to be four characters or fewer, and then only a valid check decides, shortest group count last.
    """
    found = re.match(r"[0-9A-Za-z]+", text[start:])
    assert found is not None  # the caller starts at "RF" and two digits, so the run is never empty
    run = found.group(0)
    if len(run) > 4:
        return [run] if len(run) <= 25 else []
    candidates = [run]
    position = start + len(run)
    while True:
        group = _RF_GROUP.match(text, position)
        if group is None or len(candidates[-1]) + len(group.group(1)) > 25:
            break
        candidates.append(candidates[-1] + group.group(1))
        position = group.end()
        if len(group.group(1)) < 4:
            break
    return [candidate for candidate in reversed(candidates) if len(candidate) >= 5]


def find_references(text: str) -> list[StructuredReference]:
    """Every valid structured reference in free text (e.g. a statement's unstructured remittance lines), strongest
    form first, without repeats."""
    found: list[StructuredReference] = []

    def keep(candidate: str) -> bool:
        try:
            reference = normalise_reference(candidate)
        except InvalidReference:
            return False
        if reference not in found:
            found.append(reference)
        return True

    for match in _OGM_DELIMITED.finditer(text):
        keep(match.group(1))
    for match in _RF_START.finditer(text):
        for candidate in _rf_candidates(text, match.start(1)):
            if keep(candidate):
                break
    for pattern in (_OGM_SLASHED, _OGM_BARE):
        for match in pattern.finditer(text):
            keep(match.group(1))
    return found


def parse_reference(text: str) -> StructuredReference | None:
    """The structured reference in free remittance text, or None if it holds no valid one."""
    found = find_references(text)
    return found[0] if found else None
