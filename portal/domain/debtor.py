"""What a debtor sees: their invoices through their link's scope, a page at a time, with what is owed.

A history page is one statement (`history`): the link check of links.resolve, with the totals (which also
give the years for the filter) and one page of invoices. Each part stays on the (organization, customer)
index, so the page is as fast for a debtor among a million invoices as among ten thousand.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict, namedtuple
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from portal.db.invoices import invoices
from portal.db.portal import portal_links
from portal.domain import links
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


# A history page is one statement, built once per dialect and shape with bound parameters for every value a
# request supplies (building and cache-keying a Core statement costs more CPU than SQLite takes to run it):
# links.RESOLVE, the link's row, plus two columns computed by subqueries correlated to that row, the totals and
# the page of invoices, each as a JSON array of arrays. One round trip instead of three: on PostgreSQL under
# load, 5% more pages a second (bench/README.md, fourth session).

def _json_rows(dialect: str, columns: list[Any]) -> Any:
    """An aggregate: the group's rows as a JSON array of arrays (in no defined order)."""
    if dialect == "postgresql":
        return sa.func.json_agg(sa.func.json_build_array(*columns))
    return sa.func.json_group_array(sa.func.json_array(*columns))


def _link_scope(dialect: str) -> Any:
    """DebtorScope.restrict, for the link of the enclosing row (keep the two in step). An unscoped link's
    invoice_ids is JSON null (or SQL NULL: both read as None); anything else limits the link to the ids it lists,
    so a value that is not a list of ids shows nothing (or fails), never everything."""
    link = portal_links.c
    if dialect == "postgresql":
        kind = sa.func.json_typeof(link.invoice_ids)
        listed = sa.select(sa.cast(sa.func.json_array_elements_text(link.invoice_ids), sa.BigInteger))
    else:
        kind = sa.func.json_type(link.invoice_ids)
        listed = sa.select(sa.column("value")).select_from(sa.func.json_each(link.invoice_ids))
    unscoped = sa.func.coalesce(kind, "null") == "null"
    return sa.and_(invoices.c.organization_id == link.organization_id, invoices.c.customer_id == link.customer_id,
                   invoices.c.status != "draft", sa.or_(unscoped, invoices.c.id.in_(listed.correlate(portal_links))))


def _totals_column(dialect: str) -> Any:
    """Per currency and year of issue: outstanding, overdue, and how many invoices of each (the years also
    fill the year filter)."""
    outstanding = _outstanding_expression(dialect)
    owing = outstanding > 0
    overdue = sa.and_(owing, invoices.c.due_date < sa.bindparam("today", type_=sa.Date()))
    year = sa.extract("year", invoices.c.issue_date)
    groups = sa.select(
        invoices.c.currency, year.label("year"),
        sa.func.sum(outstanding).label("outstanding"),
        sa.func.sum(sa.case((overdue, outstanding), else_=0)).label("overdue"),
        sa.func.sum(sa.case((owing, 1), else_=0)).label("open_count"),
        sa.func.sum(sa.case((overdue, 1), else_=0)).label("overdue_count"),
    ).where(_link_scope(dialect)).group_by(invoices.c.currency, year).correlate(portal_links).subquery()
    return sa.select(_json_rows(dialect, list(groups.c))).scalar_subquery()


_PAGE_COLUMNS = (
    invoices.c.id, invoices.c.number, invoices.c.external_id, invoices.c.kind, invoices.c.status,
    invoices.c.issue_date, invoices.c.due_date, invoices.c.currency, invoices.c.total_minor,
    invoices.c.amount_due_minor, invoices.c.paid_minor, invoices.c.document_sha256,
    sa.func.count().over().label("matching"),
)
# A page's rows as plain named tuples: the view reads some fifteen attributes of each, and reading one from a
# Row costs ten times as much as from a tuple (about 150 us a page).
PageRow = namedtuple("PageRow", [column.key for column in _PAGE_COLUMNS])  # type: ignore[misc]  # noqa: PYI024
_DATES = (PageRow._fields.index("issue_date"), PageRow._fields.index("due_date"))


