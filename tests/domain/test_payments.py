"""Applying provider reports: once, forward only, exact money, everything announced."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.db.invoices import invoices
from portal.db.payments import allocations, checkouts, outbox_events, payments, review_items
from portal.domain import checkouts as checkout_service
from portal.domain import links
from portal.domain.payments import PaymentObservation, apply
from portal.providers.amounts import from_mollie, from_stripe, to_mollie, to_stripe
from tests.conftest import Tenant


settings_for_db = settings(max_examples=25, deadline=None, derandomize=True,
                           suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def scope(tenant: Tenant, database: Any, clock: Any) -> links.DebtorScope:
    tenant.put_invoice("A", number="F-A", total="100.00", lines=[])
    tenant.put_invoice("B", number="F-B", total="50.00", lines=[])

    def make(conn: sa.Connection) -> links.DebtorScope:
        link = links.create_link(conn, tenant.org.id, "C1", clock.now(), days=30)
        return links.resolve(conn, link.id, clock.now())

    return database.run(make)


def ids(database: Any, *external_ids: str) -> list[int]:
    with database.transaction() as conn:
        rows = dict(conn.execute(sa.select(invoices.c.external_id, invoices.c.id)).all())
    return [rows[e] for e in external_ids]


def start(database: Any, scope: links.DebtorScope, clock: Any, *external_ids: str, provider: str = "mollie") -> Any:
    checkout, _ = database.run(checkout_service.start, scope, ids(database, *external_ids), provider, None,
                               clock.now())
    return checkout


def paid(checkout: Any, payment_id: str = "tr_1", **changes: Any) -> PaymentObservation:
    values = {"provider": checkout.provider, "status": "paid", "checkout_public_id": checkout.public_id,
              "payment_id": payment_id, "amount_minor": checkout.amount_minor, "currency": checkout.currency,
              "refunded_minor": 0, "charged_back_minor": 0, **changes}
    return PaymentObservation(**values)


def state(database: Any) -> dict[str, Any]:
    with database.transaction() as conn:
        return {
            "invoices": {r.external_id: (r.status, r.paid_minor) for r in conn.execute(sa.select(invoices))},
            "payments": conn.scalar(sa.select(sa.func.count()).select_from(payments)),
            "allocations": conn.execute(sa.select(allocations.c.kind, allocations.c.amount_minor)
                                        .order_by(allocations.c.id)).all(),
            "events": [r.event_type for r in conn.execute(sa.select(outbox_events).order_by(outbox_events.c.id))],
            "reviews": [r.reason for r in conn.execute(sa.select(review_items).order_by(review_items.c.id))],
            "checkouts": [r.status for r in conn.execute(sa.select(checkouts).order_by(checkouts.c.id))],
        }


def test_a_payment_marks_its_invoices_paid_once(database: Any, scope: Any, clock: Any) -> None:
    checkout = start(database, scope, clock, "A", "B")
    assert checkout.amount_minor == 15000
    for _ in range(5):
        database.run(apply, scope.organization_id, paid(checkout), clock.now())
    after = state(database)
    assert after["invoices"]["A"] == ("paid", 10000) and after["invoices"]["B"] == ("paid", 5000)
    assert after["payments"] == 1
    assert after["allocations"] == [("payment", 10000), ("payment", 5000)]
    assert after["events"] == ["invoice.paid", "invoice.paid"]
    assert after["checkouts"] == ["paid"]


def test_states_only_move_forward(database: Any, scope: Any, clock: Any) -> None:
    checkout = start(database, scope, clock, "A")
    database.run(apply, scope.organization_id, paid(checkout), clock.now())
    for late in ("expired", "failed", "cancelled", "open", "processing"):
        outcome = database.run(apply, scope.organization_id, paid(checkout, status=late), clock.now())
        assert outcome.checkout_status == "paid"
    assert state(database)["invoices"]["A"] == ("paid", 10000)


def test_failure_then_payment_is_still_recorded(database: Any, scope: Any, clock: Any) -> None:
    checkout = start(database, scope, clock, "A")
    database.run(apply, scope.organization_id, paid(checkout, status="expired", payment_id=None), clock.now())
    assert state(database)["checkouts"] == ["expired"]
    database.run(apply, scope.organization_id, paid(checkout), clock.now())
    assert state(database)["invoices"]["A"] == ("paid", 10000)


@pytest.mark.parametrize(("change", "reason"), [({"amount_minor": 9999}, "amount_mismatch"),
                                                ({"currency": "USD"}, "currency_mismatch"),
                                                ({"checkout_public_id": "co_forged"}, "unknown_checkout"),
                                                ({"provider": "stripe"}, "unknown_checkout")])
def test_a_payment_that_does_not_match_goes_to_review(database: Any, scope: Any, clock: Any, change: dict[str, Any],
                                                      reason: str) -> None:
    checkout = start(database, scope, clock, "A")
    for _ in range(2):
        database.run(apply, scope.organization_id, paid(checkout, **change), clock.now())
    after = state(database)
    assert after["invoices"]["A"] == ("open", 0)
    assert after["payments"] == 0
    assert after["reviews"] == [reason]
    assert after["events"] == ["payment.needs_review"]


def test_another_organizations_checkout_is_never_paid_nor_reviewed(database: Any, scope: Any, clock: Any,
                                                                   other_tenant: Tenant) -> None:
    """Organizations sharing the install's provider keys receive each other's reports: one about another
    organization's checkout leaves nothing behind, and the rightful organization's report still pays."""
    checkout = start(database, scope, clock, "A")
    before = state(database)
    for report in (paid(checkout), paid(checkout, status="expired"), paid(checkout, amount_minor=1)):
        outcome = database.run(apply, other_tenant.org.id, report, clock.now())
        assert outcome.elsewhere and outcome.review_reason is None
    assert state(database) == before, "no payment, review item, event or checkout change anywhere"
    outcome = database.run(apply, scope.organization_id, paid(checkout), clock.now())
    assert outcome.recorded_payment and not outcome.elsewhere
    assert state(database)["invoices"]["A"] == ("paid", 10000)
    # Now recorded: a report naming only the payment id (a Stripe refund or dispute) is known as elsewhere too.
    outcome = database.run(apply, other_tenant.org.id, paid(checkout, checkout_public_id=None, refunded_minor=10000),
                           clock.now())
    assert outcome.elsewhere
    assert state(database)["invoices"]["A"] == ("paid", 10000) and state(database)["reviews"] == []


def test_a_payment_of_no_organization_goes_to_review_per_organization(database: Any, scope: Any, clock: Any,
                                                                     other_tenant: Tenant) -> None:
    """A payment that names no checkout anywhere is each receiving organization's to review, and one
    organization's review item never keeps another's from being recorded."""
    checkout = start(database, scope, clock, "A")
    stray = paid(checkout, "tr_stray", checkout_public_id="co_nobody")
    database.run(apply, other_tenant.org.id, stray, clock.now())
    database.run(apply, scope.organization_id, stray, clock.now())
    with database.transaction() as conn:
        owners = sorted(conn.scalars(sa.select(review_items.c.organization_id)).all())
    assert owners == sorted([scope.organization_id, other_tenant.org.id])


def test_a_report_never_touches_another_checkouts_payment(database: Any, scope: Any, clock: Any,
                                                          other_tenant: Tenant) -> None:
    """An organization can sign reports for its own checkouts; one that names the provider payment id of
    another organization's payment never moves that payment: payments are looked up per organization."""
    checkout = start(database, scope, clock, "A")
    database.run(apply, scope.organization_id, paid(checkout, "tr_theirs"), clock.now())
    other_tenant.put_customer()
    other_tenant.put_invoice("X", number="F-X", total="100.00", lines=[])
    other_scope = database.run(lambda conn: links.resolve(
        conn, links.create_link(conn, other_tenant.org.id, "C1", clock.now(), days=30).id, clock.now()))
    theirs = start(database, other_scope, clock, "X")
    before = state(database)
    database.run(apply, other_tenant.org.id, paid(theirs, "tr_theirs", refunded_minor=10000), clock.now())
    after = state(database)
    assert after["invoices"]["A"] == ("paid", 10000)  # the first organization's payment is untouched
    with database.transaction() as conn:
        first = conn.execute(sa.select(payments).where(payments.c.organization_id == scope.organization_id)).one()
        kinds = conn.scalars(sa.select(allocations.c.kind).where(allocations.c.payment_id == first.id)).all()
    assert (first.refunded_minor, first.checkout_id, kinds) == (0, checkout.id, ["payment"])
    assert before["payments"] == 1


