"""Announcements for the billing system. Each is written in the same transaction as the change it announces,
so there is never a change without its announcement, nor an announcement of a change that rolled back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from asgi_correlation_id import correlation_id

from portal.db.invoices import invoices
from portal.db.payments import outbox_events
from portal.domain.deliveries import fan_out

EVENT_TYPES = ("invoice.paid", "invoice.partially_paid", "payment.refunded", "payment.charged_back",
               "payment.needs_review", "remark.created", "credit_note.applied")


# Built once: every payment announces, and building the statement cost more than running it.
_INSERT_EVENT = outbox_events.insert().returning(outbox_events.c.id)


def announce(conn: sa.Connection, organization_id: int, event_type: str, payload: dict[str, Any],
             now: dt.datetime, *, invoice_id: int | None = None) -> None:
    assert event_type in EVENT_TYPES, event_type
    event_id = conn.execute(_INSERT_EVENT, {
        "organization_id": organization_id, "event_type": event_type, "invoice_id": invoice_id,
        "payload": payload, "created_at": now, "request_id": correlation_id.get()}).scalar_one()
    fan_out(conn, organization_id, event_id, event_type, invoice_id, now)


def events_after(conn: sa.Connection, organization_id: int, after_id: int, limit: int) -> Sequence[sa.Row]:
    """The organization's events after `after_id`, oldest first, each with its invoice's external id."""
    return conn.execute(
        sa.select(outbox_events, invoices.c.external_id.label("invoice_external_id"))
        .outerjoin(invoices, invoices.c.id == outbox_events.c.invoice_id)
        .where(outbox_events.c.organization_id == organization_id, outbox_events.c.id > after_id)
        .order_by(outbox_events.c.id).limit(limit)).all()
