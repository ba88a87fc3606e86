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


# --- Resends recognised by their fingerprint --------------------------------------------------------------
# A batch item that is the body which made the stored revision is answered "unchanged" before it is
# validated (domain.recognise_resends). Each test below changes an invoice in some other way, then resends
# the body: the answer must be the one the full path gives. Two twins get the same treatment: "F" was pushed
# by the batch API (its body fingerprinted), "P" by PUT (no fingerprint: its resend takes the full path).

TWINS = ("F", "P")


def batch(tenant: Tenant, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = tenant.client.post("/api/v1/invoices/batch", json={"invoices": items})
    assert response.status_code == 200, response.text
    return response.json()["results"]  # type: ignore[no-any-return]


def fingerprint(database: Any, external_id: str) -> str | None:
    with database.transaction() as conn:
        return conn.scalar(sa.select(invoices.c.body_fingerprint).where(invoices.c.external_id == external_id))


def push_twins(tenant: Tenant, database: Any, **fields: Any) -> list[dict[str, Any]]:
    bodies = [{**invoice_body(**fields), "external_id": external_id} for external_id in TWINS]
    assert batch(tenant, bodies[:1])[0]["result"] == "created"
    assert tenant.client.put("/api/v1/invoices/P", json=invoice_body(**fields)).status_code == 201
    assert fingerprint(database, "P") is None
    return bodies


def resend(tenant: Tenant, bodies: list[dict[str, Any]]) -> tuple[Any, ...]:
    """The answer for F, after checking that P got the same one (result, revision, problem code)."""
    answers = [(r["result"], r.get("revision"), r.get("problem", {}).get("code")) for r in batch(tenant, bodies)]
    assert answers[0] == answers[1]
    return answers[0]


def test_a_batch_resend_is_recognised_and_writes_nothing(tenant: Tenant, database: Any, clock: Any) -> None:
    from portal.domain.invoices import body_digest, canonical_json, recognise_resends

    bodies = push_twins(tenant, database)
    assert (fingerprint(database, "F") or "").startswith("1:")  # bound to revision 1
    before = tenant.client.get("/api/v1/invoices/F").json()
    clock.advance(hours=1)
    assert resend(tenant, bodies) == ("unchanged", 1, None)
    assert tenant.client.get("/api/v1/invoices/F").json() == before
    # P's unchanged resend bound its body too (as for invoices stored before fingerprints existed): both are
    # now recognised before validation.
    assert fingerprint(database, "P") is not None
    found = database.run(recognise_resends, tenant.org.id, [(b["external_id"], body_digest(canonical_json(b))) for b in bodies],
                         write=False)
    assert [(o.external_id, o.result, o.revision) for o in found] == [("F", "unchanged", 1), ("P", "unchanged", 1)]
    # The same content as another body (key order does not count, a field spelled out does) is not the
    # same body, but still the same content.
    reordered = [dict(reversed(list(b.items()))) for b in bodies]
    assert database.run(recognise_resends, tenant.org.id, [(b["external_id"], body_digest(canonical_json(b))) for b in reordered],
                        write=False) == found
    spelled_out = [{**b, "kind": "invoice"} for b in bodies]
    assert database.run(recognise_resends, tenant.org.id,
                        [(b["external_id"], body_digest(canonical_json(b))) for b in spelled_out], write=False) == [None, None]
    assert resend(tenant, spelled_out) == ("unchanged", 1, None)


def test_a_resend_after_a_patch_restores_the_body(tenant: Tenant, database: Any) -> None:
    bodies = push_twins(tenant, database, title="Pushed")
    for external_id in TWINS:
        assert tenant.client.patch(f"/api/v1/invoices/{external_id}", json={"title": "Patched"}).status_code == 200
        assert fingerprint(database, external_id) is None
    assert resend(tenant, bodies) == ("updated", 3, None)
    assert tenant.client.get("/api/v1/invoices/F").json()["title"] == "Pushed"
    assert resend(tenant, bodies) == ("unchanged", 3, None)


def test_a_resend_after_a_put_of_other_content_restores_the_body(tenant: Tenant, database: Any) -> None:
    bodies = push_twins(tenant, database)
    for external_id in TWINS:
        assert tenant.put_invoice(external_id, title="Other").json()["result"] == "updated"
    assert resend(tenant, bodies) == ("updated", 3, None)


@pytest.mark.parametrize(("step", "body", "expected"), [
    ("cancel", None, ("updated", 3, None)),
    ("extend-due-date", {"due_date": "2027-01-31"}, ("updated", 3, None)),
])
def test_a_resend_after_a_lifecycle_step_undoes_it_as_before(tenant: Tenant, database: Any, step: str,
                                                              body: Any, expected: tuple[Any, ...]) -> None:
    bodies = push_twins(tenant, database)
    for external_id in TWINS:
        assert tenant.client.post(f"/api/v1/invoices/{external_id}/{step}", json=body).status_code == 200
    assert resend(tenant, bodies) == expected


def test_a_resend_of_the_draft_after_activation_is_refused(tenant: Tenant, database: Any) -> None:
    bodies = push_twins(tenant, database, status="draft", number=None, issue_date=None, due_date=None,
                        payment_terms={"type": "net_days", "days": 14})
    assert fingerprint(database, "F") is not None  # a draft's due date does not depend on the day
    for external_id in TWINS:
        assert tenant.client.post(f"/api/v1/invoices/{external_id}/activate").status_code == 200
    assert resend(tenant, bodies) == ("error", None, "already_activated")


def test_a_resend_after_an_online_payment_is_a_conflict_once(tenant: Tenant, database: Any) -> None:
    bodies = push_twins(tenant, database)
    for external_id in TWINS:
        record_online_payment(database, external_id, 12100)
    for _ in range(2):
        assert resend(tenant, bodies) == ("error", None, "reopens_paid")
    conflicts = tenant.client.get("/api/v1/conflicts").json()["items"]
    assert sorted(c["invoice"] for c in conflicts) == ["F", "P"]


def set_paid(database: Any, external_id: str, paid_minor: int, status: str) -> None:
    """What the payments service does to an invoice (portal.domain.payments._set_paid): no new revision."""
    with database.transaction() as conn:
        conn.execute(invoices.update().where(invoices.c.external_id == external_id)
                     .values(paid_minor=paid_minor, status=status))


def test_a_resend_after_a_partial_payment_takes_the_full_path(tenant: Tenant, database: Any) -> None:
    from portal.domain.invoices import body_digest, canonical_json, recognise_resends

    bodies = push_twins(tenant, database)
    for external_id in TWINS:
        set_paid(database, external_id, 5000, "open")
    assert database.run(recognise_resends, tenant.org.id, [("F", body_digest(canonical_json(bodies[0])))], write=False) == [None]
    assert resend(tenant, bodies) == ("unchanged", 1, None)
    lowered = [{**b, "total": "40.00", "lines": []} for b in bodies]
    assert resend(tenant, lowered) == ("error", None, "total_below_paid")


def test_a_resend_after_a_payment_refunded_in_full_is_as_before(tenant: Tenant, database: Any) -> None:
    bodies = push_twins(tenant, database, status="paid", amount_due="0.00")
    for external_id in TWINS:
        set_paid(database, external_id, 12100, "paid")
    assert resend(tenant, bodies) == ("unchanged", 1, None)
    for external_id in TWINS:
        set_paid(database, external_id, 0, "open")  # refunded: Quittance reopened the invoice it had closed
    assert resend(tenant, bodies) == ("unchanged", 1, None)


def test_a_resend_after_a_document_is_unchanged_and_recognised_again(tenant: Tenant, database: Any) -> None:
    from portal.domain.invoices import body_digest, canonical_json, recognise_resends
    from tests.support.documents import make_pdf

    bodies = push_twins(tenant, database)
    for external_id in TWINS:
        response = tenant.client.put(f"/api/v1/invoices/{external_id}/document", content=make_pdf(),
                                     headers={"Content-Type": "application/pdf"})
        assert response.status_code == 201, response.text
    assert database.run(recognise_resends, tenant.org.id, [("F", body_digest(canonical_json(bodies[0])))], write=False) == [None]
    assert resend(tenant, bodies) == ("unchanged", 2, None)
    found = database.run(recognise_resends, tenant.org.id, [("F", body_digest(canonical_json(bodies[0])))], write=False)
    assert [(o.result, o.revision) for o in found] == [("unchanged", 2)]


def test_a_due_date_counted_from_today_is_never_fingerprinted(tenant: Tenant, database: Any, clock: Any) -> None:
    bodies = push_twins(tenant, database, issue_date=None, due_date=None,
                        payment_terms={"type": "net_days", "days": 30})
    assert fingerprint(database, "F") is None
    assert resend(tenant, bodies) == ("unchanged", 1, None)
    assert fingerprint(database, "F") is None
    clock.advance(days=1)
    assert resend(tenant, bodies) == ("updated", 2, None)
    assert tenant.client.get("/api/v1/invoices/F").json()["due_date"] == "2026-12-03"


def test_a_resend_of_an_older_version_is_stale(tenant: Tenant, database: Any) -> None:
    bodies = push_twins(tenant, database, version=5)
    assert resend(tenant, bodies) == ("unchanged", 1, None)
    newer = [{**b, "version": 6, "title": "v6"} for b in bodies]
    assert resend(tenant, newer) == ("updated", 2, None)
    assert resend(tenant, bodies) == ("error", None, "stale_version")
    assert resend(tenant, newer) == ("unchanged", 2, None)


def test_a_recognised_body_twice_in_a_batch_is_a_duplicate(tenant: Tenant, database: Any) -> None:
    bodies = push_twins(tenant, database)
    results = batch(tenant, [bodies[0], bodies[0], {**bodies[0], "total": "1.234"}])
    assert [r["result"] for r in results] == ["unchanged", "error", "error"]
    assert results[1]["problem"]["errors"] == [{"path": "/invoices/1/external_id", "message": "duplicate in this batch"}]
    assert results[2]["problem"]["errors"][0]["path"] == "/invoices/2/total"


def test_a_change_between_recognition_and_write_is_seen(tenant: Tenant, database: Any, settings: Any,
                                                          clock: Any) -> None:
    """The lookup that recognises resends runs before the write transaction: a change made in between (here
    a payment) sends the item through the full path."""
    from starlette.testclient import TestClient

    from portal.app import create_app
    from portal.db import Database
    from portal.domain import invoices as domain

    class PaidMeanwhile(Database):
        async def read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
            result = await super().read(fn, *args, **kwargs)
            if fn is domain.recognise_resends:
                record_online_payment(database, "F", 12100)
            return result

    bodies = push_twins(tenant, database)
    app = create_app(settings, clock=clock, database=PaidMeanwhile(database.engine))
    client = TestClient(app, headers={"Authorization": f"Bearer {tenant.key}"}, raise_server_exceptions=False)
    new = {**invoice_body(), "external_id": "NEW"}
    response = client.post("/api/v1/invoices/batch", json={"invoices": [bodies[0], new]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["result"], r.get("problem", {}).get("code")) for r in results] == [
        ("error", "reopens_paid"), ("created", None)]
    assert [c["invoice"] for c in tenant.client.get("/api/v1/conflicts").json()["items"]] == ["F"]


def test_new_invoices_get_their_own_ids_when_the_largest_id_is_taken(tenant: Tenant, database: Any) -> None:
    """Each new invoice gets the id the database gave it, even when SQLite, its largest possible id taken,
    draws new ids at random."""
    assert batch(tenant, [{**invoice_body(), "external_id": "SEED"}])[0]["result"] == "created"
    with database.transaction() as conn:
        seed = conn.execute(sa.select(invoices).where(invoices.c.external_id == "SEED")).one()._asdict()
        conn.execute(invoices.insert().values({**seed, "id": 2**63 - 1, "external_id": "LAST"}))
    items = [{**invoice_body(number=f"N-{i}"), "external_id": f"R-{i}"} for i in range(5)]
    assert [r["result"] for r in batch(tenant, items)] == ["created"] * 5
    for i in range(5):
        invoice = tenant.client.get(f"/api/v1/invoices/R-{i}").json()
        assert invoice["number"] == f"N-{i}"
        assert [entry["kind"] for entry in invoice["timeline"]] == ["created"]


# --- Dates within range, single-line fields ------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "path"), [
    ({"issue_date": "9999-12-31", "due_date": None, "payment_terms": {"type": "net_days", "days": 30}},
     "/issue_date"),
    ({"issue_date": "9999-12-31", "due_date": None, "payment_terms": {"type": "end_of_month"}}, "/issue_date"),
    ({"issue_date": "1899-12-31"}, "/issue_date"),
    ({"issue_date": "0001-01-01", "due_date": None, "payment_terms": {"type": "at_reception"}}, "/issue_date"),
    ({"due_date": "3000-01-01"}, "/due_date"),
    ({"delivery_date": "9999-12-31"}, "/delivery_date"),
    # In range, but the terms count past it.
    ({"issue_date": "2999-12-20", "due_date": None, "payment_terms": {"type": "net_days", "days": 30}},
     "/payment_terms/days"),
    ({"issue_date": "2999-12-20", "due_date": None, "payment_terms": {"type": "end_of_month", "days": 15}},
     "/payment_terms/days"),
])
def test_dates_out_of_range_are_refused_at_their_field(tenant: Tenant, fields: dict[str, Any], path: str) -> None:
    """9999-12-31 with payment terms used to overflow the calendar: a 500 and a reset connection."""
    response = tenant.put_invoice(**fields)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert path in [error["path"] for error in response.json()["errors"]]
    assert tenant.client.get("/api/v1/invoices/INV-1").status_code == 404
    # The last day in range is fine, and so is counting terms up to it.
    edge = tenant.put_invoice("EDGE", issue_date="2999-12-01", due_date=None,
                              payment_terms={"type": "end_of_month"})
    assert edge.status_code == 201
    assert edge.json()["invoice"]["due_date"] == "2999-12-31"


