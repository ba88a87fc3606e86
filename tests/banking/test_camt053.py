"""CAMT.053 statements: credits come back exactly as the bank wrote them; hostile or wrong files get the right error."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portal.banking import camt053
from portal.banking.camt053 import (
    InvalidPeriod,
    MalformedAmount,
    MalformedStatement,
    NotCamt053,
    NotXml,
    StatementTooLarge,
    UnsafeXml,
    XmlTooDeep,
    parse_statement,
)
from portal.banking.references import normalise_reference, ogm_reference, parse_reference, rf_reference

SAMPLE = Path(__file__).parent / "samples" / "belgian_bank_camt053.xml"
NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.{:02d}"


@dataclass(frozen=True)
class EntrySpec:
    credit: bool
    cents: int
    ref: str
    booked: bool
    booking_date: date
    debtor: str | None
    debtor_iban: str | None
    structured: str | None
    lines: tuple[str, ...]


def amount_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def entry_xml(entry: EntrySpec, version: int) -> str:
    status = "BOOK" if entry.booked else "PDNG"
    # The status is a plain code up to .06 and a choice element from .07 on; the debtor gains a Pty wrapper in .08.
    status_xml = f"<Sts><Cd>{status}</Cd></Sts>" if version >= 7 else f"<Sts>{status}</Sts>"
    parties = ""
    if entry.debtor is not None or entry.debtor_iban is not None:
        name = f"<Nm>{escape(entry.debtor)}</Nm>" if entry.debtor is not None else ""
        debtor = f"<Dbtr><Pty>{name}</Pty></Dbtr>" if version >= 8 else f"<Dbtr>{name}</Dbtr>"
        account = f"<DbtrAcct><Id><IBAN>{entry.debtor_iban}</IBAN></Id></DbtrAcct>" if entry.debtor_iban else ""
        parties = f"<RltdPties>{debtor}{account}</RltdPties>"
    remittance = ""
    if entry.structured is not None or entry.lines:
        remittance = "<RmtInf>" + "".join(f"<Ustrd>{escape(line)}</Ustrd>" for line in entry.lines)
        if entry.structured is not None:
            remittance += (
                "<Strd><CdtrRefInf><Tp><CdOrPrtry><Cd>SCOR</Cd></CdOrPrtry></Tp>"
                f"<Ref>{entry.structured}</Ref></CdtrRefInf></Strd>"
            )
        remittance += "</RmtInf>"
    return f"""
      <Ntry>
        <Amt Ccy="EUR">{amount_text(entry.cents)}</Amt>
        <CdtDbtInd>{"CRDT" if entry.credit else "DBIT"}</CdtDbtInd>
        {status_xml}
        <BookgDt><Dt>{entry.booking_date.isoformat()}</Dt></BookgDt>
        <ValDt><DtTm>{entry.booking_date.isoformat()}T10:00:00</DtTm></ValDt>
        <AcctSvcrRef>{entry.ref}</AcctSvcrRef>
        <BkTxCd/>
        <NtryDtls><TxDtls>{parties}{remittance}</TxDtls></NtryDtls>
      </Ntry>"""


def statement_xml(entries: list[EntrySpec], *, version: int = 2, period: tuple[str, str] | None = None) -> str:
    start, end = period or ("2026-11-01T00:00:00+01:00", "2026-11-30T23:59:59+01:00")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="{NS.format(version)}">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>MSG-1</MsgId><CreDtTm>2026-12-01T06:00:00</CreDtTm></GrpHdr>
    <Stmt>
      <Id>STMT-1</Id>
      <FrToDt><FrDtTm>{start}</FrDtTm><ToDtTm>{end}</ToDtTm></FrToDt>
      <Acct><Id><IBAN>BE68539007547034</IBAN></Id><Ccy>EUR</Ccy></Acct>
      {"".join(entry_xml(entry, version) for entry in entries)}
    </Stmt>
  </BkToCstmrStmt>
</Document>"""


# Text as banks and debtors write it: any character XML 1.0 can carry, trimmed the way the parser trims.
xml_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn"), blacklist_characters="\ufffe\uffff"),
    min_size=1,
    max_size=40,
).map(str.strip).filter(bool)
structured_refs = st.one_of(
    st.none(),
    st.integers(1, 9_999_999_999).map(lambda n: ogm_reference(n).value),
    st.integers(0, 10**21 - 1).map(lambda n: rf_reference(n).value),
)


