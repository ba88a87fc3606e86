"""Paying from the portal end to end, in Chromium: the history, the pay page, the Mollie and Stripe emulators'
hosted pages (the server's real SDKs call them over loopback), the return page, and the webhooks the emulators
deliver to the server over real HTTP. Every test has a customer of its own, made through the API, so the
payments here change nothing that test_portal.py counts on.

The payment pages are checked with axe-core; screenshots of the pay page, the emulators' pages and the return
pages go to test-artifacts/screenshots/ (payment-*.png).
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect

from e2e.conftest import ORG_SLUG, NewContext, PortalServer, Providers, axe_problems, open_portal, screenshot

T = TypeVar("T")
# The longest any test waits for something to happen by itself (a webhook, the return page's refresh).
WAIT_S = 10.0
_TAGS = itertools.count(1)


# --- a debtor of our own ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Debtor:
    customer: str  # external id
    overdue: str  # invoice number: due 10 days ago, so preselected on the history page
    upcoming: str  # invoice number: due in 20 days, not preselected
    external_ids: dict[str, str]  # invoice number -> external id (events name invoices by it)


OVERDUE_TOTAL, UPCOMING_TOTAL, BOTH_TOTAL = "€121.00", "€60.50", "€181.50"


@pytest.fixture
def debtor(portal: PortalServer) -> Debtor:
    tag = f"P{next(_TAGS):02d}{secrets.token_hex(2).upper()}"
    customer = f"PAY-{tag}"
    response = portal.api.put(f"/api/v1/customers/{customer}", json={
        "name": "Bakkerij Janssens", "email": f"{tag.lower()}@janssens.example", "locale": "en-IE"})
    assert response.status_code in (200, 201), response.text
    numbers: dict[str, str] = {}
    for suffix, issued, due, net, total in (("1", -40, -10, "100.00", "121.00"), ("2", -5, 20, "50.00", "60.50")):
        number, external_id = f"{tag}-{suffix}", f"INV-{tag}-{suffix}"
        response = portal.api.put(f"/api/v1/invoices/{external_id}", json={
            "customer": customer, "number": number, "kind": "invoice", "status": "open", "currency": "EUR",
            "issue_date": portal.date(issued).isoformat(), "due_date": portal.date(due).isoformat(), "total": total,
            "lines": [{"description": "Flour and yeast", "quantity": "1", "unit_price": net, "vat_rate": "21",
                       "total": net}]})
        assert response.status_code == 201, response.text
        numbers[number] = external_id
    overdue, upcoming = numbers
    return Debtor(customer, overdue, upcoming, numbers)


# --- waiting, events, deliveries --------------------------------------------------------------------------

def eventually(check: Callable[[], T], what: str, timeout: float = WAIT_S) -> T:
    """The first truthy value of `check()`, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert value, f"still waiting after {timeout:.0f} s for {what}"
    return value


def paid_events(portal: PortalServer, debtor: Debtor) -> Counter[str]:
    """invoice.paid events of the machine API, counted by invoice number, for this debtor's invoices."""
    numbers = {external: number for number, external in debtor.external_ids.items()}
    found: Counter[str] = Counter()
    after = 0
    while True:
        response = portal.api.get("/api/v1/events", params={"after": after, "limit": 1000})
        assert response.status_code == 200, response.text
        page = response.json()
        for event in page["items"]:
            if event["type"] == "invoice.paid" and event["invoice"] in numbers:
                found[numbers[event["invoice"]]] += 1
        if not page["items"]:
            return found
        after = page["last_id"]


def mollie_deliveries(providers: Providers, payment_id: str) -> list[dict[str, Any]]:
    return [d for d in list(providers.mollie.deliveries) if d["payment_id"] == payment_id]


def stripe_deliveries(providers: Providers, object_id: str, kind: str) -> list[dict[str, Any]]:
    """Deliveries of the `kind` events about one object (a Checkout Session, a PaymentIntent)."""
    state = providers.stripe.state()
    events = {e["id"] for e in state["events"] if e["type"] == kind and e["data"]["object"].get("id") == object_id}
    return [d for d in state["deliveries"] if d["event_id"] in events]


