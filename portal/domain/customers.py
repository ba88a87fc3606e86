"""Customers (debtors) as the billing system pushes them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from portal.db import insert_or_ignore
from portal.db.customers import customers
from portal.errors import NotFound


@dataclass(frozen=True)
class CustomerInput:
    external_id: str
    name: str
    email: str | None
    locale: str
    address: dict[str, Any] | None
    vat_number: str | None


def upsert_customer(conn: sa.Connection, organization_id: int, item: CustomerInput,
                    now: dt.datetime) -> Literal["created", "updated", "unchanged"]:
    values = {"name": item.name, "email": item.email, "locale": item.locale, "address": item.address,
              "vat_number": item.vat_number}
    query = sa.select(customers).where(
        customers.c.organization_id == organization_id, customers.c.external_id == item.external_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    existing = conn.execute(query).first()
    if existing is None:
        created = insert_or_ignore(conn, customers, {
            "organization_id": organization_id, "external_id": item.external_id, "created_at": now,
            "updated_at": now, **values}, ["organization_id", "external_id"], returning=[customers.c.id]).first()
        if created is not None:
            return "created"
        existing = conn.execute(query).one()  # a concurrent first push of this customer came first
    if all(getattr(existing, key) == value for key, value in values.items()):
        return "unchanged"
    conn.execute(customers.update().where(customers.c.id == existing.id).values(updated_at=now, **values))
    return "updated"


def get_customer(conn: sa.Connection, organization_id: int, external_id: str) -> sa.Row[Any]:
    row = conn.execute(sa.select(customers).where(
        customers.c.organization_id == organization_id, customers.c.external_id == external_id)).first()
    if row is None:
        raise NotFound(f"no customer {external_id!r}")
    return row