def test_a_batch_item_with_a_date_out_of_range_does_not_affect_the_others(tenant: Tenant) -> None:
    terms = {"type": "net_days", "days": 30}
    items = [
        {**invoice_body(), "external_id": "D-0"},
        {**invoice_body(issue_date="9999-12-31", due_date=None, payment_terms=terms), "external_id": "D-1"},
        {**invoice_body(), "external_id": "D-2"},
        {**invoice_body(issue_date="2999-12-20", due_date=None, payment_terms=terms), "external_id": "D-3"},
        {**invoice_body(due_date="0999-01-01"), "external_id": "D-4"},
    ]
    results = batch(tenant, items)
    assert [r["result"] for r in results] == ["created", "error", "created", "error", "error"]
    assert [e["path"] for e in results[1]["problem"]["errors"]] == ["/invoices/1/issue_date"]
    assert [e["path"] for e in results[3]["problem"]["errors"]] == ["/invoices/3/payment_terms/days"]
    assert "/invoices/4/due_date" in [e["path"] for e in results[4]["problem"]["errors"]]
    assert [tenant.client.get(f"/api/v1/invoices/D-{i}").status_code for i in range(5)] == [200, 404, 200, 404, 404]


def test_an_extended_due_date_out_of_range_is_refused(tenant: Tenant) -> None:
    tenant.put_invoice()
    response = tenant.client.post("/api/v1/invoices/INV-1/extend-due-date", json={"due_date": "9999-12-31"})
    assert response.status_code == 422
    assert [e["path"] for e in response.json()["errors"]] == ["/due_date"]
    assert tenant.client.get("/api/v1/invoices/INV-1").json()["due_date"] == "2026-12-01"


