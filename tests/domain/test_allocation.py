"""Properties of sharing a payment among a selection's invoices and credit notes (portal.domain.allocation)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.domain.allocation import OpenItem, allocate, net_total, order

dates = st.one_of(st.none(), st.dates(min_value=dt.date(2020, 1, 1), max_value=dt.date(2030, 12, 31)))


@st.composite
def selections(draw: st.DrawFn) -> list[OpenItem]:
    count = draw(st.integers(min_value=0, max_value=12))
    ids = draw(st.lists(st.integers(min_value=1, max_value=10**6), min_size=count, max_size=count, unique=True))
    return [OpenItem(item_id, draw(st.sampled_from(["invoice", "invoice", "credit_note"])),
                     draw(st.integers(min_value=0, max_value=10**9)), draw(dates), draw(dates)) for item_id in ids]


payments = st.integers(min_value=0, max_value=10**10)


@given(payments, selections())
def test_the_payment_is_applied_exactly_once(payment: int, items: list[OpenItem]) -> None:
    plan = allocate(payment, items)
    assert plan.excess_minor >= 0
    assert plan.applied_minor == plan.credit_minor + payment - plan.excess_minor
    owed = sum(item.remaining_minor for item in items if item.kind == "invoice")
    credit = sum(item.remaining_minor for item in items if item.kind == "credit_note")
    # Excess only when every invoice is full, and then it is exactly what they could not take.
    assert plan.excess_minor == max(0, payment - max(0, owed - credit))


@given(payments, selections())
def test_each_share_is_within_what_the_item_owes_or_holds(payment: int, items: list[OpenItem]) -> None:
    plan = allocate(payment, items)
    by_id = {item.id: item for item in items}
    assert sorted(s.id for s in (*plan.invoices, *plan.credits)) == sorted(by_id)
    for share in (*plan.invoices, *plan.credits):
        item = by_id[share.id]
        assert share.kind == item.kind
        assert 0 <= share.amount_minor <= item.remaining_minor
        assert share.remaining_minor == item.remaining_minor - share.amount_minor
        assert share.settled == (share.remaining_minor == 0)


@given(payments, selections())
def test_oldest_first(payment: int, items: list[OpenItem]) -> None:
    plan = allocate(payment, items)
    ordered = [item.id for item in order(items) if item.kind == "invoice"]
    assert [share.id for share in plan.invoices] == ordered
    for earlier, later in zip(plan.invoices, plan.invoices[1:]):
        if later.amount_minor > 0:
            assert earlier.remaining_minor == 0, "a later invoice got money while an earlier one was not full"
    notes = plan.credits
    for earlier, later in zip(notes, notes[1:]):
        if later.amount_minor > 0:
            assert earlier.remaining_minor == 0, "a later credit note was used while an earlier one held credit"


@given(payments, selections())
def test_credit_notes_net_exactly(payment: int, items: list[OpenItem]) -> None:
    plan = allocate(payment, items)
    owed = sum(item.remaining_minor for item in items if item.kind == "invoice")
    credit = sum(item.remaining_minor for item in items if item.kind == "credit_note")
    assert plan.credit_minor == min(owed, credit), "credit is used before cash, and only up to what is owed"
    if payment == max(0, net_total(items)):
        # Paying the net total settles every invoice, with nothing left over.
        assert all(share.settled for share in plan.invoices)
        assert plan.excess_minor == 0


def test_a_worked_example() -> None:
    old = OpenItem(1, "invoice", 10000, dt.date(2026, 10, 1), dt.date(2026, 9, 1))
    same_due_older_issue = OpenItem(3, "invoice", 5000, dt.date(2026, 11, 1), dt.date(2026, 8, 1))
    same_due = OpenItem(2, "invoice", 5000, dt.date(2026, 11, 1), dt.date(2026, 9, 15))
    note = OpenItem(9, "credit_note", 2000, None, dt.date(2026, 10, 5))
    plan = allocate(10000, [same_due, note, old, same_due_older_issue])
    assert [(s.id, s.amount_minor, s.remaining_minor) for s in plan.invoices] == [
        (1, 10000, 0), (3, 2000, 3000), (2, 0, 5000)]
    assert [(s.id, s.amount_minor, s.remaining_minor) for s in plan.credits] == [(9, 2000, 0)]
    assert plan.excess_minor == 0


def test_negative_amounts_are_refused() -> None:
    with pytest.raises(ValueError):
        allocate(-1, [])
    with pytest.raises(ValueError):
        OpenItem(1, "invoice", -5)
