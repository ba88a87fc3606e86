"""Organizations that share the install's provider keys (the README's one-install setup) receive each other's
webhooks: Stripe sends every event of the account to every endpoint, and any organization can fetch any Mollie
payment of the account. One organization's webhook must acknowledge another's payment, keep nothing of it, and
never keep the rightful organization from recording it at once. Real SDKs against the emulators."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from portal.db.payments import payments, provider_events, review_items
from tests.conftest import Tenant
from tests.support.providers import mollie, stripe_emulator  # noqa: F401
from tests.web.test_checkout import app, checkout, debtor, invoice_state  # noqa: F401
from tests.web.test_portal import Debtor, link_for


@pytest.fixture
def theirs(app: Any, other_tenant: Tenant) -> Debtor:  # noqa: F811
    """A debtor of the second organization (globex), with one open invoice G."""
    other_tenant.put_customer()
    assert other_tenant.put_invoice("G", number="G-1", total="80.00", lines=[]).status_code == 201
    visitor = Debtor(app)
    visitor.open(link_for(other_tenant))
    return visitor


def kept_by(database: Any, org_id: int) -> dict[str, int]:
    """What an organization holds of payments: rows in each table that records them."""
    with database.transaction() as conn:
        return {table.name: int(conn.scalar(sa.select(sa.func.count()).select_from(table)
                                             .where(table.c.organization_id == org_id)))
                for table in (payments, provider_events, review_items)}


def nothing_shown(tenant: Tenant) -> None:
    assert tenant.client.get("/api/v1/payment-reviews").json()["items"] == []
    assert tenant.client.get("/api/v1/events").json()["items"] == []


def test_a_stripe_event_at_the_wrong_webhook_first(debtor: Debtor, theirs: Debtor, database: Any,  # noqa: F811
                                                   stripe_emulator: Any, tenant: Tenant,  # noqa: F811
                                                   other_tenant: Tenant) -> None:
    answer = checkout(theirs, database, "stripe:card", "G")
    session_id = answer.headers["location"].rsplit("/", 1)[1]
    emitted = len(stripe_emulator.events)
    stripe_emulator.complete(session_id, "success")
    completed = [e for e in stripe_emulator.events[emitted:] if e["type"] == "checkout.session.completed"][0]
    hooks = TestClient(debtor.client.app)
    body, headers = stripe_emulator.build_webhook(completed)  # the install's one secret signs for both

    for _ in range(2):  # Stripe retries nothing that got a 2xx; a redelivery is answered the same
        assert hooks.post("/webhooks/stripe/acme", content=body, headers=headers).status_code == 200
    assert kept_by(database, tenant.org.id) == {"payments": 0, "provider_events": 0, "review_items": 0}
    nothing_shown(tenant)
    assert invoice_state(database)["G"] == ("open", 0)

    assert hooks.post("/webhooks/stripe/globex", content=body, headers=headers).status_code == 200
    assert invoice_state(database)["G"] == ("paid", 8000), "paid at once, not by a later reconcile"
    assert kept_by(database, other_tenant.org.id) == {"payments": 1, "provider_events": 1, "review_items": 0}
    assert [e["type"] for e in other_tenant.client.get("/api/v1/events").json()["items"]] == ["invoice.paid"]

    # A refund names only the PaymentIntent (and our id in the copied metadata): the same holds.
    intent = stripe_emulator.session(session_id)["payment_intent"]
    before = len(stripe_emulator.events)
    stripe_emulator.refund(intent if isinstance(intent, str) else intent["id"], 8000)
    refunded = [e for e in stripe_emulator.events[before:] if e["type"] == "charge.refunded"][0]
    body, headers = stripe_emulator.build_webhook(refunded)
    assert hooks.post("/webhooks/stripe/acme", content=body, headers=headers).status_code == 200
    assert kept_by(database, tenant.org.id) == {"payments": 0, "provider_events": 0, "review_items": 0}
    nothing_shown(tenant)
    assert hooks.post("/webhooks/stripe/globex", content=body, headers=headers).status_code == 200
    assert invoice_state(database)["G"] == ("open", 0)
    assert invoice_state(database)["A"] == ("open", 0), "the first organization's invoices are untouched"


def test_a_mollie_payment_id_at_the_wrong_webhook_first(debtor: Debtor, theirs: Debtor, database: Any,  # noqa: F811
                                                        mollie: Any, tenant: Tenant,  # noqa: F811
                                                        other_tenant: Tenant) -> None:
    answer = checkout(theirs, database, "mollie:ideal", "G")
    payment_id = answer.headers["location"].rsplit("/", 1)[1]
    assert mollie.payment(payment_id)["webhookUrl"] == "http://testserver/webhooks/mollie/globex"
    mollie.set_status(payment_id, "paid", send_webhook=False)
    hooks = TestClient(debtor.client.app)

    for _ in range(2):
        assert hooks.post("/webhooks/mollie/acme", data={"id": payment_id}).status_code == 200
    assert kept_by(database, tenant.org.id) == {"payments": 0, "provider_events": 0, "review_items": 0}
    nothing_shown(tenant)

    assert hooks.post("/webhooks/mollie/globex", data={"id": payment_id}).status_code == 200
    assert invoice_state(database)["G"] == ("paid", 8000)
    assert kept_by(database, other_tenant.org.id) == {"payments": 1, "provider_events": 0, "review_items": 0}

    # Afterwards too: the payment, now recorded by its organization, stays invisible to the other one.
    assert hooks.post("/webhooks/mollie/acme", data={"id": payment_id}).status_code == 200
    assert kept_by(database, tenant.org.id) == {"payments": 0, "provider_events": 0, "review_items": 0}
    nothing_shown(tenant)
