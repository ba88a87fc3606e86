"""An invoice's life after it is pushed (seeds 001 and 004): activate, part-activate, cancel, extend the
due date. Each step is one transaction, recorded on the invoice's timeline with its time.

Every step rewrites the stored content hash, so that a later resend of the old body is seen as a change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa

from portal.db import insert_or_ignore
from portal.db.invoices import invoices
from portal.db.organizations import number_sequences
from portal.domain.invoices import InvoiceInput, due_date_from_terms, get_invoice, input_from_row, upsert_invoices
from portal.domain.timeline import record_timeline
from portal.errors import Conflict, FieldError, InvalidInput

INVOICE_SEQUENCE = "invoice"


def next_number(conn: sa.Connection, organization_id: int) -> str:
    """The next number of the organization's gapless sequence. The counter row is locked by the UPDATE
    until the transaction ends, and a rollback gives the number back."""
    take = (number_sequences.update()
            .where(number_sequences.c.organization_id == organization_id,
                   number_sequences.c.name == INVOICE_SEQUENCE)
            .values(last_value=number_sequences.c.last_value + 1)
            .returning(number_sequences.c.last_value))
    value = conn.execute(take).scalar()
    if value is None:
        # The organization's first number; if a concurrent first activation inserted the counter meanwhile,
        # the insert waits for it and does nothing, and the counter is taken as usual.
        first = insert_or_ignore(conn, number_sequences, {
            "organization_id": organization_id, "name": INVOICE_SEQUENCE, "last_value": 1},
            ["organization_id", "name"], returning=[number_sequences.c.last_value]).scalar()
        value = first if first is not None else conn.execute(take).scalar_one()
    return f"Q-{value:06d}"


def _save(conn: sa.Connection, row: sa.Row[Any], item: InvoiceInput, now: dt.datetime,
          **extra: Any) -> None:
    values = item.storage_values()
    conn.execute(invoices.update().where(invoices.c.id == row.id).values(
        **values, content_hash=item.content_hash(), revision=row.revision + 1, updated_at=now, **extra))


def _draft(conn: sa.Connection, organization_id: int, external_id: str) -> sa.Row[Any]:
    row = get_invoice(conn, organization_id, external_id, lock=True)
    if row.status != "draft":
        raise Conflict(f"invoice {external_id!r} is {row.status}, not a draft", code="not_draft")
    return row


def _activated(item: InvoiceInput, today: dt.date, number: str) -> InvoiceInput:
    """The item made visible and payable: its terms start counting today."""
    due = due_date_from_terms(item.payment_terms, item.payment_terms_days, today) or item.due_date
    return replace(item, status="open", number=item.number or number, issue_date=item.issue_date or today,
                   due_date=due)


def activate(conn: sa.Connection, organization_id: int, external_id: str, now: dt.datetime) -> int:
    row = _draft(conn, organization_id, external_id)
    item = input_from_row(row, row.customer_external_id)
    activated = _activated(item, now.date(), item.number or next_number(conn, organization_id))
    _save(conn, row, activated, now, activated_at=now)
    record_timeline(conn, organization_id, row.id, now, "activated",
                    {"number": activated.number, "due_date": str(activated.due_date) if activated.due_date else None})
    return row.id


def _minor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def _with_vat(lines: list[dict[str, Any]]) -> int:
    """Total including VAT: each line's net total plus its VAT, rounded half up per line."""
    return sum(line["total_minor"] + _minor(Decimal(line["total_minor"]) * Decimal(line["vat_rate"]) / 100)
               for line in lines)


