"""Paying from the portal with the real Mollie and Stripe SDKs against the local emulators, and the webhooks
that mark invoices paid (delivered in-process here; e2e/ delivers them over real HTTP)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY
import sqlalchemy as sa
from markupsafe import escape
from starlette.testclient import TestClient

from portal.app import create_app
from portal.db.invoices import invoices
from portal.db.payments import checkouts, outbox_events, payments, provider_events
from portal.i18n import translations
from tests.conftest import Tenant
from tests.support.providers import STRIPE_SECRET, mollie, stripe_emulator, with_providers  # noqa: F401
from tests.web.test_portal import Debtor, invoice_id, link_for


@pytest.fixture
def app(settings: Any, database: Any, clock: Any, mollie: Any, stripe_emulator: Any) -> Any:  # noqa: F811
    return create_app(with_providers(settings, mollie, stripe_emulator), clock=clock, database=database)


@pytest.fixture
def debtor(app: Any, tenant: Tenant) -> Debtor:
    assert tenant.put_invoice("A", number="F-A", total="100.00", lines=[], issue_date="2026-09-01",
                              due_date="2026-10-01").status_code == 201
    tenant.put_invoice("B", number="F-B", total="50.00", lines=[], due_date="2026-12-31")
    visitor = Debtor(app)
    visitor.open(link_for(tenant))
    return visitor


def checkout(debtor: Debtor, database: Any, method: str, *external_ids: str) -> Any:
    ids = [str(invoice_id(database, e)) for e in external_ids]
    page = debtor.get("/portal/pay", params=[("invoice", i) for i in ids])
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    return debtor.client.post("/portal/checkout", data={"csrf": csrf, "method": method, "invoice": ids})


def invoice_state(database: Any) -> dict[str, tuple[str, int]]:
    with database.transaction() as conn:
        return {r.external_id: (r.status, r.paid_minor) for r in conn.execute(sa.select(invoices))}


def count(database: Any, table: Any) -> int:
    with database.transaction() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(table)))


def test_history_preselects_overdue_and_offers_to_pay(debtor: Debtor, database: Any) -> None:
    page = debtor.get("/portal").text
    late, later = invoice_id(database, "A"), invoice_id(database, "B")
    assert re.search(rf'value="{late}" id="select-{late}"[^>]*checked', page)
    assert not re.search(rf'value="{later}" id="select-{later}"[^>]*checked', page)
    assert "Pay selected invoices" in page or "/portal/pay" in page
    pay = debtor.get("/portal/pay", params=[("invoice", str(late)), ("invoice", str(later))]).text
    assert "150,00" in pay and 'value="mollie:ideal"' in pay and 'value="stripe:card"' in pay


def test_pay_two_invoices_with_mollie_ideal(debtor: Debtor, database: Any, mollie: Any, tenant: Tenant) -> None:  # noqa: F811
    answer = checkout(debtor, database, "mollie:ideal", "A", "B")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(mollie.base_url + "/checkout/tr_")
    payment_id = answer.headers["location"].rsplit("/", 1)[1]
    sent = mollie.payment(payment_id)
    assert sent["amount"] == {"currency": "EUR", "value": "150.00"}
    assert sent["webhookUrl"] == "http://testserver/webhooks/mollie/acme"
    assert sent["method"] == "ideal"

    again = checkout(debtor, database, "mollie:ideal", "A", "B")
    assert again.headers["location"] == answer.headers["location"], "a double click makes one payment"

    return_url = sent["redirectUrl"].removeprefix("http://testserver")
    waiting = debtor.get(return_url).text
    assert '<meta http-equiv="refresh"' in waiting and 'class="confirmation"' not in waiting
    mollie.set_status(payment_id, "paid", send_webhook=False)
    hook = TestClient(debtor.client.app).post("/webhooks/mollie/acme", data={"id": payment_id})
    assert hook.status_code == 200
    assert invoice_state(database) == {"A": ("paid", 10000), "B": ("paid", 5000)}
    page = debtor.get(return_url)
    assert 'class="confirmation"' in page.text and '<meta http-equiv="refresh"' not in page.text
    events = tenant.client.get("/api/v1/events").json()["items"]
    assert [e["type"] for e in events] == ["invoice.paid", "invoice.paid"]


def test_return_before_webhook_asks_mollie(debtor: Debtor, database: Any, mollie: Any,  # noqa: F811
                                          clock: Any) -> None:
    answer = checkout(debtor, database, "mollie:bancontact", "A")
    payment_id = answer.headers["location"].rsplit("/", 1)[1]
    return_url = mollie.payment(payment_id)["redirectUrl"].removeprefix("http://testserver")
    waiting = debtor.get(return_url).text
    assert '<noscript><meta http-equiv="refresh" content="5;url=' in waiting, "reloads itself without JavaScript"
    assert 'src="/static/checkout-status.js"' in waiting and f"{return_url}/status" in waiting
    assert debtor.get(f"{return_url}/status").json() == {"status": "open", "waiting": True}
    mollie.set_status(payment_id, "paid", send_webhook=False)
    assert debtor.get(f"{return_url}/status").json()["waiting"] is True, "the provider is asked at most every 5 s"
    clock.advance(seconds=6)
    assert debtor.get(f"{return_url}/status").json() == {"status": "paid", "waiting": False}
    assert 'class="confirmation"' in debtor.get(return_url).text
    TestClient(debtor.client.app).post("/webhooks/mollie/acme", data={"id": payment_id})
    assert count(database, payments) == 1
    assert invoice_state(database)["A"] == ("paid", 10000)


@pytest.mark.parametrize("status", ["failed", "canceled", "expired"])
def test_unsuccessful_mollie_payments_leave_invoices_open(debtor: Debtor, database: Any, mollie: Any,  # noqa: F811
                                                          status: str) -> None:
    answer = checkout(debtor, database, "mollie:ideal", "A")
    payment_id = answer.headers["location"].rsplit("/", 1)[1]
    mollie.set_status(payment_id, status, send_webhook=False)
    TestClient(debtor.client.app).post("/webhooks/mollie/acme", data={"id": payment_id})
    assert invoice_state(database)["A"] == ("open", 0)
    page = debtor.get(mollie.payment(payment_id)["redirectUrl"].removeprefix("http://testserver")).text
    assert 'role="alert"' in page or 'class="notice" role="status"' in page
    assert 'class="confirmation"' not in page and "/portal/pay?invoice=" in page
    retry = checkout(debtor, database, "mollie:ideal", "A")
    assert retry.headers["location"] != answer.headers["location"], "a new attempt after a failure"


def test_mollie_webhook_trusts_nothing_in_the_body(debtor: Debtor, database: Any, mollie: Any) -> None:  # noqa: F811
    hooks = TestClient(debtor.client.app)
    assert hooks.post("/webhooks/mollie/acme", data={"id": "tr_unknown123"}).status_code == 200
    assert hooks.post("/webhooks/mollie/acme", data={"id": "not-an-id"}).status_code == 400
    assert hooks.post("/webhooks/mollie/acme", data={}).status_code == 400
    assert hooks.post("/webhooks/mollie/acme", content=b"id=" + b"x" * 5000,
                      headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413
    assert hooks.post("/webhooks/mollie/nobody", data={"id": "tr_x"}).status_code == 404
    answer = checkout(debtor, database, "mollie:ideal", "A")
    payment_id = answer.headers["location"].rsplit("/", 1)[1]
    claims = hooks.post("/webhooks/mollie/acme", data={"id": payment_id, "status": "paid", "amount": "100.00"})
    assert claims.status_code == 200
    assert invoice_state(database)["A"] == ("open", 0), "the payment is still open at Mollie"


def test_mollie_unreachable_gets_503_so_mollie_retries(app: Any, database: Any, tenant: Tenant, settings: Any,
                                                       clock: Any, mollie: Any, stripe_emulator: Any) -> None:  # noqa: F811
    from dataclasses import replace

    from quittance_emulators.server import free_port

    broken = replace(with_providers(settings, mollie, stripe_emulator),
                     mollie_api_url=f"http://127.0.0.1:{free_port()}")
    down = create_app(broken, clock=clock, database=database)
    started = time.monotonic()
    assert TestClient(down).post("/webhooks/mollie/acme", data={"id": "tr_abc"}).status_code == 503
    assert time.monotonic() - started < 6


def webhooks_counted(outcome: str, provider: str = "stripe") -> float:
    return REGISTRY.get_sample_value("quittance_webhooks_total", {"provider": provider, "outcome": outcome}) or 0.0


def test_pay_with_a_stripe_card_and_signed_webhooks(debtor: Debtor, database: Any, stripe_emulator: Any,  # noqa: F811
                                                    tenant: Tenant) -> None:
    answer = checkout(debtor, database, "stripe:card", "A", "B")
    assert answer.status_code == 303
    session_id = answer.headers["location"].rsplit("/", 1)[1]
    session = stripe_emulator.session(session_id)
    assert session["amount_total"] == 15000 and session["currency"] == "eur"
    assert session["client_reference_id"].startswith("co_")
    emitted = len(stripe_emulator.events)
    stripe_emulator.complete(session_id, "success")
    completed = [e for e in stripe_emulator.events[emitted:] if e["type"] == "checkout.session.completed"][0]
    hooks = TestClient(debtor.client.app)
    counted = {outcome: webhooks_counted(outcome) for outcome in ("applied", "duplicate_or_ignored")}
    for _ in range(3):
        body, headers = stripe_emulator.build_webhook(completed)
        assert hooks.post("/webhooks/stripe/acme", content=body, headers=headers).status_code == 200
    assert invoice_state(database) == {"A": ("paid", 10000), "B": ("paid", 5000)}
    assert count(database, payments) == 1 and count(database, provider_events) == 1
    assert webhooks_counted("applied") - counted["applied"] == 1, "quittance_webhooks_total, for the operators"
    assert webhooks_counted("duplicate_or_ignored") - counted["duplicate_or_ignored"] == 2

    duplicate = dict(completed, id="evt_duplicate_of_completed")
    body, headers = stripe_emulator.build_webhook(duplicate)
    assert hooks.post("/webhooks/stripe/acme", content=body, headers=headers).status_code == 200
    assert count(database, payments) == 1, "a second event for the same change has no second effect"

    intent = stripe_emulator.session(session_id)["payment_intent"]
    before = len(stripe_emulator.events)
    stripe_emulator.refund(intent if isinstance(intent, str) else intent["id"], 5000)
    refunded = [e for e in stripe_emulator.events[before:] if e["type"] == "charge.refunded"][0]
    body, headers = stripe_emulator.build_webhook(refunded)
    assert hooks.post("/webhooks/stripe/acme", content=body, headers=headers).status_code == 200
    assert invoice_state(database) == {"A": ("paid", 10000), "B": ("open", 0)}
    types = [e["type"] for e in tenant.client.get("/api/v1/events").json()["items"]]
    assert types == ["invoice.paid", "invoice.paid", "payment.refunded"]


def test_stripe_signature_gauntlet(debtor: Debtor, database: Any, stripe_emulator: Any) -> None:  # noqa: F811
    answer = checkout(debtor, database, "stripe:card", "A")
    session_id = answer.headers["location"].rsplit("/", 1)[1]
    emitted = len(stripe_emulator.events)
    stripe_emulator.complete(session_id, "success")
    event = [e for e in stripe_emulator.events[emitted:] if e["type"] == "checkout.session.completed"][0]
    hooks = TestClient(debtor.client.app)
    body, headers = stripe_emulator.build_webhook(event)
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 1
    reserialised = __import__("json").dumps(__import__("json").loads(body)).encode()
    _, wrong = stripe_emulator.build_webhook(event, secret="whsec_wrong")
    _, stale = stripe_emulator.build_webhook(event, timestamp=int(time.time()) - 301)
    attempts = [(bytes(flipped), headers), (body, wrong), (body, {"content-type": "application/json"}),
                (body, stale), (reserialised, headers),
                (body, {**headers, "Stripe-Signature": headers["Stripe-Signature"].replace("v1=", "v0=")})]
    refused = webhooks_counted("bad_signature")
    for attempt_body, attempt_headers in attempts:
        assert hooks.post("/webhooks/stripe/acme", content=attempt_body, headers=attempt_headers).status_code == 400
    assert webhooks_counted("bad_signature") - refused == len(attempts)
    assert count(database, payments) == 0 and count(database, provider_events) == 0
    assert invoice_state(database)["A"] == ("open", 0)


def test_stripe_secret_rotation(debtor: Debtor, database: Any, stripe_emulator: Any, app: Any, settings: Any,  # noqa: F811
                                clock: Any, mollie: Any) -> None:  # noqa: F811
    from dataclasses import replace

    rotated = replace(with_providers(settings, mollie, stripe_emulator),
                      stripe_webhook_secrets=("whsec_new_one", STRIPE_SECRET))
    rotating_app = create_app(rotated, clock=clock, database=database)
    answer = checkout(debtor, database, "stripe:card", "A")
    session_id = answer.headers["location"].rsplit("/", 1)[1]
    emitted = len(stripe_emulator.events)
    stripe_emulator.complete(session_id, "success")
    event = [e for e in stripe_emulator.events[emitted:] if e["type"] == "checkout.session.completed"][0]
    body, headers = stripe_emulator.build_webhook(event)  # signed with the previous secret
    assert TestClient(rotating_app).post("/webhooks/stripe/acme", content=body, headers=headers).status_code == 200
    assert invoice_state(database)["A"] == ("paid", 10000)


def test_different_currencies_cannot_be_paid_together(debtor: Debtor, database: Any, tenant: Tenant) -> None:
    tenant.put_invoice("USD", number="F-USD", total="10.00", currency="USD", lines=[])
    ids = [("invoice", str(invoice_id(database, e))) for e in ("A", "USD")]
    page = debtor.get("/portal/pay", params=ids)
    assert page.status_code == 422
    message = translations("fr").gettext("Invoices in different currencies cannot be paid together. Please select "
                                         "invoices in one currency.")
    assert str(escape(message)) in page.text, "said in the debtor's language"


def test_without_javascript_the_page_stops_reloading_after_a_while(debtor: Debtor, database: Any,
                                                                     mollie: Any) -> None:  # noqa: F811
    answer = checkout(debtor, database, "mollie:banktransfer", "A")
    return_url = mollie.payment(answer.headers["location"].rsplit("/", 1)[1])["redirectUrl"].removeprefix(
        "http://testserver")
    assert 'http-equiv="refresh"' in debtor.get(return_url, params={"check": "35"}).text
    last = debtor.get(return_url, params={"check": "36"}).text
    assert 'http-equiv="refresh"' not in last and f'href="{return_url}"' in last


def checkout_row(database: Any) -> Any:
    with database.transaction() as conn:
        return conn.execute(sa.select(checkouts)).one()


def test_back_through_the_providers_cancel_link(debtor: Debtor, database: Any, stripe_emulator: Any,  # noqa: F811
                                                clock: Any) -> None:
    answer = checkout(debtor, database, "stripe:card", "A")
    session_id = answer.headers["location"].rsplit("/", 1)[1]
    cancel_url = stripe_emulator.session(session_id)["cancel_url"].removeprefix("http://testserver")
    before = checkout_row(database)
    page = debtor.get(cancel_url)
    clock.advance(seconds=6)
    assert debtor.get(cancel_url).status_code == 200, "asked again, and the provider asked again"
    assert checkout_row(database) == before, "a GET changes nothing: mail scanners and prefetchers click too"
    assert stripe_emulator.session(session_id)["status"] == "open"
    assert 'http-equiv="refresh"' not in page.text and "/portal/pay?invoice=" in page.text
    form = re.search(r'<form method="post" action="(/portal/checkouts/co_[^"]+/cancel)">', page.text)
    assert form, "the page offers to cancel"

    assert debtor.client.post(form.group(1), data={"csrf": "forged"}).status_code == 403, "it needs the CSRF token"
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    cancelled = debtor.client.post(form.group(1), data={"csrf": csrf})
    assert cancelled.status_code == 303 and cancelled.headers["location"] == cancel_url.split("?")[0]
    assert checkout_row(database).status == "cancelled"
    assert stripe_emulator.session(session_id)["status"] == "expired", "stopped at the provider too"
    shown = debtor.get(cancelled.headers["location"]).text
    assert 'http-equiv="refresh"' not in shown and "/portal/pay?invoice=" in shown and "/cancel" not in shown
    assert invoice_state(database)["A"] == ("open", 0)


def test_a_checkout_is_only_seen_through_a_link_that_sees_its_invoices(debtor: Debtor, database: Any, app: Any,
                                                                       tenant: Tenant, mollie: Any) -> None:  # noqa: F811
    answer = checkout(debtor, database, "mollie:ideal", "A", "B")
    return_url = mollie.payment(answer.headers["location"].rsplit("/", 1)[1])["redirectUrl"].removeprefix(
        "http://testserver")
    only_b = Debtor(app)
    only_b.open(link_for(tenant, invoices=["B"]))
    for path in (return_url, f"{return_url}/status"):
        assert only_b.get(path).status_code == 404, path
    csrf = only_b.csrf()
    assert only_b.client.post(f"{return_url}/cancel", data={"csrf": csrf}).status_code == 404
    assert checkout_row(database).status == "open"
    assert debtor.get(return_url).status_code == 200


def test_a_new_checkout_cancels_the_open_one(debtor: Debtor, database: Any, mollie: Any) -> None:  # noqa: F811
    first = checkout(debtor, database, "mollie:ideal", "A").headers["location"].rsplit("/", 1)[1]
    checkout(debtor, database, "mollie:bancontact", "A")
    deadline = time.monotonic() + 5
    while mollie.payment(first)["status"] != "canceled" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mollie.payment(first)["status"] == "canceled"


def test_checkout_needs_csrf_and_a_session(debtor: Debtor, database: Any, app: Any) -> None:
    target = str(invoice_id(database, "A"))
    assert debtor.client.post("/portal/checkout", data={"invoice": target, "method": "mollie:ideal"}).status_code == 403
    assert TestClient(app).post("/portal/checkout", data={"invoice": target}).status_code == 401
    assert count(database, outbox_events) == 0


def test_checkout_starts_are_limited_per_link_across_processes(debtor: Debtor, database: Any, app: Any,
                                                             clock: Any, tenant: Tenant) -> None:
    """Each start may create a payment at the provider: a link may start five a minute, counted in the
    database, so a second server process (another app on the same database) counts against the same
    window. The sixth is refused with a 429 page and reaches no provider; the window expires by the clock."""
    from portal.domain.rate_limits import CHECKOUT_STARTS

    services = app.state.services
    second = Debtor(create_app(services.settings, clock=clock, database=database))
    second.client.cookies.update(debtor.client.cookies)  # the same browser, served by the other process
    methods = ["mollie:ideal", "mollie:bancontact", "stripe:card", "mollie:ideal", "mollie:bancontact"]
    assert CHECKOUT_STARTS.hits == len(methods)
    for i, method in enumerate(methods):
        answer = checkout(debtor if i % 2 == 0 else second, database, method, "A" if i < 3 else "B")
        assert answer.status_code == 303, answer.text
    started = count(database, checkouts)

    refused = checkout(second, database, "stripe:card", "B")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 120
    assert "Veuillez réessayer dans" in refused.text and "F-B" in refused.text, "the selection is kept"
    assert count(database, checkouts) == started, "no checkout recorded, so no provider was called"
    assert checkout(debtor, database, "mollie:ideal", "A").status_code == 429

    other_link = Debtor(app)
    other_link.open(link_for(tenant))
    assert checkout(other_link, database, "mollie:ideal", "A").status_code == 303, "counted per link"

    clock.advance(seconds=int(refused.headers["retry-after"]) + 60)
    assert checkout(debtor, database, "stripe:card", "A").status_code == 303, "the window expires"


def test_each_refusal_is_said_by_its_code(debtor: Debtor, database: Any, tenant: Tenant) -> None:
    """The pay page chooses its words from the refusal's type and code, whatever the message says."""
    french = translations("fr")
    unknown_method = checkout(debtor, database, "paypal:teleport", "A")
    assert unknown_method.status_code == 422
    assert str(escape(french.gettext("Please choose how you want to pay."))) in unknown_method.text
    tenant.put_invoice("PAID", number="F-PAID", status="paid", lines=[])
    nothing = debtor.client.post("/portal/checkout", data={
        "csrf": debtor.csrf(), "method": "mollie:ideal", "invoice": str(invoice_id(database, "PAID"))})
    assert nothing.status_code == 422
    assert str(escape(french.gettext("Please select at least one invoice that is still to pay."))) in nothing.text
    assert count(database, checkouts) == 0
