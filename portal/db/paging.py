"""Keyset pages in id order: ask for one row more than the page to know whether another page follows."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def page_by_id(conn: sa.Connection, query: sa.Select[Any], id_column: Any, limit: int) -> tuple[list[Any], int | None]:
    """The first `limit` rows of `query` in `id_column` order, and the id to continue after (None: last page)."""
    rows = list(conn.execute(query.order_by(id_column).limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None
