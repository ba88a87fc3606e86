"""Reconciliation finds payments whose webhooks never came, through the same service as the webhooks."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from portal.app import create_app
from portal.providers.registry import ProviderRegistry
from portal.reconcile import reconcile
from tests.conftest import Tenant
from tests.support.providers import mollie, stripe_emulator, with_providers  # noqa: F401
from tests.web.test_checkout import checkout, invoice_state
from tests.web.test_portal import Debtor, link_for


@pytest.fixture
def app(settings: Any, database: Any, clock: Any, mollie: Any, stripe_emulator: Any) -> Any:  # noqa: F811
    return create_app(with_providers(settings, mollie, stripe_emulator), clock=clock, database=database)


@pytest.fixture
def debtor(app: Any, tenant: Tenant) -> Debtor:
    tenant.put_invoice("A", number="F-A", total="100.00", lines=[])
    visitor = Debtor(app)
    visitor.open(link_for(tenant))
    return visitor


def run(app: Any) -> Any:
    services = app.state.services
    return anyio.run(reconcile, services.db, ProviderRegistry(services.settings), services.settings, services.now())


def test_a_lost_webhook_is_made_good(app: Any, debtor: Debtor, database: Any, mollie: Any, clock: Any) -> None:  # noqa: F811
    payment_id = checkout(debtor, database, "mollie:ideal", "A").headers["location"].rsplit("/", 1)[1]
    mollie.set_status(payment_id, "paid", send_webhook=False)
    assert run(app).asked == 0, "too early: the webhook may still come"
    clock.advance(minutes=16)
    report = run(app)
    assert (report.asked, report.changed) == (1, 1)
    assert invoice_state(database)["A"] == ("paid", 10000)
    assert run(app).asked == 0, "a paid checkout is done"


def test_a_superseded_checkout_paid_in_another_tab_is_found(app: Any, debtor: Debtor, database: Any,
                                                            mollie: Any, clock: Any) -> None:  # noqa: F811
    first = checkout(debtor, database, "mollie:ideal", "A").headers["location"].rsplit("/", 1)[1]
    mollie.hold_webhooks(True)
    try:
        second = checkout(debtor, database, "mollie:bancontact", "A").headers["location"].rsplit("/", 1)[1]
        mollie.set_status(second, "paid", send_webhook=False)
        clock.advance(minutes=16)
        run(app)
        assert invoice_state(database)["A"] == ("paid", 10000)
        assert run(app).changed == 0
    finally:
        mollie.hold_webhooks(False)
    assert mollie.payment(first)["status"] in ("canceled", "open")


def test_nothing_changes_twice(app: Any, debtor: Debtor, database: Any, mollie: Any, clock: Any) -> None:  # noqa: F811
    payment_id = checkout(debtor, database, "mollie:ideal", "A").headers["location"].rsplit("/", 1)[1]
    mollie.set_status(payment_id, "expired", send_webhook=False)
    clock.advance(minutes=16)
    assert run(app).changed == 1
    assert run(app).changed == 0
    assert invoice_state(database)["A"] == ("open", 0)
