"""Debtor links: issued per customer (optionally scoped to some invoices), expiring, revocable.

The signed token holds only the link id. Whether the link still works is decided here, against the row, on
every request: expiry and revocation hold for GETs and POSTs alike, and for sessions opened earlier.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from portal.clock import as_utc
from portal.db.customers import customers
from portal.db.invoices import invoices
from portal.db.organizations import organizations
from portal.db.portal import link_invoices, link_visits, portal_links
from portal.domain.customers import get_customer
from portal.errors import FieldError, InvalidInput, NotFound
from portal.settings import Settings
from portal.tokens import PORTAL_LINK, TokenService


@dataclass(frozen=True)
class Link:
    id: int
    organization_id: int
    customer_id: int
    expires_at: dt.datetime


@dataclass(frozen=True)
class DebtorScope:
    """Everything a debtor request may see: one customer of one organization, maybe only some invoices
    (`scoped`: those listed for the link in link_invoices). Which invoices that is, is said once, by
    visible_invoices; every query of a debtor session is built on it."""

    link_id: int
    organization_id: int
    organization_slug: str
    organization_name: str
    contact_email: str | None
    contact_phone: str | None
    brand_color: str | None
    logo_sha256: str | None
    customer_id: int
    customer_name: str
    customer_locale: str
    scoped: bool


def visible_invoices(scope: DebtorScope) -> sa.ColumnElement[bool]:
    """The one rule of what a debtor link shows, as a condition on `invoices`: the invoices of the link's
    customer in the link's organization, never a draft, and for a scoped link only those listed for it."""
    rule = sa.and_(invoices.c.organization_id == scope.organization_id, invoices.c.customer_id == scope.customer_id,
                   invoices.c.status != "draft")
    if scope.scoped:
        listed = sa.select(link_invoices.c.invoice_id).where(
            link_invoices.c.link_id == scope.link_id, link_invoices.c.organization_id == scope.organization_id)
        rule = sa.and_(rule, invoices.c.id.in_(listed))
    return rule


def create_link(conn: sa.Connection, organization_id: int, customer_external_id: str, now: dt.datetime, *,
                days: int, invoice_external_ids: list[str] | None = None) -> Link:
    """A link to the customer's whole history, or (with `invoice_external_ids`) to those invoices only, each
    of which must be this customer's."""
    customer = get_customer(conn, organization_id, customer_external_id)
    listed: list[int] = []
    if invoice_external_ids is not None:
        found = dict(conn.execute(sa.select(invoices.c.external_id, invoices.c.id).where(
            invoices.c.organization_id == organization_id, invoices.c.customer_id == customer.id,
            invoices.c.external_id.in_(invoice_external_ids))).all())
        missing = [i for i, external_id in enumerate(invoice_external_ids) if external_id not in found]
        if missing:
            raise InvalidInput("Some invoices are not this customer's.",
                               [FieldError(f"/invoices/{i}", "no such invoice for this customer") for i in missing])
        listed = sorted(set(found.values()))
    expires_at = now + dt.timedelta(days=days)
    link_id = conn.execute(portal_links.insert().values(
        organization_id=organization_id, customer_id=customer.id, created_at=now, expires_at=expires_at,
        scoped=invoice_external_ids is not None).returning(portal_links.c.id)).scalar_one()
    if listed:
        conn.execute(link_invoices.insert(), [
            {"link_id": link_id, "invoice_id": invoice_id, "organization_id": organization_id}
            for invoice_id in listed])
    return Link(link_id, organization_id, customer.id, expires_at)


def forget_link(conn: sa.Connection, organization_id: int, link_id: int) -> None:
    """Delete a link that was never handed out (an email that could not be sent), with its list of invoices."""
    conn.execute(link_invoices.delete().where(link_invoices.c.organization_id == organization_id,
                                              link_invoices.c.link_id == link_id))
    conn.execute(portal_links.delete().where(portal_links.c.organization_id == organization_id,
                                             portal_links.c.id == link_id))


