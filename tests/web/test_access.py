"""Who may call the machine API, and what one organization can see of another's: nothing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from portal.app import create_app

from portal.db.invoices import invoices
from portal.domain import organizations as orgs
from tests.conftest import Tenant, invoice_body


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer qtc_wrong",
                                    "Bearer not-a-key", "Bearer " + "x" * 5000])
def test_missing_or_bad_keys_get_401(app: Any, tenant: Tenant, header: str | None) -> None:
    client = TestClient(app)
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [("GET", "/api/v1/invoices"), ("PUT", "/api/v1/invoices/NEW"),
                         ("GET", "/api/v1/customers/C1")]:
        response = client.request(method, path, headers=headers, json=invoice_body())
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/problem+json"
    assert tenant.client.get("/api/v1/invoices/NEW").status_code == 404


def test_key_in_query_string_is_not_accepted(app: Any, tenant: Tenant) -> None:
    assert TestClient(app).get(f"/api/v1/invoices?access_token={tenant.key}").status_code == 401


def test_revoked_key_stops_working(tenant: Tenant, database: Any, clock: Any) -> None:
    assert tenant.client.get("/api/v1/invoices").status_code == 200

    def revoke(conn: sa.Connection) -> None:
        key = orgs.list_api_keys(conn, tenant.org)[0]
        orgs.revoke_api_key(conn, tenant.org, key.id, clock.now())

    database.run(revoke)
    assert tenant.client.get("/api/v1/invoices").status_code == 401


def test_keys_are_stored_hashed(tenant: Tenant, database: Any) -> None:
    with database.transaction() as conn:
        stored = conn.exec_driver_sql("SELECT prefix, key_hash FROM api_keys").all()
    assert all(tenant.key not in (prefix, key_hash) for prefix, key_hash in stored)
    assert stored[0].key_hash == orgs.hash_key(tenant.key)


def test_one_organization_sees_and_touches_nothing_of_another(tenant: Tenant, other_tenant: Tenant,
                                                           database: Any) -> None:
    tenant.put_invoice("SECRET", title="acme only")
    other = other_tenant.client

    assert other.get("/api/v1/invoices/SECRET").status_code == 404
    assert other.get("/api/v1/customers/C1").status_code == 404
    assert other.get("/api/v1/invoices").json()["items"] == []
    assert other.get("/api/v1/invoices", params={"customer": "C1"}).json()["items"] == []
    # Writing to the same ids creates nothing in acme: globex has no customer C1, and its own ids are its own.
    assert other.put("/api/v1/invoices/SECRET", json=invoice_body(title="pwned")).status_code == 422
    assert other.patch("/api/v1/invoices/SECRET", json={"title": "pwned"}).status_code == 404
    for action in ("activate", "cancel"):
        assert other.post(f"/api/v1/invoices/SECRET/{action}").status_code == 404
    assert other.post("/api/v1/invoices/SECRET/extend-due-date", json={"due_date": "2030-01-01"}).status_code == 404
    batch = other.post("/api/v1/invoices/batch", json={"invoices": [{**invoice_body(), "external_id": "SECRET"}]})
    assert batch.json()["results"][0]["result"] == "error"

    other_tenant.put_customer("C1", name="Globex's own C1")
    assert other.put("/api/v1/invoices/SECRET", json=invoice_body(title="globex")).status_code == 201
    assert tenant.client.get("/api/v1/invoices/SECRET").json()["title"] == "acme only"
    assert tenant.client.get("/api/v1/customers/C1").json()["name"] == "Brasserie Dupont"
    with database.transaction() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(invoices)) == 2


def test_malformed_json_is_400(tenant: Tenant) -> None:
    response = tenant.client.put("/api/v1/invoices/X", content=b'{"customer": ', headers={
        "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["title"] == "Malformed request"
    assert tenant.client.put("/api/v1/invoices/X", content=b"", headers={
        "content-type": "application/json"}).status_code == 400


def test_wrong_content_type_is_415(tenant: Tenant) -> None:
    response = tenant.client.put("/api/v1/invoices/X", content=b"customer=C1",
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert tenant.client.put("/api/v1/customers/C9", content=b"{}").status_code == 415


def test_body_over_the_limit_is_413_before_it_is_read(tenant: Tenant, app: Any) -> None:
    services = app.state.services
    small = create_app(replace(services.settings, limits=replace(services.settings.limits, json_bytes=1000)),
                       clock=services.clock, database=services.db)
    client = TestClient(small, headers={"Authorization": f"Bearer {tenant.key}"})
    big = invoice_body(header_note="x" * 2000)
    declared = client.put("/api/v1/invoices/BIG", json=big)
    assert declared.status_code == 413

    def chunks() -> Any:
        yield b'{"customer": "C1", "header_note": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    streamed = client.put("/api/v1/invoices/BIG", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert tenant.client.get("/api/v1/invoices/BIG").status_code == 404


def test_unknown_paths_and_methods_answer_problem_json(tenant: Tenant) -> None:
    missing = tenant.client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong_method = tenant.client.delete("/api/v1/invoices/INV-1")
    assert wrong_method.status_code == 405


def test_ids_outside_the_id_alphabet_are_not_found(tenant: Tenant) -> None:
    assert tenant.client.get("/api/v1/invoices/%20sp ace").status_code == 404
    assert tenant.client.get("/api/v1/customers/" + "a" * 201).status_code == 404


def test_head_works_wherever_get_does(tenant: Tenant) -> None:
    tenant.put_invoice("INV-1")
    for path in ("/api/v1/invoices", "/api/v1/invoices/INV-1", "/api/v1/customers/C1"):
        response = tenant.client.head(path)
        assert response.status_code == 200, path
        assert response.content == b""
