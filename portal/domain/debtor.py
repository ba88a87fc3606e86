"""What a debtor sees: their invoices through their link's scope, a page at a time, with what is owed.

Every query here is built on links.visible_invoices, the one rule of what a link shows: the history page (its
totals, its count, its rows), one invoice (its page, its PDF, its remarks) and a set of invoices (the zip
download, the payment selection). A query that leaves the rule out is a bug, not a shortcut.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from portal.db.invoices import invoices
from portal.domain.links import DebtorScope, visible_invoices
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


def credit_minor(row: Any) -> int:
    """The credit an open credit note still holds: its total less what was already used against invoices."""
    if row.status != "open" or row.kind != "credit_note":
        return 0
    return max(0, row.total_minor - row.paid_minor)


def remaining_minor(row: Any) -> int:
    """What is left on a document: owed on an invoice, or credit held by a credit note."""
    return credit_minor(row) if row.kind == "credit_note" else outstanding_minor(row)


def _outstanding_expression() -> sa.ColumnElement[int]:
    """outstanding_minor in SQL, for the totals (tests/domain/test_debtor.py holds the two together)."""
    remaining = invoices.c.total_minor - invoices.c.paid_minor
    owed = sa.case((invoices.c.amount_due_minor < remaining, invoices.c.amount_due_minor), else_=remaining)
    payable = sa.and_(invoices.c.status == "open", invoices.c.kind == "invoice", owed > 0)
    return sa.case((payable, owed), else_=0)


# Public for the back office's dashboard, which sums the same thing over a whole organization.
outstanding_expression = _outstanding_expression


def _credit_expression() -> sa.ColumnElement[int]:
    """credit_minor in SQL."""
    held = invoices.c.total_minor - invoices.c.paid_minor
    usable = sa.and_(invoices.c.status == "open", invoices.c.kind == "credit_note", held > 0)
    return sa.case((usable, held), else_=0)


@dataclass
class Summary:
    """Per currency (a debtor usually has one): what is outstanding on invoices, how much of it is overdue, the
    credit the open credit notes hold, and the balance (outstanding less credit: what the debtor owes)."""

    outstanding: dict[str, int] = field(default_factory=dict)
    overdue: dict[str, int] = field(default_factory=dict)
    credit: dict[str, int] = field(default_factory=dict)
    balance: dict[str, int] = field(default_factory=dict)
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


def totals_query(scope: DebtorScope, today: dt.date) -> sa.Select[Any]:
    """Per currency and year of issue, over everything the link shows: outstanding, overdue, and how many
    invoices of each (the years also fill the year filter), and the open credit notes' credit."""
    outstanding = _outstanding_expression()
    owing = outstanding > 0
    overdue = sa.and_(owing, invoices.c.due_date < today)
    year = sa.extract("year", invoices.c.issue_date)
    return (sa.select(invoices.c.currency, year.label("year"),
                      sa.func.sum(outstanding).label("outstanding"),
                      sa.func.sum(sa.case((overdue, outstanding), else_=0)).label("overdue"),
                      sa.func.sum(sa.case((owing, 1), else_=0)).label("open_count"),
                      sa.func.sum(sa.case((overdue, 1), else_=0)).label("overdue_count"),
                      sa.func.sum(_credit_expression()).label("credit"))
            .where(visible_invoices(scope)).group_by(invoices.c.currency, year))


def _filtered(scope: DebtorScope, status: str | None, year: int | None) -> sa.ColumnElement[bool]:
    condition = visible_invoices(scope)
    if status in STATUS_FILTERS:
        condition = sa.and_(condition, invoices.c.status == status)
    if year is not None:
        condition = sa.and_(condition, invoices.c.issue_date >= dt.date(year, 1, 1),
                            invoices.c.issue_date < dt.date(year + 1, 1, 1))
    return condition


