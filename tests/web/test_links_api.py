"""Issuing links and merging them into billing or dunning tools' email templates."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.testclient import TestClient

from tests.conftest import Tenant


def test_link_lifetime_default_and_bounds(tenant: Tenant) -> None:
    default = tenant.client.post("/api/v1/customers/C1/portal-links", json={}).json()
    assert dt.datetime.fromisoformat(default["expires_at"]) == dt.datetime(2027, 1, 31, 9, 30, tzinfo=dt.UTC)
    assert default["url"].startswith("http://testserver/l/")
    longest = tenant.client.post("/api/v1/customers/C1/portal-links", json={"lifetime_days": 365})
    assert longest.status_code == 201
    too_long = tenant.client.post("/api/v1/customers/C1/portal-links", json={"lifetime_days": 366})
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["path"] == "/lifetime_days"
    assert tenant.client.post("/api/v1/customers/NOPE/portal-links", json={}).status_code == 404


def test_token_carries_no_personal_data(tenant: Tenant) -> None:
    import base64

    url = tenant.client.post("/api/v1/customers/C1/portal-links", json={}).json()["url"]
    payload = url.rsplit("/", 1)[1].split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert decoded == '{"l":1}'


def test_links_are_built_from_the_base_url_not_the_host_header(tenant: Tenant, app: Any) -> None:
    evil = TestClient(app, base_url="http://evil.example",
                      headers={"Authorization": f"Bearer {tenant.key}", "X-Forwarded-Host": "evil.example"})
    url = evil.post("/api/v1/customers/C1/portal-links", json={}).json()["url"]
    assert url.startswith("http://testserver/l/")


def test_render_html_and_text_templates(tenant: Tenant) -> None:
    html = tenant.client.post("/api/v1/link-tags/render", json={
        "customer": "C1", "template": "<p>Bonjour,</p><p>#LINK</p><p>Portail : %fr_lien_portail_factures%</p>"})
    assert html.status_code == 200, html.text
    body = html.json()
    url = body["url"]
    assert body["rendered"] == (f'<p>Bonjour,</p><p><a href="{url}">{_pay_text("fr")}</a></p>'
                                f"<p>Portail : {url}</p>")
    text = tenant.client.post("/api/v1/link-tags/render", json={
        "customer": "C1", "template": "Pay here: #LINK", "format": "text", "locale": "en"}).json()
    assert text["rendered"] == f"Pay here: Pay your invoice online: {text['url']}"
    assert text["url"] != url, "each rendering issues its own link"


def _pay_text(language: str) -> str:
    from portal.web.api.links import link_text

    return link_text(language)


def test_render_refuses_unknown_customers_and_bad_formats(tenant: Tenant) -> None:
    assert tenant.client.post("/api/v1/link-tags/render", json={
        "customer": "NOPE", "template": "#LINK"}).status_code == 404
    bad = tenant.client.post("/api/v1/link-tags/render", json={
        "customer": "C1", "template": "#LINK", "format": "pdf"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["path"] == "/format"


def test_another_organization_cannot_issue_or_revoke_links(tenant: Tenant, other_tenant: Tenant) -> None:
    assert other_tenant.client.post("/api/v1/customers/C1/portal-links", json={}).status_code == 404
    assert other_tenant.client.post("/api/v1/customers/C1/portal-links/revoke").status_code == 404
    assert other_tenant.client.post("/api/v1/link-tags/render", json={
        "customer": "C1", "template": "#LINK"}).status_code == 404
    assert other_tenant.client.post("/api/v1/invoices/INV-1/remarks", json={"body": "x"}).status_code == 404
