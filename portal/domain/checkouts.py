"""A debtor's decision to pay: which invoices, how much of each, with which provider.

The checkout is recorded before the provider is called. Its idempotency key is derived from what is paid,
so a double click or a retried request finds the same checkout instead of making a second one; after a
checkout ended without payment, the next attempt gets a new key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from portal.db import insert_or_ignore
from portal.db.invoices import invoices
from portal.db.payments import checkout_items, checkouts
from portal.domain.debtor import outstanding_minor
from portal.domain.links import DebtorScope, visible_invoices
from portal.errors import FieldError, InvalidInput, NotFound

OPEN_STATES = ("created", "open", "processing")
MAX_INVOICES = 100  # Stripe takes at most 100 lines


class SelectionRefused(InvalidInput):
    """Why these invoices cannot be paid together. `code` is stable, for the page to choose its words by:
    nothing_selected, too_many, nothing_to_pay or mixed_currencies."""

    def __init__(self, detail: str, errors: list[FieldError], code: str) -> None:
        super().__init__(detail, errors)
        self.code = code


@dataclass(frozen=True)
class Selection:
    """Open invoices of one currency and what is owed on each."""

    currency: str
    items: list[tuple[sa.Row[Any], int]]

    @property
    def amount_minor(self) -> int:
        return sum(amount for _, amount in self.items)


def select_payable(conn: sa.Connection, scope: DebtorScope, invoice_ids: list[int]) -> Selection:
    """The open invoices among `invoice_ids` and what is owed on each; NotFound if any of them is not one the
    link may see, SelectionRefused if they cannot be paid together."""
    if not invoice_ids:
        raise SelectionRefused("Choose at least one invoice.", [FieldError("/invoice", "nothing selected")],
                               "nothing_selected")
    if len(invoice_ids) > MAX_INVOICES:
        raise SelectionRefused("Too many invoices.", [FieldError("/invoice", f"at most {MAX_INVOICES} at once")],
                               "too_many")
    rows = conn.execute(sa.select(invoices).where(visible_invoices(scope), invoices.c.id.in_(invoice_ids))
                        .order_by(invoices.c.id)).all()
    if len(rows) != len(set(invoice_ids)):
        raise NotFound("no such invoice")
    payable = [(row, outstanding_minor(row)) for row in rows if row.kind == "invoice"]
    payable = [(row, amount) for row, amount in payable if amount > 0]
    if not payable:
        raise SelectionRefused("Nothing to pay.", [FieldError("/invoice", "none of these invoices is open")],
                               "nothing_to_pay")
    currencies = {row.currency for row, _ in payable}
    if len(currencies) > 1:
        raise SelectionRefused("Invoices in different currencies cannot be paid together.",
                               [FieldError("/invoice", "different currencies: " + ", ".join(sorted(currencies)))],
                               "mixed_currencies")
    return Selection(currencies.pop(), payable)


def _key(scope: DebtorScope, selection: Selection, provider: str, method: str | None, attempt: int) -> str:
    parts = [str(scope.organization_id), str(scope.customer_id), provider, method or "", selection.currency,
             *(f"{row.id}={amount}" for row, amount in selection.items), str(attempt)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def start(conn: sa.Connection, scope: DebtorScope, invoice_ids: list[int], provider: str, method: str | None,
          now: dt.datetime) -> tuple[sa.Row, Sequence[sa.Row]]:
    """The checkout for this selection (an existing one if this is a repeat), and the other open checkouts of
    these invoices, now superseded: the caller cancels them at their provider."""
    selection = select_payable(conn, scope, invoice_ids)
    attempt = 0
    while True:
        key = _key(scope, selection, provider, method, attempt)
        existing = conn.execute(sa.select(checkouts).where(
            checkouts.c.organization_id == scope.organization_id, checkouts.c.idempotency_key == key)).first()
        if existing is None:
            # A concurrent start of the same selection (a double click) may insert this key first: then
            # nothing is inserted here, and the loop finds its checkout.
            checkout_id = insert_or_ignore(conn, checkouts, {
                "public_id": "co_" + secrets.token_urlsafe(18), "organization_id": scope.organization_id,
                "customer_id": scope.customer_id, "link_id": scope.link_id, "provider": provider, "method": method,
                "currency": selection.currency, "amount_minor": selection.amount_minor, "status": "created",
                "idempotency_key": key, "created_at": now, "updated_at": now},
                ["organization_id", "idempotency_key"], returning=[checkouts.c.id]).scalar()
            if checkout_id is not None:
                break
            continue
        if existing.status in (*OPEN_STATES, "paid"):
            return existing, []
        attempt += 1

    superseded = conn.execute(
        sa.select(checkouts).where(checkouts.c.organization_id == scope.organization_id,
                                   checkouts.c.status.in_(("created", "open")), checkouts.c.id != checkout_id,
                                   checkouts.c.id.in_(sa.select(checkout_items.c.checkout_id).where(
                                       checkout_items.c.invoice_id.in_([row.id for row, _ in selection.items]))))
    ).all()
    if superseded:
        conn.execute(checkouts.update().where(checkouts.c.id.in_([c.id for c in superseded]))
                     .values(status="cancelled", updated_at=now))
    conn.execute(checkout_items.insert(), [{"checkout_id": checkout_id, "invoice_id": row.id, "amount_minor": amount}
                                           for row, amount in selection.items])
    return conn.execute(sa.select(checkouts).where(checkouts.c.id == checkout_id)).one(), superseded


def items_of(conn: sa.Connection, checkout_id: int) -> Sequence[sa.Row]:
    return conn.execute(
        sa.select(checkout_items.c.amount_minor, invoices.c.id, invoices.c.number, invoices.c.external_id,
                  invoices.c.currency)
        .join(invoices, invoices.c.id == checkout_items.c.invoice_id)
        .where(checkout_items.c.checkout_id == checkout_id).order_by(invoices.c.id)).all()


def opened_at_provider(conn: sa.Connection, checkout_id: int, provider_ref: str, url: str,
                       expires_at: dt.datetime | None, now: dt.datetime) -> None:
    """The provider accepted the checkout: keep its reference and where to send the debtor."""
    conn.execute(checkouts.update().where(checkouts.c.id == checkout_id, checkouts.c.status == "created").values(
        status="open", provider_ref=provider_ref, checkout_url=url, expires_at=expires_at, updated_at=now))


def provider_failed(conn: sa.Connection, checkout_id: int, now: dt.datetime) -> None:
    """The provider could not be reached or refused: the checkout ends, the next attempt starts afresh."""
    conn.execute(checkouts.update().where(checkouts.c.id == checkout_id, checkouts.c.status == "created").values(
        status="failed", updated_at=now))


def cancelled_by_debtor(conn: sa.Connection, checkout_id: int, now: dt.datetime) -> None:
    """The debtor came back through the provider's cancel link."""
    conn.execute(checkouts.update().where(checkouts.c.id == checkout_id, checkouts.c.status == "open").values(
        status="cancelled", updated_at=now))


