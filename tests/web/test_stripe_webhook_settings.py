"""The Stripe webhook keeps each organization's payment configuration between events (portal/web/webhooks.py);
a change of the webhook secrets in the database must still hold from the very next event."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from portal.db.payments import payments, provider_events
from portal.domain.payment_settings import configure
from portal.encryption import SecretBox
from tests.conftest import ENCRYPTION_KEY, Tenant
from tests.support.providers import mollie, stripe_emulator  # noqa: F401
from tests.web.test_checkout import app, checkout, count, debtor, invoice_state  # noqa: F401
from tests.web.test_portal import Debtor


def _event(event_id: str) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}


def test_secrets_changed_in_the_database_hold_from_the_next_event(
        debtor: Debtor, database: Any, stripe_emulator: Any, app: Any, tenant: Tenant, clock: Any,  # noqa: F811
) -> None:
    hooks = TestClient(app)

    def secrets(*values: str) -> None:
        # The frozen clock does not move: the row's updated_at stays the same, only the secrets change.
        database.run(configure, tenant.org.id, clock.now(), SecretBox((ENCRYPTION_KEY,)),
                     stripe_webhook_secrets=list(values))

    def post(event: dict[str, Any], secret: str) -> int:
        body, headers = stripe_emulator.build_webhook(event, secret=secret)
        return hooks.post(f"/webhooks/stripe/{tenant.org.slug}", content=body, headers=headers).status_code

    secrets("whsec_first")
    assert post(_event("evt_first"), "whsec_first") == 200  # the handler now keeps [whsec_first]

    secrets("whsec_second")  # whsec_first revoked
    answer = checkout(debtor, database, "stripe:card", "A")
    session_id = answer.headers["location"].rsplit("/", 1)[1]
    emitted = len(stripe_emulator.events)
    stripe_emulator.complete(session_id, "success")
    completed = [e for e in stripe_emulator.events[emitted:] if e["type"] == "checkout.session.completed"][0]
    assert post(completed, "whsec_first") == 400, "a revoked secret is refused at once"
    assert count(database, payments) == 0 and count(database, provider_events) == 1
    assert invoice_state(database)["A"] == ("open", 0)

    assert post(completed, "whsec_second") == 200
    assert invoice_state(database)["A"] == ("paid", 10000)

    secrets("whsec_third", "whsec_second")  # a secret added in front, as a rotation does
    assert post(_event("evt_third"), "whsec_third") == 200, "a new secret works at once"
    assert post(_event("evt_second"), "whsec_second") == 200
    assert count(database, provider_events) == 4

    secrets("whsec_third")
    assert post(_event("evt_late"), "whsec_second") == 400
    assert count(database, provider_events) == 4


def test_an_unknown_organization_is_not_found(app: Any, stripe_emulator: Any) -> None:  # noqa: F811
    body, headers = stripe_emulator.build_webhook(_event("evt_nobody"))
    hooks = TestClient(app)
    assert hooks.post("/webhooks/stripe/nobody", content=body, headers=headers).status_code == 404
    assert hooks.post("/webhooks/stripe/No_Such", content=body, headers=headers).status_code == 404
