"""Connectors to upstream systems, and the deliveries of outbox events through them."""

from __future__ import annotations

import sqlalchemy as sa

from portal.db.metadata import Id, Timestamp, metadata

connectors = sa.Table(
    "connectors",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("name", sa.String(60), nullable=False),
    # webhook, status_patch, pull_import or email
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("settings", sa.JSON(), nullable=False),
    # The event types this connector delivers, worked out when it is configured; empty for pull_import.
    sa.Column("event_types", sa.JSON(), nullable=False),
    # Pull importers: where the last run stopped, and when the next is due.
    sa.Column("cursor", sa.Text()),
    sa.Column("next_run_at", Timestamp),
    sa.Column("last_run", sa.JSON()),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("organization_id", "name"),
)

# One row per (event, connector): written in the same transaction as the event, so nothing is announced that
# will not be delivered. pending -> in_flight (leased to one worker) -> delivered, or back to pending with a
# later next_attempt_at, or dead after too many attempts (retried by hand).
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("event_id", Id, sa.ForeignKey("outbox_events.id"), nullable=False),
    sa.Column("connector_id", Id, sa.ForeignKey("connectors.id", ondelete="CASCADE"), nullable=False),
    # Deliveries of one invoice through one connector go out in event order.
    sa.Column("invoice_id", Id),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", Timestamp, nullable=False),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_until", Timestamp),
    # The same on every attempt, so the upstream can recognise a repeat.
    sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
    sa.Column("last_status", sa.Integer()),
    sa.Column("last_error", sa.Text()),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("delivered_at", Timestamp),
    sa.Index("ix_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_order", "connector_id", "invoice_id", "id"),
    sa.Index("ix_deliveries_org", "organization_id", "status", "id"),
)

# One row per `portal worker` (its owner name: host and process), kept current at the end of each loop that
# finished without an error: how old the newest is says whether delivery upstream is alive.
worker_heartbeats = sa.Table(
    "worker_heartbeats",
    metadata,
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("last_success_at", Timestamp, nullable=False),
)