@st.composite
def entry_specs(draw: st.DrawFn) -> list[EntrySpec]:
    count = draw(st.integers(0, 12))
    refs = draw(st.lists(st.text("0123456789ABCDEF", min_size=6, max_size=20), min_size=count, max_size=count,
                         unique=True))
    return [
        EntrySpec(
            credit=draw(st.booleans()),
            cents=draw(st.integers(1, 10**13)),
            ref=ref,
            booked=draw(st.booleans()) if draw(st.integers(0, 4)) == 0 else True,
            booking_date=date(2026, 11, 1) + timedelta(days=draw(st.integers(0, 29))),
            debtor=draw(st.one_of(st.none(), xml_text)),
            debtor_iban=draw(st.sampled_from([None, "BE71096123456769", "NL91ABNA0417164300"])),
            structured=draw(structured_refs),
            lines=tuple(draw(st.lists(xml_text, max_size=3))),
        )
        for ref in refs
    ]


@settings(max_examples=60, deadline=None)
@given(entries=entry_specs(), version=st.integers(2, 8))
def test_generated_statements_give_back_the_same_credits(entries: list[EntrySpec], version: int) -> None:
    parsed = parse_statement(statement_xml(entries, version=version))
    assert parsed.version == f"camt.053.001.{version:02d}"
    [statement] = parsed.statements
    assert statement.statement_id == "STMT-1"
    assert statement.account_iban == "BE68539007547034"
    expected = [entry for entry in entries if entry.booked and entry.credit]
    assert [
        (c.transaction_id, c.amount_minor, c.currency, c.booking_date, c.value_date, c.debtor_name, c.debtor_iban,
         c.structured_reference, c.remittance_lines, c.reversal)
        for c in statement.credits
    ] == [
        (e.ref, e.cents, "EUR", e.booking_date, e.booking_date, e.debtor, e.debtor_iban, e.structured, e.lines, False)
        for e in expected
    ]
    assert statement.debits_skipped == sum(1 for e in entries if e.booked and not e.credit)
    assert statement.unbooked_skipped == sum(1 for e in entries if not e.booked)
    for credit in statement.credits:
        if credit.structured_reference is not None:
            assert normalise_reference(credit.structured_reference).value == credit.structured_reference


def test_the_belgian_sample_statement() -> None:
    parsed = parse_statement(SAMPLE.read_bytes())
    assert parsed.message_id == "CAMT053-20261130-0001"
    [statement] = parsed.statements
    assert statement.statement_id == "2026-230-BE68539007547034"
    assert statement.account_iban == "BE68539007547034"
    assert statement.account_currency == "EUR"
    assert statement.period_from == datetime.fromisoformat("2026-11-30T00:00:00+01:00")
    assert statement.period_to == datetime.fromisoformat("2026-11-30T23:59:59+01:00")
    assert statement.debits_skipped == 1
    first, second, batch_one, batch_two = statement.credits
    assert (first.transaction_id, first.amount_minor, first.debtor_name, first.debtor_iban) == (
        "2026113005213460001", 123430, "BRASSERIE MENARD SA", "BE71096123456769")
    assert normalise_reference(first.structured_reference) == ogm_reference(42)
    assert first.end_to_end_id is None  # NOTPROVIDED is no reference
    # No structured reference, but the debtor typed the OGM into the free text.
    assert second.structured_reference is None
    assert second.remittance_lines == ("Factuur INV-2026-0107 en INV-2026-0112", "+++000/0000/04343+++")
    assert parse_reference(" ".join(second.remittance_lines)) == ogm_reference(43)
    # One batch booking of EUR 1,000 is two payments from two debtors.
    assert [(c.transaction_id, c.amount_minor, c.debtor_name) for c in (batch_one, batch_two)] == [
        ("2026113005213460004-1", 60000, "Garage Peeters NV"),
        ("2026113005213460004-2", 40000, "Bakkerij Claes"),
    ]
    assert normalise_reference(batch_one.structured_reference) == ogm_reference(44)
    assert batch_two.remittance_lines == ("voorschot INV-2026-0120",)
    assert batch_two.value_date == date(2026, 12, 1)


