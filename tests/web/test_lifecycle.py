"""An invoice's life: activate, part-activate, cancel, extend the due date; each on the timeline."""

from __future__ import annotations

from typing import Any

from tests.conftest import Tenant, invoice_body
from tests.web.test_invoices import record_online_payment

LINES = [
    {"description": "Chairs", "quantity": "4", "unit_price": "25.00", "vat_rate": "21", "total": "100.00"},
    {"description": "Table", "quantity": "1", "unit_price": "300.00", "vat_rate": "21", "total": "300.00"},
    {"description": "Delivery", "quantity": "1", "unit_price": "50.00", "vat_rate": "6", "total": "50.00"},
]


def draft(tenant: Tenant, external_id: str = "D-1", **fields: Any) -> Any:
    body = invoice_body(status="draft", number=None, issue_date=None, due_date=None, lines=LINES,
                        total="537.00", payment_terms={"type": "net_days", "days": 14})
    body.update(fields)
    response = tenant.client.put(f"/api/v1/invoices/{external_id}", json=body)
    assert response.status_code == 201, response.text
    return response.json()["invoice"]


def post(tenant: Tenant, path: str, body: Any = None) -> Any:
    return tenant.client.post(f"/api/v1/invoices/{path}", json=body)


def test_activate_numbers_and_starts_the_due_date(tenant: Tenant, clock: Any) -> None:
    draft(tenant, "D-1")
    draft(tenant, "D-2")
    clock.advance(days=3)  # activated on 2026-11-05
    first = post(tenant, "D-1/activate")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "open"
    assert first.json()["number"] == "Q-000001"
    assert first.json()["issue_date"] == "2026-11-05"
    assert first.json()["due_date"] == "2026-11-19"
    assert post(tenant, "D-2/activate").json()["number"] == "Q-000002"
    again = post(tenant, "D-1/activate")
    assert again.status_code == 409
    assert again.json()["code"] == "not_draft"
    timeline = tenant.client.get("/api/v1/invoices/D-1").json()["timeline"]
    assert [(t["kind"], t["at"]) for t in timeline] == [
        ("created", "2026-11-02T09:30:00+00:00"), ("activated", "2026-11-05T09:30:00+00:00")]


def test_numbers_are_gapless_when_an_activation_fails(tenant: Tenant, other_tenant: Tenant) -> None:
    draft(tenant, "D-1")
    draft(tenant, "D-2", number="KEEP-7")
    draft(tenant, "D-3")
    assert post(tenant, "D-1/activate").json()["number"] == "Q-000001"
    assert post(tenant, "D-2/activate").json()["number"] == "KEEP-7"
    assert post(tenant, "D-1/activate").status_code == 409
    assert post(tenant, "D-3/activate").json()["number"] == "Q-000002"
    other_tenant.put_customer()
    draft(other_tenant, "D-1")
    assert post(other_tenant, "D-1/activate").json()["number"] == "Q-000001"


def test_activated_invoice_cannot_be_pushed_back_to_draft(tenant: Tenant) -> None:
    draft(tenant)
    post(tenant, "D-1/activate")
    response = tenant.client.put("/api/v1/invoices/D-1", json=invoice_body(status="draft", lines=LINES))
    assert response.status_code == 409
    assert response.json()["code"] == "already_activated"


def test_part_activate_splits_lines_and_keeps_the_total(tenant: Tenant) -> None:
    draft(tenant)
    response = post(tenant, "D-1/part-activate",
                    {"external_id": "D-1-A", "lines": [{"line": 0, "quantity": "1"}, {"line": 2}]})
    assert response.status_code == 200, response.text
    activated, remaining = response.json()["activated"], response.json()["remaining"]
    assert activated["status"] == "open"
    assert activated["number"] == "Q-000001"
    assert [(line["description"], line["quantity"], line["total"]) for line in activated["lines"]] == [
        ("Chairs", "1", "25.00"), ("Delivery", "1", "50.00")]
    # 25.00 + 21% = 30.25; 50.00 + 6% = 53.00
    assert activated["total"] == "83.25"
    assert remaining["status"] == "draft"
    assert [(line["description"], line["quantity"]) for line in remaining["lines"]] == [("Chairs", "3"), ("Table", "1")]
    assert remaining["total"] == "453.75"
    assert [t["kind"] for t in tenant.client.get("/api/v1/invoices/D-1").json()["timeline"]] == [
        "created", "part_activated"]


def test_part_activate_refuses_impossible_selections(tenant: Tenant) -> None:
    draft(tenant)
    too_much = post(tenant, "D-1/part-activate", {"external_id": "X", "lines": [{"line": 0, "quantity": "5"}]})
    assert too_much.status_code == 422
    assert too_much.json()["errors"][0]["path"] == "/lines/0/quantity"
    no_line = post(tenant, "D-1/part-activate", {"external_id": "X", "lines": [{"line": 9}]})
    assert no_line.json()["errors"][0]["path"] == "/lines/0/line"
    everything = post(tenant, "D-1/part-activate",
                      {"external_id": "X", "lines": [{"line": 0}, {"line": 1}, {"line": 2}]})
    assert everything.status_code == 409
    tenant.put_invoice("TAKEN")
    taken = post(tenant, "D-1/part-activate", {"external_id": "TAKEN", "lines": [{"line": 0}]})
    assert taken.status_code == 409
    assert tenant.client.get("/api/v1/invoices/D-1").json()["lines"] == [
        {**line} for line in LINES]


def test_cancel_drafts_and_unpaid_open_invoices_only(tenant: Tenant, database: Any) -> None:
    draft(tenant)
    cancelled = post(tenant, "D-1/cancel")
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["amount_due"]) == ("cancelled", "0.00")
    assert cancelled.json()["cancelled_at"] == "2026-11-02T09:30:00+00:00"
    assert post(tenant, "D-1/cancel").status_code == 409

    tenant.put_invoice("OPEN")
    assert post(tenant, "OPEN/cancel").status_code == 200

    tenant.put_invoice("PAID-PART", total="121.00")
    record_online_payment(database, "PAID-PART", 5000)
    refused = post(tenant, "PAID-PART/cancel")
    assert refused.status_code == 409


def test_extend_due_date_only_later(tenant: Tenant) -> None:
    tenant.put_invoice()
    earlier = post(tenant, "INV-1/extend-due-date", {"due_date": "2026-11-20"})
    assert earlier.status_code == 409
    assert earlier.json()["code"] == "not_later"
    later = post(tenant, "INV-1/extend-due-date", {"due_date": "2026-12-31"})
    assert later.status_code == 200
    assert later.json()["due_date"] == "2026-12-31"
    assert tenant.client.get("/api/v1/invoices/INV-1").json()["timeline"][-1] == {
        "at": "2026-11-02T09:30:00+00:00", "kind": "due_date_extended",
        "detail": {"from": "2026-12-01", "to": "2026-12-31"}}
    assert post(tenant, "INV-1/extend-due-date", {"due_date": "31/12/2026"}).status_code == 422
    draft(tenant)
    assert post(tenant, "D-1/extend-due-date", {"due_date": "2027-01-31"}).status_code == 409


def test_lifecycle_on_unknown_or_foreign_invoice_is_404(tenant: Tenant, other_tenant: Tenant) -> None:
    draft(tenant)
    for action in ("activate", "cancel"):
        assert post(other_tenant, f"D-1/{action}").status_code == 404
        assert post(tenant, f"NOPE/{action}").status_code == 404
    assert tenant.client.get("/api/v1/invoices/D-1").json()["status"] == "draft"