PAGE_COLUMNS = (
    invoices.c.id, invoices.c.number, invoices.c.external_id, invoices.c.kind, invoices.c.status,
    invoices.c.issue_date, invoices.c.due_date, invoices.c.currency, invoices.c.total_minor,
    invoices.c.amount_due_minor, invoices.c.paid_minor, invoices.c.document_sha256,
)


def page_query(scope: DebtorScope, *, status: str | None, year: int | None, page: int) -> sa.Select[Any]:
    """Open invoices first (the oldest due first), then the rest, newest first, on SQLite and PostgreSQL alike
    (which put NULLs at opposite ends unless told)."""
    is_open = sa.case((invoices.c.status == "open", 0), else_=1)
    open_due = sa.case((invoices.c.status == "open", invoices.c.due_date), else_=None)
    return (sa.select(*PAGE_COLUMNS).where(_filtered(scope, status, year))
            .order_by(is_open, open_due.asc().nulls_last(), invoices.c.issue_date.desc().nulls_last(),
                      invoices.c.id.desc())
            .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE))


def count_query(scope: DebtorScope, *, status: str | None, year: int | None) -> sa.Select[Any]:
    return sa.select(sa.func.count()).select_from(invoices).where(_filtered(scope, status, year))


def history(conn: sa.Connection, scope: DebtorScope, today: dt.date, *, status: str | None = None,
            year: int | None = None, page: int = 1) -> HistoryPage:
    """A page of the link's history, with what is owed over all of it."""
    page = max(1, page)
    totals = conn.execute(totals_query(scope, today)).all()
    matching = conn.execute(count_query(scope, status=status, year=year)).scalar_one()
    rows = conn.execute(page_query(scope, status=status, year=year, page=page)).all() if matching else []
    return history_page(totals, matching, rows, page)


def history_page(totals: Sequence[Any], matching: int, rows: Sequence[Any], page: int) -> HistoryPage:
    """The page from what the three queries return (bench/portal_history.py's ceiling, which runs them
    through the bare driver, uses this too)."""
    return HistoryPage(items=list(rows), total=matching, page=page, pages=max(1, -(-matching // PAGE_SIZE)),
                       summary=summary(totals))


def summary(groups: Sequence[Any]) -> Summary:
    """The totals query's groups, added up per currency."""
    result = Summary()
    outstanding_by: dict[str, int] = defaultdict(int)
    overdue_by: dict[str, int] = defaultdict(int)
    credit_by: dict[str, int] = defaultdict(int)
    years = set()
    for currency, year, outstanding, overdue, open_count, overdue_count, credit in groups:
        outstanding_by[currency] += int(outstanding)
        overdue_by[currency] += int(overdue)
        credit_by[currency] += int(credit or 0)
        result.open_count += int(open_count)
        result.overdue_count += int(overdue_count)
        if year is not None:
            years.add(int(year))
    result.outstanding = {c: v for c, v in outstanding_by.items() if v}
    result.overdue = {c: v for c, v in overdue_by.items() if v}
    result.credit = {c: v for c, v in credit_by.items() if v}
    result.balance = {c: outstanding_by[c] - credit_by[c] for c in {*outstanding_by, *credit_by}
                      if outstanding_by[c] - credit_by[c]}
    result.years = sorted(years, reverse=True)
    return result


def invoice(conn: sa.Connection, scope: DebtorScope, invoice_id: int) -> sa.Row[Any]:
    """One invoice the link may see, or NotFound: the same answer for someone else's and for none."""
    row = conn.execute(sa.select(invoices).where(visible_invoices(scope), invoices.c.id == invoice_id)).first()
    if row is None:
        raise NotFound("no such invoice")
    return row


def invoices_by_ids(conn: sa.Connection, scope: DebtorScope, ids: list[int]) -> list[sa.Row[Any]]:
    """The ones among `ids` the link may see, each once, in the order first asked."""
    wanted = list(dict.fromkeys(ids))
    rows = {row.id: row for row in conn.execute(
        sa.select(invoices).where(visible_invoices(scope), invoices.c.id.in_(wanted)))}
    return [rows[i] for i in wanted if i in rows]