def test_parsing_twice_gives_the_same_transaction_ids() -> None:
    """The ids are what makes a re-import change nothing; entries without any bank reference still get stable ones."""
    text = SAMPLE.read_text().replace("<AcctSvcrRef>2026113005213460003</AcctSvcrRef>", "").replace(
        "<NtryRef>0003</NtryRef>", "").replace("<Refs><EndToEndId>KL-2026-0915</EndToEndId></Refs>", "")
    first = parse_statement(text).statements[0].credits
    again = parse_statement(text).statements[0].credits
    assert [c.transaction_id for c in first] == [c.transaction_id for c in again]
    assert first[1].transaction_id == "2026-230-BE68539007547034#3"
    assert len({c.transaction_id for c in first}) == len(first)


# Hostile and wrong files: each refused with its own error, nothing returned.

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><GrpHdr><MsgId>&lol4;</MsgId>
</GrpHdr></BkToCstmrStmt></Document>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE Document [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><GrpHdr><MsgId>&secret;</MsgId>
</GrpHdr></BkToCstmrStmt></Document>"""

EXTERNAL_DTD = """<?xml version="1.0"?>
<!DOCTYPE Document SYSTEM "http://127.0.0.1:9/camt.dtd">
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"/>"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD], ids=["billion-laughs",
                                                                                     "external-entity", "external-dtd"])
def test_dtds_and_entities_are_refused_unexpanded(text: str) -> None:
    with pytest.raises(UnsafeXml, match="document type declaration") as caught:
        parse_statement(text)
    # Nothing was expanded or read: neither the laughs nor the password file reach the message.
    assert "lollol" not in str(caught.value) and "root:" not in str(caught.value)


def test_over_the_size_bound_is_refused_before_parsing() -> None:
    data = SAMPLE.read_bytes()
    with pytest.raises(StatementTooLarge, match=f"the file is {len(data)} bytes; the limit is 1000 bytes"):
        parse_statement(data, max_bytes=1000)
    with pytest.raises(StatementTooLarge):
        parse_statement(b" " * (camt053.DEFAULT_MAX_BYTES + 1))


def test_too_deep_is_refused() -> None:
    nested = "<a>" * 100 + "</a>" * 100
    with pytest.raises(XmlTooDeep, match="more than 40 deep"):
        parse_statement(nested)
    # The sample is well within the default bound, and a tight one says so.
    with pytest.raises(XmlTooDeep, match="more than 5 deep"):
        parse_statement(SAMPLE.read_bytes(), max_depth=5)


@pytest.mark.parametrize("text", ["", "   ", "invoice 42", "<Document>", "<a></b>", "\x00\x01"])
def test_not_xml(text: str) -> None:
    with pytest.raises(NotXml):
        parse_statement(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.02"/>', "camt.054.001.02 is not a bank-to"),
        ('<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.09"/>', "camt.053.001.09 is a camt.053 version"),
        ('<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"/>', "namespace"),
        ("<Document><BkToCstmrStmt/></Document>", "namespace 'none'"),
        ('<html xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"/>', "root element is 'html'"),
        ('<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><Other/></Document>', "no BkToCstmrStmt"),
    ],
)
def test_not_camt053(text: str, message: str) -> None:
    with pytest.raises(NotCamt053, match=message):
        parse_statement(text)


def one_entry(amount_xml: str = '<Amt Ccy="EUR">10.00</Amt>', indicator: str = "CRDT") -> str:
    entry = EntrySpec(True, 1000, "R1", True, date(2026, 11, 3), None, None, None, ())
    text = statement_xml([entry])
    return text.replace('<Amt Ccy="EUR">10.00</Amt>', amount_xml).replace(
        "<CdtDbtInd>CRDT</CdtDbtInd>", f"<CdtDbtInd>{indicator}</CdtDbtInd>")


