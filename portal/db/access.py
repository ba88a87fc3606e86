"""Who is let in, and how often: server-side sessions and rate-limit windows.

Both are shared by every server process and host through the database, so a sign-out, a revocation or a
throttle holds whichever process serves the next request.
"""

from __future__ import annotations

import sqlalchemy as sa

from portal.db.metadata import Id, Timestamp, metadata

# One row per session. The cookie holds a random secret; only its sha256 is stored, so a copy of this table
# opens no session. `kind` says whose session it is: "debtor" (opened by a portal link, `link_id` set), "staff"
# (a signed-in person of the back office, `staff_person_id` set, `organization_id` the organization in use) or
# "staff_2fa" (a password accepted, the TOTP code still to come: opens nothing but the code's page).
sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id")),
    sa.Column("link_id", Id, sa.ForeignKey("portal_links.id")),
    sa.Column("staff_person_id", Id, sa.ForeignKey("staff_people.id")),
    sa.Column("created_at", Timestamp, nullable=False),
    # When the session last did something that writes anyway (opened, a form posted); pages that only read
    # leave it alone, so that a GET writes nothing.
    sa.Column("last_seen_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    # Set by signing out (and, for staff, by a password or role change): the row stays until it is pruned.
    sa.Column("revoked_at", Timestamp),
    sa.UniqueConstraint("secret_hash"),
    sa.CheckConstraint("kind <> 'debtor' OR link_id IS NOT NULL", name="debtor_has_link"),
    sa.CheckConstraint("kind NOT IN ('staff', 'staff_2fa') OR staff_person_id IS NOT NULL", name="staff_has_person"),
    sa.Index("ix_sessions_link", "link_id"),
    sa.Index("ix_sessions_staff_person", "staff_person_id"),
    sa.Index("ix_sessions_expires", "expires_at"),
)

# Sliding-window rate limits: one counter per (scope, bucket, key) and fixed window; the domain weighs the
# previous window's count by how much of it still overlaps the sliding window (portal.domain.rate_limits).
# `scope` is an organization id as text, or "*" for limits that hold before any organization is known
# (a client address trying tokens or keys). A window's row is useless after `expires_at` and is pruned.
rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("scope", sa.String(20), nullable=False),
    sa.Column("bucket", sa.String(40), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("window_start", Timestamp, nullable=False),
    sa.Column("hits", sa.Integer(), nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.UniqueConstraint("scope", "bucket", "key", "window_start"),
    sa.Index("ix_rate_limits_expires", "expires_at"),
)
