"""Between the API's JSON and the domain: amounts checked against their currency on the way in, minor units
formatted on the way out. Output dicts are built by hand (not through pydantic) because listing and batch
answers are hot paths; tests check them against the OpenAPI schemas."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from portal.clock import as_utc
from portal.domain.customers import CustomerInput
from portal.domain.debtor import remaining_minor
from portal.domain.invoices import InvoiceInput, derived_due_date
from portal.errors import FieldError, InvalidInput
from portal.money import MoneyError, exponent, format_minor, is_currency, parse_minor
from portal.schemas.models import CustomerIn, InvoiceBody


def customer_input(external_id: str, body: CustomerIn) -> CustomerInput:
    return CustomerInput(
        external_id=external_id, name=body.name, email=body.email, locale=body.locale,
        address=body.address.model_dump(exclude_none=True) if body.address else None,
        vat_number=body.vat_number)


def customer_output(row: sa.Row[Any]) -> dict[str, Any]:
    return {"external_id": row.external_id, "name": row.name, "email": row.email, "locale": row.locale,
            "address": row.address, "vat_number": row.vat_number,
            "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}


# Plain amounts already read, by the currency's number of decimals: unit prices, line totals and even invoice
# totals repeat across a billing system's invoices, and a look-up is five times cheaper than reading one. Only
# unsigned, valid amounts are kept (the same for every caller); emptied when it reaches its bound.
_PLAIN_AMOUNTS: dict[int, dict[str, int]] = {}
_PLAIN_AMOUNTS_KEPT = 20_000


def invoice_input(external_id: str, body: InvoiceBody) -> InvoiceInput:
    """Raises InvalidInput naming every field whose amount does not fit the currency."""
    errors: list[FieldError] = []
    currency = body.currency
    if not is_currency(currency):
        raise InvalidInput("Unknown currency.", [FieldError("/currency", f"{currency} is not an ISO 4217 code")])

    decimals = exponent(currency)
    scale = 10**decimals
    known = _PLAIN_AMOUNTS.setdefault(decimals, {})

    def amount(text: str, path: str, line: int = -1, *, allow_negative: bool = False) -> int:
        # The usual amount, ASCII digits without sign or leading zero and at most the currency's decimals
        # ("1234.50"), is read here, at a third of parse_minor's cost (seven amounts an invoice), or found
        # among those read before; anything else goes to parse_minor, which gives the same value or words the
        # error. A line's path is only spelled out for an error.
        minor = known.get(text)
        if minor is not None:
            return minor
        whole, dot, fraction = text.partition(".")
        if (whole.isdigit() and whole.isascii() and len(whole) <= 15 and (whole[0] != "0" or len(whole) == 1)
                and (not dot or (fraction.isdigit() and fraction.isascii() and len(fraction) <= decimals))):
            minor = int(whole) * scale + int(fraction.ljust(decimals, "0")) if fraction else int(whole) * scale
            if len(known) >= _PLAIN_AMOUNTS_KEPT:
                known.clear()
            known[text] = minor
            return minor
        try:
            return parse_minor(text, currency, allow_negative=allow_negative)
        except MoneyError as exc:
            errors.append(FieldError(f"/lines/{line}/{path}" if line >= 0 else path, str(exc)))
            return 0

    total = amount(body.total, "/total")
    if body.amount_due is not None:
        due = amount(body.amount_due, "/amount_due")
    else:
        due = 0 if body.status in ("paid", "cancelled") else total
    if due > total:
        errors.append(FieldError("/amount_due", "must not exceed the total"))
    # Line amounts are the ones that repeat most: looked up here first, without a call (a 0 found is falsy
    # and simply read again).
    lines = [
        {"description": line.description, "quantity": line.quantity, "vat_rate": line.vat_rate,
         "unit_price_minor": known.get(line.unit_price) or amount(line.unit_price, "unit_price", i,
                                                                  allow_negative=True),
         "total_minor": known.get(line.total) or amount(line.total, "total", i, allow_negative=True)}
        for i, line in enumerate(body.lines)
    ]
    terms = body.payment_terms
    if terms is not None:
        if terms.type == "net_days" and terms.days is None:
            errors.append(FieldError("/payment_terms/days", "net_days terms need a number of days"))
        if terms.type == "custom" and body.due_date is None:
            errors.append(FieldError("/due_date", "custom terms need a due date"))
    if body.due_date and body.issue_date and body.due_date < body.issue_date:
        errors.append(FieldError("/due_date", "must not be before the issue date"))
    if terms is not None and body.issue_date is not None and body.due_date is None and body.status != "draft":
        # The due date the terms will give must be in range too (schemas.Date bounds the dates given).
        try:
            derived_due_date(terms.type, terms.days, body.issue_date)
        except InvalidInput as exc:
            errors += exc.errors
    if errors:
        raise InvalidInput("The request has invalid fields.", errors)
    return InvoiceInput(
        external_id=external_id, customer=body.customer, number=body.number, kind=body.kind,
        status=body.status, issue_date=body.issue_date, due_date=body.due_date,
        payment_terms=terms.type if terms else None, payment_terms_days=terms.days if terms else None,
        currency=currency, total_minor=total, amount_due_minor=due, lines=lines, title=body.title,
        header_note=body.header_note, footer_note=body.footer_note, vat_mention=body.vat_mention,
        delivery_date=body.delivery_date, store=body.store, may_have_documents=body.may_have_documents,
        version=body.version)


def iso(value: dt.datetime | dt.date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return as_utc(value).isoformat()
    return value.isoformat()


def invoice_body_dict(row: sa.Row[Any]) -> dict[str, Any]:
    """The stored invoice as a PUT body: what a JSON Merge Patch applies to."""
    currency = row.currency
    terms = None
    if row.payment_terms:
        terms = {"type": row.payment_terms}
        if row.payment_terms_days is not None:
            terms["days"] = row.payment_terms_days
    body = {
        "customer": row.customer_external_id, "number": row.number, "kind": row.kind, "status": row.status,
        "issue_date": iso(row.issue_date), "due_date": iso(row.due_date), "payment_terms": terms,
        "currency": currency, "total": format_minor(row.total_minor, currency),
        "amount_due": format_minor(row.amount_due_minor, currency),
        "lines": [{"description": line["description"], "quantity": line["quantity"],
                   "unit_price": format_minor(line["unit_price_minor"], currency), "vat_rate": line["vat_rate"],
                   "total": format_minor(line["total_minor"], currency)} for line in row.lines],
        "title": row.title, "header_note": row.header_note, "footer_note": row.footer_note,
        "vat_mention": row.vat_mention, "delivery_date": iso(row.delivery_date), "store": row.store,
        "may_have_documents": row.may_have_documents, "version": row.version,
    }
    return body


def invoice_output(row: sa.Row[Any], base_url: str) -> dict[str, Any]:
    body = invoice_body_dict(row)
    document = None
    if row.document_sha256:
        document = {"sha256": row.document_sha256, "size": row.document_size,
                    "updated_at": iso(row.document_updated_at),
                    "url": f"{base_url}/api/v1/invoices/{row.external_id}/document"}
    return {
        "external_id": row.external_id, **body,
        "amount_paid": format_minor(row.paid_minor, row.currency),
        "amount_remaining": format_minor(remaining_minor(row), row.currency),
        "has_document": row.document_sha256 is not None, "document": document, "revision": row.revision,
        "created_at": iso(row.created_at), "updated_at": iso(row.updated_at),
        "activated_at": iso(row.activated_at), "cancelled_at": iso(row.cancelled_at),
    }


def timeline_output(row: sa.Row[Any]) -> dict[str, Any]:
    return {"at": iso(row.occurred_at), "kind": row.kind, "detail": row.detail}


def conflict_output(row: sa.Row[Any]) -> dict[str, Any]:
    return {"id": row.id, "invoice": row.invoice_external_id, "created_at": iso(row.created_at),
            "code": row.code, "detail": row.detail, "payload": row.payload, "resolved_at": iso(row.resolved_at)}
