"""Read an ISO 20022 CAMT.053 bank-to-customer statement (camt.053.001.02 to .08) safely.

Applies when an organization imports its bank statement to match incoming transfers (cash application). The
file comes from outside, so it is parsed defensively: at most ``max_bytes`` (10 MiB by default), at most
``max_depth`` nested elements, and no document type declaration at all, hence no entities, external or
expanding (billion laughs): defusedxml refuses them before anything is expanded or fetched. Nothing here
touches the network or the file system.

The result keeps what matching needs: per statement its id, account IBAN and period, and per booked credit its
bank transaction id, booking date, amount in integer minor units, debtor, structured reference
(``RmtInf/Strd/CdtrRefInf/Ref``) and unstructured remittance lines (``RmtInf/Ustrd``). A batch entry whose
transaction details carry their own amounts becomes one credit per transaction (otherwise one credit with the
remittance lines of all). Debits, and entries not yet booked, are counted and left out.

Every refusal is a ``StatementError`` subclass whose message names what is wrong and, where it helps, where
(``where``, e.g. ``Stmt[1]/Ntry[3]/Amt``); the API turns them into 4xx answers.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import date, datetime
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException, DTDForbidden
from defusedxml.ElementTree import ParseError, iterparse

from portal.money import MoneyError, is_currency, parse_minor

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_DEPTH = 40  # a real camt.053 nests about 14 deep (…/TxDtls/RltdPties/Dbtr/Pty/PstlAdr/AdrLine)
_NAMESPACE = re.compile(r"urn:iso:std:iso:20022:tech:xsd:(camt\.\d{3}\.\d{3}\.\d{2})")
SUPPORTED_VERSIONS = tuple(f"camt.053.001.{n:02d}" for n in range(2, 9))


class StatementError(ValueError):
    """The file is not a statement Quittance can import; ``message`` says why, ``where`` points into it."""

    def __init__(self, message: str, where: str | None = None):
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.where = where


class StatementTooLarge(StatementError):
    """Over the size bound, refused before parsing."""


class UnsafeXml(StatementError):
    """A DTD, an entity declaration or an external reference: refused, never expanded or fetched."""


class XmlTooDeep(StatementError):
    """Elements nested deeper than the depth bound."""


class NotXml(StatementError):
    """Not well-formed XML."""


class NotCamt053(StatementError):
    """Well-formed XML, but not a camt.053 statement of a supported version."""


class MalformedStatement(StatementError):
    """A camt.053 statement with a missing or invalid element."""


class MalformedAmount(MalformedStatement):
    """An amount or currency that is not an exact amount in that currency."""


class InvalidPeriod(MalformedStatement):
    """A statement period that ends before it starts."""


@dataclass(frozen=True)
class Credit:
    """One incoming payment, as the bank booked it."""

    transaction_id: str  # the bank's reference, unique per account: AcctSvcrRef, NtryRef or a TxDtls reference
    booking_date: date | None
    value_date: date | None
    amount_minor: int
    currency: str
    debtor_name: str | None
    debtor_iban: str | None
    structured_reference: str | None  # RmtInf/Strd/CdtrRefInf/Ref, as written by the bank
    remittance_lines: tuple[str, ...]  # RmtInf/Ustrd
    end_to_end_id: str | None
    reversal: bool  # RvslInd: a reversed debit, money back rather than a payment


@dataclass(frozen=True)
class Statement:
    statement_id: str
    account_iban: str | None  # None for an account identified otherwise (Othr)
    account_currency: str | None
    period_from: datetime | None
    period_to: datetime | None
    credits: tuple[Credit, ...]
    debits_skipped: int
    unbooked_skipped: int  # entries whose status is not BOOK (pending or information only)


@dataclass(frozen=True)
class StatementFile:
    version: str  # e.g. "camt.053.001.02"
    message_id: str
    created_at: datetime | None
    statements: tuple[Statement, ...]


class _Reader:
    """Namespace-bound lookups on the parsed tree, with the path of each element for error messages."""

    def __init__(self, namespace: str):
        self.ns = namespace
        self._qualified: dict[str, str] = {}

    def q(self, path: str) -> str:
        # Qualified once per path: a 10,000-entry statement asks for the same few dozen paths over and over.
        qualified = self._qualified.get(path)
        if qualified is None:
            qualified = self._qualified[path] = "/".join(f"{{{self.ns}}}{part}" for part in path.split("/"))
        return qualified

    def find(self, element: Element, path: str) -> Element | None:
        return element.find(self.q(path))

    def findall(self, element: Element, path: str) -> list[Element]:
        return element.findall(self.q(path))

    def text(self, element: Element, path: str) -> str | None:
        found = element.find(self.q(path))
        if found is None or found.text is None:
            return None
        value = found.text.strip()
        return value or None

    def first_text(self, element: Element, *paths: str) -> str | None:
        for path in paths:
            value = self.text(element, path)
            if value is not None:
                return value
        return None


def _parse_tree(data: bytes, max_depth: int) -> Element:
    depth = 0
    root: Element | None = None
    try:
        for event, element in iterparse(
            io.BytesIO(data), events=("start", "end"), forbid_dtd=True, forbid_entities=True, forbid_external=True
        ):
            if event == "start":
                depth += 1
                if root is None:
                    root = element
                if depth > max_depth:
                    raise XmlTooDeep(f"elements are nested more than {max_depth} deep")
            else:
                depth -= 1
    except DTDForbidden:
        raise UnsafeXml(
            "the file has a document type declaration (<!DOCTYPE>); DTDs and entities are refused"
        ) from None
    except DefusedXmlException as error:
        # Entities and external references need a DTD, refused above; this is the net under that.
        raise UnsafeXml(f"the file uses a refused XML construct ({type(error).__name__})") from None
    except ParseError as error:
        raise NotXml(f"not well-formed XML ({error})") from None
    except LookupError as error:  # an XML declaration naming an encoding Python does not know
        raise NotXml(f"not XML in a known encoding ({error})") from None
    assert root is not None  # iterparse raises ParseError on an empty document
    return root


def _parse_datetime(value: str | None, where: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise MalformedStatement(f"{value!r} is not a date and time (ISO 8601)", where) from None


def _parse_date(reader: _Reader, element: Element | None, where: str) -> date | None:
    """``Dt`` (a date) or ``DtTm`` (a date and time) inside a date choice such as BookgDt or ValDt."""
    if element is None:
        return None
    day = reader.text(element, "Dt")
    if day is not None:
        try:
            return date.fromisoformat(day)
        except ValueError:
            raise MalformedStatement(f"{day!r} is not a date (YYYY-MM-DD)", f"{where}/Dt") from None
    moment = _parse_datetime(reader.text(element, "DtTm"), f"{where}/DtTm")
    return moment.date() if moment else None


def _parse_amount(reader: _Reader, element: Element | None, where: str) -> tuple[int, str]:
    if element is None or element.text is None:
        raise MalformedAmount("the amount is missing", where)
    currency = element.get("Ccy", "").strip()
    if not is_currency(currency):
        raise MalformedAmount(f"{currency!r} is not an ISO 4217 currency code", where)
    text = element.text.strip()
    try:
        minor = parse_minor(text, currency)
    except MoneyError as error:
        raise MalformedAmount(f"{text!r} is not a {currency} amount: {error}", where) from None
    return minor, currency


def _transaction_ref(reader: _Reader, details: Element) -> str | None:
    for path in ("Refs/AcctSvcrRef", "Refs/TxId", "Refs/InstrId", "Refs/EndToEndId"):
        value = reader.text(details, path)
        if value is not None and value.upper() != "NOTPROVIDED":
            return value
    return None


def _credit(
    reader: _Reader,
    *,
    transaction_id: str,
    entry: Element,
    details: list[Element],
    amount: tuple[int, str],
    reversal: bool,
    where: str,
) -> Credit:
    """One credit from an entry and its transaction details (several only for a batch without its own amounts:
    then each field comes from the first transaction that has it, and the remittance lines from all)."""

    def first(path: str) -> str | None:
        for transaction in details:
            value = reader.text(transaction, path)
            if value is not None:
                return value
        return None

    booking = _parse_date(reader, reader.find(entry, "BookgDt"), f"{where}/BookgDt")
    value = _parse_date(reader, reader.find(entry, "ValDt"), f"{where}/ValDt")
    # camt.053.001.08 wraps the debtor in Pty; earlier versions do not.
    debtor_name = first("RltdPties/Dbtr/Pty/Nm") or first("RltdPties/Dbtr/Nm")
    debtor_iban = first("RltdPties/DbtrAcct/Id/IBAN")
    end_to_end = first("Refs/EndToEndId")
    lines = tuple(
        line.text.strip()
        for transaction in details
        for line in reader.findall(transaction, "RmtInf/Ustrd")
        if line.text and line.text.strip()
    )
    return Credit(
        transaction_id=transaction_id,
        booking_date=booking,
        value_date=value,
        amount_minor=amount[0],
        currency=amount[1],
        debtor_name=debtor_name,
        debtor_iban=debtor_iban.replace(" ", "").upper() if debtor_iban else None,
        structured_reference=first("RmtInf/Strd/CdtrRefInf/Ref"),
        remittance_lines=lines,
        end_to_end_id=None if end_to_end is None or end_to_end.upper() == "NOTPROVIDED" else end_to_end,
        reversal=reversal,
    )


def _entry_credits(reader: _Reader, entry: Element, statement_id: str, index: int, where: str) -> list[Credit]:
    amount = _parse_amount(reader, reader.find(entry, "Amt"), f"{where}/Amt")
    reversal = (reader.text(entry, "RvslInd") or "false").lower() in ("true", "1")
    entry_ref = reader.first_text(entry, "AcctSvcrRef", "NtryRef")
    transactions = reader.findall(entry, "NtryDtls/TxDtls")
    # A batch booking: one entry, several payments each with its own amount and remittance information.
    if len(transactions) > 1:
        amounts = []
        for number, details in enumerate(transactions, start=1):
            element = reader.find(details, "Amt")
            if element is None:
                element = reader.find(details, "AmtDtls/TxAmt/Amt")
            if element is None:
                break
            amounts.append(_parse_amount(reader, element, f"{where}/NtryDtls/TxDtls[{number}]/Amt"))
        else:
            if any(currency != amount[1] for _, currency in amounts) or sum(m for m, _ in amounts) != amount[0]:
                raise MalformedAmount(
                    "the transaction amounts of this batch entry do not add up to the entry amount", f"{where}/Amt"
                )
            credits = []
            for number, (details, part) in enumerate(zip(transactions, amounts, strict=True), start=1):
                # The bank's own reference for the transaction if it gives one; otherwise the entry's, numbered.
                transaction_id = reader.text(details, "Refs/AcctSvcrRef") or (
                    f"{entry_ref or f'{statement_id}#{index}'}/{number}"
                )
                credits.append(
                    _credit(
                        reader,
                        transaction_id=transaction_id,
                        entry=entry,
                        details=[details],
                        amount=part,
                        reversal=reversal,
                        where=f"{where}/NtryDtls/TxDtls[{number}]",
                    )
                )
            return credits
    found_ref = entry_ref or next(
        (ref for ref in (_transaction_ref(reader, details) for details in transactions) if ref is not None), None
    )
    # Without any reference, the statement id and the entry's position still name it the same way on every
    # import of the same statement.
    transaction_id = found_ref or f"{statement_id}#{index}"
    return [
        _credit(
            reader, transaction_id=transaction_id, entry=entry, details=transactions, amount=amount, reversal=reversal,
            where=where,
        )
    ]


def _entry_status(reader: _Reader, entry: Element) -> str | None:
    # Sts is a code up to camt.053.001.06 and a choice (Sts/Cd) from .07 on.
    return reader.first_text(entry, "Sts/Cd", "Sts")


def _statement(reader: _Reader, element: Element, number: int) -> Statement:
    where = f"Stmt[{number}]"
    statement_id = reader.text(element, "Id")
    if statement_id is None:
        raise MalformedStatement("the statement has no Id", f"{where}/Id")
    period_from = _parse_datetime(reader.text(element, "FrToDt/FrDtTm"), f"{where}/FrToDt/FrDtTm")
    period_to = _parse_datetime(reader.text(element, "FrToDt/ToDtTm"), f"{where}/FrToDt/ToDtTm")
    if period_from is not None and period_to is not None:
        # One side with a UTC offset and one without: compare the clock times as written.
        start, end = period_from, period_to
        if (start.tzinfo is None) != (end.tzinfo is None):
            start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
        if end < start:
            raise InvalidPeriod(
                f"the statement period ends ({period_to.isoformat()}) before it starts ({period_from.isoformat()})",
                f"{where}/FrToDt",
            )
    iban = reader.text(element, "Acct/Id/IBAN")
    credits: list[Credit] = []
    debits = unbooked = 0
    for index, entry in enumerate(reader.findall(element, "Ntry"), start=1):
        entry_where = f"{where}/Ntry[{index}]"
        indicator = reader.text(entry, "CdtDbtInd")
        if indicator not in ("CRDT", "DBIT"):
            raise MalformedStatement(f"CdtDbtInd must be CRDT or DBIT, not {indicator!r}", f"{entry_where}/CdtDbtInd")
        status = _entry_status(reader, entry)
        if status is not None and status != "BOOK":
            unbooked += 1
            continue
        if indicator == "DBIT":
            debits += 1
            continue
        credits.extend(_entry_credits(reader, entry, statement_id, index, entry_where))
    return Statement(
        statement_id=statement_id,
        account_iban=iban.replace(" ", "").upper() if iban else None,
        account_currency=reader.text(element, "Acct/Ccy"),
        period_from=period_from,
        period_to=period_to,
        credits=tuple(credits),
        debits_skipped=debits,
        unbooked_skipped=unbooked,
    )


def parse_statement(
    data: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> StatementFile:
    """Parse a camt.053 file; a ``StatementError`` subclass says precisely why one is refused."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > max_bytes:
        raise StatementTooLarge(f"the file is {len(data)} bytes; the limit is {max_bytes} bytes")
    if not data.strip():
        raise NotXml("the file is empty")
    root = _parse_tree(data, max_depth)
    namespace, _, local = root.tag[1:].partition("}") if root.tag.startswith("{") else ("", "", root.tag)
    match = _NAMESPACE.fullmatch(namespace)
    if match is None or local != "Document":
        raise NotCamt053(
            f"the root element is {local!r} in namespace {namespace or 'none'!r}; expected Document in "
            f"urn:iso:std:iso:20022:tech:xsd:camt.053.001.02 to .08"
        )
    version = match.group(1)
    if version not in SUPPORTED_VERSIONS:
        kind = "a camt.053 version Quittance does not read" if version.startswith("camt.053.") else (
            "not a bank-to-customer statement (camt.053)"
        )
        raise NotCamt053(f"{version} is {kind}; supported: camt.053.001.02 to .08")
    reader = _Reader(namespace)
    body = reader.find(root, "BkToCstmrStmt")
    if body is None:
        raise NotCamt053("the Document has no BkToCstmrStmt element")
    message_id = reader.text(body, "GrpHdr/MsgId")
    if message_id is None:
        raise MalformedStatement("the group header has no MsgId", "GrpHdr/MsgId")
    created_at = _parse_datetime(reader.text(body, "GrpHdr/CreDtTm"), "GrpHdr/CreDtTm")
    elements = reader.findall(body, "Stmt")
    if not elements:
        raise MalformedStatement("the file holds no statement (Stmt)", "BkToCstmrStmt")
    return StatementFile(
        version=version,
        message_id=message_id,
        created_at=created_at,
        statements=tuple(_statement(reader, element, number) for number, element in enumerate(elements, start=1)),
    )
