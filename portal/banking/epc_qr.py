"""The EPC QR code (EPC069-12 "SEPA Credit Transfer", version 002) a banking app scans to pre-fill a transfer.

Applies when a debtor is shown how to pay by bank transfer to the seller's own account: on the pay page (SVG
text) and in printed documents (PNG bytes for PDFs). The payload is built by segno's maintained EPC helper
(``segno.helpers.make_epc_qr``): service tag BCD, version 002, character set 1 (UTF-8), identification SCT,
BIC (optional in 002), beneficiary name, IBAN, amount in euros, empty purpose, the structured creditor reference
in the structured field and no unstructured remittance, at most 331 bytes, error correction M.

This module checks its inputs first, so a wrong one gives an ``EpcQrError`` (or ``InvalidIBAN``/``InvalidBIC``)
naming the field, never a code a bank app would refuse: euros only, 0.01 to 999,999,999.99 in integer cents,
a name of 1 to 70 characters without line breaks, a valid IBAN and BIC, a valid OGM or RF reference.
"""

from __future__ import annotations

import io
import unicodedata
from decimal import Decimal

import segno
from segno.helpers import make_epc_qr

from portal.banking.iban import normalise_bic, normalise_iban
from portal.banking.references import StructuredReference

MIN_CENTS = 1
MAX_CENTS = 99_999_999_999  # EUR 999,999,999.99
MAX_NAME = 70
MAX_PAYLOAD_BYTES = 331
_UTF8 = 1  # the standard's character set 1; segno would otherwise pick ISO 8859-1 when the text allows it


class EpcQrError(ValueError):
    """An input cannot go into an EPC QR code. ``field`` names it (beneficiary, amount, currency, payload)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise EpcQrError("beneficiary", "the beneficiary name is empty")
    if len(name) > MAX_NAME:
        raise EpcQrError("beneficiary", f"the beneficiary name has {len(name)} characters; EPC QR allows {MAX_NAME}")
    # A line break would shift every later field of the line-based payload.
    if any(unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for char in name):
        raise EpcQrError("beneficiary", "the beneficiary name contains a line break or another control character")
    return name


def _check_amount(amount_minor: int, currency: str) -> Decimal:
    if currency != "EUR":
        raise EpcQrError("currency", f"EPC QR codes carry euros only, not {currency}")
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise EpcQrError("amount", "the amount must be an integer number of cents")
    if not MIN_CENTS <= amount_minor <= MAX_CENTS:
        raise EpcQrError("amount", "the amount must be between EUR 0.01 and EUR 999999999.99")
    return Decimal(amount_minor).scaleb(-2)


def make_qr(
    *,
    beneficiary: str,
    iban: str,
    amount_minor: int,
    currency: str,
    reference: StructuredReference,
    bic: str | None = None,
) -> segno.QRCode:
    """The EPC QR code for one transfer. ``reference`` is the expected transfer's structured reference; it goes
    in the structured field in its electronic form (12 digits for an OGM, ``RF...`` without spaces)."""
    name = _check_name(beneficiary)
    account = normalise_iban(iban)
    bank = normalise_bic(bic) if bic else None
    amount = _check_amount(amount_minor, currency)
    try:
        return make_epc_qr(
            name=name, iban=account, amount=amount, reference=reference.value, bic=bank, encoding=_UTF8
        )
    except ValueError as error:
        # The inputs are checked above; what remains is the 331-byte bound, reached by a name of many
        # multi-byte characters.
        raise EpcQrError("payload", f"the EPC QR payload is too long: {error}") from None


def svg(qr: segno.QRCode, *, scale: int = 4, title: str = "EPC QR code for this bank transfer") -> str:
    """Inline SVG text (no XML declaration) for an HTML page, with the standard's quiet zone of 4 modules."""
    return qr.svg_inline(scale=scale, border=4, title=title)


def png(qr: segno.QRCode, *, scale: int = 6) -> bytes:
    """PNG bytes for a PDF or a download, with the quiet zone of 4 modules."""
    buffer = io.BytesIO()
    qr.save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()
