"""Paying part of what is selected, and deducting credit notes, from the portal: the preview of the allocation,
the amount asked of the provider (the real SDKs against the emulators), what the payment does to each invoice,
what the API and the events say about it, and every bad amount refused on the page with nothing written."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from portal.app import create_app
from portal.db.invoices import invoice_timeline, invoices
from portal.db.payments import checkouts, payments
from portal.domain import payment_settings
from portal.encryption import secret_box
from tests.conftest import Tenant
from tests.support.providers import mollie, stripe_emulator, with_providers  # noqa: F401
from tests.web.test_checkout import count, invoice_state
from tests.web.test_portal import Debtor, invoice_id, link_for


@pytest.fixture
def app(settings: Any, database: Any, clock: Any, mollie: Any, stripe_emulator: Any) -> Any:  # noqa: F811
    return create_app(with_providers(settings, mollie, stripe_emulator), clock=clock, database=database)


def allow_partial(database: Any, tenant: Tenant, settings: Any, clock: Any, minimum: str = "10.00") -> None:
    database.run(payment_settings.configure, tenant.org.id, clock.now(), secret_box(settings.encryption_keys),
                 partial_payments=True, partial_minimum=minimum)


@pytest.fixture
def debtor(app: Any, tenant: Tenant, database: Any, settings: Any, clock: Any) -> Debtor:
    tenant.put_customer(locale="en-BE")  # the pages in English (amounts still written the Belgian way)
    # A is due first; B later. Together they owe 150.00.
    assert tenant.put_invoice("A", number="F-A", total="100.00", lines=[], issue_date="2026-09-01",
                              due_date="2026-10-01").status_code == 201
    assert tenant.put_invoice("B", number="F-B", total="50.00", lines=[], issue_date="2026-08-01",
                              due_date="2026-12-31").status_code == 201
    allow_partial(database, tenant, settings, clock)
    visitor = Debtor(app)
    visitor.open(link_for(tenant))
    return visitor


def ids_of(database: Any, *external_ids: str) -> list[str]:
    return [str(invoice_id(database, e)) for e in external_ids]


def pay_page(debtor: Debtor, database: Any, *external_ids: str, credit: tuple[str, ...] = ()) -> Any:
    params = [("invoice", i) for i in ids_of(database, *external_ids)]
    params += [("credit", i) for i in ids_of(database, *credit)]
    return debtor.get("/portal/pay", params=params)


def post(debtor: Debtor, database: Any, path: str, *external_ids: str, credit: tuple[str, ...] = (),
         **fields: str) -> Any:
    page = pay_page(debtor, database, *external_ids)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    data: dict[str, Any] = {"csrf": csrf, "invoice": ids_of(database, *external_ids),
                            "credit": ids_of(database, *credit), **fields}
    return debtor.client.post(path, data=data)


def events(tenant: Tenant) -> list[dict[str, Any]]:
    return list(tenant.client.get("/api/v1/events").json()["items"])


def stripe_pays(debtor: Debtor, stripe_emulator: Any, answer: Any) -> dict[str, Any]:  # noqa: F811
    """The debtor pays on Stripe's page; Stripe's signed webhook reaches us."""
    session_id = answer.headers["location"].rsplit("/", 1)[1]
    emitted = len(stripe_emulator.events)
    stripe_emulator.complete(session_id, "success")
    completed = [e for e in stripe_emulator.events[emitted:] if e["type"] == "checkout.session.completed"][0]
    body, headers = stripe_emulator.build_webhook(completed)
    assert TestClient(debtor.client.app).post("/webhooks/stripe/acme", content=body,
                                              headers=headers).status_code == 200
    return dict(stripe_emulator.session(session_id))


def test_pay_part_with_stripe_then_the_rest_with_mollie(debtor: Debtor, database: Any, tenant: Tenant,
                                                        stripe_emulator: Any, mollie: Any) -> None:  # noqa: F811
    page = pay_page(debtor, database, "A", "B").text
    assert 'name="amount"' in page and 'value="150.00"' in page, "the amount field starts at the total"
    assert 'action="/portal/pay/preview"' in page

    preview = post(debtor, database, "/portal/pay/preview", "A", "B", amount=" 120,00 € ", currency="EUR",
                   method="stripe:card")
    assert preview.status_code == 200, preview.text
    rows = re.findall(r'<tr><th scope="row"[^>]*>(F-[AB])</th>\s*<td class="num"[^>]*>([^<]+)</td>'
                      r'<td class="num"[^>]*>([^<]+)</td>\s*<td[^>]*>([^<]+)</td>', preview.text)
    # The oldest due date first: A is paid in full, B gets the rest.
    assert rows == [("F-A", "100,00\xa0€", "0,00\xa0€", "Paid in full"),
                    ("F-B", "20,00\xa0€", "30,00\xa0€", "Partially paid")], preview.text
    assert "Pay 120,00\xa0€" in preview.text
    assert count(database, checkouts) == 0, "a preview writes nothing"

    csrf = re.search(r'name="csrf" value="([^"]+)"', preview.text).group(1)  # type: ignore[union-attr]
    confirm = {name: value for name, value in re.findall(r'<input type="hidden" name="(amount|currency)" '
                                                         r'value="([^"]*)"', preview.text)}
    assert confirm == {"amount": "120.00", "currency": "EUR"}
    answer = debtor.client.post("/portal/checkout", data={"csrf": csrf, "invoice": ids_of(database, "A", "B"),
                                                          "method": "stripe:card", **confirm})
    assert answer.status_code == 303, answer.text
    session = stripe_pays(debtor, stripe_emulator, answer)
    assert session["amount_total"] == 12000, "the provider is asked for the amount chosen"
    assert invoice_state(database) == {"A": ("paid", 10000), "B": ("open", 2000)}

    announced = events(tenant)
    assert [(e["type"], e["data"]["invoice"], e["data"]["amount_paid"], e["data"]["amount_remaining"])
            for e in announced] == [("invoice.paid", "A", "100.00", "0.00"),
                                    ("invoice.partially_paid", "B", "20.00", "30.00")]
    b = tenant.client.get("/api/v1/invoices/B").json()
    assert (b["status"], b["amount_paid"], b["amount_remaining"]) == ("open", "20.00", "30.00")
    assert "partially" in debtor.get("/portal").text.lower() or "30,00" in debtor.get("/portal").text

    # The rest of B, in full, through Mollie: the page now asks 30.00.
    assert "30,00\xa0€" in pay_page(debtor, database, "B").text
    rest = post(debtor, database, "/portal/checkout", "B", amount="30.00", currency="EUR", method="mollie:ideal")
    assert rest.status_code == 303, rest.text
    payment_id = rest.headers["location"].rsplit("/", 1)[1]
    assert mollie.payment(payment_id)["amount"] == {"currency": "EUR", "value": "30.00"}
    mollie.set_status(payment_id, "paid", send_webhook=False)
    assert TestClient(debtor.client.app).post("/webhooks/mollie/acme", data={"id": payment_id}).status_code == 200
    assert invoice_state(database) == {"A": ("paid", 10000), "B": ("paid", 5000)}
    last = events(tenant)[-1]
    assert (last["type"], last["data"]["amount_paid"], last["data"]["amount_remaining"]) == (
        "invoice.paid", "50.00", "0.00")
    assert tenant.client.get("/api/v1/invoices/B").json()["amount_remaining"] == "0.00"


@pytest.mark.parametrize(("fields", "message"), [
    ({"amount": "5.00"}, "a partial payment must be at least 10,00\xa0€"),
    ({"amount": "150.01"}, "you can pay at most 150,00\xa0€"),
    ({"amount": "20.005"}, "too many decimals for EUR"),
    ({"amount": "20", "currency": "USD"}, "must be in EUR"),
    ({"amount": "twenty"}, "not a number we can read"),
    ({"amount": "0"}, "at least 10,00\xa0€"),
    ({"amount": "-20.00"}, "not a number we can read"),
])
@pytest.mark.parametrize("path", ["/portal/pay/preview", "/portal/checkout"])
def test_bad_amounts_are_named_and_nothing_is_written(debtor: Debtor, database: Any, stripe_emulator: Any,  # noqa: F811
                                                      fields: dict[str, str], message: str, path: str) -> None:
    sessions_before = len(stripe_emulator.events)
    answer = post(debtor, database, path, "A", "B", method="stripe:card", **{"currency": "EUR", **fields})
    assert answer.status_code == 422, answer.text
    assert message in answer.text.replace("&#39;", "'")
    assert 'role="alert" id="amount-problem"' in answer.text and "Nothing was charged." in answer.text
    assert count(database, checkouts) == 0 and count(database, payments) == 0
    assert len(stripe_emulator.events) == sessions_before, "nothing went to the provider"
    assert invoice_state(database) == {"A": ("open", 0), "B": ("open", 0)}


def test_without_partial_payments_only_the_full_amount(debtor: Debtor, database: Any, tenant: Tenant,
                                                       settings: Any, clock: Any) -> None:
    database.run(payment_settings.configure, tenant.org.id, clock.now(), secret_box(settings.encryption_keys),
                 partial_payments=False)
    page = pay_page(debtor, database, "A").text
    assert 'name="amount"' not in page and 'action="/portal/checkout"' in page
    refused = post(debtor, database, "/portal/checkout", "A", amount="50.00", method="stripe:card")
    assert refused.status_code == 422 and "Only the full amount of 100,00\xa0€ can be paid online" in refused.text
    assert count(database, checkouts) == 0
    full = post(debtor, database, "/portal/checkout", "A", amount="100.00", method="stripe:card")
    assert full.status_code == 303


def test_the_preview_needs_the_csrf_token(debtor: Debtor, database: Any) -> None:
    answer = debtor.client.post("/portal/pay/preview", data={"invoice": ids_of(database, "A"), "amount": "20.00"})
    assert answer.status_code == 403


@pytest.fixture
def credit_note(tenant: Tenant) -> None:
    answer = tenant.put_invoice("CN", number="CN-1", kind="credit_note", total="20.00", lines=[],
                                issue_date="2026-09-15", due_date=None)
    assert answer.status_code == 201, answer.text


def timeline(database: Any, external_id: str) -> list[tuple[str, dict[str, Any]]]:
    with database.transaction() as conn:
        return [(row.kind, row.detail) for row in conn.execute(
            sa.select(invoice_timeline.c.kind, invoice_timeline.c.detail)
            .join(invoices, invoices.c.id == invoice_timeline.c.invoice_id)
            .where(invoices.c.external_id == external_id).order_by(invoice_timeline.c.id))]


def test_a_credit_note_is_deducted_and_its_use_recorded(debtor: Debtor, database: Any, tenant: Tenant,
                                                        credit_note: None, mollie: Any) -> None:  # noqa: F811
    history = debtor.get("/portal").text
    assert "130,00\xa0€" in history, "the balance counts the credit note"
    assert "Invoices 150,00\xa0€, less credit notes 20,00\xa0€" in history
    assert tenant.client.get("/api/v1/invoices/CN").json()["amount_remaining"] == "20.00"

    page = pay_page(debtor, database, "A").text
    cn = invoice_id(database, "CN")
    assert f'name="credit" id="credit-{cn}" value="{cn}">' in page, "offered, not ticked"
    assert "Deduct credit note CN-1: −20,00\xa0€" in page
    assert f'name="invoice" value="{cn}"' not in page, "a credit note is never an amount to pay"

    preview = post(debtor, database, "/portal/pay/preview", "A", credit=("CN",), amount="", currency="EUR",
                   method="mollie:ideal")
    assert preview.status_code == 200, preview.text
    assert "Pay 80,00\xa0€" in preview.text and "Credit note deducted" in preview.text

    answer = post(debtor, database, "/portal/checkout", "A", credit=("CN",), amount="80.00", currency="EUR",
                  method="mollie:ideal")
    assert answer.status_code == 303, answer.text
    payment_id = answer.headers["location"].rsplit("/", 1)[1]
    assert mollie.payment(payment_id)["amount"] == {"currency": "EUR", "value": "80.00"}, "net of the credit"
    mollie.set_status(payment_id, "paid", send_webhook=False)
    assert TestClient(debtor.client.app).post("/webhooks/mollie/acme", data={"id": payment_id}).status_code == 200

    assert invoice_state(database)["A"] == ("paid", 10000)
    assert invoice_state(database)["CN"] == ("paid", 2000), "the credit note is used up"
    assert ("credit_note_applied", {"credit_notes": ["CN-1"], "amount": "20.00", "minor": 2000}) in timeline(
        database, "A")
    assert ("credit_note_used", {"invoices": ["F-A"], "amount": "20.00", "minor": 2000}) in timeline(database, "CN")
    announced = {e["type"]: e["data"] for e in events(tenant)}
    assert announced["invoice.paid"]["amount"] == "80.00" and announced["invoice.paid"]["credit"] == "20.00"
    assert announced["credit_note.applied"]["invoices"] == ["A"]
    assert announced["credit_note.applied"]["amount"] == "20.00"
    assert announced["credit_note.applied"]["amount_remaining"] == "0.00"
    assert tenant.client.get("/api/v1/invoices/CN").json()["amount_remaining"] == "0.00"
    assert "Credit note CN-1 deducted: 20,00\xa0€" in debtor.get(f"/portal/invoices/{invoice_id(database, 'A')}").text
    assert "Deducted from F-A: 20,00\xa0€" in debtor.get(f"/portal/invoices/{cn}").text
    assert "Deduct credit note" not in pay_page(debtor, database, "B").text, "a used credit note is not offered"


def test_a_credit_note_alone_pays_nothing(debtor: Debtor, database: Any, credit_note: None) -> None:
    alone = pay_page(debtor, database, "CN")
    assert alone.status_code == 422 and "Please select at least one invoice that is still to pay." in alone.text
    refused = post(debtor, database, "/portal/checkout", "CN", method="mollie:ideal")
    assert refused.status_code == 422
    assert count(database, checkouts) == 0


def test_a_credit_note_that_covers_the_selection_is_refused(debtor: Debtor, database: Any, tenant: Tenant) -> None:
    tenant.put_invoice("BIG", number="CN-2", kind="credit_note", total="60.00", lines=[], due_date=None)
    covered = pay_page(debtor, database, "B", credit=("BIG",))
    assert covered.status_code == 422 and "cover these invoices" in covered.text
    assert count(database, checkouts) == 0


def test_partial_amount_with_a_credit_note(debtor: Debtor, database: Any, credit_note: None, mollie: Any,  # noqa: F811
                                           tenant: Tenant) -> None:
    # B is due later but was issued first; A is due first: the credit and then 50.00 go to A.
    answer = post(debtor, database, "/portal/checkout", "A", "B", credit=("CN",), amount="50.00", currency="EUR",
                  method="mollie:ideal")
    assert answer.status_code == 303, answer.text
    payment_id = answer.headers["location"].rsplit("/", 1)[1]
    assert mollie.payment(payment_id)["amount"]["value"] == "50.00"
    mollie.set_status(payment_id, "paid", send_webhook=False)
    TestClient(debtor.client.app).post("/webhooks/mollie/acme", data={"id": payment_id})
    assert invoice_state(database) == {"A": ("open", 7000), "B": ("open", 0), "CN": ("paid", 2000)}
    partial = [e for e in events(tenant) if e["type"] == "invoice.partially_paid"]
    assert [(e["data"]["invoice"], e["data"]["amount_paid"], e["data"]["amount_remaining"]) for e in partial] == [
        ("A", "70.00", "30.00")]


def test_a_credit_note_ticked_in_the_history_is_deducted(debtor: Debtor, database: Any, credit_note: None) -> None:
    # The history's checkboxes name every document `invoice`: a credit note ticked there arrives as one.
    page = pay_page(debtor, database, "A", "CN")
    assert page.status_code == 200
    cn = invoice_id(database, "CN")
    assert f'name="credit" id="credit-{cn}" value="{cn}" checked>' in page.text
    assert "Credit notes deducted" in page.text and "80,00\xa0€" in page.text
    rows = re.findall(r'<tr><th scope="row" data-label="Number">([^<]+)</th>', page.text)
    assert rows == ["F-A"], "listed as a deduction, never as a row to pay"
