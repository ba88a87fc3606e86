"""Delivering outbox events through connectors, reliably.

- Fan-out: `fan_out` writes one delivery per interested connector in the transaction of the event itself.
- Claims: a worker takes due deliveries with a lease. On PostgreSQL several workers claim side by side
  (`FOR UPDATE SKIP LOCKED`); on SQLite writes are serialised and one worker runs. A worker that dies leaves
  its claims to expire; they are claimed again after the lease, with the same idempotency key.
- Order: a delivery is not claimed while an earlier delivery of the same invoice through the same connector
  is still pending or in flight, so a later state never overtakes an earlier one. A dead delivery no longer
  holds the others up (a poison event must not block its invoice forever).
- Retries back off exponentially with jitter, or as the upstream's Retry-After says; after `max_attempts` a
  delivery is dead, with its last error kept, until someone retries it by hand.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from portal.db.paging import page_by_id
from portal.db.connectors import connectors, deliveries
from portal.db.customers import customers
from portal.db.invoices import invoices
from portal.db.organizations import organizations
from portal.db.payments import outbox_events
from portal.errors import NotFound

ACTIVE = ("pending", "in_flight")
BACKOFF_BASE = 2.0      # seconds before the second attempt
BACKOFF_CAP = 3600.0    # never wait more than an hour between attempts


@dataclass(frozen=True)
class Claimed:
    id: int
    event_id: int
    connector_id: int
    attempts: int
    idempotency_key: str


# Built once: every announcement fans out (see outbox.announce).
_CONNECTORS_OF = sa.select(connectors.c.id, connectors.c.event_types).where(
    connectors.c.organization_id == sa.bindparam("organization_id"))
_INSERT_DELIVERY = deliveries.insert()


def fan_out(conn: sa.Connection, organization_id: int, event_id: int, event_type: str, invoice_id: int | None,
            now: dt.datetime) -> int:
    targets = [row.id for row in conn.execute(_CONNECTORS_OF, {"organization_id": organization_id})
               if event_type in (row.event_types or [])]
    if targets:
        conn.execute(_INSERT_DELIVERY, [
            {"organization_id": organization_id, "event_id": event_id, "connector_id": connector_id,
             "invoice_id": invoice_id, "status": "pending", "attempts": 0, "next_attempt_at": now,
             "idempotency_key": "qtc_evt_" + secrets.token_hex(16), "created_at": now}
            for connector_id in targets])
    return len(targets)


def _due() -> sa.Select[tuple[int]]:
    """Due deliveries not held up by an earlier one of the same invoice and connector, in id order. Built once,
    with `now` and `limit` as parameters: composing it cost more than running it on an idle outbox."""
    now = sa.bindparam("now", type_=deliveries.c.next_attempt_at.type)
    earlier = deliveries.alias("earlier")
    blocked = sa.exists().where(
        earlier.c.connector_id == deliveries.c.connector_id, earlier.c.invoice_id == deliveries.c.invoice_id,
        earlier.c.id < deliveries.c.id, earlier.c.status.in_(ACTIVE))
    due = sa.or_(sa.and_(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now),
                 sa.and_(deliveries.c.status == "in_flight", deliveries.c.lease_until < now))
    return (sa.select(deliveries.c.id).where(due, sa.or_(deliveries.c.invoice_id.is_(None), ~blocked))
            .order_by(deliveries.c.id).limit(sa.bindparam("limit", type_=sa.Integer())))


_DUE = _due()
_DUE_LOCKED = _DUE.with_for_update(skip_locked=True)  # PostgreSQL: workers claim side by side


def claim(conn: sa.Connection, owner: str, now: dt.datetime, *, limit: int, lease: dt.timedelta) -> list[Claimed]:
    """Take up to `limit` due deliveries for `owner` until `now + lease`."""
    query = _DUE_LOCKED if conn.dialect.name == "postgresql" else _DUE
    ids = list(conn.execute(query, {"now": now, "limit": limit}).scalars())
    if not ids:
        return []
    rows = conn.execute(deliveries.update().where(deliveries.c.id.in_(ids)).values(
        status="in_flight", lease_owner=owner, lease_until=now + lease, attempts=deliveries.c.attempts + 1)
        .returning(deliveries.c.id, deliveries.c.event_id, deliveries.c.connector_id, deliveries.c.attempts,
                   deliveries.c.idempotency_key)).all()
    return sorted((Claimed(r.id, r.event_id, r.connector_id, r.attempts, r.idempotency_key) for r in rows),
                  key=lambda claimed: claimed.id)


def backoff(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts`-th failure: exponential, capped, with full jitter on the upper
    half so that many deliveries failing together do not retry together."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1))
    return ceiling / 2 + (rng or random).random() * ceiling / 2


def _mine(owner: str) -> Any:
    # Only the worker holding the lease may settle a delivery: one whose lease expired and was claimed again
    # belongs to its new owner.
    return sa.and_(deliveries.c.status == "in_flight", deliveries.c.lease_owner == owner)


def delivered(conn: sa.Connection, delivery_ids: Sequence[int], owner: str, status: int | None,
              now: dt.datetime) -> None:
    """Record deliveries that the upstream answered with `status`: one statement for all of them (a worker
    settles a whole batch at once, and most of a batch gets the same answer)."""
    if delivery_ids:
        conn.execute(deliveries.update().where(deliveries.c.id.in_(delivery_ids), _mine(owner)).values(
            status="delivered", delivered_at=now, last_status=status, last_error=None, lease_owner=None,
            lease_until=None))


def failed_attempt(conn: sa.Connection, delivery_id: int, owner: str, now: dt.datetime, *, error: str,
                   status: int | None, retry_after: float | None, permanent: bool, max_attempts: int) -> str:
    """Record a failed attempt; returns the delivery's new status (pending or dead)."""
    row = conn.execute(sa.select(deliveries.c.attempts).where(deliveries.c.id == delivery_id, _mine(owner))).first()
    if row is None:
        return "lost_lease"
    if permanent or row.attempts >= max_attempts:
        conn.execute(deliveries.update().where(deliveries.c.id == delivery_id).values(
            status="dead", last_error=error[:2000], last_status=status, lease_owner=None, lease_until=None))
        return "dead"
    # The upstream's Retry-After wins when it gives one; otherwise our backoff.
    wait = backoff(row.attempts) if retry_after is None else min(max(retry_after, 0.0), BACKOFF_CAP)
    conn.execute(deliveries.update().where(deliveries.c.id == delivery_id).values(
        status="pending", next_attempt_at=now + dt.timedelta(seconds=wait), last_error=error[:2000],
        last_status=status, lease_owner=None, lease_until=None))
    return "pending"