def test_refunds_and_chargebacks_reopen_last_invoice_first(database: Any, scope: Any, clock: Any) -> None:
    checkout = start(database, scope, clock, "A", "B")
    database.run(apply, scope.organization_id, paid(checkout), clock.now())
    database.run(apply, scope.organization_id, paid(checkout, refunded_minor=2000), clock.now())
    database.run(apply, scope.organization_id, paid(checkout, refunded_minor=2000), clock.now())
    assert state(database)["invoices"]["B"] == ("open", 3000)
    assert state(database)["invoices"]["A"] == ("paid", 10000)
    database.run(apply, scope.organization_id, paid(checkout, refunded_minor=15000), clock.now())
    after = state(database)
    assert after["invoices"] == {"A": ("open", 0), "B": ("open", 0)}
    assert after["events"].count("payment.refunded") == 2

    database.run(apply, scope.organization_id, paid(checkout, refunded_minor=15000, charged_back_minor=0),
                 clock.now())
    assert state(database)["events"].count("payment.charged_back") == 0


def test_chargeback_and_its_reversal(database: Any, scope: Any, clock: Any) -> None:
    checkout = start(database, scope, clock, "A")
    database.run(apply, scope.organization_id, paid(checkout), clock.now())
    database.run(apply, scope.organization_id, paid(checkout, charged_back_minor=10000), clock.now())
    assert state(database)["invoices"]["A"] == ("open", 0)
    database.run(apply, scope.organization_id, paid(checkout, charged_back_minor=0), clock.now())
    after = state(database)
    assert after["invoices"]["A"] == ("paid", 10000)
    assert [kind for kind, _ in after["allocations"]] == ["payment", "chargeback", "chargeback"]
    assert sum(amount for _, amount in after["allocations"]) == 10000


