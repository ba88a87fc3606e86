"""The conflict queue: resends that were refused because they would undo money Quittance recorded (reopen or
cancel an invoice paid online, or lower its total below what was paid). Each is kept with the body as
received, once, until a person marks it resolved."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import sqlalchemy as sa

from portal.db.invoices import invoice_conflicts, invoices
from portal.db.paging import page_by_id
from portal.errors import NotFound

# Refusals that protect recorded money are kept in the queue; the others (a stale version, a draft after
# activation) are only answered.
QUEUED_CODES = frozenset({"reopens_paid", "total_below_paid", "cancels_paid"})


def queue_conflicts(conn: sa.Connection, organization_id: int, conflicts: list[dict[str, Any]]) -> None:
    """Keep refused resends (rows of invoice_conflicts without their id) for a person to see, once each: a
    billing system that resends the same body every night must not fill the queue with copies."""
    if not conflicts:
        return
    pending = {
        (row.invoice_id, row.code, _canonical(row.payload))
        for row in conn.execute(sa.select(
            invoice_conflicts.c.invoice_id, invoice_conflicts.c.code, invoice_conflicts.c.payload).where(
            invoice_conflicts.c.organization_id == organization_id, invoice_conflicts.c.resolved_at.is_(None),
            invoice_conflicts.c.invoice_id.in_({c["invoice_id"] for c in conflicts})))
    }
    fresh = []
    for conflict in conflicts:
        key = (conflict["invoice_id"], conflict["code"], _canonical(conflict["payload"]))
        if key not in pending:
            pending.add(key)
            fresh.append(conflict)
    if fresh:
        conn.execute(invoice_conflicts.insert(), fresh)


def _canonical(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def conflict_query(organization_id: int) -> sa.Select[Any]:
    return (
        sa.select(invoice_conflicts, invoices.c.external_id.label("invoice_external_id"))
        .join(invoices, invoices.c.id == invoice_conflicts.c.invoice_id)
        .where(invoice_conflicts.c.organization_id == organization_id)
    )


def conflicts_of(conn: sa.Connection, organization_id: int, invoice_id: int) -> list[sa.Row[Any]]:
    return list(conn.execute(
        conflict_query(organization_id).where(invoice_conflicts.c.invoice_id == invoice_id)
        .order_by(invoice_conflicts.c.id)
    ).all())


def list_conflicts(conn: sa.Connection, organization_id: int, *, unresolved_only: bool, after_id: int,
                   limit: int) -> tuple[list[sa.Row[Any]], int | None]:
    query = conflict_query(organization_id).where(invoice_conflicts.c.id > after_id)
    if unresolved_only:
        query = query.where(invoice_conflicts.c.resolved_at.is_(None))
    return page_by_id(conn, query, invoice_conflicts.c.id, limit)


def resolve_conflict(conn: sa.Connection, organization_id: int, conflict_id: int, now: dt.datetime) -> sa.Row[Any]:
    conn.execute(invoice_conflicts.update().where(
        invoice_conflicts.c.organization_id == organization_id, invoice_conflicts.c.id == conflict_id,
        invoice_conflicts.c.resolved_at.is_(None)).values(resolved_at=now))
    row = conn.execute(conflict_query(organization_id).where(invoice_conflicts.c.id == conflict_id)).first()
    if row is None:
        raise NotFound(f"no conflict {conflict_id}")
    return row
