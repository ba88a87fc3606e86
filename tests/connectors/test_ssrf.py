"""An API key must not be able to aim our worker at internal services (the SSRF defect of issue 11).

Two layers, each tested on its own: what the text of a URL shows is refused when the connector is configured
(422 at the field's path), and every connection the connectors' client makes is checked on the address it
actually connects to, whatever spelling or DNS answer produced it: a real loopback server, with the opt-out
off, receives nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from portal.connectors.base import Event, Result
from portal.connectors.network import connector_client, internal
from portal.connectors.pull_import import ImportReport, PullImporter
from portal.connectors.status_patch import StatusPatchConnector
from portal.connectors.webhook import WebhookConnector
from portal.db import Database
from portal.db.invoices import invoices
from portal.domain import connectors as config
from portal.errors import InvalidInput
from portal.worker import Worker, WorkerSettings
from portal.encryption import SecretBox
from tests.conftest import ENCRYPTION_KEY, START, Tenant
from tests.connectors.test_pull_import import MAPPING, TOKEN, settings_for
from tests.support.fake_upstream import FakeUpstream, Reply, order
from tests.support.upstream import Upstream, answer, serve

SECRET = "whsec_upstream_0123456789"
# Every spelling of 127.0.0.1 (or 0.0.0.0) the outside probe got through, with {port} for the upstream's port.
SPELLINGS = ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0", "127。0。0。1", "[::ffff:127.0.0.1]",
             "localhost"]


def settings_with(kind: str, url: str) -> dict[str, Any]:
    if kind == "webhook":
        return {"url": url, "secret": SECRET}
    if kind == "status_patch":
        return {"requests": {"invoice.paid": {"method": "PATCH", "url": url, "body": {"status": "billed"}}}}
    return {"url": url, "mapping": MAPPING}


def field_of(kind: str) -> str:
    return "/settings/requests/invoice.paid/url" if kind == "status_patch" else "/settings/url"


# -- At configuration time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["webhook", "status_patch", "pull_import"])
@pytest.mark.parametrize("host", [*SPELLINGS, "169.254.169.254", "10.0.0.7", "[fd00::1]", "[::]", "224.0.0.1",
                                  "100.64.0.1", "db.internal"])
def test_internal_hosts_are_refused_at_the_field(tenant: Tenant, kind: str, host: str) -> None:
    response = tenant.client.put("/api/v1/connectors/ssrf",
                                 json={"type": kind, "settings": settings_with(kind, f"http://{host}:8450/x")})

    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert errors[0]["path"] == field_of(kind), errors
    assert "our worker will not call it" in errors[0]["message"]
    assert tenant.client.get("/api/v1/connectors/ssrf").status_code == 404


@pytest.mark.parametrize("kind", ["webhook", "status_patch", "pull_import"])
@pytest.mark.parametrize("url", ["http://{invoice.number}:8450/", "http://erp.example:{data.port}/",
                                 "{invoice.number}://erp.example/", "http://erp.example{invoice.number}/x"])
def test_placeholders_are_refused_in_scheme_host_and_port(tenant: Tenant, kind: str, url: str) -> None:
    response = tenant.client.put("/api/v1/connectors/ssrf", json={"type": kind, "settings": settings_with(kind, url)})

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["path"] == field_of(kind)
    assert "placeholders" in response.json()["errors"][0]["message"]


def test_base_cannot_be_extended_into_another_host_or_port(tenant: Tenant) -> None:
    for url in ("{base}:8450/x", "{base}.evil.example/x", "{base}@evil.example/x"):
        response = tenant.client.put("/api/v1/connectors/ssrf", json={"type": "status_patch", "settings": {
            "base": "https://erp.example", "requests": {"invoice.paid": {"method": "POST", "url": url}}}})
        assert response.status_code == 422, url
        assert response.json()["errors"][0]["path"] == "/settings/requests/invoice.paid/url"
    fine = tenant.client.put("/api/v1/connectors/erp", json={"type": "status_patch", "settings": {
        "base": "https://erp.example", "requests": {"invoice.paid": {
            "method": "POST", "url": "{base}/v2/notices/{invoice.number}?by={event.type}"}}}})
    assert fine.status_code == 201, fine.text


def test_the_address_rule() -> None:
    for text in ("127.0.0.1", "0.0.0.0", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
                 "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fd00::1", "ff02::1",
                 "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::1", "::127.0.0.1"):
        assert internal(ipaddress.ip_address(text)), text
    for text in ("93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4007:80c::200e"):
        assert not internal(ipaddress.ip_address(text)), text


# -- At connect time ---------------------------------------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, int]]:
    received = Upstream()
    for url in serve(received):
        yield received, httpx.URL(url).port or 80


def event() -> Event:
    return Event(id=1, type="invoice.paid", organization_slug="acme", created_at=dt.datetime(2026, 10, 1, tzinfo=dt.UTC),
                 data={"amount": "121.00"}, invoice={"external_id": "INV-1", "number": "N-1"})


def deliver(kind: str, url: str, *, allow_private_networks: bool) -> Result:
    async def go() -> Result:
        async with connector_client(allow_private_networks=allow_private_networks, timeout=5) as client:
            connector = (WebhookConnector(settings_with(kind, url), client) if kind == "webhook"
                         else StatusPatchConnector(settings_with(kind, url), client))
            return await connector.deliver(event(), "qtc_evt_1")
    return asyncio.run(go())


def names_resolving_inside() -> list[str]:
    """This machine's own name, when it resolves to an internal address: a name no text check can judge."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    except OSError:
        return []
    return [name] if addresses and all(internal(ipaddress.ip_address(a.split("%")[0])) for a in addresses) else []