SINGLE_LINE = "must be a single line, without line breaks or bidirectional control characters"


@pytest.mark.parametrize("breaker", ["\n", "\r", "\u2028", "\u2029", "\u202b", "\u202e", "\u2067", "\u2068"])
@pytest.mark.parametrize("field", ["number", "title", "store"])
def test_single_line_fields_refuse_line_breaks_and_bidi_controls(tenant: Tenant, field: str, breaker: str) -> None:
    response = tenant.put_invoice(**{field: f"2026{breaker}0001"})
    assert response.status_code == 422
    assert response.json()["errors"] == [{"path": f"/{field}", "message": SINGLE_LINE}]
    assert tenant.client.get("/api/v1/invoices/INV-1").status_code == 404


def test_multi_line_fields_keep_their_line_breaks(tenant: Tenant) -> None:
    lines = [{"description": "Consulting\nNovember\r\nOn site", "quantity": "2", "unit_price": "50.00",
              "vat_rate": "21", "total": "100.00"}]
    response = tenant.put_invoice(header_note="Dear customer,\nthank you.", footer_note="IBAN\nBIC",
                                  vat_mention="Autoliquidation\nArt. 51", lines=lines)
    assert response.status_code == 201, response.text
    invoice = tenant.client.get("/api/v1/invoices/INV-1").json()
    assert invoice["lines"][0]["description"] == "Consulting\nNovember\r\nOn site"
    assert invoice["header_note"] == "Dear customer,\nthank you."


def test_a_batch_item_with_a_line_break_in_its_number_does_not_affect_the_others(tenant: Tenant) -> None:
    items = [{**invoice_body(), "external_id": "S-0"},
             {**invoice_body(number="2026-0002\nBcc: someone@example.com"), "external_id": "S-1"},
             {**invoice_body(title="\u202eevil"), "external_id": "S-2"}]
    results = batch(tenant, items)
    assert [r["result"] for r in results] == ["created", "error", "error"]
    assert results[1]["problem"]["errors"] == [{"path": "/invoices/1/number", "message": SINGLE_LINE}]
    assert results[2]["problem"]["errors"] == [{"path": "/invoices/2/title", "message": SINGLE_LINE}]


def test_a_part_activation_number_is_single_line(tenant: Tenant) -> None:
    tenant.put_invoice("DRAFT", status="draft", number=None)
    response = tenant.client.post("/api/v1/invoices/DRAFT/part-activate",
                                  json={"external_id": "PART", "lines": [{"line": 0, "quantity": "1"}],
                                        "number": "P-1\r\nX"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [{"path": "/number", "message": SINGLE_LINE}]