def for_debtor(conn: sa.Connection, scope: DebtorScope, public_id: str) -> sa.Row[Any]:
    """A checkout of the link's customer, if the link may see every invoice in it (a link scoped to one
    invoice does not show a checkout that another link made for others); NotFound otherwise."""
    unseen = sa.select(checkout_items.c.invoice_id).where(
        checkout_items.c.checkout_id == checkouts.c.id,
        checkout_items.c.invoice_id.not_in(sa.select(invoices.c.id).where(visible_invoices(scope))))
    row = conn.execute(sa.select(checkouts).where(
        checkouts.c.organization_id == scope.organization_id, checkouts.c.customer_id == scope.customer_id,
        checkouts.c.public_id == public_id, ~unseen.exists())).first()
    if row is None:
        raise NotFound("no such checkout")
    return row


def to_reconcile(conn: sa.Connection, now: dt.datetime, *, quiet_for: dt.timedelta,
                 retry_window: dt.timedelta, limit: int = 500) -> Sequence[sa.Row]:
    """Checkouts to ask their provider about: still waiting for a final word after `quiet_for`, and those
    that ended without payment within the providers' webhook retry window (a superseded checkout may still
    have been paid in another tab, and that webhook may be lost)."""
    waiting = sa.and_(checkouts.c.status.in_(("open", "processing")), checkouts.c.updated_at < now - quiet_for)
    ended = sa.and_(checkouts.c.status.in_(("cancelled", "expired", "failed")),
                    checkouts.c.created_at < now - quiet_for, checkouts.c.created_at > now - retry_window)
    return conn.execute(sa.select(checkouts).where(checkouts.c.provider_ref.is_not(None), sa.or_(waiting, ended))
                        .order_by(checkouts.c.id).limit(limit)).all()