def retry(conn: sa.Connection, organization_id: int | None, delivery_id: int, now: dt.datetime) -> None:
    """Give a dead delivery another round of attempts, now."""
    match = [deliveries.c.id == delivery_id, deliveries.c.status == "dead"]
    if organization_id is not None:
        match.append(deliveries.c.organization_id == organization_id)
    if conn.execute(deliveries.update().where(*match).values(
            status="pending", attempts=0, next_attempt_at=now)).rowcount == 0:
        raise NotFound(f"no dead delivery {delivery_id}")


def listing(conn: sa.Connection, organization_id: int | None, status: str | None, after_id: int,
            limit: int) -> tuple[list[sa.Row[Any]], int | None]:
    query = (sa.select(deliveries, connectors.c.name.label("connector_name"))
             .join(connectors, connectors.c.id == deliveries.c.connector_id).where(deliveries.c.id > after_id))
    if organization_id is not None:
        query = query.where(deliveries.c.organization_id == organization_id)
    if status is not None:
        query = query.where(deliveries.c.status == status)
    return page_by_id(conn, query, deliveries.c.id, limit)


def next_due(conn: sa.Connection) -> dt.datetime | None:
    """When the next pending delivery becomes due (the worker sleeps until then when idle)."""
    value = conn.scalar(sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(deliveries.c.status == "pending"))
    return value if value is None or value.tzinfo else value.replace(tzinfo=dt.UTC)


def delivery_contexts(conn: sa.Connection, delivery_ids: Sequence[int]) -> Sequence[sa.Row]:
    """Everything the claimed deliveries' connectors need, in one query: the event, its organization, the
    connector, and the invoice and customer it is about (None for an event about no invoice)."""
    return conn.execute(
        sa.select(deliveries.c.id, outbox_events.c.id.label("event_id"), outbox_events.c.event_type,
                  outbox_events.c.payload, outbox_events.c.created_at, outbox_events.c.request_id, organizations.c.slug,
                  connectors.c.id.label("connector_id"), connectors.c.type.label("connector_type"),
                  connectors.c.settings.label("connector_settings"),
                  connectors.c.updated_at.label("connector_updated_at"), invoices.c.external_id,
                  invoices.c.number, invoices.c.currency, invoices.c.total_minor, invoices.c.amount_due_minor,
                  invoices.c.paid_minor, invoices.c.status, invoices.c.kind, customers.c.external_id.label("customer_external_id"),
                  customers.c.name.label("customer_name"), customers.c.email, customers.c.locale)
        .join(outbox_events, outbox_events.c.id == deliveries.c.event_id)
        .join(organizations, organizations.c.id == deliveries.c.organization_id)
        .join(connectors, connectors.c.id == deliveries.c.connector_id)
        .outerjoin(invoices, invoices.c.id == outbox_events.c.invoice_id)
        .outerjoin(customers, customers.c.id == invoices.c.customer_id)
        .where(deliveries.c.id.in_(delivery_ids))).all()
