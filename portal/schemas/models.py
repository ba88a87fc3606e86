"""The machine API's bodies, as pydantic models: they validate requests and describe both directions in
the OpenAPI document. Models are strict (no coercion: "12" is not 12) and refuse unknown fields.

Money fields are plain strings here; they are checked against the currency in `portal.schemas.convert`,
where the currency is known.

Text a person reads on one line (numbers, names, titles, references, emails) is `SingleLine`: a line break
or a bidirectional control there could forge a second line in a mail header, a CSV export or a log, or show
a debtor text in another order than it is stored. Text meant to hold paragraphs (line descriptions, notes,
remarks) stays free of that rule. Every date is a `Date`, within the range the domain can count with.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from portal.domain.invoices import EARLIEST_DATE, LATEST_DATE

SUPPORTED_LANGUAGES = ("fr", "nl", "en", "de", "sv")

# CR, LF, the Unicode line and paragraph separators, and the bidirectional embeddings, overrides and
# isolates (U+202A-U+202E, U+2066-U+2069).
_NOT_ONE_LINE = re.compile("[\r\n\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _one_line(value: str) -> str:
    if _NOT_ONE_LINE.search(value):
        raise PydanticCustomError(
            "single_line", "must be a single line, without line breaks or bidirectional control characters")
    return value


SingleLine = Annotated[str, AfterValidator(_one_line)]
Date = Annotated[dt.date, Field(ge=EARLIEST_DATE, le=LATEST_DATE,
                                description=f"A date from {EARLIEST_DATE} to {LATEST_DATE}.")]

ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$")]
Amount = Annotated[
    str,
    StringConstraints(max_length=40),
    Field(description='Decimal string with at most the currency\'s decimals, e.g. "1234.50" (EUR), "1200" (JPY).',
          examples=["1234.50"]),
]
Text = Annotated[str, StringConstraints(max_length=10_000)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), Field(examples=["EUR"])]
Locale = Annotated[
    str,
    StringConstraints(pattern=r"^(fr|nl|en|de|sv)(-[A-Z]{2})?$"),
    Field(description="Language of the debtor's pages and emails, optionally with a region: fr, nl-BE, sv.",
          examples=["nl-BE"]),
]
Decimal_ = Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?$", max_length=20)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Address(Strict):
    line1: Annotated[SingleLine, StringConstraints(max_length=200)] | None = None
    line2: Annotated[SingleLine, StringConstraints(max_length=200)] | None = None
    postal_code: Annotated[SingleLine, StringConstraints(max_length=20)] | None = None
    city: Annotated[SingleLine, StringConstraints(max_length=100)] | None = None
    region: Annotated[SingleLine, StringConstraints(max_length=100)] | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None


class CustomerIn(Strict):
    name: Annotated[SingleLine, StringConstraints(min_length=1, max_length=300)]
    email: Annotated[SingleLine, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = None
    locale: Locale = "en"
    address: Address | None = None
    vat_number: Annotated[SingleLine, StringConstraints(max_length=40)] | None = None


class CustomerOut(CustomerIn):
    model_config = ConfigDict(extra="forbid")
    external_id: str
    created_at: dt.datetime
    updated_at: dt.datetime


class PaymentTerms(Strict):
    """When payment is due, counted from the issue date (or from activation for a draft)."""

    type: Literal["at_reception", "net_days", "end_of_month", "custom"]
    days: Annotated[int, Field(ge=0, le=3650)] | None = Field(
        None, description="For net_days: days after the start date. For end_of_month: days added before "
        "rounding up to the month's end (0 if absent).")


class LineIn(Strict):
    description: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    quantity: Decimal_ = Field(description="Decimal string, up to 6 decimals.", examples=["2", "1.5"])
    unit_price: Amount = Field(description="Price of one unit excluding VAT; negative for a discount line.")
    vat_rate: Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]?|100)(\.[0-9]{1,3})?$")] = Field(
        description="Percentage, e.g. \"21\" or \"5.5\".", examples=["21"])
    total: Amount = Field(description="Line total excluding VAT, as the billing system computed it.")


class InvoiceBody(Strict):
    """An invoice as the billing system sends it: a full replacement on every PUT."""

    customer: ExternalId = Field(description="The customer's external id; the customer must exist.")
    number: Annotated[SingleLine, StringConstraints(min_length=1, max_length=60)] | None = None
    kind: Literal["invoice", "credit_note"] = "invoice"
    status: Literal["draft", "open", "paid", "cancelled"]
    issue_date: Date | None = None
    due_date: Date | None = None
    payment_terms: PaymentTerms | None = None
    currency: Currency
    total: Amount = Field(description="Total including VAT; never negative (a credit note is its own kind).")
    amount_due: Amount | None = Field(
        None, description="What the debtor still owes according to the billing system; defaults to the total "
        "(0 for paid and cancelled invoices).")
    lines: Annotated[list[LineIn], Field(max_length=1000)] = []
    title: Annotated[SingleLine, StringConstraints(max_length=300)] | None = None
    header_note: Text | None = None
    footer_note: Text | None = None
    vat_mention: Annotated[str, StringConstraints(max_length=1000)] | None = None
    delivery_date: Date | None = None
    store: Annotated[SingleLine, StringConstraints(max_length=100)] | None = Field(
        None, description="Store or sales channel, to tell countries or consumer/business flows apart.")
    may_have_documents: bool = Field(
        True, description="false takes the invoice out of the has_document=false listing for good.")
    version: Annotated[int, Field(ge=0)] | None = Field(
        None, description="The billing system's revision of this invoice. A lower version than the one "
        "stored, or the same version with other content, is refused with 409.")


class BatchInvoice(InvoiceBody):
    external_id: ExternalId


class InvoiceBatch(Strict):
    """The batch body as documented: up to 1,000 invoices, each with its external_id."""

    invoices: Annotated[list[BatchInvoice], Field(min_length=1, max_length=1000)]


class InvoiceBatchEnvelope(BaseModel):
    """The batch body as first read: items are validated one by one, so one bad item does not stop the
    others."""

    model_config = ConfigDict(extra="forbid")
    invoices: Annotated[list[Any], Field(min_length=1)]


class LineOut(Strict):
    model_config = ConfigDict(extra="forbid")
    description: str
    quantity: str
    unit_price: str
    vat_rate: str
    total: str


class DocumentOut(BaseModel):
    sha256: str
    size: int
    updated_at: dt.datetime
    url: str


class TimelineEntry(BaseModel):
    at: dt.datetime
    kind: str
    detail: dict[str, object] | None


class ConflictOut(BaseModel):
    id: int
    invoice: str = Field(description="External id of the invoice.")
    created_at: dt.datetime
    code: Literal["reopens_paid", "total_below_paid", "cancels_paid"]
    detail: str
    payload: dict[str, object]
    resolved_at: dt.datetime | None


class InvoiceOut(BaseModel):
    external_id: str
    customer: str
    number: str | None
    kind: Literal["invoice", "credit_note"]
    status: Literal["draft", "open", "paid", "cancelled"]
    issue_date: dt.date | None
    due_date: dt.date | None
    payment_terms: PaymentTerms | None
    currency: str
    total: str
    amount_due: str
    amount_paid: str = Field(description="What Quittance recorded as paid: online payments, credit notes the "
                             "debtor deducted and, on a credit note, the credit already used.")
    amount_remaining: str = Field(description="What is left, ready to use: on an open invoice, what the debtor "
                                  "still owes (the lower of amount_due and total less amount_paid); on an open "
                                  "credit note, the credit it still holds; 0 otherwise.")
    lines: list[LineOut]
    title: str | None
    header_note: str | None
    footer_note: str | None
    vat_mention: str | None
    delivery_date: dt.date | None
    store: str | None
    may_have_documents: bool
    has_document: bool
    document: DocumentOut | None
    version: int | None
    revision: int
    created_at: dt.datetime
    updated_at: dt.datetime
    activated_at: dt.datetime | None
    cancelled_at: dt.datetime | None


class InvoiceDetail(InvoiceOut):
    timeline: list[TimelineEntry]
    conflicts: list[ConflictOut]


class InvoiceWriteResult(BaseModel):
    result: Literal["created", "updated", "unchanged"]
    invoice: InvoiceOut


class FieldProblem(BaseModel):
    path: str = Field(description="JSON Pointer to the offending field, e.g. /lines/0/unit_price.")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = None
    code: str | None = None


class BatchItemResult(BaseModel):
    external_id: str | None
    result: Literal["created", "updated", "unchanged", "error"]
    revision: int | None = None
    problem: Problem | None = None


class BatchResult(BaseModel):
    created: int
    updated: int
    unchanged: int
    failed: int
    results: list[BatchItemResult]


class InvoicePage(BaseModel):
    items: list[InvoiceOut]
    next_cursor: str | None


class ConflictPage(BaseModel):
    items: list[ConflictOut]
    next_cursor: str | None


class LineSelection(Strict):
    line: Annotated[int, Field(ge=0, description="Index of the line in the draft, from 0.")]
    quantity: Decimal_ | None = Field(None, description="How much of the line to activate; all of it if absent.")


class PartActivation(Strict):
    external_id: ExternalId = Field(description="External id for the new invoice made of the selected lines.")
    lines: Annotated[list[LineSelection], Field(min_length=1, max_length=1000)]
    number: Annotated[SingleLine, StringConstraints(min_length=1, max_length=60)] | None = None


class DueDateExtension(Strict):
    due_date: Date


class PartActivationResult(BaseModel):
    activated: InvoiceOut
    remaining: InvoiceOut


class ArchiveEntryResult(BaseModel):
    name: str
    result: Literal["stored", "unchanged", "unknown_invoice", "not_a_pdf", "rejected"]
    invoice: str | None = None
    detail: str | None = None


class ArchiveResult(BaseModel):
    stored: int
    unchanged: int = Field(description="Entries whose invoice already had these exact bytes.")
    failed: int
    entries: list[ArchiveEntryResult]
