"""What an operator watches, read from the database so that every process and host reports the same: the
outbox's backlog, and when each worker last finished a loop without an error."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from portal.db.connectors import deliveries, worker_heartbeats
from portal.clock import as_utc


@dataclass(frozen=True)
class OutboxState:
    by_status: dict[str, int]
    oldest_pending_at: dt.datetime | None
    # The newest successful loop of any worker; None before the first.
    worker_last_success_at: dt.datetime | None


def outbox_state(conn: sa.Connection) -> OutboxState:
    counts = {status: count for status, count in conn.execute(
        sa.select(deliveries.c.status, sa.func.count()).group_by(deliveries.c.status))}
    oldest = conn.scalar(sa.select(sa.func.min(deliveries.c.created_at)).where(
        deliveries.c.status.in_(("pending", "in_flight"))))
    beat = conn.scalar(sa.select(sa.func.max(worker_heartbeats.c.last_success_at)))
    return OutboxState({status: counts.get(status, 0) for status in ("pending", "in_flight", "delivered", "dead")},
                       as_utc(oldest) if oldest else None, as_utc(beat) if beat else None)


def worker_succeeded(conn: sa.Connection, owner: str, now: dt.datetime) -> None:
    """Record that worker `owner` finished a loop without an error (one row per worker, kept current)."""
    updated = conn.execute(worker_heartbeats.update().where(worker_heartbeats.c.owner == owner)
                           .values(last_success_at=now)).rowcount
    if not updated:
        conn.execute(worker_heartbeats.insert().values(owner=owner, started_at=now, last_success_at=now))