@pytest.mark.parametrize("kind", ["webhook", "status_patch"])
@pytest.mark.parametrize("host", [*SPELLINGS, *names_resolving_inside()])
def test_no_request_reaches_a_loopback_server_whatever_the_spelling(upstream: tuple[Upstream, int], kind: str,
                                                                    host: str) -> None:
    received, port = upstream

    result = deliver(kind, f"http://{host}:{port}/hooks", allow_private_networks=False)

    assert result.outcome in ("retry", "failed")
    assert result.outcome == "failed" or "internal address" in result.detail, result.detail
    assert received.received == []


@pytest.mark.parametrize("kind", ["webhook", "status_patch"])
def test_the_opt_out_reaches_the_same_server(upstream: tuple[Upstream, int], kind: str) -> None:
    received, port = upstream

    assert deliver(kind, f"http://127.0.0.1:{port}/hooks", allow_private_networks=True).outcome == "delivered"
    assert deliver(kind, f"http://2130706433:{port}/hooks", allow_private_networks=True).outcome == "delivered"
    assert len(received.received) == 2
    assert received.received[1].headers["host"] == f"2130706433:{port}", "the Host header is the configured host"


def test_redirects_are_not_followed(upstream: tuple[Upstream, int]) -> None:
    received, port = upstream
    elsewhere = Upstream()
    for target in serve(elsewhere):
        received.script.append(answer(307, location=f"{target}/internal"))
        result = deliver("webhook", f"http://127.0.0.1:{port}/hooks", allow_private_networks=True)
        assert result.outcome != "delivered" and result.status_code == 307
        assert len(received.received) == 1
        assert elsewhere.received == []


