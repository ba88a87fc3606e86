"""An organization's connectors: configured over the API or the CLI.

A connector's settings hold credentials (webhook secrets, Authorization headers, OAuth secrets), so they are
stored sealed as a whole with PORTAL_ENCRYPTION_KEYS (`{"sealed": "fernet:..."}`, portal.encryption) and opened
with `settings_of` by whoever uses them: the worker, and the API and CLI that show them masked."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from typing import Any, Literal

import sqlalchemy as sa

from portal.db import insert_or_ignore
from portal.db.connectors import connectors, deliveries
from portal.encryption import SecretBox
from portal.errors import FieldError, InvalidInput, NotFound

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,59}")
SEALED = "sealed"


def settings_of(stored: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    """A connector's settings, opened (settings stored before encryption are read as they are, until `portal
    secrets rotate` seals them)."""
    if set(stored) == {SEALED}:
        opened: dict[str, Any] = json.loads(box.open(stored[SEALED]))
        return opened
    return stored


def reseal(conn: sa.Connection, box: SecretBox) -> int:
    """Seal every connector's settings with the newest key; how many rows changed."""
    rows = conn.execute(sa.select(connectors.c.id, connectors.c.settings)).all()
    for row in rows:
        sealed = (box.reseal(row.settings[SEALED]) if set(row.settings) == {SEALED}
                  else box.seal(json.dumps(row.settings)))
        conn.execute(connectors.update().where(connectors.c.id == row.id).values(settings={SEALED: sealed}))
    return len(rows)


def check_keys(conn: sa.Connection, box: SecretBox) -> None:
    """Raise EncryptionKeyError unless every sealed connector setting opens."""
    for (stored,) in conn.execute(sa.select(connectors.c.settings)):
        settings_of(stored, box)


def put(conn: sa.Connection, organization_id: int, name: str, kind: str, settings: dict[str, Any],
        event_types: list[str], now: dt.datetime, box: SecretBox) -> Literal["created", "updated"]:
    if not NAME.fullmatch(name):
        raise InvalidInput("Bad connector name.", [FieldError("/name", "lowercase letters, digits, - and _")])
    existing = conn.scalar(sa.select(connectors.c.id).where(
        connectors.c.organization_id == organization_id, connectors.c.name == name))
    values = {"type": kind, "settings": {SEALED: box.seal(json.dumps(settings))}, "event_types": event_types,
              "updated_at": now}
    if existing is None:
        existing = insert_or_ignore(conn, connectors, {
            "organization_id": organization_id, "name": name, "created_at": now,
            "next_run_at": now if kind == "pull_import" else None, **values},
            ["organization_id", "name"], returning=[connectors.c.id]).scalar()
        if existing is not None:
            return "created"
        existing = conn.scalar(sa.select(connectors.c.id).where(  # a concurrent first put came first
            connectors.c.organization_id == organization_id, connectors.c.name == name))
    conn.execute(connectors.update().where(connectors.c.id == existing).values(**values))
    return "updated"


def get(conn: sa.Connection, organization_id: int, name: str) -> sa.Row[Any]:
    row = conn.execute(sa.select(connectors).where(
        connectors.c.organization_id == organization_id, connectors.c.name == name)).first()
    if row is None:
        raise NotFound(f"no connector {name!r}")
    return row


def listing(conn: sa.Connection, organization_id: int) -> Sequence[sa.Row]:
    return conn.execute(sa.select(connectors).where(connectors.c.organization_id == organization_id)
                        .order_by(connectors.c.name)).all()


def delete(conn: sa.Connection, organization_id: int, name: str) -> None:
    """Remove a connector; deliveries still waiting for it are dropped with it."""
    row = get(conn, organization_id, name)
    conn.execute(deliveries.delete().where(deliveries.c.connector_id == row.id))
    conn.execute(connectors.delete().where(connectors.c.id == row.id))


def due_imports(conn: sa.Connection, now: dt.datetime) -> Sequence[sa.Row]:
    """The pull imports whose next run is due (the worker runs them)."""
    return conn.execute(sa.select(connectors).where(connectors.c.type == "pull_import",
                                                    connectors.c.next_run_at <= now)).all()


def import_ran(conn: sa.Connection, connector_id: int, cursor: Any, summary: dict[str, Any],
               next_run_at: dt.datetime) -> None:
    """Record a pull import's run: where the next one starts, what this one did, and when it is due."""
    conn.execute(connectors.update().where(connectors.c.id == connector_id).values(
        cursor=cursor, last_run=summary, next_run_at=next_run_at))
