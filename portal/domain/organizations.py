"""Organizations (tenants) and their API keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from portal.db.organizations import api_keys, organizations
from portal.errors import Conflict, InvalidInput, NotFound, Unauthenticated

SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
KEY_PREFIX = "qtc_"


@dataclass(frozen=True)
class Organization:
    id: int
    slug: str
    name: str


@dataclass(frozen=True)
class ApiKeyInfo:
    id: int
    name: str
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_organization(conn: sa.Connection, slug: str, name: str, now: dt.datetime) -> Organization:
    if not SLUG.fullmatch(slug):
        raise InvalidInput("a slug is 1-63 lowercase letters, digits and inner hyphens")
    if conn.scalar(sa.select(organizations.c.id).where(organizations.c.slug == slug)) is not None:
        raise Conflict(f"organization {slug!r} exists already", code="exists")
    org_id = conn.execute(
        organizations.insert().values(slug=slug, name=name, created_at=now).returning(organizations.c.id)
    ).scalar_one()
    return Organization(org_id, slug, name)


def get_organization(conn: sa.Connection, slug: str) -> Organization:
    row = conn.execute(sa.select(organizations).where(organizations.c.slug == slug)).first()
    if row is None:
        raise NotFound(f"no organization {slug!r}")
    return Organization(row.id, row.slug, row.name)


def list_organizations(conn: sa.Connection) -> list[Organization]:
    rows = conn.execute(sa.select(organizations).order_by(organizations.c.slug))
    return [Organization(r.id, r.slug, r.name) for r in rows]


def create_api_key(conn: sa.Connection, org: Organization, name: str, now: dt.datetime) -> tuple[ApiKeyInfo, str]:
    """Returns the key's record and the key itself, which is shown once and stored only as a hash."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    prefix = key[: len(KEY_PREFIX) + 6]
    key_id = conn.execute(
        api_keys.insert()
        .values(organization_id=org.id, name=name, prefix=prefix, key_hash=hash_key(key), created_at=now)
        .returning(api_keys.c.id)
    ).scalar_one()
    return ApiKeyInfo(key_id, name, prefix, now, None), key


def list_api_keys(conn: sa.Connection, org: Organization) -> list[ApiKeyInfo]:
    rows = conn.execute(
        sa.select(api_keys).where(api_keys.c.organization_id == org.id).order_by(api_keys.c.id)
    )
    return [ApiKeyInfo(r.id, r.name, r.prefix, r.created_at, r.revoked_at) for r in rows]


def revoke_api_key(conn: sa.Connection, org: Organization, key_id: int, now: dt.datetime) -> None:
    updated = conn.execute(
        api_keys.update()
        .where(api_keys.c.id == key_id, api_keys.c.organization_id == org.id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    if updated.rowcount == 0:
        raise NotFound(f"no active key {key_id} in {org.slug}")


def authenticate(conn: sa.Connection, key: str) -> Organization:
    """The organization a presented key acts for. The lookup is by hash, so nothing compares secrets."""
    if not key.startswith(KEY_PREFIX) or len(key) > 100:
        raise Unauthenticated("malformed API key")
    row = conn.execute(
        sa.select(organizations.c.id, organizations.c.slug, organizations.c.name)
        .join(api_keys, api_keys.c.organization_id == organizations.c.id)
        .where(api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None))
    ).first()
    if row is None:
        raise Unauthenticated("unknown or revoked API key")
    return Organization(row.id, row.slug, row.name)


_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


def is_color(value: str) -> bool:
    return bool(_COLOR.fullmatch(value))


def set_branding(conn: sa.Connection, org: Organization, *, color: str | None = None,
                 contact_email: str | None = None, contact_phone: str | None = None,
                 logo: tuple[str, str] | None = None) -> None:
    """Change only what is given. `logo` is (sha256 in the document store, media type)."""
    values: dict[str, object] = {}
    if color is not None:
        if not is_color(color):
            raise InvalidInput("a colour is #rrggbb")
        values["brand_color"] = color
    if contact_email is not None:
        values["contact_email"] = contact_email or None
    if contact_phone is not None:
        values["contact_phone"] = contact_phone or None
    if logo is not None:
        values["logo_sha256"], values["logo_type"] = logo
    if values:
        conn.execute(organizations.update().where(organizations.c.id == org.id).values(**values))


def contact_of(conn: sa.Connection, organization_id: int) -> sa.Row:
    """What a debtor is told about the seller: name, contact email and phone, brand colour."""
    return conn.execute(sa.select(organizations.c.name, organizations.c.contact_email, organizations.c.contact_phone,
                                  organizations.c.brand_color).where(organizations.c.id == organization_id)).one()


def branding_of(conn: sa.Connection, slug: str) -> sa.Row:
    """An organization's colour and logo (the portal serves them as files), or NotFound."""
    row = conn.execute(sa.select(organizations.c.brand_color, organizations.c.logo_sha256, organizations.c.logo_type)
                       .where(organizations.c.slug == slug)).first()
    if row is None:
        raise NotFound("no such organization")
    return row
