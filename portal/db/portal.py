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
    # False: the link shows the customer's whole history. True: only the invoices listed for it in
    # link_invoices (none listed shows nothing, so a scope that lost its rows fails closed).
    sa.Column("scoped", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Index("ix_portal_links_customer", "organization_id", "customer_id"),
)

# The invoices a scoped link may show. The rule that reads it is links.visible_invoices, and every query a
# debtor session makes goes through that rule.
link_invoices = sa.Table(
    "link_invoices",
    metadata,
    sa.Column("link_id", Id, sa.ForeignKey("portal_links.id"), primary_key=True),
    sa.Column("invoice_id", Id, sa.ForeignKey("invoices.id"), primary_key=True),
    sa.Column("organization_id", Id, sa.ForeignKey("organizations.id"), nullable=False),
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
