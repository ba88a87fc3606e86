"""What a debtor sees: their invoices through their link's scope, a page at a time, with what is owed.

A history page costs three statements: the link check (links.resolve), one aggregate that gives the totals
and the years for the filter, and one page of invoices. Each stays on the (organization, customer) index,
so the page is as fast for a debtor among a million invoices as among ten thousand.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from portal.db.invoices import invoices
from portal.domain.links import DebtorScope
from portal.errors import NotFound

PAGE_SIZE = 25
DUE_SOON = dt.timedelta(days=7)
STATUS_FILTERS = ("open", "paid", "cancelled")


def outstanding_minor(row: Any) -> int:
    """What is still to pay: what the billing system says is due, less what was paid here and not yet
    reflected upstream, never below zero."""
    if row.status != "open":
        return 0
    return max(0, min(row.amount_due_minor, row.total_minor - row.paid_minor))


@dataclass
class Summary:
    """Per currency (a debtor usually has one): what is outstanding, and how much of it is overdue."""

    outstanding: dict[str, int] = field(default_factory=dict)
    overdue: dict[str, int] = field(default_factory=dict)
    open_count: int = 0
    overdue_count: int = 0
    years: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class HistoryPage:
    items: list[Any]
    total: int
    page: int
    pages: int
    summary: Summary


_OUTSTANDING = sa.case(
    (invoices.c.status != "open", 0),
    else_=sa.func.max(0, sa.func.min(invoices.c.amount_due_minor, invoices.c.total_minor - invoices.c.paid_minor)),
)


def _outstanding_expression(dialect: str) -> Any:
    # SQLite spells scalar min/max as min()/max() with two arguments; PostgreSQL as least()/greatest().
    if dialect == "postgresql":
        return sa.case((invoices.c.status != "open", 0), else_=sa.func.greatest(
            0, sa.func.least(invoices.c.amount_due_minor, invoices.c.total_minor - invoices.c.paid_minor)))
    return _OUTSTANDING


def summary(conn: sa.Connection, scope: DebtorScope, today: dt.date) -> Summary:
    outstanding = _outstanding_expression(conn.dialect.name)
    overdue = sa.and_(invoices.c.status == "open", invoices.c.due_date < today)
    year = sa.extract("year", invoices.c.issue_date)
    query = scope.restrict(sa.select(
        invoices.c.currency, year.label("year"),
        sa.func.sum(outstanding).label("outstanding"),
        sa.func.sum(sa.case((overdue, outstanding), else_=0)).label("overdue"),
        sa.func.sum(sa.case((invoices.c.status == "open", 1), else_=0)).label("open_count"),
        sa.func.sum(sa.case((overdue, 1), else_=0)).label("overdue_count"),
    )).group_by(invoices.c.currency, year)
    result = Summary()
    outstanding_by: dict[str, int] = defaultdict(int)
    overdue_by: dict[str, int] = defaultdict(int)
    years = set()
    for row in conn.execute(query):
        outstanding_by[row.currency] += int(row.outstanding or 0)
        overdue_by[row.currency] += int(row.overdue or 0)
        result.open_count += int(row.open_count or 0)
        result.overdue_count += int(row.overdue_count or 0)
        if row.year is not None:
            years.add(int(row.year))
    result.outstanding = {c: v for c, v in outstanding_by.items() if v}
    result.overdue = {c: v for c, v in overdue_by.items() if v}
    result.years = sorted(years, reverse=True)
    return result


def history(conn: sa.Connection, scope: DebtorScope, today: dt.date, *, status: str | None = None,
            year: int | None = None, page: int = 1) -> HistoryPage:
    """Open invoices first (the oldest due first), then the rest, newest first."""
    totals = summary(conn, scope, today)
    query = scope.restrict(sa.select(
        invoices.c.id, invoices.c.number, invoices.c.external_id, invoices.c.kind, invoices.c.status,
        invoices.c.issue_date, invoices.c.due_date, invoices.c.currency, invoices.c.total_minor,
        invoices.c.amount_due_minor, invoices.c.paid_minor, invoices.c.document_sha256,
        sa.func.count().over().label("matching")))
    if status in STATUS_FILTERS:
        query = query.where(invoices.c.status == status)
    if year is not None:
        query = query.where(invoices.c.issue_date >= dt.date(year, 1, 1), invoices.c.issue_date < dt.date(year + 1, 1, 1))
    is_open = sa.case((invoices.c.status == "open", 0), else_=1)
    query = query.order_by(is_open, sa.case((invoices.c.status == "open", invoices.c.due_date), else_=None).asc().nulls_last(),
                           invoices.c.issue_date.desc(), invoices.c.id.desc())
    page = max(1, page)
    rows = conn.execute(query.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).all()
    matching = rows[0].matching if rows else 0
    return HistoryPage(items=rows, total=matching, page=page, pages=max(1, -(-matching // PAGE_SIZE)),
                       summary=totals)


def invoice(conn: sa.Connection, scope: DebtorScope, invoice_id: int) -> sa.Row[Any]:
    """One invoice the link may see, or NotFound: the same answer for someone else's and for none."""
    row = conn.execute(scope.restrict(sa.select(invoices)).where(invoices.c.id == invoice_id)).first()
    if row is None:
        raise NotFound("no such invoice")
    return row


def invoices_by_ids(conn: sa.Connection, scope: DebtorScope, ids: list[int]) -> list[sa.Row[Any]]:
    """The ones among `ids` the link may see, in the order asked."""
    rows = {row.id: row for row in conn.execute(scope.restrict(sa.select(invoices)).where(invoices.c.id.in_(ids)))}
    return [rows[i] for i in ids if i in rows]
