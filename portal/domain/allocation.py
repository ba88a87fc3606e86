"""How one payment is shared among the open items of a selection. Pure: no database, no currency (every amount
is integer minor units of the one currency of the selection), so the checkout's preview, the checkout itself
and the payment service decide the same way and the rules can be checked by property tests.

The rules, in order:
- credit notes the debtor chose to include net first: their credit is spent on the invoices before any of the
  payment is, but never beyond what the invoices still owe (what a credit note does not cover stays its own);
- the money then goes to the invoices oldest due date first, then oldest issue date, then lowest id (an invoice
  without a date comes after those with one);
- no invoice receives more than its remaining amount; what is left over is reported as the excess.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["invoice", "credit_note"]


@dataclass(frozen=True)
class OpenItem:
    """An invoice with what it still owes, or a credit note with the credit it still holds (both >= 0)."""

    id: int
    kind: Kind
    remaining_minor: int
    due_date: dt.date | None = None
    issue_date: dt.date | None = None

    def __post_init__(self) -> None:
        if self.remaining_minor < 0:
            raise ValueError("a remaining amount is never negative")


@dataclass(frozen=True)
class Share:
    """What one item receives (an invoice) or gives (a credit note), and what it still owes or holds after."""

    id: int
    kind: Kind
    amount_minor: int
    remaining_minor: int

    @property
    def settled(self) -> bool:
        """Paid in full (an invoice) or used up (a credit note)."""
        return self.remaining_minor == 0


@dataclass(frozen=True)
class Plan:
    payment_minor: int
    invoices: tuple[Share, ...]
    credits: tuple[Share, ...]
    # Of the payment, what no invoice could take (the selection owed less than was paid).
    excess_minor: int

    @property
    def credit_minor(self) -> int:
        return sum(share.amount_minor for share in self.credits)

    @property
    def applied_minor(self) -> int:
        """What the invoices receive in all: the credit used plus the payment less the excess."""
        return sum(share.amount_minor for share in self.invoices)

    def share_of(self, item_id: int) -> Share | None:
        return next((share for share in (*self.invoices, *self.credits) if share.id == item_id), None)


def order(items: Iterable[OpenItem]) -> list[OpenItem]:
    """Oldest due date first, then oldest issue date, then id; undated after dated."""
    far = dt.date.max
    return sorted(items, key=lambda item: (item.due_date or far, item.issue_date or far, item.id))


def net_total(items: Iterable[OpenItem]) -> int:
    """What the selection owes once its credit notes are deducted (negative if they hold more)."""
    return sum(item.remaining_minor if item.kind == "invoice" else -item.remaining_minor for item in items)


def allocate(payment_minor: int, items: Iterable[OpenItem]) -> Plan:
    if payment_minor < 0:
        raise ValueError("a payment is never negative")
    ordered = order(items)
    invoices = [item for item in ordered if item.kind == "invoice"]
    credit_notes = [item for item in ordered if item.kind == "credit_note"]
    owed = sum(item.remaining_minor for item in invoices)

    # Credit first, oldest credit note first, up to what the invoices owe.
    credit_left = min(owed, sum(item.remaining_minor for item in credit_notes))
    credits = []
    for note in credit_notes:
        used = min(note.remaining_minor, credit_left)
        credit_left -= used
        credits.append(Share(note.id, "credit_note", used, note.remaining_minor - used))
    funds = sum(share.amount_minor for share in credits) + payment_minor

    shares = []
    for invoice in invoices:
        given = min(invoice.remaining_minor, funds)
        funds -= given
        shares.append(Share(invoice.id, "invoice", given, invoice.remaining_minor - given))
    # The credit is spent before the payment, and never beyond the invoices: what is left is the payment's.
    return Plan(payment_minor, tuple(shares), tuple(credits), excess_minor=funds)
