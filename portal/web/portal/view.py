"""Rows turned into what a debtor reads: a status that says overdue, due soon or partially paid, amounts
still owed, and the VAT breakdown. Words are chosen in the templates, so they are translated there."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from portal.domain.debtor import DUE_SOON, Summary, outstanding_minor

if TYPE_CHECKING:
    from portal.i18n import Formatter


@dataclass(frozen=True)
class Amount:
    minor: int
    currency: str


def debtor_status(row: Any, today: dt.date) -> str:
    """overdue, due_soon, partially_paid, open, paid, cancelled; for credit notes: credit_note."""
    if row.kind == "credit_note":
        return "cancelled" if row.status == "cancelled" else "credit_note"
    if row.status != "open":
        return str(row.status)
    owed = outstanding_minor(row)
    if owed == 0:
        return "paid"
    if row.due_date is not None and row.due_date < today:
        return "overdue"
    if owed < row.total_minor:
        return "partially_paid"
    if row.due_date is not None and row.due_date - today <= DUE_SOON:
        return "due_soon"
    return "open"


def row_view(row: Any, today: dt.date) -> dict[str, Any]:
    return {
        "id": row.id, "number": row.number or row.external_id, "kind": row.kind,
        "issue_date": row.issue_date, "due_date": row.due_date, "status": debtor_status(row, today),
        "total": Amount(row.total_minor, row.currency), "due": Amount(outstanding_minor(row), row.currency),
        "has_document": row.document_sha256 is not None,
    }


def history_row_view(row: Any, today: dt.date, fmt: Formatter) -> dict[str, Any]:
    """A row of the history page with its dates and amounts already written for the reader. The page shows
    twenty rows; formatting here costs a fraction of calling the formatter from the template (each call from
    Jinja goes through its context), which was a fifth of the page."""
    view = row_view(row, today)
    total, due = view["total"], view["due"]
    view.update(issue_date_text=fmt.date(row.issue_date), due_date_text=fmt.date(row.due_date),
                total_text=fmt.money(total.minor, total.currency),
                due_text=fmt.money(due.minor, due.currency) if due.minor else None)
    return view


def invoice_view(row: Any, today: dt.date) -> dict[str, Any]:
    view = row_view(row, today)
    currency = row.currency
    net = sum(line["total_minor"] for line in row.lines)
    by_rate: dict[str, int] = defaultdict(int)
    for line in row.lines:
        by_rate[line["vat_rate"]] += line["total_minor"]
    view.update({
        "title": row.title, "header_note": row.header_note, "footer_note": row.footer_note,
        "vat_mention": row.vat_mention, "delivery_date": row.delivery_date, "payment_terms": row.payment_terms,
        "payment_terms_days": row.payment_terms_days,
        "lines": [{"description": line["description"], "quantity": line["quantity"],
                   "unit_price": Amount(line["unit_price_minor"], currency), "vat_rate": line["vat_rate"],
                   "total": Amount(line["total_minor"], currency)} for line in row.lines],
        # The billing system owns totals and rounding: VAT is what its total adds to the lines' net.
        "net": Amount(net, currency) if row.lines else None,
        "vat": Amount(row.total_minor - net, currency) if row.lines else None,
        "vat_bases": [{"rate": rate, "base": Amount(base, currency)}
                      for rate, base in sorted(by_rate.items(), key=lambda item: Decimal(item[0]))],
        "paid": Amount(row.total_minor - outstanding_minor(row), currency) if row.status == "open" else None,
    })
    return view


def summary_view(summary: Summary) -> dict[str, Any]:
    return {
        "outstanding": [Amount(v, c) for c, v in sorted(summary.outstanding.items())],
        # What the debtor owes once their open credit notes are counted (negative: the seller owes them).
        "balance": [Amount(v, c) for c, v in sorted(summary.balance.items())],
        "credit": [Amount(v, c) for c, v in sorted(summary.credit.items())],
        "overdue": [Amount(v, c) for c, v in sorted(summary.overdue.items())],
        "open_count": summary.open_count, "overdue_count": summary.overdue_count,
    }


def timeline_view(events: list[Any], invoice: Any) -> list[dict[str, Any]]:
    """Newest first, with only what a debtor can act on. "Issued" carries the invoice's own date, not the
    day the billing system happened to push it."""
    shown = []
    for event in reversed(events):
        detail = dict(event.detail or {})
        if event.kind == "created" and detail.get("status") == "draft":
            continue  # the debtor never saw the draft; its activation is when it was issued
        at = event.occurred_at if event.occurred_at.tzinfo else event.occurred_at.replace(tzinfo=dt.UTC)
        kind = "issued" if event.kind in ("created", "activated") else event.kind
        day = invoice.issue_date if kind == "issued" and invoice.issue_date else at.date()
        if kind == "due_date_extended" and detail.get("to"):
            detail["to"] = dt.date.fromisoformat(detail["to"])
        shown.append({"at": at, "day": day, "kind": kind, "detail": detail})
    return shown
