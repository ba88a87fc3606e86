"""Money coming in: checkouts (what a debtor chose to pay), provider payments, their allocation to invoices,
what still needs a person's look, and the events announced to the billing system (the outbox)."""

from __future__ import annotations

import sqlalchemy as sa

from portal.db.metadata import Id, Minor, Timestamp, metadata

# Per organization; columns left empty fall back to the PORTAL_* defaults of the install.
payment_settings = sa.Table(
    "payment_settings",
    metadata,
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), primary_key=True),
    sa.Column("providers", sa.JSON()),
    # Encrypted (portal.encryption): a sealed key is longer than the key, so the columns are unbounded text.
    sa.Column("mollie_api_key", sa.Text()),
    sa.Column("mollie_methods", sa.JSON()),
    sa.Column("stripe_api_key", sa.Text()),
    sa.Column("stripe_webhook_secrets", sa.JSON()),
    # Whether a debtor may pay less than the selection's total, and the least they may pay then (in minor units
    # of partial_currency; in other currencies only full amounts are taken).
    sa.Column("partial_payments", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("partial_minimum_minor", Minor),
    sa.Column("partial_currency", sa.String(3)),
    sa.Column("updated_at", Timestamp, nullable=False),
)

checkouts = sa.Table(
    "checkouts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    # Random and unguessable: it travels in provider metadata and in the return URL.
    sa.Column("public_id", sa.String(40), nullable=False, unique=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("customer_id", Id, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("link_id", Id, sa.ForeignKey("portal_links.id")),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("method", sa.String(30)),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_minor", Minor, nullable=False),
    # created -> open -> processing -> paid, or -> failed / cancelled / expired. Only ever forward.
    sa.Column("status", sa.String(20), nullable=False),
    # Deterministic from what is paid: a double click or a retried request finds the same checkout.
    sa.Column("idempotency_key", sa.String(64), nullable=False),
    sa.Column("provider_ref", sa.String(100)),
    sa.Column("provider_payment_ref", sa.String(100)),
    sa.Column("checkout_url", sa.Text()),
    sa.Column("expires_at", Timestamp),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("organization_id", "idempotency_key"),
    sa.Index("ix_checkouts_status", "status", "created_at"),
    sa.Index("ix_checkouts_provider_ref", "provider", "provider_ref"),
)

checkout_items = sa.Table(
    "checkout_items",
    metadata,
    sa.Column("checkout_id", Id, sa.ForeignKey("checkouts.id"), primary_key=True),
    sa.Column("invoice_id", Id, sa.ForeignKey("invoices.id"), primary_key=True),
    # What the checkout plans for the invoice (portal.domain.allocation); for a credit note the debtor included,
    # the credit it gives, negative. The checkout's amount is their sum.
    sa.Column("amount_minor", Minor, nullable=False),
    sa.Index("ix_checkout_items_invoice", "invoice_id"),
)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("checkout_id", Id, sa.ForeignKey("checkouts.id"), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    # The provider's id of the money movement (Mollie tr_, Stripe pi_): a payment is recorded once per id and
    # organization (organizations that share the install's keys must never block each other).
    sa.Column("provider_payment_id", sa.String(100), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_minor", Minor, nullable=False),
    # Cumulative, as the provider reports them; deltas are what gets applied.
    sa.Column("refunded_minor", Minor, nullable=False),
    sa.Column("charged_back_minor", Minor, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("organization_id", "provider", "provider_payment_id"),
)

allocations = sa.Table(
    "allocations",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("payment_id", Id, sa.ForeignKey("payments.id"), nullable=False),
    sa.Column("invoice_id", Id, sa.ForeignKey("invoices.id"), nullable=False),
    # Positive for a payment, negative for what a refund or a chargeback took back.
    sa.Column("amount_minor", Minor, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_allocations_payment", "payment_id"),
    sa.Index("ix_allocations_invoice", "invoice_id"),
)

# Stripe events seen, by id and organization: a redelivered event is answered without a second effect. An event
# of another organization's checkout (organizations sharing one Stripe account) is not kept here at all.
provider_events = sa.Table(
    "provider_events",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("event_id", sa.String(100), nullable=False),
    sa.Column("event_type", sa.String(80), nullable=False),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.UniqueConstraint("organization_id", "provider", "event_id"),
)

review_items = sa.Table(
    "review_items",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("provider_payment_id", sa.String(100), nullable=False),
    # amount_mismatch, currency_mismatch, unknown_checkout, overpaid
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("data", sa.JSON(), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("resolved_at", Timestamp),
    # Named by hand: the convention's name is longer than PostgreSQL's 63 characters.
    sa.UniqueConstraint("organization_id", "provider", "provider_payment_id", "reason",
                        name="uq_review_items_org_provider_payment_id_reason"),
    sa.Index("ix_review_items_org", "organization_id", "resolved_at", "id"),
)

# Announcements for the billing system, written in the same transaction as the change they announce.
outbox_events = sa.Table(
    "outbox_events",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("event_type", sa.String(40), nullable=False),
    sa.Column("invoice_id", Id, sa.ForeignKey("invoices.id")),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    # The X-Request-ID of the request (or the worker's job) that caused the event: the worker's log lines about
    # its deliveries carry it, and upstream receives it, so one id follows a change from click to ERP.
    sa.Column("request_id", sa.String(128)),
    sa.Index("ix_outbox_events_org", "organization_id", "id"),
)
