"""A debtor's decision to pay: which invoices (and credit notes to deduct), how much, with which provider.
How the amount is shared among the invoices is portal.domain.allocation's rule; the checkout records that plan.

The checkout is recorded before the provider is called. Its idempotency key is derived from what is paid,
so a double click or a retried request finds the same checkout instead of making a second one; after a
checkout ended without payment, the next attempt gets a new key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from portal.db import insert_or_ignore
from portal.db.invoices import invoices
from portal.db.payments import checkout_items, checkouts
from portal.domain import allocation
from portal.domain.debtor import credit_minor, outstanding_minor
from portal.domain.links import DebtorScope, visible_invoices
from portal.domain.payment_settings import PartialPolicy, partial_policy
from portal.errors import FieldError, InvalidInput, NotFound
from portal.money import MoneyError, exponent, format_minor, parse_minor

OPEN_STATES = ("created", "open", "processing")
MAX_INVOICES = 100  # Stripe takes at most 100 lines


class SelectionRefused(InvalidInput):
    """Why these invoices cannot be paid together. `code` is stable, for the page to choose its words by:
    nothing_selected, too_many, nothing_to_pay, mixed_currencies or credit_covers (the credit notes included
    hold at least what the invoices owe)."""

    def __init__(self, detail: str, errors: list[FieldError], code: str) -> None:
        super().__init__(detail, errors)
        self.code = code


class AmountRefused(InvalidInput):
    """Why the amount the debtor entered cannot be paid. `code`: amount_format, amount_decimals, currency,
    partial_not_allowed, below_minimum or above_total; the page names the limit with it."""

    def __init__(self, detail: str, code: str) -> None:
        super().__init__(detail, [FieldError("/amount", detail)])
        self.code = code


@dataclass(frozen=True)
class Selection:
    """Open invoices of one currency and what is owed on each, and the credit notes the debtor included with
    the credit each holds."""

    currency: str
    items: list[tuple[sa.Row[Any], int]]
    credits: list[tuple[sa.Row[Any], int]] = field(default_factory=list)

    @property
    def owed_minor(self) -> int:
        return sum(amount for _, amount in self.items)

    @property
    def credit_minor(self) -> int:
        return sum(amount for _, amount in self.credits)

    @property
    def amount_minor(self) -> int:
        """What is to pay: the invoices net of the credit notes (select_payable refuses a credit that covers
        them)."""
        return self.owed_minor - self.credit_minor

    def open_items(self) -> list[allocation.OpenItem]:
        return [allocation.OpenItem(row.id, row.kind, amount, row.due_date, row.issue_date)
                for row, amount in (*self.items, *self.credits)]


@dataclass(frozen=True)
class Proposal:
    """A selection with the amount the debtor chose and how it will be allocated."""

    selection: Selection
    amount_minor: int
    plan: allocation.Plan

    @property
    def partial(self) -> bool:
        return self.amount_minor < self.selection.amount_minor


def select_payable(conn: sa.Connection, scope: DebtorScope, invoice_ids: list[int],
                   credit_ids: list[int] | None = None) -> Selection:
    """The open invoices among `invoice_ids` and what is owed on each, with the open credit notes among
    `credit_ids`; NotFound if any of them is not one the link may see, SelectionRefused if they cannot be paid
    together. Credit notes are only ever deductions: one ticked among the invoices (the history's checkboxes
    name every document `invoice`) is deducted as if named in `credit_ids`; ticked alone, nothing is to pay."""
    credit_ids = list(dict.fromkeys(credit_ids or []))
    if not invoice_ids:
        raise SelectionRefused("Choose at least one invoice.", [FieldError("/invoice", "nothing selected")],
                               "nothing_selected")
    if len(invoice_ids) + len(credit_ids) > MAX_INVOICES:
        raise SelectionRefused("Too many invoices.", [FieldError("/invoice", f"at most {MAX_INVOICES} at once")],
                               "too_many")
    wanted = set(invoice_ids) | set(credit_ids)
    rows = {row.id: row for row in conn.execute(
        sa.select(invoices).where(visible_invoices(scope), invoices.c.id.in_(wanted)).order_by(invoices.c.id))}
    if len(rows) != len(wanted):
        raise NotFound("no such invoice")
    payable = [(rows[i], outstanding_minor(rows[i])) for i in sorted(set(invoice_ids))]
    payable = [(row, amount) for row, amount in payable if amount > 0]
    if not payable:
        raise SelectionRefused("Nothing to pay.", [FieldError("/invoice", "none of these invoices is open")],
                               "nothing_to_pay")
    notes = set(credit_ids) | {i for i in invoice_ids if rows[i].kind == "credit_note"}
    credits = [(rows[i], credit_minor(rows[i])) for i in sorted(notes)]
    credits = [(row, amount) for row, amount in credits if amount > 0]
    currencies = {row.currency for row, _ in (*payable, *credits)}
    if len(currencies) > 1:
        raise SelectionRefused("Invoices in different currencies cannot be paid together.",
                               [FieldError("/invoice", "different currencies: " + ", ".join(sorted(currencies)))],
                               "mixed_currencies")
    selection = Selection(currencies.pop(), payable, credits)
    if selection.amount_minor <= 0:
        raise SelectionRefused("The credit notes cover these invoices.",
                               [FieldError("/credit", "the credit notes hold at least what the invoices owe")],
                               "credit_covers")
    return selection


def open_credits(conn: sa.Connection, scope: DebtorScope, currency: str) -> list[tuple[sa.Row[Any], int]]:
    """The link's open credit notes in `currency` with the credit each still holds, oldest first: what the pay
    page offers as deductions."""
    rows = conn.execute(sa.select(invoices).where(
        visible_invoices(scope), invoices.c.kind == "credit_note", invoices.c.status == "open",
        invoices.c.currency == currency, invoices.c.total_minor > invoices.c.paid_minor)
        .order_by(invoices.c.issue_date, invoices.c.id).limit(MAX_INVOICES)).all()
    return [(row, credit_minor(row)) for row in rows]


def _clean_amount(text: str, currency: str) -> str:
    """What a person types around an amount: spaces, the currency's sign or code, a decimal comma ("50,00 €")."""
    text = text.strip().replace("\u00a0", "").replace(" ", "").removesuffix(currency).removeprefix(currency)
    text = text.strip("€$£")
    if "," in text and "." not in text:
        text = text.replace(",", ".")
    return text