@pytest.mark.parametrize(
    ("amount_xml", "message"),
    [
        ('<Amt Ccy="EUR">10.005</Amt>', "'10.005' is not a EUR amount: EUR amounts have at most 2 decimals"),
        ('<Amt Ccy="EUR">ten</Amt>', "'ten' is not a EUR amount"),
        ('<Amt Ccy="EUR">-5.00</Amt>', "must not be negative"),
        ('<Amt Ccy="EUR">1,50</Amt>', "'1,50' is not a EUR amount"),
        ('<Amt Ccy="EURO">10.00</Amt>', "'EURO' is not an ISO 4217 currency code"),
        ("<Amt>10.00</Amt>", "'' is not an ISO 4217 currency code"),
        ('<Amt Ccy="EUR"></Amt>', "the amount is missing"),
    ],
)
def test_malformed_amounts_name_the_entry(amount_xml: str, message: str) -> None:
    with pytest.raises(MalformedAmount, match=message) as caught:
        parse_statement(one_entry(amount_xml))
    assert caught.value.where == "Stmt[1]/Ntry[1]/Amt"


def test_a_period_that_ends_before_it_starts() -> None:
    text = statement_xml([], period=("2026-11-30T00:00:00+01:00", "2026-11-01T00:00:00+01:00"))
    with pytest.raises(InvalidPeriod, match=r"ends \(2026-11-01T00:00:00\+01:00\) before it starts") as caught:
        parse_statement(text)
    assert caught.value.where == "Stmt[1]/FrToDt"
    assert isinstance(caught.value, MalformedStatement)


def test_a_one_instant_period_is_fine() -> None:
    text = statement_xml([], period=("2026-11-30T00:00:00", "2026-11-30T00:00:00"))
    assert parse_statement(text).statements[0].credits == ()


def test_other_malformed_statements() -> None:
    with pytest.raises(MalformedStatement, match="CdtDbtInd must be CRDT or DBIT, not 'CRED'"):
        parse_statement(one_entry(indicator="CRED"))
    with pytest.raises(MalformedStatement, match="not a date and time"):
        parse_statement(statement_xml([], period=("yesterday", "2026-11-30T00:00:00")))
    with pytest.raises(MalformedStatement, match="no MsgId"):
        parse_statement(statement_xml([]).replace("<MsgId>MSG-1</MsgId>", ""))
    with pytest.raises(MalformedStatement, match="no Id"):
        parse_statement(statement_xml([]).replace("<Id>STMT-1</Id>", ""))
    with pytest.raises(MalformedStatement, match="holds no statement"):
        parse_statement(
            '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt>'
            "<GrpHdr><MsgId>M</MsgId></GrpHdr></BkToCstmrStmt></Document>"
        )


def test_a_batch_whose_parts_do_not_add_up() -> None:
    text = SAMPLE.read_text().replace('<Amt Ccy="EUR">400.00</Amt>', '<Amt Ccy="EUR">399.99</Amt>')
    with pytest.raises(MalformedAmount, match="do not add up") as caught:
        parse_statement(text)
    assert caught.value.where == "Stmt[1]/Ntry[4]/Amt"


def test_a_batch_without_its_own_amounts_is_one_credit_keeping_all_remittance() -> None:
    text = SAMPLE.read_text()
    for part in ("600.00", "400.00"):
        text = text.replace(f'<AmtDtls><TxAmt><Amt Ccy="EUR">{part}</Amt></TxAmt></AmtDtls>', "")
    batch = parse_statement(text).statements[0].credits[-1]
    assert (batch.transaction_id, batch.amount_minor, batch.debtor_name) == (
        "2026113005213460004", 100000, "Garage Peeters NV")
    assert normalise_reference(batch.structured_reference) == ogm_reference(44)
    assert batch.remittance_lines == ("voorschot INV-2026-0120",)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_damaged_statement_is_parsed_or_refused_with_a_statement_error(data: st.DataObject) -> None:
    """Truncated, or with a stretch replaced by other bytes: never any other exception."""
    original = SAMPLE.read_bytes()
    start = data.draw(st.integers(0, len(original)))
    end = data.draw(st.integers(start, min(len(original), start + 40)))
    replacement = data.draw(st.one_of(st.binary(max_size=20), st.sampled_from([b"", b"<", b"&", b"-", b"x", b"9"])))
    damaged = original[:start] + replacement + original[end:]
    try:
        parsed = parse_statement(damaged)
    except camt053.StatementError as error:
        assert error.message
    else:
        assert parsed.statements


def test_an_unknown_encoding_is_not_xml() -> None:
    """Found by the property test above: an XML declaration with an encoding Python does not know."""
    with pytest.raises(camt053.NotXml, match="known encoding"):
        camt053.parse_statement(b'<?xml version="1.0" encoding="AUTF-8"?><Document/>')