def webhook_answered(portal: PortalServer, deliveries: Callable[[], list[dict[str, Any]]], what: str) -> None:
    """Wait until the server acknowledged the webhook; no delivery to it may have failed."""
    delivered = eventually(lambda: [d for d in deliveries() if d["status"] is not None or d["error"]], what)
    for delivery in delivered:
        assert delivery["url"].startswith(f"{portal.base_url}/webhooks/"), delivery
        assert delivery["status"] == 200 and delivery["error"] is None, f"the server refused a webhook: {delivery}"


@contextmanager
def webhooks_held(providers: Providers) -> Iterator[None]:
    """Both emulators keep their webhooks until the block ends; then they send them."""
    providers.mollie.hold_webhooks(True)
    providers.stripe.hold_events(True)
    try:
        yield
    finally:
        providers.mollie.hold_webhooks(False)
        providers.stripe.hold_events(False)


def expect_one_payment(portal: PortalServer, debtor: Debtor, *numbers: str) -> None:
    """Exactly one invoice.paid per paid invoice, and none for the others."""
    assert paid_events(portal, debtor) == Counter({number: 1 for number in numbers})


# --- the debtor's steps -----------------------------------------------------------------------------------

def status_of(page: Page) -> Any:
    return page.locator("main [role=status], main [role=alert]").first


def row_of(page: Page, number: str) -> Any:
    return page.locator("table.invoices tbody tr").filter(has=page.get_by_role("link", name=number))


def outstanding(page: Page) -> Any:
    return page.get_by_role("region", name="Summary").locator(".card").nth(0)


def open_history(context: BrowserContext, portal: PortalServer, debtor: Debtor) -> Page:
    page = open_portal(context, portal, debtor.customer)
    expect(outstanding(page)).to_contain_text(BOTH_TOTAL)
    return page


def to_pay_page(page: Page, debtor: Debtor, *also: str) -> None:
    """From the history: the overdue invoice is preselected; add `also`, then "Pay selected invoices"."""
    expect(page.get_by_label(f"Select invoice {debtor.overdue}")).to_be_checked()
    expect(page.get_by_label(f"Select invoice {debtor.upcoming}")).not_to_be_checked()
    for number in also:
        page.get_by_label(f"Select invoice {number}").check()
    page.get_by_role("button", name="Pay selected invoices").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Pay your invoices")
    shown = [text.strip() for text in page.locator("table.invoices tbody th").all_inner_texts()]
    assert shown == [debtor.overdue, *also]


def confirm(page: Page, method: str, total: str) -> None:
    """Choose the way to pay (its label on the pay page) and press "Pay <total>"."""
    page.get_by_label(method, exact=True).check()
    page.get_by_role("button", name=f"Pay {total}").click()


