"""The finance team: staff people, their memberships (one role per organization), the one-time tokens that set
or reset a password, and the audit log of what they did.

A person is one email address across organizations (an accounting firm keeps the books of several), with one
password and an optional TOTP secret; what they may do is a membership's role in the organization in use.
"""

from __future__ import annotations

import sqlalchemy as sa

from portal.db.metadata import Id, Timestamp, metadata

staff_people = sa.Table(
    "staff_people",
    metadata,
    sa.Column("id", Id, primary_key=True),
    # Lower-cased: the sign-in form matches whatever case a person types.
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(200)),
    # argon2id, as argon2-cffi encodes it; NULL until the person has set a password from their link.
    sa.Column("password_hash", sa.String(200)),
    sa.Column("password_changed_at", Timestamp),
    # The language and region of the back office for this person (amounts and dates as they read them).
    sa.Column("locale", sa.String(20), nullable=False, server_default="en"),
    # Base32 TOTP secret; `totp_enabled_at` is set once a code from it was verified. The last time step a code
    # was accepted for, so that a code seen once (over a shoulder, in a proxy log) cannot be used again.
    sa.Column("totp_secret", sa.String(64)),
    sa.Column("totp_enabled_at", Timestamp),
    sa.Column("totp_last_step", sa.BigInteger()),
    sa.Column("created_at", Timestamp, nullable=False),
)

staff_memberships = sa.Table(
    "staff_memberships",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("person_id", Id, sa.ForeignKey("staff_people.id"), nullable=False),
    # viewer < finance < admin
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    # Disabled memberships stay, so the audit log keeps naming who did what.
    sa.Column("disabled_at", Timestamp),
    sa.UniqueConstraint("organization_id", "person_id"),
    sa.CheckConstraint("role IN ('viewer', 'finance', 'admin')", name="known_role"),
    sa.Index("ix_staff_memberships_person", "person_id"),
)

# One-time links: "set your password" (an invitation, 24 hours) and "reset your password" (1 hour). Only the
# sha256 of the token is stored; `used_at` makes it one-time.
staff_tokens = sa.Table(
    "staff_tokens",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("person_id", Id, sa.ForeignKey("staff_people.id"), nullable=False),
    sa.Column("purpose", sa.String(20), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("used_at", Timestamp),
    sa.Index("ix_staff_tokens_person", "person_id"),
)

# Append-only: the product only ever inserts here (an UPDATE is refused by a trigger the migration creates).
# `organization_id` is the organization in use, or NULL for what happens before one is known (a failed
# sign-in); `actor_email` is kept as typed for failures, so a guessing run is visible.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id")),
    sa.Column("person_id", Id, sa.ForeignKey("staff_people.id")),
    sa.Column("actor_email", sa.String(320)),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("detail", sa.JSON()),
    sa.Column("client_address", sa.String(64)),
    sa.Column("occurred_at", Timestamp, nullable=False),
    sa.Index("ix_audit_log_org", "organization_id", "id"),
)
