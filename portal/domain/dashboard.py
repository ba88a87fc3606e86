"""The back office's dashboard: what the organization is owed, how late, what came in this month, and what
needs a person. A handful of aggregate queries, each scoped to one organization and served by its indexes.

- Outstanding and overdue per currency use the debtor pages' rule of what is still to pay
  (debtor.outstanding_expression: open invoices, credit notes excluded, less what was paid here).
- Overdue by age: days past the due date, in buckets 1-30, 31-60, 61-90 and over 90.
- Paid this month (calendar month of `today`, UTC): online is what payments through a provider allocated to
  invoices this month, net of what refunds and chargebacks took back this month; otherwise is what was recorded
  outside Quittance: manual payments (provider "manual") and invoices the billing system reported paid, counted
  in the month of their last change (it tells us no payment date) for the part Quittance did not record.
- Needs a person: invoices whose remark thread ends with the debtor's remark (unanswered), open payment
  reviews, dead deliveries and unresolved conflicts.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa

from portal.db.connectors import deliveries
from portal.db.invoices import invoice_conflicts, invoices
from portal.db.payments import allocations, payments, review_items
from portal.db.portal import remarks
from portal.domain.debtor import outstanding_expression

AGE_BUCKETS = ("1-30", "31-60", "61-90", "90+")
MANUAL = "manual"


@dataclass
class Dashboard:
    outstanding: dict[str, int] = field(default_factory=dict)
    overdue: dict[str, int] = field(default_factory=dict)
    # currency -> bucket -> minor units
    overdue_by_age: dict[str, dict[str, int]] = field(default_factory=dict)
    paid_online: dict[str, int] = field(default_factory=dict)
    paid_otherwise: dict[str, int] = field(default_factory=dict)
    unanswered_remarks: int = 0
    open_reviews: int = 0
    dead_deliveries: int = 0
    open_conflicts: int = 0

    @property
    def currencies(self) -> list[str]:
        return sorted(set(self.outstanding) | set(self.paid_online) | set(self.paid_otherwise))


def month_start(today: dt.date) -> dt.datetime:
    return dt.datetime(today.year, today.month, 1, tzinfo=dt.UTC)


def _receivables(conn: sa.Connection, organization_id: int, today: dt.date, board: Dashboard) -> None:
    owed = outstanding_expression()
    # Days late as a whole number, in SQL both engines agree on: compared with the bucket edges as dates.
    due = invoices.c.due_date
    bucket = sa.case(
        (due >= today - dt.timedelta(days=30), "1-30"),
        (due >= today - dt.timedelta(days=60), "31-60"),
        (due >= today - dt.timedelta(days=90), "61-90"),
        else_="90+")
    overdue = sa.and_(due.is_not(None), due < today)
    rows = conn.execute(
        sa.select(invoices.c.currency, sa.case((overdue, bucket), else_="").label("bucket"),
                  sa.func.sum(owed).label("owed"))
        .where(invoices.c.organization_id == organization_id, invoices.c.status == "open",
               invoices.c.kind == "invoice")
        .group_by(invoices.c.currency, sa.text("2")))
    for currency, age, amount in rows:
        amount = int(amount or 0)
        if amount <= 0:
            continue
        board.outstanding[currency] = board.outstanding.get(currency, 0) + amount
        if age:
            board.overdue[currency] = board.overdue.get(currency, 0) + amount
            board.overdue_by_age.setdefault(currency, dict.fromkeys(AGE_BUCKETS, 0))[age] += amount


def _paid_this_month(conn: sa.Connection, organization_id: int, today: dt.date, board: Dashboard) -> None:
    start = month_start(today)
    moved = conn.execute(
        sa.select(payments.c.currency, (payments.c.provider == MANUAL).label("manual"),
                  sa.func.sum(allocations.c.amount_minor))
        .join(payments, payments.c.id == allocations.c.payment_id)
        .where(allocations.c.organization_id == organization_id, allocations.c.created_at >= start)
        .group_by(payments.c.currency, sa.text("2")))
    online: dict[str, int] = defaultdict(int)
    otherwise: dict[str, int] = defaultdict(int)
    for currency, manual, amount in moved:
        (otherwise if manual else online)[currency] += int(amount or 0)
    upstream = conn.execute(
        sa.select(invoices.c.currency, sa.func.sum(invoices.c.total_minor - invoices.c.paid_minor))
        .where(invoices.c.organization_id == organization_id, invoices.c.status == "paid",
               invoices.c.kind == "invoice", invoices.c.total_minor > invoices.c.paid_minor,
               invoices.c.updated_at >= start)
        .group_by(invoices.c.currency))
    for currency, amount in upstream:
        otherwise[currency] += int(amount or 0)
    board.paid_online = {c: a for c, a in online.items() if a}
    board.paid_otherwise = {c: a for c, a in otherwise.items() if a}


def _needs_a_person(conn: sa.Connection, organization_id: int, board: Dashboard) -> None:
    last = (sa.select(remarks.c.invoice_id, sa.func.max(remarks.c.id).label("last_id"))
            .where(remarks.c.organization_id == organization_id).group_by(remarks.c.invoice_id).subquery())
    board.unanswered_remarks = int(conn.scalar(
        sa.select(sa.func.count()).select_from(last.join(remarks, remarks.c.id == last.c.last_id))
        .where(remarks.c.author == "debtor")) or 0)
    board.open_reviews = int(conn.scalar(sa.select(sa.func.count()).select_from(review_items).where(
        review_items.c.organization_id == organization_id, review_items.c.resolved_at.is_(None))) or 0)
    board.dead_deliveries = int(conn.scalar(sa.select(sa.func.count()).select_from(deliveries).where(
        deliveries.c.organization_id == organization_id, deliveries.c.status == "dead")) or 0)
    board.open_conflicts = int(conn.scalar(sa.select(sa.func.count()).select_from(invoice_conflicts).where(
        invoice_conflicts.c.organization_id == organization_id, invoice_conflicts.c.resolved_at.is_(None))) or 0)


def dashboard(conn: sa.Connection, organization_id: int, today: dt.date) -> Dashboard:
    board = Dashboard()
    _receivables(conn, organization_id, today, board)
    _paid_this_month(conn, organization_id, today, board)
    _needs_a_person(conn, organization_id, board)
    return board