def on_mollie(page: Page, providers: Providers) -> str:
    """On the Mollie emulator's hosted page; returns the payment id."""
    expect(page).to_have_url(re.compile(rf"^{re.escape(providers.mollie.base_url)}/checkout/tr_\w+$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Test payment")
    return page.url.rsplit("/", 1)[1]


def on_stripe(page: Page, providers: Providers, total: str) -> str:
    """On the Stripe emulator's hosted page; returns the Checkout Session id."""
    expect(page).to_have_url(re.compile(rf"^{re.escape(providers.stripe.base_url)}/c/pay/cs_test_\w+$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Pay {total.removeprefix('€')} EUR")
    return page.url.rsplit("/", 1)[1]


def mollie_outcome(page: Page, button: str) -> None:
    page.get_by_role("button", name=button, exact=True).click()


def stripe_outcome(page: Page, button: str) -> None:
    page.get_by_role("button", name=button).click()


STRIPE_SUCCESS = "Pay with a test card that succeeds"
STRIPE_DECLINE = "Pay with a test card that is declined"
STRIPE_CANCEL = "Cancel and go back"


def on_return_page(page: Page, portal: PortalServer) -> None:
    expect(page).to_have_url(re.compile(rf"^{re.escape(portal.base_url)}/portal/checkouts/co_[\w-]+(\?.*)?$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Your payment")


def expect_thanks(page: Page, portal: PortalServer, total: str) -> None:
    on_return_page(page, portal)
    expect(status_of(page)).to_have_text(f"Thank you! We received your payment of {total}.")
    expect(page.locator('meta[http-equiv="refresh"]')).to_have_count(0)
    expect(page.get_by_role("link", name="Try again")).to_have_count(0)


def expect_paid_in_history(page: Page, portal: PortalServer, debtor: Debtor, paid: list[str], left: str) -> None:
    page.get_by_role("link", name="Back to your invoices").click()
    expect(page).to_have_url(f"{portal.base_url}/portal")
    for number in (debtor.overdue, debtor.upcoming):
        badge = row_of(page, number).locator(".badge")
        if number in paid:
            expect(badge).to_have_text("Paid")
            expect(row_of(page, number).locator("td").nth(4)).to_have_text("—")
        else:
            expect(badge).not_to_have_text("Paid")
    expect(outstanding(page)).to_contain_text(left)


def expect_nothing_paid(page: Page, portal: PortalServer, message: str) -> None:
    """The return page after a payment that did not happen: says so and offers to try again."""
    on_return_page(page, portal)
    expect(status_of(page)).to_have_text(message)
    expect(page.locator('meta[http-equiv="refresh"]')).to_have_count(0)
    expect(page.get_by_role("link", name="Try again")).to_be_visible()
    expect(page.get_by_role("link", name="Back to your invoices")).to_be_visible()


def try_again(page: Page, debtor: Debtor) -> None:
    page.get_by_role("link", name="Try again").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Pay your invoices")
    assert [t.strip() for t in page.locator("table.invoices tbody th").all_inner_texts()] == [debtor.overdue]


# --- paying -----------------------------------------------------------------------------------------------

def test_mollie_ideal_pays_the_overdue_invoice(new_context: NewContext, portal: PortalServer, providers: Providers,
                                               debtor: Debtor) -> None:
    page = open_history(new_context(), portal, debtor)
    to_pay_page(page, debtor)
    expect(page.locator("table.invoices tfoot")).to_contain_text(OVERDUE_TOTAL)
    # The ways to pay this organization offers; the first is chosen.
    labels = page.locator(".pay-form .choice label").all_inner_texts()
    assert labels == ["iDEAL", "Bancontact", "Bank transfer", "PayPal", "Card"]
    expect(page.get_by_label("iDEAL", exact=True)).to_be_checked()
    screenshot(page, "payment-pay-page")
    confirm(page, "iDEAL", OVERDUE_TOTAL)

    payment_id = on_mollie(page, providers)
    sent = providers.mollie.payment(payment_id)
    assert sent["amount"] == {"currency": "EUR", "value": "121.00"} and sent["method"] == "ideal"
    assert sent["webhookUrl"] == f"{portal.base_url}/webhooks/mollie/{ORG_SLUG}"
    expect(page.get_by_text("Payment method: iDEAL")).to_be_visible()
    screenshot(page, "payment-mollie-checkout")
    mollie_outcome(page, "Paid")

    expect_thanks(page, portal, OVERDUE_TOTAL)
    expect(page.locator("table.invoices tbody")).to_contain_text(debtor.overdue)
    screenshot(page, "payment-return-paid")
    webhook_answered(portal, lambda: mollie_deliveries(providers, payment_id), "Mollie's webhook")
    expect_paid_in_history(page, portal, debtor, [debtor.overdue], UPCOMING_TOTAL)
    expect_one_payment(portal, debtor, debtor.overdue)


def test_stripe_card_pays_the_overdue_invoice(new_context: NewContext, portal: PortalServer, providers: Providers,
                                              debtor: Debtor) -> None:
    page = open_history(new_context(), portal, debtor)
    to_pay_page(page, debtor)
    confirm(page, "Card", OVERDUE_TOTAL)

    session_id = on_stripe(page, providers, OVERDUE_TOTAL)
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_contain_text(debtor.overdue)
    screenshot(page, "payment-stripe-checkout")
    stripe_outcome(page, STRIPE_SUCCESS)

    expect_thanks(page, portal, OVERDUE_TOTAL)
    assert f"session_id={session_id}" in page.url
    webhook_answered(portal, lambda: stripe_deliveries(providers, session_id, "checkout.session.completed"),
                     "Stripe's checkout.session.completed")
    expect_paid_in_history(page, portal, debtor, [debtor.overdue], UPCOMING_TOTAL)
    expect_one_payment(portal, debtor, debtor.overdue)


@pytest.mark.parametrize("method", ["Bancontact", "Card"])
def test_two_invoices_in_one_checkout(method: str, new_context: NewContext, portal: PortalServer,
                                      providers: Providers, debtor: Debtor) -> None:
    page = open_history(new_context(), portal, debtor)
    to_pay_page(page, debtor, debtor.upcoming)
    expect(page.locator("table.invoices tfoot")).to_contain_text(BOTH_TOTAL)
    confirm(page, method, BOTH_TOTAL)

    if method == "Card":
        session_id = on_stripe(page, providers, BOTH_TOTAL)
        expect(page.locator("tbody tr")).to_have_count(2)  # one line per invoice
        screenshot(page, "payment-stripe-checkout-two-invoices")
        stripe_outcome(page, STRIPE_SUCCESS)
        deliveries = lambda: stripe_deliveries(providers, session_id, "checkout.session.completed")  # noqa: E731
    else:
        payment_id = on_mollie(page, providers)
        assert providers.mollie.payment(payment_id)["amount"]["value"] == "181.50"
        mollie_outcome(page, "Paid")
        deliveries = lambda: mollie_deliveries(providers, payment_id)  # noqa: E731

    expect_thanks(page, portal, BOTH_TOTAL)
    expect(page.locator("table.invoices tbody tr")).to_have_count(2)
    webhook_answered(portal, deliveries, "the webhook")
    expect_paid_in_history(page, portal, debtor, [debtor.overdue, debtor.upcoming], "€0.00")
    expect_one_payment(portal, debtor, debtor.overdue, debtor.upcoming)


def test_pay_without_javascript(new_context: NewContext, portal: PortalServer, providers: Providers,
                                debtor: Debtor) -> None:
    page = open_history(new_context(java_script_enabled=False), portal, debtor)
    to_pay_page(page, debtor)
    confirm(page, "iDEAL", OVERDUE_TOTAL)
    payment_id = on_mollie(page, providers)
    mollie_outcome(page, "Paid")
    expect_thanks(page, portal, OVERDUE_TOTAL)
    webhook_answered(portal, lambda: mollie_deliveries(providers, payment_id), "Mollie's webhook")
    expect_paid_in_history(page, portal, debtor, [debtor.overdue], UPCOMING_TOTAL)
    expect_one_payment(portal, debtor, debtor.overdue)


# --- payments that do not happen --------------------------------------------------------------------------

CANCELLED = "The payment was cancelled. Nothing was charged."
LEFT = "You left the payment page before paying. Nothing was charged."
FAILED = "The payment did not go through. Nothing was charged."


@pytest.mark.parametrize("provider", ["mollie", "stripe"])
def test_cancel_leaves_the_invoice_open(provider: str, new_context: NewContext, portal: PortalServer,
                                        providers: Providers, debtor: Debtor) -> None:
    page = open_history(new_context(), portal, debtor)
    to_pay_page(page, debtor)
    if provider == "mollie":
        confirm(page, "iDEAL", OVERDUE_TOTAL)
        payment_id = on_mollie(page, providers)
        mollie_outcome(page, "Canceled")
    else:
        confirm(page, "Card", OVERDUE_TOTAL)
        session_id = on_stripe(page, providers, OVERDUE_TOTAL)
        stripe_outcome(page, STRIPE_CANCEL)
        # Stripe keeps its Session open: coming back cancels nothing (a GET changes nothing); the page offers it.
        expect_nothing_paid(page, portal, LEFT)
        assert providers.stripe.session(session_id)["status"] == "open"
        page.get_by_role("button", name="Cancel this payment").click()

    expect_nothing_paid(page, portal, CANCELLED)
    screenshot(page, f"payment-return-cancelled-{provider}")
    if provider == "mollie":
        webhook_answered(portal, lambda: mollie_deliveries(providers, payment_id), "Mollie's webhook")
    else:
        # The debtor's cancel expired the Session, so it cannot be paid.
        assert providers.stripe.session(session_id)["status"] == "expired"
        webhook_answered(portal, lambda: stripe_deliveries(providers, session_id, "checkout.session.expired"),
                         "Stripe's checkout.session.expired")
    try_again(page, debtor)
    page.get_by_role("link", name="All invoices").click()
    expect(row_of(page, debtor.overdue).locator(".badge")).to_have_text("Overdue")
    expect(outstanding(page)).to_contain_text(BOTH_TOTAL)
    expect_one_payment(portal, debtor)


def test_mollie_failed_then_paid_on_the_second_try(new_context: NewContext, portal: PortalServer,
                                                   providers: Providers, debtor: Debtor) -> None:
    page = open_history(new_context(), portal, debtor)
    to_pay_page(page, debtor)
    confirm(page, "iDEAL", OVERDUE_TOTAL)
    failed_id = on_mollie(page, providers)
    mollie_outcome(page, "Failed")

    expect_nothing_paid(page, portal, FAILED)
    screenshot(page, "payment-return-failed")
    webhook_answered(portal, lambda: mollie_deliveries(providers, failed_id), "Mollie's webhook")
    try_again(page, debtor)
    confirm(page, "iDEAL", OVERDUE_TOTAL)
    payment_id = on_mollie(page, providers)
    assert payment_id != failed_id, "a new payment after a failed one"
    mollie_outcome(page, "Paid")
    expect_thanks(page, portal, OVERDUE_TOTAL)
    webhook_answered(portal, lambda: mollie_deliveries(providers, payment_id), "Mollie's webhook")
    expect_paid_in_history(page, portal, debtor, [debtor.overdue], UPCOMING_TOTAL)
    expect_one_payment(portal, debtor, debtor.overdue)


def test_stripe_decline_then_success_in_the_same_session(new_context: NewContext, portal: PortalServer,
                                                         providers: Providers, debtor: Debtor) -> None:
    page = open_history(new_context(), portal, debtor)
    to_pay_page(page, debtor)
    confirm(page, "Card", OVERDUE_TOTAL)
    session_id = on_stripe(page, providers, OVERDUE_TOTAL)
    stripe_outcome(page, STRIPE_DECLINE)

    # Declined: still on Stripe's page, told so, free to try another card.
    expect(page.get_by_role("alert")).to_contain_text("Your card was declined")
    assert on_stripe(page, providers, OVERDUE_TOTAL) == session_id
    screenshot(page, "payment-stripe-declined")
    intent_id = providers.stripe.session(session_id)["payment_intent"]
    webhook_answered(portal, lambda: stripe_deliveries(providers, intent_id, "payment_intent.payment_failed"),
                     "Stripe's payment_intent.payment_failed")
    assert paid_events(portal, debtor) == Counter()
    stripe_outcome(page, STRIPE_SUCCESS)

    expect_thanks(page, portal, OVERDUE_TOTAL)
    webhook_answered(portal, lambda: stripe_deliveries(providers, session_id, "checkout.session.completed"),
                     "Stripe's checkout.session.completed")
    expect_paid_in_history(page, portal, debtor, [debtor.overdue], UPCOMING_TOTAL)
    expect_one_payment(portal, debtor, debtor.overdue)


# --- pending, and webhooks before or after the debtor is back ---------------------------------------------

PROCESSING = ("Your payment is being processed. This page updates by itself; you can also close it, we will "
              "record the payment when it arrives.")


def test_mollie_pending_then_paid_updates_the_return_page(new_context: NewContext, portal: PortalServer,
                                                          providers: Providers, debtor: Debtor) -> None:
    # Without JavaScript: the return page refreshes itself with <meta http-equiv="refresh">.
    page = open_history(new_context(java_script_enabled=False), portal, debtor)
    to_pay_page(page, debtor)
    confirm(page, "iDEAL", OVERDUE_TOTAL)
    payment_id = on_mollie(page, providers)
    mollie_outcome(page, "Pending")
    expect(page.get_by_role("button", name="Complete payment")).to_be_visible()
    screenshot(page, "payment-mollie-pending")
    page.get_by_role("link", name="Return to the shop (payment still pending)").click()

    on_return_page(page, portal)
    expect(status_of(page)).to_have_text(PROCESSING)
    expect(page.locator('meta[http-equiv="refresh"]')).to_have_count(1)
    expect(page.get_by_role("link", name="Try again")).to_have_count(0)
    screenshot(page, "payment-return-processing")
    return_url = page.url.split("?")[0]
    reloads: list[str] = []
    page.on("response", lambda response: reloads.append(response.url)
            if response.url.split("?")[0] == return_url else None)
    assert paid_events(portal, debtor) == Counter()

    # Mollie finishes the payment later (the emulator's control endpoint, as its dashboard would).
    answer = httpx.post(f"{providers.mollie.base_url}/_control/payments/{payment_id}/status",
                        json={"status": "paid"}, timeout=5, trust_env=False)
    assert answer.status_code == 200, answer.text
    expect(status_of(page)).to_have_text(f"Thank you! We received your payment of {OVERDUE_TOTAL}.",
                                         timeout=WAIT_S * 1000)
    assert page.url.split("?")[0] == return_url and reloads, "the page reloaded by itself"
    expect(page.locator('meta[http-equiv="refresh"]')).to_have_count(0)
    webhook_answered(portal, lambda: mollie_deliveries(providers, payment_id), "Mollie's webhook")
    expect_paid_in_history(page, portal, debtor, [debtor.overdue], UPCOMING_TOTAL)
    expect_one_payment(portal, debtor, debtor.overdue)


def _redirect_after(page: Page, provider_origin: str, portal_url: str, ready: Callable[[], Any],
                    what: str) -> list[str]:
    """Let the provider's page answer the outcome POST, but pass its redirect back to the portal on to the
    browser only once `ready()`. (Routing the return page itself does not work: Chromium does not show a
    redirect's target to Playwright.) Returns a log: "held" per redirect held until ready, or why not."""
    log: list[str] = []

    def handle(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        response = route.fetch(max_redirects=0)
        if response.status == 303 and response.headers.get("location", "").startswith(portal_url):
            try:
                eventually(ready, what)
                log.append("held")
            except AssertionError as exc:
                log.append(str(exc))
        route.fulfill(response=response)

    page.route(f"{provider_origin}/**", handle)
    return log


@pytest.mark.parametrize("provider", ["mollie", "stripe"])
def test_webhook_before_the_debtor_is_back(provider: str, new_context: NewContext, portal: PortalServer,
                                           providers: Providers, debtor: Debtor) -> None:
    """The webhook has marked the invoice paid before the browser asks for the return page."""
    page = open_history(new_context(), portal, debtor)
    to_pay_page(page, debtor)
    if provider == "mollie":
        confirm(page, "iDEAL", OVERDUE_TOTAL)
        payment_id = on_mollie(page, providers)
        deliveries = lambda: mollie_deliveries(providers, payment_id)  # noqa: E731
        held = _redirect_after(page, providers.mollie.base_url, portal.base_url,
                               lambda: [d for d in deliveries() if d["status"] == 200], "Mollie's webhook")
        mollie_outcome(page, "Paid")
    else:
        confirm(page, "Card", OVERDUE_TOTAL)
        session_id = on_stripe(page, providers, OVERDUE_TOTAL)
        deliveries = lambda: stripe_deliveries(providers, session_id, "checkout.session.completed")  # noqa: E731
        held = _redirect_after(page, providers.stripe.base_url, portal.base_url,
                               lambda: [d for d in deliveries() if d["status"] == 200], "Stripe's webhook")
        stripe_outcome(page, STRIPE_SUCCESS)

    expect_thanks(page, portal, OVERDUE_TOTAL)
    assert held == ["held"], held
    webhook_answered(portal, deliveries, "the webhook")
    expect_one_payment(portal, debtor, debtor.overdue)
    expect_paid_in_history(page, portal, debtor, [debtor.overdue], UPCOMING_TOTAL)


@pytest.mark.parametrize("provider", ["mollie", "stripe"])
def test_webhook_after_the_debtor_is_back(provider: str, new_context: NewContext, portal: PortalServer,
                                          providers: Providers, debtor: Debtor) -> None:
    """No webhook yet: the return page asks the provider and shows paid; the late webhook changes nothing."""
    page = open_history(new_context(), portal, debtor)
    to_pay_page(page, debtor)
    with webhooks_held(providers):
        if provider == "mollie":
            confirm(page, "iDEAL", OVERDUE_TOTAL)
            payment_id = on_mollie(page, providers)
            deliveries = lambda: mollie_deliveries(providers, payment_id)  # noqa: E731
            mollie_outcome(page, "Paid")
        else:
            confirm(page, "Card", OVERDUE_TOTAL)
            session_id = on_stripe(page, providers, OVERDUE_TOTAL)
            deliveries = lambda: stripe_deliveries(providers, session_id, "checkout.session.completed")  # noqa: E731
            stripe_outcome(page, STRIPE_SUCCESS)
        # On its first load, not after one of its refreshes: nothing will come while the webhook is held.
        on_return_page(page, portal)
        assert status_of(page).inner_text().strip() == f"Thank you! We received your payment of {OVERDUE_TOTAL}."
        expect_thanks(page, portal, OVERDUE_TOTAL)
        assert deliveries() == [], "the emulator held its webhook"
        expect_one_payment(portal, debtor, debtor.overdue)
    # Released: the webhook arrives now, is acknowledged, and records nothing twice.
    webhook_answered(portal, deliveries, "the released webhook")
    expect_one_payment(portal, debtor, debtor.overdue)
    page.reload()
    expect_thanks(page, portal, OVERDUE_TOTAL)
    expect_paid_in_history(page, portal, debtor, [debtor.overdue], UPCOMING_TOTAL)


# --- accessibility ----------------------------------------------------------------------------------------

def test_payment_pages_are_accessible(new_context: NewContext, portal: PortalServer, providers: Providers,
                                      debtor: Debtor) -> None:
    """axe-core on the pay page (also on a phone) and on the return page after a cancel and once paid."""
    problems: dict[str, list[dict[str, Any]]] = {}
    phone = new_context(bypass_csp=True, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = open_history(phone, portal, debtor)
    to_pay_page(page, debtor)
    screenshot(page, "payment-pay-page-phone")
    problems["pay page, phone"] = axe_problems(page, "pay page, phone")

    page = open_history(new_context(bypass_csp=True), portal, debtor)
    to_pay_page(page, debtor, debtor.upcoming)
    problems["pay page"] = axe_problems(page, "pay page")
    confirm(page, "iDEAL", BOTH_TOTAL)
    on_mollie(page, providers)
    mollie_outcome(page, "Canceled")
    expect_nothing_paid(page, portal, CANCELLED)
    problems["return page, cancelled"] = axe_problems(page, "return page, cancelled")

    page.get_by_role("link", name="Try again").click()
    confirm(page, "Card", BOTH_TOTAL)
    on_stripe(page, providers, BOTH_TOTAL)
    stripe_outcome(page, STRIPE_SUCCESS)
    expect_thanks(page, portal, BOTH_TOTAL)
    problems["return page, paid"] = axe_problems(page, "return page, paid")
    assert not any(problems.values()), f"axe found serious or critical problems: {problems}"


def test_return_page_while_processing_is_accessible(new_context: NewContext, portal: PortalServer,
                                                    providers: Providers, debtor: Debtor) -> None:
    page = open_history(new_context(bypass_csp=True), portal, debtor)
    to_pay_page(page, debtor)
    confirm(page, "iDEAL", OVERDUE_TOTAL)
    on_mollie(page, providers)
    mollie_outcome(page, "Pending")
    page.get_by_role("link", name="Return to the shop (payment still pending)").click()
    on_return_page(page, portal)
    expect(status_of(page)).to_have_text(PROCESSING)
    assert [v["id"] for v in axe_problems(page, "return page, processing")] == []


def test_stripe_pays_part_of_the_selection(new_context: NewContext, portal: PortalServer, providers: Providers,
                                           debtor: Debtor) -> None:
    """The organization takes partial payments (10.00 at least): the debtor pays 100.00 of 181.50, sees first
    how it will be allocated (the overdue invoice first), pays it by card, and the invoice is partly paid."""
    def configure(*flags: str) -> None:
        done = portal.command("payments", "configure", ORG_SLUG, *flags)
        assert done.returncode == 0, done.stderr

    configure("--partial-payments", "--partial-minimum", "10.00")
    try:
        page = open_history(new_context(), portal, debtor)
        to_pay_page(page, debtor, debtor.upcoming)
        amount = page.get_by_label("Amount to pay now (EUR)")
        expect(amount).to_have_value("181.50")
        amount.fill("5.00")
        page.get_by_role("button", name="Continue").click()
        expect(status_of(page)).to_have_text(
            "The amount is too low: a partial payment must be at least €10.00. Nothing was charged.")
        page.get_by_label("Amount to pay now (EUR)").fill("100.00")
        page.get_by_role("button", name="Continue").click()

        allocation = page.locator("table.allocation")
        expect(allocation.locator("caption")).to_have_text("How your payment of €100.00 will be allocated")
        rows = [[cell.strip() for cell in row.locator("th, td").all_inner_texts()]
                for row in allocation.locator("tbody tr").all()]
        assert rows == [[debtor.overdue, "€100.00", "€21.00", "Partially paid"],
                        [debtor.upcoming, "€0.00", "€60.50", "Not paid now"]]
        screenshot(page, "payment-partial-preview")
        confirm(page, "Card", "€100.00")

        session_id = on_stripe(page, providers, "€100.00")
        stripe_outcome(page, STRIPE_SUCCESS)
        expect_thanks(page, portal, "€100.00")
        webhook_answered(portal, lambda: stripe_deliveries(providers, session_id, "checkout.session.completed"),
                         "Stripe's checkout.session.completed")

        page.get_by_role("link", name="Back to your invoices").click()
        expect(outstanding(page)).to_contain_text("€81.50")
        expect(row_of(page, debtor.overdue).locator("td").nth(4)).to_have_text("€21.00")
        invoice = portal.api.get(f"/api/v1/invoices/{debtor.external_ids[debtor.overdue]}").json()
        assert (invoice["status"], invoice["amount_paid"], invoice["amount_remaining"]) == ("open", "100.00", "21.00")
        events = portal.api.get("/api/v1/events", params={"limit": 1000}).json()["items"]
        mine = [(e["type"], e["data"]["amount_paid"], e["data"]["amount_remaining"]) for e in events
                if e["invoice"] in debtor.external_ids.values()]
        assert mine == [("invoice.partially_paid", "100.00", "21.00")]
    finally:
        configure("--no-partial-payments")