def _page_column(dialect: str, by_status: bool, by_year: bool) -> Any:
    """Open invoices first (the oldest due first), then the rest, newest first, on SQLite and PostgreSQL alike
    (which put NULLs at opposite ends unless told); each row ends with its place on the page, since the JSON
    aggregate keeps no order."""
    is_open = sa.case((invoices.c.status == "open", 0), else_=1)
    order = (is_open, sa.case((invoices.c.status == "open", invoices.c.due_date), else_=None).asc().nulls_last(),
             invoices.c.issue_date.desc().nulls_last(), invoices.c.id.desc())
    query = sa.select(*_PAGE_COLUMNS, sa.func.row_number().over(order_by=order).label("place")).where(
        _link_scope(dialect))
    if by_status:
        query = query.where(invoices.c.status == sa.bindparam("status"))
    if by_year:
        query = query.where(invoices.c.issue_date >= sa.bindparam("year_start", type_=sa.Date()),
                            invoices.c.issue_date < sa.bindparam("year_end", type_=sa.Date()))
    rows = query.order_by(*order).limit(PAGE_SIZE).offset(sa.bindparam("offset", type_=sa.Integer())).correlate(
        portal_links).subquery()
    return sa.select(_json_rows(dialect, list(rows.c))).scalar_subquery()


@lru_cache(maxsize=16)
def _history_statement(dialect: str, by_status: bool, by_year: bool) -> sa.Select[Any]:
    return links.RESOLVE.add_columns(sa.type_coerce(_totals_column(dialect), sa.JSON).label("totals"),
                                     sa.type_coerce(_page_column(dialect, by_status, by_year), sa.JSON).label("page"))


def _summary(groups: list[list[Any]] | None) -> Summary:
    result = Summary()
    outstanding_by: dict[str, int] = defaultdict(int)
    overdue_by: dict[str, int] = defaultdict(int)
    years = set()
    for currency, year, outstanding, overdue, open_count, overdue_count in groups or ():
        outstanding_by[currency] += int(outstanding)
        overdue_by[currency] += int(overdue)
        result.open_count += int(open_count)
        result.overdue_count += int(overdue_count)
        if year is not None:
            years.add(int(year))
    result.outstanding = {c: v for c, v in outstanding_by.items() if v}
    result.overdue = {c: v for c, v in overdue_by.items() if v}
    result.years = sorted(years, reverse=True)
    return result


def _page_row(values: list[Any]) -> Any:
    for index in _DATES:
        if values[index] is not None:
            values[index] = dt.date.fromisoformat(values[index])
    return PageRow(*values[:-1])


def history(conn: sa.Connection, link_id: int, now: dt.datetime, today: dt.date, *, status: str | None = None,
            year: int | None = None, page: int = 1) -> tuple[DebtorScope, HistoryPage]:
    """The link's scope (links.LinkNotUsable if it no longer works) and a page of its history: open invoices
    first (the oldest due first), then the rest, newest first."""
    by_status = status in STATUS_FILTERS
    page = max(1, page)
    parameters: dict[str, Any] = {"link_id": link_id, "today": today, "offset": (page - 1) * PAGE_SIZE}
    if by_status:
        parameters["status"] = status
    if year is not None:
        parameters["year_start"], parameters["year_end"] = dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
    row = conn.execute(_history_statement(conn.dialect.name, by_status, year is not None), parameters).first()
    return links.scope_of(row, now), history_page(row.totals, row.page, page)


def history_page(totals: list[list[Any]] | None, rows: list[list[Any]] | None, page: int) -> HistoryPage:
    """The page from the statement's two JSON columns, decoded (bench/portal_history.py's ceiling reads them
    through the bare driver and uses this too)."""
    items = [_page_row(values) for values in sorted(rows or (), key=lambda values: values[-1])]
    matching = items[0].matching if items else 0
    return HistoryPage(items=items, total=matching, page=page, pages=max(1, -(-matching // PAGE_SIZE)),
                       summary=_summary(totals))


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