def test_a_report_without_checkout_id_finds_it_by_payment(database: Any, scope: Any, clock: Any) -> None:
    checkout = start(database, scope, clock, "A", provider="stripe")
    database.run(apply, scope.organization_id, paid(checkout, payment_id="pi_1"), clock.now())
    database.run(apply, scope.organization_id, paid(checkout, payment_id="pi_1", checkout_public_id=None,
                                                    refunded_minor=10000), clock.now())
    assert state(database)["invoices"]["A"] == ("open", 0)


def test_two_tabs_two_payments_overpaid_and_reviewed(database: Any, scope: Any, clock: Any) -> None:
    first = start(database, scope, clock, "A", provider="mollie")
    second = start(database, scope, clock, "A", provider="stripe")
    assert state(database)["checkouts"] == ["cancelled", "created"], "a new checkout supersedes the open one"
    database.run(apply, scope.organization_id, paid(first, payment_id="tr_1"), clock.now())
    database.run(apply, scope.organization_id, paid(second, payment_id="pi_2"), clock.now())
    after = state(database)
    assert after["payments"] == 2
    assert after["invoices"]["A"] == ("paid", 20000)
    assert after["reviews"] == ["overpaid"]
    assert after["events"] == ["invoice.paid", "invoice.paid", "payment.needs_review"]


def test_double_click_makes_one_checkout_and_a_retry_after_failure_a_new_one(database: Any, scope: Any,
                                                                             clock: Any) -> None:
    first = start(database, scope, clock, "A", "B")
    again = start(database, scope, clock, "B", "A")
    assert again.id == first.id
    database.run(apply, scope.organization_id, paid(first, status="failed", payment_id=None), clock.now())
    retry = start(database, scope, clock, "A", "B")
    assert retry.id != first.id


def test_selection_rules(database: Any, scope: Any, clock: Any, tenant: Tenant) -> None:
    from portal.errors import InvalidInput, NotFound

    tenant.put_invoice("USD", total="10.00", currency="USD", lines=[])
    tenant.put_invoice("PAID", status="paid", lines=[])
    with pytest.raises(InvalidInput, match="different currencies"):
        start(database, scope, clock, "A", "USD")
    with pytest.raises(InvalidInput, match="Nothing to pay"):
        start(database, scope, clock, "PAID")
    with pytest.raises(NotFound):
        database.run(checkout_service.start, scope, [999999], "mollie", None, clock.now())


@pytest.mark.postgresql_only
def test_concurrent_deliveries_of_one_payment_make_one_effect(database: Any, scope: Any, clock: Any) -> None:
    checkout = start(database, scope, clock, "A", "B")
    with ThreadPoolExecutor(30) as pool:
        list(pool.map(lambda _: database.run(apply, scope.organization_id, paid(checkout), clock.now()), range(30)))
    for _ in range(5):
        database.run(apply, scope.organization_id, paid(checkout), clock.now())
    after = state(database)
    assert after["payments"] == 1
    assert len(after["allocations"]) == 2
    assert after["events"] == ["invoice.paid", "invoice.paid"]


@pytest.mark.postgresql_only
def test_two_checkouts_paid_at_once_both_count(database: Any, scope: Any, clock: Any) -> None:
    first = start(database, scope, clock, "A", provider="mollie")
    second = start(database, scope, clock, "A", provider="stripe")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda args: database.run(apply, scope.organization_id, paid(*args), clock.now()),
                      [(first, "tr_1"), (second, "pi_2")]))
    after = state(database)
    assert after["invoices"]["A"] == ("paid", 20000)
    assert after["reviews"] == ["overpaid"]