def choose_amount(selection: Selection, policy: PartialPolicy, amount: str | None,
                  currency: str | None) -> Proposal:
    """The amount to pay now (the whole net total unless the debtor entered less and the seller allows it),
    and its allocation; AmountRefused naming what is wrong otherwise."""
    total = selection.amount_minor
    if currency is not None and currency.strip().upper() != selection.currency:
        raise AmountRefused(f"the amount must be in {selection.currency}", "currency")
    if amount is None or not amount.strip():
        minor = total
    else:
        text = _clean_amount(amount, selection.currency)
        try:
            minor = parse_minor(text, selection.currency)
        except MoneyError as exc:
            decimals = text.partition(".")[2]
            code = "amount_decimals" if decimals.isdigit() and len(decimals) > exponent(selection.currency) \
                else "amount_format"
            raise AmountRefused(str(exc), code) from exc
    if minor > total:
        raise AmountRefused(f"at most {format_minor(total, selection.currency)}", "above_total")
    if minor < total:
        if not policy.allows(selection.currency):
            raise AmountRefused("only the full amount can be paid", "partial_not_allowed")
        if minor < max(1, policy.minimum_minor):
            raise AmountRefused(f"at least {format_minor(max(1, policy.minimum_minor), selection.currency)}",
                                "below_minimum")
    return Proposal(selection, minor, allocation.allocate(minor, selection.open_items()))


def propose(conn: sa.Connection, scope: DebtorScope, invoice_ids: list[int], credit_ids: list[int],
            amount: str | None, currency: str | None) -> Proposal:
    """The selection, the amount and its allocation, as the preview shows it and the checkout records it."""
    selection = select_payable(conn, scope, invoice_ids, credit_ids)
    return choose_amount(selection, partial_policy(conn, scope.organization_id), amount, currency)


def _key(scope: DebtorScope, proposal: Proposal, provider: str, method: str | None, attempt: int) -> str:
    parts = [str(scope.organization_id), str(scope.customer_id), provider, method or "",
             proposal.selection.currency, str(proposal.amount_minor),
             *(f"{item_id}={amount}" for item_id, amount in _planned(proposal)), str(attempt)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _planned(proposal: Proposal) -> list[tuple[int, int]]:
    """The checkout's items: what each invoice receives, and the credit each credit note gives (negative);
    invoices the amount does not reach are not part of it."""
    shares = [(share.id, share.amount_minor) for share in proposal.plan.invoices if share.amount_minor > 0]
    shares += [(share.id, -share.amount_minor) for share in proposal.plan.credits if share.amount_minor > 0]
    return sorted(shares)


def start(conn: sa.Connection, scope: DebtorScope, invoice_ids: list[int], provider: str, method: str | None,
          now: dt.datetime, *, credit_ids: list[int] | None = None, amount: str | None = None,
          currency: str | None = None) -> tuple[sa.Row, Sequence[sa.Row]]:
    """The checkout for this selection and amount (an existing one if this is a repeat), and the other open
    checkouts of these invoices, now superseded: the caller cancels them at their provider."""
    proposal = propose(conn, scope, invoice_ids, credit_ids or [], amount, currency)
    planned = _planned(proposal)
    attempt = 0
    while True:
        key = _key(scope, proposal, provider, method, attempt)
        existing = conn.execute(sa.select(checkouts).where(
            checkouts.c.organization_id == scope.organization_id, checkouts.c.idempotency_key == key)).first()
        if existing is None:
            # A concurrent start of the same selection (a double click) may insert this key first: then
            # nothing is inserted here, and the loop finds its checkout.
            checkout_id = insert_or_ignore(conn, checkouts, {
                "public_id": "co_" + secrets.token_urlsafe(18), "organization_id": scope.organization_id,
                "customer_id": scope.customer_id, "link_id": scope.link_id, "provider": provider, "method": method,
                "currency": proposal.selection.currency, "amount_minor": proposal.amount_minor,
                "status": "created", "idempotency_key": key, "created_at": now, "updated_at": now},
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
                                       checkout_items.c.invoice_id.in_([item_id for item_id, _ in planned]))))
    ).all()
    if superseded:
        conn.execute(checkouts.update().where(checkouts.c.id.in_([c.id for c in superseded]))
                     .values(status="cancelled", updated_at=now))
    conn.execute(checkout_items.insert(), [{"checkout_id": checkout_id, "invoice_id": item_id, "amount_minor": amount}
                                           for item_id, amount in planned])
    return conn.execute(sa.select(checkouts).where(checkouts.c.id == checkout_id)).one(), superseded


def items_of(conn: sa.Connection, checkout_id: int) -> Sequence[sa.Row]:
    """The checkout's invoices with what it pays on each, and its credit notes with the credit (negative)."""
    return conn.execute(
        sa.select(checkout_items.c.amount_minor, invoices.c.id, invoices.c.number, invoices.c.external_id,
                  invoices.c.currency, invoices.c.kind)
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