def issue_url(conn: sa.Connection, tokens: TokenService, settings: Settings, organization_id: int,
              customer_external_id: str, now: dt.datetime, *, days: int | None = None,
              invoice_external_ids: list[str] | None = None) -> tuple[str, dt.datetime]:
    """A new link's URL and expiry. The URL is built from our configured base URL, never from a request's
    Host header, so a forged Host cannot end up in an email."""
    lifetime = min(days or settings.link_days_default, settings.link_days_max)
    link = create_link(conn, organization_id, customer_external_id, now, days=lifetime,
                       invoice_external_ids=invoice_external_ids)
    return f"{settings.base_url}/l/{tokens.sign(PORTAL_LINK, {'l': link.id})}", link.expires_at


def revoke_links(conn: sa.Connection, organization_id: int, customer_external_id: str, now: dt.datetime) -> int:
    """Kill every link issued to the customer until now, and with them every session opened through them."""
    customer = get_customer(conn, organization_id, customer_external_id)
    return conn.execute(portal_links.update().where(
        portal_links.c.organization_id == organization_id, portal_links.c.customer_id == customer.id,
        portal_links.c.revoked_at.is_(None)).values(revoked_at=now)).rowcount


class LinkNotUsable(NotFound):
    """The link is unknown, expired or revoked: all three look alike to the debtor."""


def resolve(conn: sa.Connection, link_id: int, now: dt.datetime) -> DebtorScope:
    """The scope of a live link; LinkNotUsable for a link that is unknown, expired or revoked."""
    row = conn.execute(
        sa.select(portal_links.c.id, portal_links.c.organization_id, portal_links.c.customer_id,
                  portal_links.c.scoped, portal_links.c.expires_at, portal_links.c.revoked_at,
                  organizations.c.slug, organizations.c.name.label("organization_name"),
                  organizations.c.contact_email, organizations.c.contact_phone, organizations.c.brand_color,
                  organizations.c.logo_sha256, customers.c.name.label("customer_name"), customers.c.locale)
        .join(organizations, organizations.c.id == portal_links.c.organization_id)
        .join(customers, customers.c.id == portal_links.c.customer_id)
        .where(portal_links.c.id == link_id)).first()
    return scope_of(row, now)


def scope_of(row: Any, now: dt.datetime) -> DebtorScope:
    """The scope of a row of `resolve`'s query (or None, for no such link), if the link still works."""
    if row is None or row.revoked_at is not None or as_utc(row.expires_at) <= now:
        raise LinkNotUsable("link not usable")
    return DebtorScope(
        link_id=row.id, organization_id=row.organization_id, organization_slug=row.slug,
        organization_name=row.organization_name, contact_email=row.contact_email,
        contact_phone=row.contact_phone, brand_color=row.brand_color, logo_sha256=row.logo_sha256,
        customer_id=row.customer_id, customer_name=row.customer_name, customer_locale=row.locale,
        scoped=bool(row.scoped))


def contact_of_link(conn: sa.Connection, link_id: int) -> tuple[str, str | None, str | None, str] | None:
    """For the "this link no longer works" page: who to ask (organization name, email, phone) and in which
    language, even for an expired or revoked link. None for a link that never existed."""
    row = conn.execute(
        sa.select(organizations.c.name, organizations.c.contact_email, organizations.c.contact_phone,
                  customers.c.locale)
        .join(portal_links, portal_links.c.organization_id == organizations.c.id)
        .join(customers, customers.c.id == portal_links.c.customer_id)
        .where(portal_links.c.id == link_id)).first()
    return (row.name, row.contact_email, row.contact_phone, row.locale) if row else None


_FAMILIES = (
    (re.compile(r"Edg/"), "Edge"), (re.compile(r"OPR/|Opera"), "Opera"), (re.compile(r"Firefox/"), "Firefox"),
    (re.compile(r"Chrome/|Chromium/|CriOS/"), "Chrome"), (re.compile(r"Safari/"), "Safari"),
    (re.compile(r"bot|crawler|spider|scan|preview|curl|python|wget|Go-http", re.I), "Robot or scanner"),
)


def browser_family(user_agent: str) -> str:
    for pattern, family in _FAMILIES[-1:] + _FAMILIES[:-1]:
        if pattern.search(user_agent):
            return family
    return "Other"


def record_visit(conn: sa.Connection, scope: DebtorScope, now: dt.datetime, user_agent: str) -> None:
    conn.execute(link_visits.insert().values(organization_id=scope.organization_id, link_id=scope.link_id,
                                             visited_at=now, browser_family=browser_family(user_agent)))
