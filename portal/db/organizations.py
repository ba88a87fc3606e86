"""Tenants and the API keys that act for them."""

from __future__ import annotations

import sqlalchemy as sa

from portal.db.metadata import Id, Timestamp, metadata

organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("slug", sa.String(63), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    # Branding and contact, shown to debtors: where to ask for a fresh link, the colour of the pages.
    sa.Column("contact_email", sa.String(320)),
    sa.Column("contact_phone", sa.String(40)),
    sa.Column("brand_color", sa.String(7)),
    sa.Column("logo_sha256", sa.String(64)),
    sa.Column("logo_type", sa.String(20)),
    # Set by an admin: every staff member of this organization signs in with a TOTP code as well.
    sa.Column("staff_require_totp", sa.Boolean(), nullable=False, server_default=sa.false()),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    # The first characters of the key, shown in listings so a person can tell keys apart.
    sa.Column("prefix", sa.String(16), nullable=False),
    # SHA-256 of the whole key. Keys are 256-bit random, so a fast hash is enough (nothing to brute-force).
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("revoked_at", Timestamp),
)

# Gapless counters (invoice numbers): incremented inside the transaction that uses the value, so a
# rollback gives the number back.
number_sequences = sa.Table(
    "number_sequences",
    metadata,
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), primary_key=True),
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("last_value", sa.BigInteger(), nullable=False),
)