def test_the_worker_connects_through_the_guard(upstream: tuple[Upstream, int], database: Database, tenant: Tenant,
                                               clock: Any) -> None:
    """The worker's own clients, with the install's setting: the opt-out off, nothing arrives."""
    from portal.domain.outbox import announce
    from portal.settings import Settings

    received, port = upstream
    tenant.put_invoice()
    # Written past the API's check, as a name that resolves to loopback would be.
    database.run(config.put, tenant.org.id, "erp", "webhook",
                 {"url": f"http://0x7f000001:{port}/hooks", "secret": SECRET}, ["invoice.paid"], clock.now(),
                 SecretBox((ENCRYPTION_KEY,)))
    invoice_id = database.run(lambda conn: conn.scalar(sa.select(invoices.c.id)))
    database.run(announce, tenant.org.id, "invoice.paid", {"invoice": "INV-1", "amount": "121.00"}, clock.now(),
                 invoice_id=invoice_id)

    async def drain(settings: Settings) -> None:
        worker = Worker(database, settings, clock=clock,
                        options=WorkerSettings(timeout_seconds=2, reconcile_seconds=1e9))
        try:
            await worker.drain()
        finally:
            await worker.aclose()

    asyncio.run(drain(Settings(encryption_keys=(ENCRYPTION_KEY,))))
    assert received.received == []
    deliveries = tenant.client.get("/api/v1/deliveries").json()["items"]
    assert "internal address" in deliveries[0]["last_error"]

    clock.advance(hours=2)
    asyncio.run(drain(Settings(connectors_allow_private_networks=True, encryption_keys=(ENCRYPTION_KEY,))))
    assert len(received.received) == 1


# -- The pull importer -------------------------------------------------------------------------------------------


def run_guarded(database: Database, tenant: Tenant, settings: dict[str, Any]) -> ImportReport:
    async def go() -> ImportReport:
        async with connector_client(allow_private_networks=False, timeout=5) as client:
            return await PullImporter(settings, client).run(database, tenant.org.id, None, START)
    return asyncio.run(go())


@pytest.mark.parametrize("host", [spelling for spelling in SPELLINGS if spelling != "0177.0.0.1"])
def test_the_pull_importer_never_copies_an_internal_answer(database: Database, tenant: Tenant, host: str) -> None:
    with FakeUpstream(token=TOKEN, per_page=3) as fake:
        fake.add(order(1001, updated_at="2026-10-01T10:00:00+00:00", total_ht_cents=10_000))
        settings = settings_for(fake, url=f"http://{host}:{httpx.URL(fake.base_url).port}/v2/orders")

        report = run_guarded(database, tenant, settings)

        assert fake.requests_to("/v2/orders") == []
    assert report.created == 0 and report.fetched == 0
    assert "internal address" in report.errors[0], report.errors
    assert tenant.client.get("/api/v1/invoices/molink-1001").status_code == 404


def test_an_octal_address_is_not_even_a_url_to_the_importer(database: Database, tenant: Tenant) -> None:
    with FakeUpstream(token=TOKEN, per_page=3) as fake:
        settings = settings_for(fake, url=f"http://0177.0.0.1:{httpx.URL(fake.base_url).port}/v2/orders")
        with pytest.raises(InvalidInput) as refused:
            run_guarded(database, tenant, settings)
        assert fake.requests == []
    assert refused.value.errors[0].path == "/settings/url"
    assert refused.value.errors[0].message.startswith("not a usable URL")


def test_the_pull_importer_does_not_follow_a_redirect_inside(database: Database, tenant: Tenant) -> None:
    """With the opt-out on (a loopback upstream), a redirect is still only reported, never followed."""
    with FakeUpstream(token=TOKEN, per_page=3) as fake:
        fake.add(order(1001, updated_at="2026-10-01T10:00:00+00:00", total_ht_cents=10_000))
        fake.on("GET", "/v2/orders", Reply(302, headers={"location": fake.url("/v2/internal")}))

        async def go() -> ImportReport:
            async with connector_client(allow_private_networks=True, timeout=5) as client:
                return await PullImporter(settings_for(fake), client).run(database, tenant.org.id, None, START)

        report = asyncio.run(go())

        assert fake.requests_to("/v2/internal") == []
    assert report.created == 0
    assert "redirects are not followed" in report.errors[0]
