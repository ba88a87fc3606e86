"""What a debtor sees: their invoices through their link's scope, a page at a time, with what is owed.

A history page costs three statements: the link check (links.resolve), one aggregate that gives the totals
and the years for the filter, and one page of invoices. Each stays on the (organization, customer) index,
so the page is as fast for a debtor among a million invoices as among ten thousand.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict, namedtuple
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from portal.db.invoices import invoices
from portal.domain.links import DebtorScope
from portal.errors import NotFound

PAGE_SIZE = 25
DUE_SOON = dt.timedelta(days=7)
STATUS_FILTERS = ("open", "paid", "cancelled")


def outstanding_minor(row: Any) -> int:
    """What is still to pay on an open invoice: what the billing system says is due, less what was paid here
    and not yet reflected upstream, never below zero. A credit note is never "to pay"."""
    if row.status != "open" or row.kind != "invoice":
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


def _outstanding_expression(dialect: str) -> Any:
    # SQLite spells scalar min/max as min()/max() with two arguments; PostgreSQL as least()/greatest().
    # The same rule as outstanding_minor (keep the two in step).
    smallest, largest = (sa.func.least, sa.func.greatest) if dialect == "postgresql" else (sa.func.min, sa.func.max)
    payable = sa.and_(invoices.c.status == "open", invoices.c.kind == "invoice")
    return sa.case((sa.not_(payable), 0), else_=largest(
        0, smallest(invoices.c.amount_due_minor, invoices.c.total_minor - invoices.c.paid_minor)))


# The statements of a history page are built once per dialect and shape, with bound parameters for every value
# a request supplies: building and cache-keying a Core statement costs more CPU than SQLite takes to run it.

def _scoped(query: sa.Select[Any], scoped: bool) -> sa.Select[Any]:
    """DebtorScope.restrict, with parameters instead of values (keep the two in step)."""
    query = query.where(invoices.c.organization_id == sa.bindparam("organization_id"),
                        invoices.c.customer_id == sa.bindparam("customer_id"), invoices.c.status != "draft")
    if scoped:
        query = query.where(invoices.c.id.in_(sa.bindparam("invoice_ids", expanding=True)))
    return query


def _scope_parameters(scope: DebtorScope) -> dict[str, Any]:
    parameters: dict[str, Any] = {"organization_id": scope.organization_id, "customer_id": scope.customer_id}
    if scope.invoice_ids is not None:
        parameters["invoice_ids"] = sorted(scope.invoice_ids)
    return parameters


@lru_cache(maxsize=8)
def _summary_statement(dialect: str, scoped: bool) -> sa.Select[Any]:
    outstanding = _outstanding_expression(dialect)
    owing = outstanding > 0
    overdue = sa.and_(owing, invoices.c.due_date < sa.bindparam("today", type_=sa.Date()))
    year = sa.extract("year", invoices.c.issue_date)
    return _scoped(sa.select(
        invoices.c.currency, year.label("year"),
        sa.func.sum(outstanding).label("outstanding"),
        sa.func.sum(sa.case((overdue, outstanding), else_=0)).label("overdue"),
        sa.func.sum(sa.case((owing, 1), else_=0)).label("open_count"),
        sa.func.sum(sa.case((overdue, 1), else_=0)).label("overdue_count"),
    ), scoped).group_by(invoices.c.currency, year)


_PAGE_COLUMNS = (
    invoices.c.id, invoices.c.number, invoices.c.external_id, invoices.c.kind, invoices.c.status,
    invoices.c.issue_date, invoices.c.due_date, invoices.c.currency, invoices.c.total_minor,
    invoices.c.amount_due_minor, invoices.c.paid_minor, invoices.c.document_sha256,
    sa.func.count().over().label("matching"),
)
# A page's rows as plain named tuples: the view reads some fifteen attributes of each, and reading one from a
# Row costs ten times as much as from a tuple (about 150 us a page).
PageRow = namedtuple("PageRow", [column.key for column in _PAGE_COLUMNS])  # type: ignore[misc]  # noqa: PYI024


@lru_cache(maxsize=32)
def _page_statement(scoped: bool, by_status: bool, by_year: bool) -> sa.Select[Any]:
    query = _scoped(sa.select(*_PAGE_COLUMNS), scoped)
    if by_status:
        query = query.where(invoices.c.status == sa.bindparam("status"))
    if by_year:
        query = query.where(invoices.c.issue_date >= sa.bindparam("year_start", type_=sa.Date()),
                            invoices.c.issue_date < sa.bindparam("year_end", type_=sa.Date()))
    is_open = sa.case((invoices.c.status == "open", 0), else_=1)
    return query.order_by(
        is_open, sa.case((invoices.c.status == "open", invoices.c.due_date), else_=None).asc().nulls_last(),
        invoices.c.issue_date.desc(), invoices.c.id.desc(),
    ).limit(PAGE_SIZE).offset(sa.bindparam("offset", type_=sa.Integer()))


def summary(conn: sa.Connection, scope: DebtorScope, today: dt.date) -> Summary:
    query = _summary_statement(conn.dialect.name, scope.invoice_ids is not None)
    result = Summary()
    outstanding_by: dict[str, int] = defaultdict(int)
    overdue_by: dict[str, int] = defaultdict(int)
    years = set()
    for row in conn.execute(query, {**_scope_parameters(scope), "today": today}):
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
    by_status = status in STATUS_FILTERS
    page = max(1, page)
    parameters = {**_scope_parameters(scope), "offset": (page - 1) * PAGE_SIZE}
    if by_status:
        parameters["status"] = status
    if year is not None:
        parameters["year_start"], parameters["year_end"] = dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
    query = _page_statement(scope.invoice_ids is not None, by_status, year is not None)
    rows = [PageRow(*row) for row in conn.execute(query, parameters)]
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
