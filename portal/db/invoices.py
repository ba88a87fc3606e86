"""Invoices (lines are part of the invoice row: the billing system always sends them whole), their
timeline, and the conflicts a resend could not apply."""

from __future__ import annotations

import sqlalchemy as sa

from portal.db.metadata import Id, Minor, Timestamp, metadata

invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("external_id", sa.String(200), nullable=False),
    sa.Column("customer_id", Id, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("number", sa.String(60)),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("issue_date", sa.Date()),
    sa.Column("due_date", sa.Date()),
    # Payment terms: at_reception, net_days (with days), end_of_month, custom (the due date is given).
    sa.Column("payment_terms", sa.String(20)),
    sa.Column("payment_terms_days", sa.Integer()),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total_minor", Minor, nullable=False),
    sa.Column("amount_due_minor", Minor, nullable=False),
    # What Quittance itself recorded as paid (online payments); the billing system cannot undo it by a resend.
    sa.Column("paid_minor", Minor, nullable=False, server_default="0"),
    sa.Column("lines", sa.JSON(), nullable=False),
    sa.Column("title", sa.String(300)),
    sa.Column("header_note", sa.Text()),
    sa.Column("footer_note", sa.Text()),
    sa.Column("vat_mention", sa.Text()),
    sa.Column("delivery_date", sa.Date()),
    sa.Column("store", sa.String(100)),
    sa.Column("may_have_documents", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("document_sha256", sa.String(64)),
    sa.Column("document_size", sa.BigInteger()),
    sa.Column("document_updated_at", Timestamp),
    # The billing system's own revision number (optimistic concurrency), if it sends one.
    sa.Column("version", sa.BigInteger()),
    # Our revision: +1 on every applied change.
    sa.Column("revision", sa.Integer(), nullable=False),
    # SHA-256 of the canonical body last applied: an identical resend is "unchanged" and writes nothing.
    sa.Column("content_hash", sa.String(64), nullable=False),
    # Set by the batch API only: "<revision>:<digest of the item body (as parsed, keys sorted) that produced
    # that revision>", so that the same body resent is answered "unchanged" before it is validated
    # (portal.domain.invoices.recognise_resends). Any other change bumps the revision and so unbinds it;
    # writes without a body clear it. A change to how bodies are validated or converted must clear the
    # column (in its migration), or old bodies would still be recognised.
    sa.Column("body_fingerprint", sa.String(64)),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("activated_at", Timestamp),
    sa.Column("cancelled_at", Timestamp),
    sa.UniqueConstraint("organization_id", "external_id"),
    sa.Index("ix_invoices_customer", "organization_id", "customer_id", "issue_date"),
    sa.Index("ix_invoices_updated", "organization_id", "updated_at"),
)

invoice_timeline = sa.Table(
    "invoice_timeline",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("invoice_id", Id, sa.ForeignKey("invoices.id"), nullable=False),
    sa.Column("occurred_at", Timestamp, nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("detail", sa.JSON()),
    sa.Index("ix_invoice_timeline_invoice", "invoice_id", "id"),
)

invoice_conflicts = sa.Table(
    "invoice_conflicts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("invoice_id", Id, sa.ForeignKey("invoices.id"), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("code", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    # The body that was refused, kept so a person can see what the billing system wanted.
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("resolved_at", Timestamp),
    sa.Index("ix_invoice_conflicts_org", "organization_id", "resolved_at", "id"),
)