def part_activate(conn: sa.Connection, organization_id: int, external_id: str, new_external_id: str,
                  selections: list[tuple[int, Decimal | None]], number: str | None,
                  now: dt.datetime) -> tuple[int, int]:
    """Activate some lines (or part of their quantity) of a draft as an invoice of their own, leaving the rest
    in the draft. The new invoice's total is computed from its lines; the draft keeps the difference, so
    nothing is lost or invented. Returns (new invoice id, draft id)."""
    row = _draft(conn, organization_id, external_id)
    draft = input_from_row(row, row.customer_external_id)
    lines = [dict(line) for line in draft.lines]
    taken: dict[int, Decimal] = {}
    errors: list[FieldError] = []
    for position, (index, quantity) in enumerate(selections):
        if index >= len(lines) or index in taken:
            errors.append(FieldError(f"/lines/{position}/line", "no such line, or selected twice"))
            continue
        available = Decimal(lines[index]["quantity"])
        wanted = available if quantity is None else quantity
        if wanted <= 0 or wanted > available:
            errors.append(FieldError(f"/lines/{position}/quantity", f"must be more than 0 and at most {available}"))
            continue
        taken[index] = wanted
    if errors:
        raise InvalidInput("the selected lines do not fit the draft", errors)

    activated_lines: list[dict[str, Any]] = []
    remaining_lines: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        quantity = Decimal(line["quantity"])
        wanted = taken.get(index, Decimal(0))
        if wanted == quantity:
            activated_lines.append(line)
            continue
        if wanted:
            part_total = _minor(Decimal(line["total_minor"]) * wanted / quantity)
            activated_lines.append({**line, "quantity": _plain(wanted), "total_minor": part_total})
            line = {**line, "quantity": _plain(quantity - wanted), "total_minor": line["total_minor"] - part_total}
        remaining_lines.append(line)
    if not remaining_lines:
        raise Conflict("every line is selected: activate the whole draft instead", code="nothing_left")

    part_total = _with_vat(activated_lines)
    if part_total > draft.total_minor:
        raise Conflict("the selected lines cost more than the draft's total", code="total_exceeded")
    today = now.date()
    part = _activated(
        replace(draft, external_id=new_external_id, lines=activated_lines, total_minor=part_total,
                amount_due_minor=part_total, number=number, version=None),
        today, number or next_number(conn, organization_id))
    outcome = upsert_invoices(conn, organization_id, [part], now)[0]
    if outcome.result != "created":
        raise Conflict(f"invoice {new_external_id!r} exists already", code="exists")
    assert outcome.invoice_id is not None
    rest_total = draft.total_minor - part_total
    rest = replace(draft, lines=remaining_lines, total_minor=rest_total,
                   amount_due_minor=max(0, min(draft.amount_due_minor, rest_total)))
    _save(conn, row, rest, now)
    conn.execute(invoices.update().where(invoices.c.id == outcome.invoice_id).values(activated_at=now))
    record_timeline(conn, organization_id, outcome.invoice_id, now, "activated",
                    {"number": part.number, "part_of": external_id})
    record_timeline(conn, organization_id, row.id, now, "part_activated",
                    {"into": new_external_id, "lines": len(activated_lines)})
    return outcome.invoice_id, row.id


def _plain(value: Decimal) -> str:
    """2.500 -> "2.5", 3 -> "3": quantities as the API writes them."""
    return format(value.normalize(), "f")


def cancel(conn: sa.Connection, organization_id: int, external_id: str, now: dt.datetime) -> int:
    row = get_invoice(conn, organization_id, external_id, lock=True)
    if row.status not in ("draft", "open"):
        raise Conflict(f"invoice {external_id!r} is {row.status}; only drafts and open invoices can be cancelled",
                       code="not_cancellable")
    if row.paid_minor > 0:
        raise Conflict("a payment was recorded on this invoice; it cannot be cancelled", code="cancels_paid")
    item = replace(input_from_row(row, row.customer_external_id), status="cancelled", amount_due_minor=0)
    _save(conn, row, item, now, cancelled_at=now)
    record_timeline(conn, organization_id, row.id, now, "cancelled", {"previous_status": row.status})
    return row.id


def extend_due_date(conn: sa.Connection, organization_id: int, external_id: str, due_date: dt.date,
                    now: dt.datetime) -> int:
    row = get_invoice(conn, organization_id, external_id, lock=True)
    if row.status != "open":
        raise Conflict(f"invoice {external_id!r} is {row.status}; only open invoices have a due date to extend",
                       code="not_open")
    if row.due_date is not None and due_date <= row.due_date:
        raise Conflict(f"the due date can only move later than {row.due_date}", code="not_later")
    item = replace(input_from_row(row, row.customer_external_id), due_date=due_date, payment_terms="custom",
                   payment_terms_days=None)
    _save(conn, row, item, now)
    record_timeline(conn, organization_id, row.id, now, "due_date_extended",
                    {"from": str(row.due_date) if row.due_date else None, "to": str(due_date)})
    return row.id

