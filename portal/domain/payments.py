"""Applying what a payment provider reports: the one service behind webhooks, the return page and
reconciliation, so that all three have exactly the same effect.

Guarantees, each enforced in one transaction with the checkout and its invoices locked:
- everything is per organization: organizations that share the install's provider keys see each other's
  payments at their webhooks, and a report about another organization's checkout changes nothing here and
  leaves nothing behind (no review item, no payment), so the rightful organization's own delivery goes through;
- a payment is recorded once per organization and provider payment id (a unique constraint backs the check);
- it is applied only if its amount, currency and checkout are ours; anything else goes to review;
- a checkout's state only moves forward: an "expired" that arrives after "paid" changes nothing;
- refunds and chargebacks are reported as cumulative totals, so applying the same report twice changes
  nothing, and what they take back lowers what is paid and reopens what is due;
- every change is on the invoices' timelines, and announced in the outbox in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from portal.db import insert_or_ignore
from portal.db.invoices import invoices
from portal.db.payments import allocations, checkout_items, checkouts, payments, review_items
from portal.domain import allocation
from portal.domain.debtor import credit_minor, outstanding_minor
from portal.domain.timeline import record_timeline
from portal.domain.outbox import announce
from portal.money import format_minor

ObservedStatus = Literal["open", "processing", "paid", "failed", "cancelled", "expired"]
# Checkout states in the only order they may take; the three unsuccessful ends share a rank.
RANK = {"created": 0, "open": 1, "processing": 2, "failed": 3, "cancelled": 3, "expired": 3, "paid": 4}


@dataclass(frozen=True)
class PaymentObservation:
    """What a provider says about one payment, trusted: fetched with our key, or signed by the provider."""

    provider: str
    status: ObservedStatus
    # Our checkout's public id, from the provider's copy of our metadata.
    checkout_public_id: str | None
    # The provider's id of the money movement (Mollie tr_, Stripe pi_); None until there is one.
    payment_id: str | None
    amount_minor: int
    currency: str
    # Cumulative totals when the report includes them (None: this report says nothing about them).
    refunded_minor: int | None = None
    charged_back_minor: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Outcome:
    """What applying an observation did, for logs and tests."""

    checkout_status: str | None
    recorded_payment: bool = False
    review_reason: str | None = None
    refunded_minor: int = 0
    charged_back_minor: int = 0
    # The report is about another organization's checkout or payment: nothing was written.
    elsewhere: bool = False


# The statements of the hot path (a webhook that pays a checkout), built once with bind parameters: building a
# Core statement and its cache key costs more than running it (bench/stripe_webhooks.py). Each has a PostgreSQL
# twin that locks (SQLite has no row locks; its write transactions are serialised).
_CHECKOUT_BY_PUBLIC_ID = sa.select(checkouts).where(
    checkouts.c.organization_id == sa.bindparam("organization_id"),
    checkouts.c.public_id == sa.bindparam("public_id"))
_CHECKOUT_BY_PAYMENT = sa.select(checkouts).where(
    checkouts.c.organization_id == sa.bindparam("organization_id"),
    checkouts.c.id.in_(sa.select(payments.c.checkout_id).where(
        payments.c.organization_id == sa.bindparam("organization_id"),
        payments.c.provider == sa.bindparam("provider"),
        payments.c.provider_payment_id == sa.bindparam("payment_id"))))
_LOCKED_CHECKOUT_BY_PUBLIC_ID = _CHECKOUT_BY_PUBLIC_ID.with_for_update()
_LOCKED_CHECKOUT_BY_PAYMENT = _CHECKOUT_BY_PAYMENT.with_for_update()
# A report may only ever touch the payment of the checkout it is about (another checkout's, never).
_PAYMENT_OF_CHECKOUT = sa.select(payments).where(
    payments.c.checkout_id == sa.bindparam("checkout_id"), payments.c.provider == sa.bindparam("provider"),
    payments.c.provider_payment_id == sa.bindparam("payment_id"))
_PAYMENT_BY_ID = sa.select(payments).where(payments.c.id == sa.bindparam("payment_id"))
# The parameters given at execution say which columns are set.
_UPDATE_CHECKOUT = checkouts.update().where(checkouts.c.id == sa.bindparam("checkout_id"))
# Whether a report that names no checkout of this organization is about another organization's: by our checkout
# id in the provider's metadata, or by the provider's payment id (recorded, or seen on a checkout).
_ELSEWHERE_BY_PUBLIC_ID = sa.select(checkouts.c.id).where(
    checkouts.c.public_id == sa.bindparam("public_id"),
    checkouts.c.organization_id != sa.bindparam("organization_id")).limit(1)
_ELSEWHERE_BY_PAYMENT = sa.union_all(
    sa.select(payments.c.id).where(
        payments.c.provider == sa.bindparam("provider"), payments.c.provider_payment_id == sa.bindparam("payment_id"),
        payments.c.organization_id != sa.bindparam("organization_id")),
    sa.select(checkouts.c.id).where(
        checkouts.c.provider == sa.bindparam("provider"), checkouts.c.provider_payment_ref == sa.bindparam("payment_id"),
        checkouts.c.organization_id != sa.bindparam("organization_id"))).limit(1)
# Recorded once per organization and provider payment id: a payment already there is left as it is and nothing
# comes back (one round trip where "look, then insert" took two; a concurrent first insert waits for the other and
# sees it).
_INSERT_PAYMENT = {
    dialect: insert(payments).on_conflict_do_nothing(
        index_elements=["organization_id", "provider", "provider_payment_id"])
    .returning(*payments.c)
    for dialect, insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))}
_UPDATE_PAID = invoices.update().where(invoices.c.id == sa.bindparam("invoice_id"))
_INSERT_ALLOCATION = allocations.insert()
# A checkout's invoices with what it pays on each: only the columns the services read (not the lines' JSON).
_ITEMS = (sa.select(checkout_items.c.amount_minor.label("item_minor"), invoices.c.id, invoices.c.external_id,
                    invoices.c.number, invoices.c.kind, invoices.c.status, invoices.c.currency, invoices.c.total_minor,
                    invoices.c.amount_due_minor, invoices.c.paid_minor, invoices.c.due_date, invoices.c.issue_date)
          .join(invoices, invoices.c.id == checkout_items.c.invoice_id)
          .where(checkout_items.c.checkout_id == sa.bindparam("checkout_id")).order_by(invoices.c.id))
_LOCKED_ITEMS = _ITEMS.with_for_update(of=invoices)


def apply(conn: sa.Connection, organization_id: int, observation: PaymentObservation, now: dt.datetime) -> Outcome:
    checkout = _locked_checkout(conn, organization_id, observation)
    if checkout is None and _elsewhere(conn, organization_id, observation):
        return Outcome(None, elsewhere=True)
    if checkout is None or checkout.provider != observation.provider:
        if observation.status == "paid" and observation.payment_id:
            _review(conn, organization_id, observation, "unknown_checkout",
                    "a payment names no checkout of this organization", now)
            return Outcome(None, review_reason="unknown_checkout")
        return Outcome(None)

    status = _advance(conn, checkout, observation, now)
    if observation.payment_id is None:
        return Outcome(status)

    mismatch = _mismatch(checkout, observation) if observation.status == "paid" else None
    payment = None
    if observation.status == "paid" and mismatch is None:
        payment = _record(conn, checkout, observation, now)
    recorded = payment is not None
    if payment is None:  # recorded before, or not to be recorded
        payment = conn.execute(_PAYMENT_OF_CHECKOUT, {"checkout_id": checkout.id, "provider": observation.provider,
                                                      "payment_id": observation.payment_id}).first()
        if payment is None and observation.status == "paid" and mismatch is None:
            mismatch = ("unknown_checkout", "the payment is already recorded for another checkout")
    if payment is None and mismatch is not None:
        _review(conn, organization_id, observation, mismatch[0], mismatch[1], now)
        return Outcome(status, review_reason=mismatch[0])
    if payment is None:
        return Outcome(status)
    refunded = _adjust(conn, checkout, payment, "refund", observation.refunded_minor, now)
    if refunded:  # the row changed; otherwise it is still what was read or written above
        payment = conn.execute(_PAYMENT_BY_ID, {"payment_id": payment.id}).one()
    charged_back = _adjust(conn, checkout, payment, "chargeback", observation.charged_back_minor, now)
    return Outcome(status, recorded_payment=recorded, refunded_minor=refunded, charged_back_minor=charged_back)


def _locked_checkout(conn: sa.Connection, organization_id: int,
                     observation: PaymentObservation) -> sa.Row[Any] | None:
    """Our checkout, by the id in the provider's copy of our metadata, or else by the provider's payment id
    (Stripe's charge and dispute events name only the PaymentIntent)."""
    locking = conn.dialect.name == "postgresql"
    if observation.checkout_public_id:
        query = _LOCKED_CHECKOUT_BY_PUBLIC_ID if locking else _CHECKOUT_BY_PUBLIC_ID
        params = {"organization_id": organization_id, "public_id": observation.checkout_public_id}
    elif observation.payment_id:
        query = _LOCKED_CHECKOUT_BY_PAYMENT if locking else _CHECKOUT_BY_PAYMENT
        params = {"organization_id": organization_id, "provider": observation.provider,
                  "payment_id": observation.payment_id}
    else:
        return None
    return conn.execute(query, params).first()


def _elsewhere(conn: sa.Connection, organization_id: int, observation: PaymentObservation) -> bool:
    """Whether the report is about another organization's checkout or payment (organizations that share the
    install's provider keys receive each other's webhooks)."""
    if observation.checkout_public_id:
        found = conn.execute(_ELSEWHERE_BY_PUBLIC_ID, {
            "organization_id": organization_id, "public_id": observation.checkout_public_id}).first()
        if found is not None:
            return True
    if observation.payment_id:
        found = conn.execute(_ELSEWHERE_BY_PAYMENT, {
            "organization_id": organization_id, "provider": observation.provider,
            "payment_id": observation.payment_id}).first()
        return found is not None
    return False


def _advance(conn: sa.Connection, checkout: sa.Row[Any], observation: PaymentObservation, now: dt.datetime) -> str:
    """Move the checkout forward to what the provider says, never back."""
    wanted = observation.status
    current = checkout.status
    if RANK[wanted] <= RANK[current] or (RANK[current] == 3 and wanted != "paid"):
        return str(current)
    values: dict[str, Any] = {"checkout_id": checkout.id, "status": wanted, "updated_at": now}
    if observation.payment_id:
        values["provider_payment_ref"] = observation.payment_id
    conn.execute(_UPDATE_CHECKOUT, values)
    return wanted


def _mismatch(checkout: sa.Row[Any], observation: PaymentObservation) -> tuple[str, str] | None:
    if observation.currency != checkout.currency:
        return "currency_mismatch", f"paid in {observation.currency}, the checkout is in {checkout.currency}"
    if observation.amount_minor != checkout.amount_minor:
        return "amount_mismatch", (
            f"paid {format_minor(observation.amount_minor, observation.currency)}, the checkout asked "
            f"{format_minor(checkout.amount_minor, checkout.currency)}")
    return None


def _review(conn: sa.Connection, organization_id: int, observation: PaymentObservation, reason: str,
            detail: str, now: dt.datetime) -> None:
    """Park a payment for a person, once per (payment, reason), and tell the billing system."""
    payment_id = observation.payment_id or observation.checkout_public_id or "unknown"
    parked = insert_or_ignore(conn, review_items, {
        "organization_id": organization_id, "provider": observation.provider, "provider_payment_id": payment_id,
        "reason": reason, "detail": detail, "data": observation.raw, "created_at": now},
        ["organization_id", "provider", "provider_payment_id", "reason"], returning=[review_items.c.id]).first()
    if parked is None:  # parked before
        return
    announce(conn, organization_id, "payment.needs_review",
             {"provider": observation.provider, "payment_id": payment_id, "reason": reason, "detail": detail}, now)


def _items(conn: sa.Connection, checkout_id: int) -> Sequence[sa.Row]:
    """The checkout's invoices, locked in id order (so two payments never deadlock each other)."""
    query = _LOCKED_ITEMS if conn.dialect.name == "postgresql" else _ITEMS
    return conn.execute(query, {"checkout_id": checkout_id}).all()


def _record(conn: sa.Connection, checkout: sa.Row[Any], observation: PaymentObservation,
            now: dt.datetime) -> sa.Row[Any] | None:
    """Record the payment and allocate it to the checkout's invoices; None if it was recorded before."""
    assert observation.payment_id is not None
    payment = conn.execute(_INSERT_PAYMENT[conn.dialect.name], {
        "organization_id": checkout.organization_id, "checkout_id": checkout.id, "provider": observation.provider,
        "provider_payment_id": observation.payment_id, "currency": observation.currency,
        "amount_minor": observation.amount_minor, "refunded_minor": 0, "charged_back_minor": 0, "created_at": now,
        "updated_at": now}).first()
    if payment is None:
        return None
    items = _items(conn, checkout.id)
    plan = _plan(items, observation.amount_minor)
    by_id = {item.id: item for item in items}
    # What no invoice can take any more (paid meanwhile, in another tab or by transfer) is not lost: it stays
    # on the checkout's last invoice, over its total, for a person to refund.
    excess_on = plan.invoices[-1].id if plan.excess_minor and plan.invoices else None
    credit_left = plan.credit_minor
    credited: list[tuple[sa.Row[Any], int]] = []
    overpaid = []
    for share in plan.invoices:
        item = by_id[share.id]
        from_credit = min(credit_left, share.amount_minor)
        credit_left -= from_credit
        cash = share.amount_minor - from_credit + (plan.excess_minor if share.id == excess_on else 0)
        if from_credit + cash == 0:
            continue
        paid = item.paid_minor + from_credit + cash
        _set_paid(conn, item, paid, now)
        if from_credit:
            credited.append((item, from_credit))
            conn.execute(_INSERT_ALLOCATION, {
                "organization_id": checkout.organization_id, "payment_id": payment.id, "invoice_id": item.id,
                "amount_minor": from_credit, "kind": "credit", "created_at": now})
        if cash:
            conn.execute(_INSERT_ALLOCATION, {
                "organization_id": checkout.organization_id, "payment_id": payment.id, "invoice_id": item.id,
                "amount_minor": cash, "kind": "payment", "created_at": now})
        fully = paid >= item.total_minor
        detail = {"provider": observation.provider, "payment_id": observation.payment_id,
                  "amount": format_minor(cash, item.currency), "currency": item.currency}
        if from_credit:
            detail["credit"] = format_minor(from_credit, item.currency)
        if cash:  # what credit alone covered is on the timeline as the credit note's (_use_credit)
            record_timeline(conn, checkout.organization_id, item.id, now, "payment", {**detail, "minor": cash})
        announce(conn, checkout.organization_id, "invoice.paid" if fully else "invoice.partially_paid",
                 {**_invoice_ref(item), **detail, "amount_paid": format_minor(paid, item.currency),
                  "amount_remaining": format_minor(_remaining_after(item, paid), item.currency),
                  "overpaid": format_minor(paid - item.total_minor, item.currency) if paid > item.total_minor
                  else None}, now, invoice_id=item.id)
        if paid > item.total_minor:
            overpaid.append(item.external_id)
    _use_credit(conn, checkout, payment, plan, by_id, credited, now)
    if overpaid:
        _review(conn, checkout.organization_id, observation, "overpaid",
                f"paid more than due on {', '.join(overpaid)}: refund the difference", now)
    return payment  # nothing above changes the payment's own row


def _plan(items: Sequence[sa.Row], amount_minor: int) -> allocation.Plan:
    """The payment shared among the checkout's invoices as they are now (another payment may have reached
    one of them since the checkout was made), with the credit notes' credit up to what the checkout planned."""
    open_items = [allocation.OpenItem(
        item.id, item.kind,
        min(-item.item_minor, credit_minor(item)) if item.kind == "credit_note" else outstanding_minor(item),
        item.due_date, item.issue_date) for item in items]
    return allocation.allocate(amount_minor, open_items)


def _remaining_after(item: sa.Row[Any], paid_minor: int) -> int:
    """What the invoice still owes once `paid_minor` is recorded (as outstanding_minor reads it)."""
    if item.status not in ("open", "paid"):
        return 0
    return max(0, min(item.amount_due_minor, item.total_minor - paid_minor))


def _use_credit(conn: sa.Connection, checkout: sa.Row[Any], payment: sa.Row[Any], plan: allocation.Plan,
                by_id: dict[int, sa.Row[Any]], credited: list[tuple[sa.Row[Any], int]], now: dt.datetime) -> None:
    """The credit notes' part: each used note records its use (as paid, up to its total), on its timeline and
    upstream, naming the invoices the credit went to; each of those invoices names the notes."""
    notes = [(by_id[share.id], share) for share in plan.credits if share.amount_minor > 0]
    if not notes:
        return
    invoices_named = [item.external_id for item, _ in credited]
    numbers = [note.number or note.external_id for note, _ in notes]
    for item, credited_minor in credited:
        record_timeline(conn, checkout.organization_id, item.id, now, "credit_note_applied", {
            "credit_notes": numbers, "amount": format_minor(credited_minor, item.currency), "minor": credited_minor})
    for note, share in notes:
        _set_paid(conn, note, note.paid_minor + share.amount_minor, now)
        conn.execute(_INSERT_ALLOCATION, {
            "organization_id": checkout.organization_id, "payment_id": payment.id, "invoice_id": note.id,
            "amount_minor": -share.amount_minor, "kind": "credit", "created_at": now})
        used = format_minor(share.amount_minor, note.currency)
        record_timeline(conn, checkout.organization_id, note.id, now, "credit_note_used", {
            "invoices": [item.number or item.external_id for item, _ in credited], "amount": used,
            "minor": share.amount_minor})
        announce(conn, checkout.organization_id, "credit_note.applied", {
            **_invoice_ref(note), "amount": used, "currency": note.currency, "invoices": invoices_named,
            "amount_remaining": format_minor(share.remaining_minor, note.currency),
            "payment_id": payment.provider_payment_id, "provider": payment.provider}, now, invoice_id=note.id)


def _set_paid(conn: sa.Connection, invoice: sa.Row[Any], paid_minor: int, now: dt.datetime) -> None:
    """Quittance's own record of money received. Fully paid is `paid`; less reopens an invoice we closed."""
    status = invoice.status
    if paid_minor >= invoice.total_minor and status == "open":
        status = "paid"
    elif paid_minor < invoice.total_minor and status == "paid":
        status = "open"
    conn.execute(_UPDATE_PAID, {"invoice_id": invoice.id, "paid_minor": paid_minor, "status": status,
                                "updated_at": now})


def _invoice_ref(invoice: sa.Row[Any]) -> dict[str, Any]:
    return {"invoice": invoice.external_id, "number": invoice.number}


def _adjust(conn: sa.Connection, checkout: sa.Row[Any], payment: sa.Row[Any], kind: str, reported: int | None,
            now: dt.datetime) -> int:
    """Bring a refund or chargeback total to what the provider reports (down too: a reversed chargeback),
    then move the payment's allocations to what it still holds. Returns the change in the reported total."""
    column = "refunded_minor" if kind == "refund" else "charged_back_minor"
    if reported is None:
        return 0
    reported = max(0, min(reported, payment.amount_minor))
    delta = reported - getattr(payment, column)
    if delta == 0:
        return 0
    conn.execute(payments.update().where(payments.c.id == payment.id).values(**{column: reported, "updated_at": now}))
    refunded = reported if kind == "refund" else payment.refunded_minor
    charged_back = reported if kind == "chargeback" else payment.charged_back_minor
    items = _rebalance(conn, checkout, payment, max(0, payment.amount_minor - refunded - charged_back), kind, now)
    announce(conn, checkout.organization_id, "payment.refunded" if kind == "refund" else "payment.charged_back",
             {"provider": payment.provider, "payment_id": payment.provider_payment_id,
              "amount": format_minor(delta, payment.currency), "total": format_minor(reported, payment.currency),
              "currency": payment.currency, "invoices": [item.external_id for item in items]}, now)
    return delta


def _rebalance(conn: sa.Connection, checkout: sa.Row[Any], payment: sa.Row[Any], target: int, kind: str,
               now: dt.datetime) -> Sequence[sa.Row]:
    """Make the payment's allocations sum to `target`: what is taken back comes off the invoices last-first,
    what is given back (a won dispute) returns first-first, never beyond each invoice's share."""
    items = [item for item in _items(conn, checkout.id) if item.kind == "invoice"]
    cash = allocations.c.kind != "credit"  # a refund gives back money, not the credit a credit note gave
    rows = conn.execute(sa.select(allocations.c.invoice_id, allocations.c.kind, allocations.c.amount_minor)
                        .where(allocations.c.payment_id == payment.id, cash)).all()
    held: dict[int, int] = {}
    given: dict[int, int] = {}  # what the payment first gave each invoice: a won dispute returns no more
    for row in rows:
        held[row.invoice_id] = held.get(row.invoice_id, 0) + int(row.amount_minor)
        if row.kind == "payment":
            given[row.invoice_id] = given.get(row.invoice_id, 0) + int(row.amount_minor)
    move = target - sum(held.values())
    for item in (items if move > 0 else reversed(items)):
        if move == 0:
            break
        on_invoice = held.get(item.id, 0)
        change = min(move, given.get(item.id, 0) - on_invoice) if move > 0 else max(move, -on_invoice)
        if change == 0:
            continue
        _set_paid(conn, item, item.paid_minor + change, now)
        conn.execute(_INSERT_ALLOCATION, {
            "organization_id": checkout.organization_id, "payment_id": payment.id, "invoice_id": item.id,
            "amount_minor": change, "kind": kind, "created_at": now})
        record_timeline(conn, checkout.organization_id, item.id, now, kind if change < 0 else f"{kind}_reversed",
                        {"amount": format_minor(abs(change), item.currency), "minor": abs(change),
                         "payment_id": payment.provider_payment_id})
        move -= change
    return items
