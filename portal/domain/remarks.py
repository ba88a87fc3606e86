"""Remarks: a debtor's question about an invoice, and the answers from staff or the billing system."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

import sqlalchemy as sa

from portal.db.paging import page_by_id
from portal.db.customers import customers
from portal.db.invoices import invoices
from portal.db.portal import remarks
from portal.domain.invoices import get_invoice
from portal.domain.links import DebtorScope, visible_invoices
from portal.domain.timeline import record_timeline
from portal.domain.outbox import announce
from portal.errors import Conflict, NotFound

MAX_LENGTH = 2000
# Per link: enough for a real conversation, too few for a flood.
RATE_LIMIT = (5, dt.timedelta(minutes=10))
DAILY_LIMIT = (20, dt.timedelta(days=1))

Author = Literal["debtor", "billing_system", "staff"]


class TooManyRemarks(Conflict):
    def __init__(self) -> None:
        super().__init__("too many remarks from this link for now", code="rate_limited")


def add_debtor_remark(conn: sa.Connection, scope: DebtorScope, invoice_id: int, body: str,
                      reply_to: str | None, now: dt.datetime) -> int:
    """A remark from the portal, on an invoice the link may see; rate-limited per link."""
    visible = sa.select(invoices.c.id).where(visible_invoices(scope), invoices.c.id == invoice_id)
    if conn.scalar(visible) is None:
        raise NotFound("no such invoice")
    for limit, window in (RATE_LIMIT, DAILY_LIMIT):
        recent = conn.execute(sa.select(sa.func.count()).select_from(remarks).where(
            remarks.c.link_id == scope.link_id, remarks.c.created_at > now - window)).scalar_one()
        if recent >= limit:
            raise TooManyRemarks()
    remark_id = conn.execute(remarks.insert().values(
        organization_id=scope.organization_id, invoice_id=invoice_id, author="debtor",
        author_name=scope.customer_name, body=body, reply_to=reply_to, link_id=scope.link_id,
        created_at=now).returning(remarks.c.id)).scalar_one()
    record_timeline(conn, scope.organization_id, invoice_id, now, "remark", {"remark_id": remark_id,
                                                                              "author": "debtor"})
    invoice = conn.execute(sa.select(invoices.c.external_id, invoices.c.number).where(invoices.c.id == invoice_id)).one()
    announce(conn, scope.organization_id, "remark.created",
             {"remark_id": remark_id, "invoice": invoice.external_id, "number": invoice.number, "body": body,
              "reply_to": reply_to}, now, invoice_id=invoice_id)
    return int(remark_id)


def answer(conn: sa.Connection, organization_id: int, invoice_external_id: str, body: str, author: Author,
           author_name: str | None, now: dt.datetime) -> sa.Row[Any]:
    invoice = get_invoice(conn, organization_id, invoice_external_id)
    remark_id = conn.execute(remarks.insert().values(
        organization_id=organization_id, invoice_id=invoice.id, author=author, author_name=author_name,
        body=body, created_at=now).returning(remarks.c.id)).scalar_one()
    record_timeline(conn, organization_id, invoice.id, now, "remark", {"remark_id": remark_id, "author": author})
    return conn.execute(_query(organization_id).where(remarks.c.id == remark_id)).one()


def _query(organization_id: int) -> sa.Select[Any]:
    return (sa.select(remarks, invoices.c.external_id.label("invoice_external_id"),
                      customers.c.external_id.label("customer_external_id"))
            .join(invoices, invoices.c.id == remarks.c.invoice_id)
            .join(customers, customers.c.id == invoices.c.customer_id)
            .where(remarks.c.organization_id == organization_id))


def thread(conn: sa.Connection, organization_id: int, invoice_id: int) -> Sequence[sa.Row]:
    return conn.execute(_query(organization_id).where(remarks.c.invoice_id == invoice_id)
                        .order_by(remarks.c.id)).all()


def since(conn: sa.Connection, organization_id: int, after_id: int, since_time: dt.datetime | None,
          author: str | None, limit: int) -> tuple[list[sa.Row[Any]], int | None]:
    query = _query(organization_id).where(remarks.c.id > after_id)
    if since_time is not None:
        query = query.where(remarks.c.created_at >= since_time)
    if author is not None:
        query = query.where(remarks.c.author == author)
    return page_by_id(conn, query, remarks.c.id, limit)
