"""An invoice's timeline: what happened to it and when (created, updated, activated, sent, paid, remarks...),
one row per event, in the order it happened. Every writer records its own event in the transaction of its
change; the API shows the whole timeline, the debtor's page the kinds meant for the debtor."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from portal.db.bulk import insert_many
from portal.db.invoices import invoice_timeline


def record_timeline(conn: sa.Connection, organization_id: int, invoice_id: int, now: dt.datetime, kind: str,
                    detail: dict[str, Any] | None = None) -> None:
    record_timelines(conn, [timeline_entry(organization_id, invoice_id, now, kind, detail)])


def timeline_entry(organization_id: int, invoice_id: int, now: dt.datetime, kind: str,
                   detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """One timeline row, to record with others in `record_timelines`."""
    return {"organization_id": organization_id, "invoice_id": invoice_id, "occurred_at": now, "kind": kind,
            "detail": detail}


def record_timelines(conn: sa.Connection, entries: list[dict[str, Any]]) -> None:
    """Record several `timeline_entry` rows in one statement (the batch push records one per invoice)."""
    insert_many(conn, invoice_timeline, entries)


def timeline_of(conn: sa.Connection, organization_id: int, invoice_id: int) -> list[sa.Row[Any]]:
    return list(conn.execute(
        sa.select(invoice_timeline).where(
            invoice_timeline.c.organization_id == organization_id, invoice_timeline.c.invoice_id == invoice_id)
        .order_by(invoice_timeline.c.id)
    ).all())
