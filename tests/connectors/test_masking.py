"""Secrets in connector settings are never read back through the API: only their last four characters."""

from __future__ import annotations

from tests.conftest import Tenant

TOKEN = "tok_live_0123456789abcdef"


def test_secret_looking_headers_are_masked_when_read_back(tenant: Tenant) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Cookie": f"session={TOKEN}", "X-Api-Key": TOKEN,
               "X-Auth-Token": TOKEN, "X-Client-Secret": TOKEN, "X-Signature": TOKEN, "X-Password": TOKEN,
               "Proxy-Authorization": f"Basic {TOKEN}", "Accept": "application/json", "X-Tenant": "acme-eu"}
    settings = {"base": "https://erp.example", "headers": headers,
                "requests": {"invoice.paid": {"method": "PATCH", "url": "{base}/v2/notices/{invoice.number}"}}}
    assert tenant.client.put("/api/v1/connectors/erp",
                             json={"type": "status_patch", "settings": settings}).status_code == 201
    pull = {"url": "https://erp.example/v2/orders", "headers": {"x-apikey": TOKEN},
            "params": {"api_token": TOKEN, "status": "open"},
            "mapping": {"external_id": "id", "customer": {"external_id": "c.id", "name": "c.name"},
                        "status": "state", "currency": "cur", "total": "total"}}
    assert tenant.client.put("/api/v1/connectors/orders",
                             json={"type": "pull_import", "settings": pull}).status_code == 201

    shown = tenant.client.get("/api/v1/connectors/erp").json()["settings"]["headers"]
    listed = {c["name"]: c for c in tenant.client.get("/api/v1/connectors").json()["items"]}
    orders = tenant.client.get("/api/v1/connectors/orders").json()["settings"]

    for name in headers:
        if name in ("Accept", "X-Tenant"):
            assert shown[name] == headers[name]
        else:
            assert shown[name] == "…cdef", name
    assert listed["erp"]["settings"]["headers"] == shown
    assert orders["headers"] == {"x-apikey": "…cdef"}
    assert orders["params"] == {"api_token": "…cdef", "status": "open"}
    everything = str(tenant.client.get("/api/v1/connectors").json())
    assert TOKEN not in everything