@given(st.sampled_from(["EUR", "JPY", "KWD", "ISK", "SEK"]), st.integers(min_value=0, max_value=10**12))
def test_provider_amounts_round_trip(currency: str, minor: int) -> None:
    assert from_stripe(to_stripe(minor, currency), currency) == minor
    assert from_mollie(to_mollie(minor, currency), currency) == minor
    assert isinstance(to_mollie(minor, currency)["value"], str)


def test_known_provider_formats() -> None:
    assert to_stripe(1050, "EUR") == 1050 and to_stripe(1200, "JPY") == 1200 and to_stripe(1234, "KWD") == 1234
    assert to_stripe(100, "ISK") == 10000
    assert to_mollie(1050, "EUR") == {"currency": "EUR", "value": "10.50"}
    assert to_mollie(1200, "JPY") == {"currency": "JPY", "value": "1200"}


@given(reports=st.lists(st.tuples(st.integers(0, 15000), st.integers(0, 15000)), min_size=1, max_size=8))
@settings_for_db
def test_allocations_always_sum_to_what_the_payment_still_holds(database: Any, scope: Any, clock: Any,
                                                                reports: list[tuple[int, int]]) -> None:
    import secrets

    with database.transaction() as conn:  # each example starts from unpaid invoices
        conn.execute(invoices.update().values(paid_minor=0, status="open"))
        conn.execute(checkouts.update().values(status="cancelled"))
    checkout = start(database, scope, clock, "A", "B")
    payment_id = "tr_" + secrets.token_hex(6)
    database.run(apply, scope.organization_id, paid(checkout, payment_id), clock.now())
    for refunded, charged_back in reports:
        database.run(apply, scope.organization_id,
                     paid(checkout, payment_id, refunded_minor=refunded, charged_back_minor=charged_back), clock.now())
    with database.transaction() as conn:
        payment = conn.execute(sa.select(payments).where(payments.c.provider_payment_id == payment_id)).one()
        allocated = conn.scalar(sa.select(sa.func.sum(allocations.c.amount_minor)).where(
            allocations.c.payment_id == payment.id))
        paid_total = conn.scalar(sa.select(sa.func.sum(invoices.c.paid_minor)))
    held = payment.amount_minor - payment.refunded_minor - payment.charged_back_minor
    assert allocated == max(0, held)
    assert paid_total == allocated


def test_a_refund_gives_back_money_never_the_credit_note(database: Any, scope: Any, clock: Any,
                                                         tenant: Tenant) -> None:
    tenant.put_invoice("CN", number="CN-1", kind="credit_note", total="30.00", lines=[])
    checkout, _ = database.run(checkout_service.start, scope, ids(database, "A"), "stripe", None, clock.now(),
                               credit_ids=ids(database, "CN"))
    assert checkout.amount_minor == 7000, "net of the credit note"
    for _ in range(3):
        database.run(apply, scope.organization_id, paid(checkout, payment_id="pi_1"), clock.now())
    after = state(database)
    assert after["invoices"]["A"] == ("paid", 10000) and after["invoices"]["CN"] == ("paid", 3000)
    assert after["allocations"] == [("credit", 3000), ("payment", 7000), ("credit", -3000)]
    assert after["events"] == ["invoice.paid", "credit_note.applied"]
    database.run(apply, scope.organization_id, paid(checkout, payment_id="pi_1", refunded_minor=7000), clock.now())
    after = state(database)
    assert after["invoices"]["A"] == ("open", 3000), "the refund takes back the money; the credit stays applied"
    assert after["invoices"]["CN"] == ("paid", 3000)
    # A won dispute cannot give an invoice more than the payment first gave it.
    database.run(apply, scope.organization_id, paid(checkout, payment_id="pi_1", refunded_minor=0), clock.now())
    assert state(database)["invoices"]["A"] == ("paid", 10000)


def test_money_follows_the_invoices_as_they_are_when_it_arrives(database: Any, scope: Any, clock: Any) -> None:
    """A partial checkout planned for A, paid after A was paid in another tab: the money goes to what is
    still owed in the checkout (B), and what nothing can take stays on its last invoice, reviewed as overpaid."""
    both, _ = database.run(checkout_service.start, scope, ids(database, "A", "B"), "mollie", None, clock.now())
    other = start(database, scope, clock, "A", provider="stripe")
    database.run(apply, scope.organization_id, paid(other, payment_id="pi_other"), clock.now())
    database.run(apply, scope.organization_id, paid(both, payment_id="tr_both"), clock.now())
    after = state(database)
    assert after["invoices"] == {"A": ("paid", 10000), "B": ("paid", 15000)}, "A is not paid twice"
    assert after["reviews"] == ["overpaid"]
