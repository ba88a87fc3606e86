"""What the debtor portal adds: signed links (and their uses), and remarks on invoices."""

from __future__ import annotations

import sqlalchemy as sa

from portal.db.metadata import Id, Timestamp, metadata

# A link row is the server-side half of a signed token: the token carries only the id, and every request
# checks the row, so expiry and revocation hold even for a token whose signature is still good.
portal_links = sa.Table(
    "portal_links",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("customer_id", Id, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("revoked_at", Timestamp),
    # Internal ids of the invoices the link may show; null for the customer's whole history.
    sa.Column("invoice_ids", sa.JSON()),
    sa.Index("ix_portal_links_customer", "organization_id", "customer_id"),
)

link_visits = sa.Table(
    "link_visits",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("link_id", Id, sa.ForeignKey("portal_links.id"), nullable=False),
    sa.Column("visited_at", Timestamp, nullable=False),
    # "Firefox", "Chrome", "Safari", "Outlook scanner"… never the full user agent string.
    sa.Column("browser_family", sa.String(40), nullable=False),
    sa.Index("ix_link_visits_link", "link_id", "visited_at"),
)

remarks = sa.Table(
    "remarks",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("invoice_id", Id, sa.ForeignKey("invoices.id"), nullable=False),
    # debtor (from the portal), billing_system (over the API) or staff.
    sa.Column("author", sa.String(20), nullable=False),
    sa.Column("author_name", sa.String(200)),
    sa.Column("body", sa.Text(), nullable=False),
    # How the debtor wants an answer (email or phone), if they said.
    sa.Column("reply_to", sa.String(320)),
    sa.Column("link_id", Id, sa.ForeignKey("portal_links.id")),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_remarks_org_created", "organization_id", "created_at", "id"),
    sa.Index("ix_remarks_invoice", "invoice_id", "id"),
    sa.Index("ix_remarks_link", "link_id", "created_at"),
)

# The access tables (sessions reference portal_links) register on the same metadata with this module.
from portal.db import access  # noqa: E402,F401
