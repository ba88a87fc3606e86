"""The payment review list: payments that were not applied to an invoice, or overpaid one (written by
domain/payments.py), as staff and the billing system read it."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from portal.db.payments import review_items

LISTING_LIMIT = 1000


def listing(conn: sa.Connection, organization_id: int, *, unresolved: bool) -> Sequence[sa.Row]:
    """The organization's review items, oldest first; only those nobody resolved yet if `unresolved`."""
    query = sa.select(review_items).where(review_items.c.organization_id == organization_id)
    if unresolved:
        query = query.where(review_items.c.resolved_at.is_(None))
    return conn.execute(query.order_by(review_items.c.id).limit(LISTING_LIMIT)).all()
