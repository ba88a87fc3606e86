"""EPC QR codes: what a banking app reads back (zbarimg on the PNG) is the EPC069-12 v002 payload, line by line."""

from __future__ import annotations

import re
import shutil
import subprocess
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.banking import epc_qr
from portal.banking.iban import InvalidBIC, InvalidIBAN
from portal.banking.references import StructuredReference, ogm_reference, rf_reference


IBAN = "BE68 5390 0754 7034"


def scan(png: bytes) -> list[str]:
    """The payload as a scanner reads it: zbarimg's raw bytes (-Sbinary: no guessing of the character set)."""
    if shutil.which("zbarimg") is None:
        pytest.fail("zbarimg is missing: scripts/install --test installs it (Debian package zbar-tools)")
    result = subprocess.run(
        ["zbarimg", "--raw", "--quiet", "-Sbinary", "-"], input=png, capture_output=True, check=True, timeout=30
    )
    return result.stdout.decode("utf-8").split("\n")


def parse_payload(lines: list[str]) -> dict[str, str]:
    """A tiny EPC069-12 reader: the fixed line order of version 002."""
    assert 10 <= len(lines) <= 12, lines
    names = ["service", "version", "charset", "identification", "bic", "name", "iban", "amount", "purpose",
             "structured", "unstructured", "information"]
    return dict(zip(names, lines + [""] * (12 - len(lines)), strict=True))


def amount_of(line: str) -> Decimal:
    match = re.fullmatch(r"EUR(\d{1,9}(?:\.\d{1,2})?)", line)
    assert match, line
    return Decimal(match.group(1))


def test_a_belgian_transfer_reads_back_line_by_line() -> None:
    reference = ogm_reference(4242)
    qr = epc_qr.make_qr(
        beneficiary="Atelier Dupont SRL", iban=IBAN, amount_minor=123434, currency="EUR", reference=reference,
        bic="GEBABEBB",
    )
    assert qr.error == "M" and qr.version <= 13
    png = epc_qr.png(qr)
    assert png.startswith(b"\x89PNG")
    assert scan(png) == [
        "BCD", "002", "1", "SCT", "GEBABEBB", "Atelier Dupont SRL", "BE68539007547034", "EUR1234.34", "",
        reference.value,
    ]


def test_without_bic_and_with_an_rf_reference() -> None:
    reference = rf_reference(539007547034)
    qr = epc_qr.make_qr(
        beneficiary="Café Ørsted BV", iban="NL91 ABNA 0417 1643 00", amount_minor=1, currency="EUR",
        reference=reference,
    )
    payload = parse_payload(scan(epc_qr.png(qr)))
    assert payload["bic"] == ""
    assert payload["name"] == "Café Ørsted BV"
    assert payload["iban"] == "NL91ABNA0417164300"
    assert amount_of(payload["amount"]) == Decimal("0.01")
    assert payload["structured"] == "RF18539007547034"
    assert payload["unstructured"] == ""


def test_svg_is_inline_text_of_the_same_symbol() -> None:
    qr = epc_qr.make_qr(beneficiary="A", iban=IBAN, amount_minor=500, currency="EUR", reference=ogm_reference(1))
    text = epc_qr.svg(qr, scale=3)
    assert text.startswith("<svg") and "<?xml" not in text
    assert "EPC QR code" in text
    size = (qr.symbol_size(scale=3, border=4))[0]
    assert f'width="{size}"' in text


names = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")), min_size=1, max_size=70
).filter(lambda name: name.strip() != "")
references = st.one_of(
    st.integers(1, 9_999_999_999).map(ogm_reference), st.integers(0, 10**21 - 1).map(rf_reference)
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=names,
    cents=st.integers(epc_qr.MIN_CENTS, epc_qr.MAX_CENTS),
    reference=references,
    bic=st.sampled_from([None, "GEBABEBB", "KREDBEBBXXX"]),
)
def test_any_valid_transfer_is_within_limits_and_reads_back(
    name: str, cents: int, reference: StructuredReference, bic: str | None
) -> None:
    expected = ["BCD", "002", "1", "SCT", bic or "", name.strip(), "BE68539007547034", "", "", reference.value]
    # EPC069-12 lets the amount drop trailing zeros (EUR12.3, EUR12), as segno writes it.
    amount = f"EUR{Decimal(cents).scaleb(-2):.2f}".rstrip("0").rstrip(".")
    size = len("\n".join(expected).encode("utf-8")) + len(amount)
    try:
        qr = epc_qr.make_qr(
            beneficiary=name, iban=IBAN, amount_minor=cents, currency="EUR", reference=reference, bic=bic
        )
    except epc_qr.EpcQrError as error:
        # Only a name of many multi-byte characters can push the payload over the standard's 331 bytes.
        assert error.field == "payload" and size > epc_qr.MAX_PAYLOAD_BYTES
        return
    assert qr.error == "M" and qr.version <= 13
    lines = scan(epc_qr.png(qr))
    assert len("\n".join(lines).encode("utf-8")) <= epc_qr.MAX_PAYLOAD_BYTES
    payload = parse_payload(lines)
    assert amount_of(payload["amount"]) == Decimal(cents).scaleb(-2)
    lines[7] = ""
    assert lines == expected


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"currency": "USD"}, "currency", "euros only, not USD"),
        ({"amount_minor": 0}, "amount", "between EUR 0.01 and EUR 999999999.99"),
        ({"amount_minor": 100_000_000_000}, "amount", "between EUR 0.01"),
        ({"amount_minor": True}, "amount", "integer number of cents"),
        ({"beneficiary": "   "}, "beneficiary", "empty"),
        ({"beneficiary": "x" * 71}, "beneficiary", "71 characters; EPC QR allows 70"),
        ({"beneficiary": "Dupont\nBE00 0000"}, "beneficiary", "line break"),
        ({"beneficiary": "😀" * 70, "bic": "GEBABEBBXXX", "reference": rf_reference(10**20)}, "payload", "331 bytes"),
    ],
)
def test_inputs_a_bank_app_would_refuse_are_named(changes: dict, field: str, message: str) -> None:
    arguments = {"beneficiary": "Atelier Dupont", "iban": IBAN, "amount_minor": 1000, "currency": "EUR",
                 "reference": ogm_reference(7)} | changes
    with pytest.raises(epc_qr.EpcQrError, match=message) as caught:
        epc_qr.make_qr(**arguments)
    assert caught.value.field == field


def test_a_wrong_iban_or_bic_is_refused_before_any_code_is_made() -> None:
    with pytest.raises(InvalidIBAN, match="check digits"):
        epc_qr.make_qr(beneficiary="A", iban="BE68539007547035", amount_minor=1, currency="EUR",
                       reference=ogm_reference(1))
    with pytest.raises(InvalidBIC):
        epc_qr.make_qr(beneficiary="A", iban=IBAN, amount_minor=1, currency="EUR", reference=ogm_reference(1),
                       bic="GEBABE")


def test_names_use_no_character_the_payload_would_split_on() -> None:
    with pytest.raises(epc_qr.EpcQrError, match="line break"):
        epc_qr.make_qr(beneficiary="A\u2028B", iban=IBAN, amount_minor=1, currency="EUR", reference=ogm_reference(1))
