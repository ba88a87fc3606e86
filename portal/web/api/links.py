"""Debtor links over the machine API: issue, revoke, and merge into an email template."""

from __future__ import annotations

import datetime as dt
import html
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import Field, StringConstraints
from starlette.responses import Response

from portal.domain import links
from portal.domain.customers import get_customer
from portal.i18n import language_of, translations
from portal.web.api.bodies import read_model
from portal.web.api.context import ApiContext, json_response
from portal.web.api.operations import Api
from portal.schemas.models import ExternalId, Strict

# The tags billing and dunning tools already put in their emails (seeds 003 and 002).
LINK_TAG = "#LINK"
FRENCH_PORTAL_TAG = "%fr_lien_portail_factures%"


class LinkRequest(Strict):
    lifetime_days: Annotated[int, Field(ge=1, le=365)] | None = Field(
        None, description="How long the link works; 90 days if absent, at most 365.")
    invoices: Annotated[list[ExternalId], Field(min_length=1, max_length=500)] | None = Field(
        None, description="Show only these invoices (external ids) instead of the customer's whole history: "
                          "for a reminder that may be forwarded.")


class LinkOut(Strict):
    url: str
    expires_at: dt.datetime


class RevokeOut(Strict):
    revoked: int


class RenderRequest(Strict):
    customer: ExternalId
    template: Annotated[str, StringConstraints(max_length=200_000)]
    format: Literal["html", "text"] = "html"
    locale: Annotated[str, StringConstraints(pattern=r"^(fr|nl|en|de|sv)(-[A-Z]{2})?$")] | None = None
    lifetime_days: Annotated[int, Field(ge=1, le=365)] | None = None


class RenderOut(Strict):
    rendered: str
    url: str
    expires_at: dt.datetime


def link_text(language: str) -> str:
    return str(translations(language).gettext("Pay your invoice online"))


def render_tags(template: str, url: str, text: str, output: str) -> str:
    if output == "html":
        anchor = f'<a href="{html.escape(url)}">{html.escape(text)}</a>'
        return template.replace(LINK_TAG, anchor).replace(FRENCH_PORTAL_TAG, html.escape(url))
    return template.replace(LINK_TAG, f"{text}: {url}").replace(FRENCH_PORTAL_TAG, url)


def register(api: Api) -> None:
    @api.operation("POST", "/customers/{external_id}/portal-links", operation_id="createPortalLink",
                   tags=("links",), summary="Issue a signed link to the customer's invoices",
                   body=("application/json", LinkRequest), responses={201: ("The link", LinkOut)})
    async def create(ctx: ApiContext) -> Response:
        """Put the URL in your email. It carries no personal data, works until it expires or is revoked, and
        lands the debtor on their invoices (or only on the listed ones)."""
        customer = ctx.external_id()
        body = await read_model(ctx.request, LinkRequest, ctx.services.settings.limits.json_bytes)
        now = ctx.now()
        url, expires_at = await ctx.services.db.write(
            links.issue_url, ctx.services.tokens, ctx.services.settings, ctx.org_id, customer, now,
            days=body.lifetime_days, invoice_external_ids=body.invoices)
        return json_response({"url": url, "expires_at": expires_at.isoformat()}, 201)

    @api.operation("POST", "/customers/{external_id}/portal-links/revoke", operation_id="revokePortalLinks",
                   tags=("links",), summary="Revoke every link issued to the customer until now",
                   responses={200: ("How many links were revoked", RevokeOut)})
    async def revoke(ctx: ApiContext) -> Response:
        """Sessions opened with those links end at their next request."""
        count = await ctx.services.db.write(links.revoke_links, ctx.org_id, ctx.external_id(), ctx.now())
        return json_response({"revoked": count})

    @api.operation("POST", "/link-tags/render", operation_id="renderLinkTags", tags=("links",),
                   summary="Replace #LINK and %fr_lien_portail_factures% in an email template",
                   body=("application/json", RenderRequest), errors=(404,),
                   responses={200: ("The template with a fresh link merged in", RenderOut)})
    async def render(ctx: ApiContext) -> Response:
        """`#LINK` becomes a link whose text is "Pay your invoice online" in the customer's language (or
        `locale`); `%fr_lien_portail_factures%` becomes the bare URL. HTML templates get escaped values."""
        body = await read_model(ctx.request, RenderRequest, ctx.services.settings.limits.json_bytes)
        now = ctx.now()

        def write(conn: sa.Connection) -> tuple[str, dt.datetime, str]:
            customer = get_customer(conn, ctx.org_id, body.customer)
            url, expires_at = links.issue_url(conn, ctx.services.tokens, ctx.services.settings, ctx.org_id,
                                              body.customer, now, days=body.lifetime_days)
            return url, expires_at, body.locale or customer.locale

        url, expires_at, locale = await ctx.services.db.write(write)
        rendered = render_tags(body.template, url, link_text(language_of(locale)), body.format)
        result: dict[str, Any] = {"rendered": rendered, "url": url, "expires_at": expires_at.isoformat()}
        return json_response(result)
