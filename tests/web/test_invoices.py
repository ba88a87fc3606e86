"""Pushing invoices over the machine API: create, resend, versions, paid protection, listing, patching."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from portal.db.invoices import invoices
from tests.conftest import Tenant, invoice_body


def record_online_payment(database: Any, external_id: str, paid_minor: int) -> None:
    """What the payments service (a later issue) does when a debtor pays online."""
    with database.transaction() as conn:
        conn.execute(invoices.update().where(invoices.c.external_id == external_id)
                     .values(paid_minor=paid_minor, status="paid"))


def test_create_then_read_back_every_field(tenant: Tenant) -> None:
    body = invoice_body(
        kind="invoice", title="November services", header_note="Merci pour votre confiance",
        footer_note="IBAN BE00 0000", vat_mention="Autoliquidation", delivery_date="2026-10-30", store="BE-B2B",
        payment_terms={"type": "net_days", "days": 30}, amount_due="100.00")
    response = tenant.client.put("/api/v1/invoices/INV-1", json=body)
    assert response.status_code == 201
    assert response.json()["result"] == "created"

    invoice = tenant.client.get("/api/v1/invoices/INV-1").json()
    for field in ("customer", "number", "status", "issue_date", "due_date", "currency", "total", "amount_due",
                  "lines", "title", "header_note", "footer_note", "vat_mention", "delivery_date", "store",
                  "payment_terms"):
        assert invoice[field] == body[field], field
    assert invoice["amount_paid"] == "0.00"
    assert invoice["revision"] == 1
    assert [entry["kind"] for entry in invoice["timeline"]] == ["created"]


def test_identical_resend_is_unchanged_and_changed_resend_overwrites(tenant: Tenant) -> None:
    assert tenant.put_invoice().status_code == 201
    again = tenant.put_invoice()
    assert again.status_code == 200
    assert again.json()["result"] == "unchanged"
    assert again.json()["invoice"]["revision"] == 1

    changed = tenant.put_invoice(total="150.00", lines=[])
    assert changed.status_code == 200
    assert changed.json()["result"] == "updated"
    assert changed.json()["invoice"]["total"] == "150.00"
    assert changed.json()["invoice"]["lines"] == []
    assert changed.json()["invoice"]["revision"] == 2
    timeline = tenant.client.get("/api/v1/invoices/INV-1").json()["timeline"]
    assert [entry["kind"] for entry in timeline] == ["created", "updated"]


def test_full_replacement_clears_fields_left_out(tenant: Tenant) -> None:
    tenant.put_invoice(title="First", store="web")
    invoice = tenant.put_invoice().json()["invoice"]
    assert invoice["title"] is None
    assert invoice["store"] is None


def test_versions_only_move_forward(tenant: Tenant) -> None:
    assert tenant.put_invoice(version=5).status_code == 201
    assert tenant.put_invoice(version=6, total="130.00").json()["invoice"]["version"] == 6

    stale = tenant.put_invoice(version=4, total="99.00")
    assert stale.status_code == 409
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.json()["code"] == "stale_version"

    same_version_other_content = tenant.put_invoice(version=6, total="131.00")
    assert same_version_other_content.status_code == 409

    retried = tenant.put_invoice(version=6, total="130.00")
    assert retried.json()["result"] == "unchanged"
    assert tenant.client.get("/api/v1/invoices/INV-1").json()["total"] == "130.00"


def test_resend_cannot_reopen_an_invoice_paid_online_and_is_kept_as_a_conflict(tenant: Tenant, database: Any) -> None:
    tenant.put_invoice()
    record_online_payment(database, "INV-1", 12100)

    reopen = tenant.put_invoice(status="open", title="resent by the ERP")
    assert reopen.status_code == 409
    assert reopen.json()["code"] == "reopens_paid"

    lower = tenant.put_invoice(status="paid", total="100.00", amount_due="0.00")
    assert lower.status_code == 409
    assert lower.json()["code"] == "total_below_paid"

    invoice = tenant.client.get("/api/v1/invoices/INV-1").json()
    assert invoice["status"] == "paid"
    assert invoice["total"] == "121.00"
    assert [c["code"] for c in invoice["conflicts"]] == ["reopens_paid", "total_below_paid"]
    assert invoice["conflicts"][0]["payload"]["title"] == "resent by the ERP"

    queue = tenant.client.get("/api/v1/conflicts").json()
    assert [c["invoice"] for c in queue["items"]] == ["INV-1", "INV-1"]
    resolved = tenant.client.post(f"/api/v1/conflicts/{queue['items'][0]['id']}/resolve")
    assert resolved.status_code == 200
    assert resolved.json()["resolved_at"] is not None
    assert len(tenant.client.get("/api/v1/conflicts").json()["items"]) == 1


def test_paid_invoice_may_still_be_resent_with_the_paid_status(tenant: Tenant, database: Any) -> None:
    tenant.put_invoice()
    record_online_payment(database, "INV-1", 12100)
    response = tenant.put_invoice(status="paid", amount_due="0.00", title="Paid, thanks")
    assert response.status_code == 200
    assert response.json()["invoice"]["amount_paid"] == "121.00"


def test_unknown_customer_is_a_field_error(tenant: Tenant) -> None:
    response = tenant.put_invoice(customer="nobody")
    assert response.status_code == 422
    assert response.json()["errors"] == [{"path": "/customer", "message": "unknown customer"}]


@pytest.mark.parametrize(("field", "value", "path"), [
    ("total", "12.345", "/total"),
    ("total", "1e3", "/total"),
    ("total", "NaN", "/total"),
    ("total", "-5.00", "/total"),
    ("total", "1,000.00", "/total"),
    ("total", 12.5, "/total"),
    ("amount_due", "500.00", "/amount_due"),
    ("currency", "EURO", "/currency"),
    ("currency", "XYZ", "/currency"),
    ("status", "sent", "/status"),
    ("issue_date", "01/11/2026", "/issue_date"),
    ("lines", [{"description": "x", "quantity": "1", "unit_price": "1.001", "vat_rate": "21", "total": "1.00"}],
     "/lines/0/unit_price"),
    ("lines", [{"description": "x", "quantity": "1", "unit_price": "1.00", "vat_rate": "21", "total": "1.00",
                "color": "red"}], "/lines/0/color"),
    ("surprise", True, "/surprise"),
])
def test_invalid_fields_are_named(tenant: Tenant, field: str, value: Any, path: str) -> None:
    response = tenant.put_invoice(**{field: value})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert path in [error["path"] for error in response.json()["errors"]]
    assert tenant.client.get("/api/v1/invoices/INV-1").status_code == 404


def test_jpy_and_kwd_decimals(tenant: Tenant) -> None:
    assert tenant.put_invoice("JP-1", currency="JPY", total="1200", lines=[]).status_code == 201
    assert tenant.put_invoice("JP-2", currency="JPY", total="1200.5", lines=[]).status_code == 422
    kwd = tenant.put_invoice("KW-1", currency="KWD", total="10.125", lines=[])
    assert kwd.json()["invoice"]["total"] == "10.125"


def test_due_date_from_payment_terms(tenant: Tenant) -> None:
    terms = {
        "at_reception": ({"type": "at_reception"}, "2026-11-01"),
        "net": ({"type": "net_days", "days": 30}, "2026-12-01"),
        "eom": ({"type": "end_of_month"}, "2026-11-30"),
        "eom45": ({"type": "end_of_month", "days": 45}, "2026-12-31"),
    }
    for name, (payment_terms, due) in terms.items():
        response = tenant.put_invoice(name, due_date=None, payment_terms=payment_terms)
        assert response.json()["invoice"]["due_date"] == due, name
    custom = tenant.put_invoice("custom", due_date=None, payment_terms={"type": "custom"})
    assert custom.json()["errors"] == [{"path": "/due_date", "message": "custom terms need a due date"}]


def test_batch_reports_each_item_and_applies_the_good_ones(tenant: Tenant) -> None:
    tenant.put_invoice("EXISTING")
    items = [
        {**invoice_body(), "external_id": "B-1"},
        {**invoice_body(total="12.345"), "external_id": "B-2"},
        {**invoice_body(), "external_id": "EXISTING"},
        {**invoice_body(customer="ghost"), "external_id": "B-4"},
        {**invoice_body(total="130.00"), "external_id": "EXISTING-2"},
        {"external_id": "B-6"},
        "not an object",
    ]
    response = tenant.client.post("/api/v1/invoices/batch", json={"invoices": items})
    assert response.status_code == 200
    body = response.json()
    assert [r["result"] for r in body["results"]] == [
        "created", "error", "unchanged", "error", "created", "error", "error"]
    assert (body["created"], body["updated"], body["unchanged"], body["failed"]) == (2, 0, 1, 4)
    assert body["results"][1]["problem"]["errors"] == [
        {"path": "/invoices/1/total", "message": "EUR amounts have at most 2 decimals"}]
    assert body["results"][3]["problem"]["errors"][0]["path"] == "/invoices/3/customer"
    assert "/invoices/5/customer" in [e["path"] for e in body["results"][5]["problem"]["errors"]]
    assert tenant.client.get("/api/v1/invoices/B-1").status_code == 200
    assert tenant.client.get("/api/v1/invoices/B-2").status_code == 404


def test_batch_twice_is_unchanged_and_duplicates_inside_a_batch_are_refused(tenant: Tenant) -> None:
    items = [{**invoice_body(number=f"N{i}"), "external_id": f"X-{i}"} for i in range(50)]
    first = tenant.client.post("/api/v1/invoices/batch", json={"invoices": items}).json()
    assert first["created"] == 50
    second = tenant.client.post("/api/v1/invoices/batch", json={"invoices": items}).json()
    assert second["unchanged"] == 50
    dup = tenant.client.post("/api/v1/invoices/batch", json={"invoices": [items[0], items[0]]}).json()
    assert [r["result"] for r in dup["results"]] == ["unchanged", "error"]


def test_batch_size_is_bounded(tenant: Tenant) -> None:
    items = [{**invoice_body(), "external_id": f"X-{i}"} for i in range(1001)]
    response = tenant.client.post("/api/v1/invoices/batch", json={"invoices": items})
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "/invoices"


def test_list_filters_and_cursor_pagination(tenant: Tenant, clock: Any) -> None:
    tenant.put_customer("C2", name="Other")
    for i in range(7):
        tenant.put_invoice(f"L-{i}", status="open" if i % 2 else "draft", customer="C1" if i < 5 else "C2")
    clock.advance(hours=1)
    tenant.put_invoice("L-0", status="draft", title="changed later")

    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = tenant.client.get("/api/v1/invoices", params=params).json()
        seen += [item["external_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"L-{i}" for i in range(7)]

    def ids(**params: Any) -> list[str]:
        response = tenant.client.get("/api/v1/invoices", params=params)
        assert response.status_code == 200, response.text
        return [item["external_id"] for item in response.json()["items"]]

    assert ids(customer="C2") == ["L-5", "L-6"]
    assert ids(status="open") == ["L-1", "L-3", "L-5"]
    assert ids(updated_since="2026-11-02T10:00:00+00:00") == ["L-0"]
    assert ids(has_document="false") == [f"L-{i}" for i in range(7)]
    tenant.client.patch("/api/v1/invoices/L-3", json={"may_have_documents": False})
    assert "L-3" not in ids(has_document="false", may_have_documents="true")
    assert ids(may_have_documents="false") == ["L-3"]


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=5000", "cursor=bogus!", "status=sent",
                                   "has_document=yes", "updated_since=yesterday"])
def test_list_rejects_bad_query_parameters(tenant: Tenant, query: str) -> None:
    response = tenant.client.get(f"/api/v1/invoices?{query}")
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "/" + query.split("=")[0]


def test_patch_is_a_merge_patch_with_the_put_rules(tenant: Tenant, database: Any) -> None:
    tenant.put_invoice(title="Before", store="web")
    response = tenant.client.patch("/api/v1/invoices/INV-1", json={"title": "After", "store": None},
                                   headers={"content-type": "application/merge-patch+json"})
    assert response.status_code == 200, response.text
    invoice = response.json()["invoice"]
    assert (invoice["title"], invoice["store"], invoice["total"]) == ("After", None, "121.00")

    bad = tenant.client.patch("/api/v1/invoices/INV-1", json={"total": "1.234"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["path"] == "/total"
    assert tenant.client.patch("/api/v1/invoices/INV-1", json=["x"]).status_code == 422
    assert tenant.client.patch("/api/v1/invoices/NOPE", json={"title": "x"}).status_code == 404

    record_online_payment(database, "INV-1", 12100)
    reopen = tenant.client.patch("/api/v1/invoices/INV-1", json={"status": "open"})
    assert reopen.status_code == 409
    assert tenant.client.get("/api/v1/conflicts").json()["items"][0]["code"] == "reopens_paid"


def test_read_unknown_invoice_is_404_problem(tenant: Tenant) -> None:
    response = tenant.client.get("/api/v1/invoices/NOPE")
    assert response.status_code == 404
    assert response.json() == {"type": "https://quittance.dev/problems/not-found", "title": "Not found",
                               "status": 404, "detail": "No such object."}


def test_html_in_fields_is_stored_verbatim(tenant: Tenant) -> None:
    title = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    tenant.put_invoice(title=title)
    assert tenant.client.get("/api/v1/invoices/INV-1").json()["title"] == title


def test_concurrent_first_pushes_of_the_same_invoice_make_one(tenant: Tenant, database: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(lambda i: tenant.put_invoice("RACE", version=i).status_code, range(1, 9)))
    assert codes.count(201) == 1
    assert all(code in (200, 201, 409) for code in codes)
    with database.transaction() as conn:
        assert conn.scalar(sa.select(sa.func.count()).where(invoices.c.external_id == "RACE")) == 1


def test_identical_resend_of_the_unpaid_body_after_payment_is_a_conflict_once(tenant: Tenant, database: Any) -> None:
    tenant.put_invoice()
    record_online_payment(database, "INV-1", 12100)
    for _ in range(3):  # a nightly resync resending what it sent before
        assert tenant.put_invoice().status_code == 409
    assert len(tenant.client.get("/api/v1/conflicts").json()["items"]) == 1
