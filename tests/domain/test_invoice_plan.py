"""The batch push's plan, without a database: given the items and what is stored, each item gets exactly one
decision (create, update, leave unchanged, refuse), by the rules a push has always followed."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from portal.domain.invoices import (
    LATEST_DATE, Create, Decision, InvoiceInput, Leave, Recheck, Refuse, Resent, StoredInvoice, Update,
    _fingerprint, plan_upsert, with_derived_due_date,
)
from portal.errors import Conflict, InvalidInput

TODAY = dt.date(2026, 11, 2)
MOMENT = dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)
CUSTOMERS = {"C1": 1, "C2": 2}  # "ghost" is not a customer
EXTERNAL_IDS = ["A", "B", "C", "D", "E"]

an_item = st.builds(
    InvoiceInput,
    external_id=st.sampled_from(EXTERNAL_IDS),
    customer=st.sampled_from(["C1", "C1", "C2", "ghost"]),
    number=st.sampled_from([None, "N-1"]),
    kind=st.sampled_from(["invoice", "credit_note"]),
    status=st.sampled_from(["draft", "open", "open", "paid", "cancelled"]),
    issue_date=st.one_of(st.none(), st.dates(dt.date(2026, 1, 1), dt.date(2026, 12, 31))),
    due_date=st.one_of(st.none(), st.just(dt.date(2027, 1, 31))),
    payment_terms=st.sampled_from([None, "net_days", "end_of_month", "at_reception"]),
    payment_terms_days=st.one_of(st.none(), st.integers(0, 60)),
    currency=st.just("EUR"),
    total_minor=st.integers(0, 30_000),
    amount_due_minor=st.integers(0, 30_000),
    lines=st.just([]),
    title=st.sampled_from([None, "first", "second"]),
    version=st.one_of(st.none(), st.integers(0, 4)),
)


@st.composite
def stored_of(draw: Any, item: InvoiceInput, invoice_id: int) -> StoredInvoice:
    """An invoice stored for `item`'s external id: with the item's content (an identical resend) or other
    content, paid or not, activated or not, with some version and revision."""
    same_content = draw(st.booleans())
    content = with_derived_due_date(item, TODAY).content_hash() if same_content else "other content"
    total = draw(st.integers(0, 30_000))
    revision = draw(st.integers(1, 5))
    return StoredInvoice(
        id=invoice_id, external_id=item.external_id, status=draw(st.sampled_from(["draft", "open", "paid"])),
        total_minor=total, paid_minor=draw(st.sampled_from([0, 0, total, total // 2])),
        version=draw(st.one_of(st.none(), st.integers(0, 4))), revision=revision, content_hash=content,
        activated_at=draw(st.sampled_from([None, MOMENT])), cancelled_at=None,
        body_fingerprint=draw(st.sampled_from([None, _fingerprint(revision, "digest")])))


@st.composite
def a_batch(draw: Any, *, distinct: bool = False) -> tuple[list[InvoiceInput], dict[str, StoredInvoice]]:
    """Items (external ids repeat unless `distinct`) and, for some of their external ids, a stored invoice."""
    items = draw(st.lists(an_item, min_size=1, max_size=8, unique_by=(lambda i: i.external_id) if distinct else None))
    stored = {}
    for number, item in enumerate(items, start=1):
        if item.external_id not in stored and draw(st.booleans()):
            stored[item.external_id] = draw(stored_of(item, number))
    return items, stored


def code_of(decision: Decision) -> str | None:
    if not isinstance(decision, Refuse):
        return None
    error = decision.error
    if isinstance(error, InvalidInput):
        return "invalid:" + ",".join(e.path for e in error.errors)
    assert isinstance(error, Conflict)
    return error.code


def summary(decision: Decision) -> tuple[Any, ...]:
    """What a decision says, comparable across plans (errors are exceptions, equal only to themselves)."""
    if isinstance(decision, (Create, Update)):
        return type(decision).__name__, decision.item.external_id, decision.content_hash, decision.body_digest
    if isinstance(decision, Leave):
        return "Leave", decision.stored.external_id, decision.bind_digest
    if isinstance(decision, Refuse):
        return "Refuse", decision.external_id, code_of(decision)
    return "Recheck", decision.external_id


def external_id_of(decision: Decision) -> str:
    if isinstance(decision, (Create, Update)):
        return decision.item.external_id
    if isinstance(decision, Leave):
        return decision.stored.external_id
    return decision.external_id


@given(a_batch())
@settings(max_examples=150, deadline=None)
def test_every_item_gets_exactly_one_decision_about_itself(batch: tuple[list[InvoiceInput], dict[str, Any]]) -> None:
    items, stored = batch
    decisions = plan_upsert(items, stored, CUSTOMERS, TODAY)
    assert len(decisions) == len(items)
    for item, decision in zip(items, decisions, strict=True):
        assert isinstance(decision, (Create, Update, Leave, Refuse))  # Recheck is only for Resent items
        assert external_id_of(decision) == item.external_id
        if isinstance(decision, (Create, Update)):
            assert item.customer in CUSTOMERS
            assert decision.customer_id == CUSTOMERS[item.customer]
        if item.customer not in CUSTOMERS and not isinstance(decision, Refuse):
            raise AssertionError(f"an unknown customer was not refused: {decision}")


@given(a_batch())
@settings(max_examples=150, deadline=None)
def test_only_the_first_item_of_an_external_id_counts(batch: tuple[list[InvoiceInput], dict[str, Any]]) -> None:
    items, stored = batch
    decisions = plan_upsert(items, stored, CUSTOMERS, TODAY)
    seen: set[str] = set()
    for item, decision in zip(items, decisions, strict=True):
        duplicate = code_of(decision) == "invalid:/external_id"
        assert duplicate == (item.external_id in seen)
        seen.add(item.external_id)
    # At most one write per invoice.
    written = [external_id_of(d) for d in decisions if isinstance(d, (Create, Update))]
    assert len(written) == len(set(written))


@given(a_batch())
@settings(max_examples=150, deadline=None)
def test_new_external_ids_are_created_and_known_ones_never(batch: tuple[list[InvoiceInput], dict[str, Any]]) -> None:
    items, stored = batch
    for decision in plan_upsert(items, stored, CUSTOMERS, TODAY):
        if isinstance(decision, Create):
            assert decision.item.external_id not in stored
        if isinstance(decision, (Update, Leave)):
            assert external_id_of(decision) in stored


@given(a_batch(distinct=True))
@settings(max_examples=150, deadline=None)
def test_an_identical_resend_is_left_unchanged(batch: tuple[list[InvoiceInput], dict[str, Any]]) -> None:
    """Store what the plan creates, then push the same items again: nothing to write."""
    items, _ = batch
    first = plan_upsert(items, {}, CUSTOMERS, TODAY)
    stored = {
        d.item.external_id: StoredInvoice(
            id=number, external_id=d.item.external_id, status=d.item.status, total_minor=d.item.total_minor,
            paid_minor=0, version=d.item.version, revision=1, content_hash=d.content_hash,
            activated_at=None if d.item.status == "draft" else MOMENT, cancelled_at=None, body_fingerprint=None)
        for number, d in enumerate(first) if isinstance(d, Create)}
    again = plan_upsert(items, stored, CUSTOMERS, TODAY)
    for before, after in zip(first, again, strict=True):
        if isinstance(before, Create):
            assert isinstance(after, Leave) and after.bind_digest is None
        else:
            assert summary(after) == summary(before)  # refused again, for the same reason


@given(a_batch())
@settings(max_examples=150, deadline=None)
def test_money_recorded_as_paid_is_never_undone(batch: tuple[list[InvoiceInput], dict[str, Any]]) -> None:
    items, stored = batch
    for item, decision in zip(items, plan_upsert(items, stored, CUSTOMERS, TODAY), strict=True):
        existing = stored.get(item.external_id)
        if existing is None or existing.paid_minor == 0 or not isinstance(decision, (Update, Leave, Refuse)):
            continue
        if code_of(decision) in ("invalid:/external_id", "invalid:/customer"):
            continue
        fully_paid = existing.paid_minor >= existing.total_minor
        if item.total_minor < existing.paid_minor:
            assert code_of(decision) == "total_below_paid"
        elif fully_paid and item.status in ("draft", "open"):
            assert code_of(decision) == "reopens_paid"
        elif item.status == "cancelled":
            assert code_of(decision) == "cancels_paid"
        else:
            assert code_of(decision) not in ("total_below_paid", "reopens_paid", "cancels_paid")
        if code_of(decision) in ("total_below_paid", "reopens_paid", "cancels_paid"):
            assert isinstance(decision, Refuse) and decision.queued  # kept in the conflict queue


@given(a_batch())
@settings(max_examples=150, deadline=None)
def test_versions_only_move_forward_and_activated_invoices_stay_activated(
        batch: tuple[list[InvoiceInput], dict[str, Any]]) -> None:
    items, stored = batch
    for item, decision in zip(items, plan_upsert(items, stored, CUSTOMERS, TODAY), strict=True):
        existing = stored.get(item.external_id)
        if not isinstance(decision, Update):
            if code_of(decision) in ("stale_version", "already_activated"):
                assert isinstance(decision, Refuse) and not decision.queued  # answered, not queued
            continue
        assert existing is not None
        if item.version is not None and existing.version is not None:
            assert item.version > existing.version
        assert not (existing.activated_at is not None and item.status == "draft")
        assert decision.revision == existing.revision + 1
        assert decision.content_hash != existing.content_hash


@given(an_item, st.integers(0, 3), st.integers(0, 3), st.booleans())
@settings(max_examples=150, deadline=None)
def test_a_version_not_newer_than_the_stored_one_is_refused(item: InvoiceInput, sent: int, stored_version: int,
                                                            same_content: bool) -> None:
    """Lower, or equal with other content, is stale; equal with the same content is unchanged."""
    item = dataclasses.replace(item, customer="C1", status="open", version=sent)
    content = with_derived_due_date(item, TODAY).content_hash() if same_content else "other content"
    stored = StoredInvoice(id=1, external_id=item.external_id, status="open", total_minor=item.total_minor,
                           paid_minor=0, version=stored_version, revision=1, content_hash=content,
                           activated_at=MOMENT, cancelled_at=None, body_fingerprint=None)
    decision, = plan_upsert([item], {item.external_id: stored}, CUSTOMERS, TODAY)
    if same_content:
        assert isinstance(decision, Leave)
    elif sent <= stored_version:
        assert code_of(decision) == "stale_version"
    else:
        assert isinstance(decision, Update) and decision.revision == 2


@given(a_batch(distinct=True), st.randoms(use_true_random=False))
@settings(max_examples=150, deadline=None)
def test_the_plan_does_not_depend_on_the_order_of_distinct_invoices(
        batch: tuple[list[InvoiceInput], dict[str, Any]], random: Any) -> None:
    items, stored = batch
    decisions = [summary(d) for d in plan_upsert(items, stored, CUSTOMERS, TODAY)]
    order = list(range(len(items)))
    random.shuffle(order)
    shuffled = plan_upsert([items[i] for i in order], stored, CUSTOMERS, TODAY)
    assert [summary(d) for d in shuffled] == [decisions[i] for i in order]


@given(a_batch(), st.lists(st.sampled_from([None, "d1", "d2"]), min_size=8, max_size=8))
@settings(max_examples=150, deadline=None)
def test_recognised_resends_are_left_only_while_their_invoice_is_as_recognised(
        batch: tuple[list[InvoiceInput], dict[str, Any]], digests: list[str | None]) -> None:
    """A Resent item stands for a body recognised before validation: unchanged if its invoice still has the
    fingerprint of that body and nothing paid, else it must be converted and planned again (Recheck)."""
    items, stored = batch
    mixed: list[InvoiceInput | Resent] = [
        Resent(item.external_id, digest) if digest is not None else item
        for item, digest in zip(items, digests, strict=False)]
    seen: set[str] = set()
    for item, decision in zip(mixed, plan_upsert(mixed, stored, CUSTOMERS, TODAY), strict=True):
        first = item.external_id not in seen
        seen.add(item.external_id)
        if not isinstance(item, Resent) or not first:
            assert not isinstance(decision, Recheck)
            continue
        existing = stored.get(item.external_id)
        still = (existing is not None and existing.paid_minor == 0
                 and existing.body_fingerprint == _fingerprint(existing.revision, item.body_digest))
        assert isinstance(decision, Leave if still else Recheck)


def test_a_body_digest_is_bound_to_the_revision_it_makes() -> None:
    item = dataclasses.replace(_item("A"), issue_date=TODAY)
    create, = plan_upsert([item], {}, CUSTOMERS, TODAY, ["d1"])
    assert isinstance(create, Create) and create.body_digest == "d1"
    # A due date counted from today converts differently tomorrow: no digest is bound.
    from_today = dataclasses.replace(item, issue_date=None, due_date=None, payment_terms="net_days",
                                     payment_terms_days=30)
    create, = plan_upsert([from_today], {}, CUSTOMERS, TODAY, ["d1"])
    assert isinstance(create, Create) and create.body_digest is None


def test_a_due_date_out_of_range_refuses_that_item_only() -> None:
    """The derived due date of an item issued near the end of the range is refused at the field that pushed
    it out; the others are planned as usual."""
    late = dataclasses.replace(_item("LATE"), due_date=None, issue_date=dt.date(2999, 12, 20), payment_terms="net_days",
                               payment_terms_days=30)
    at_the_end = dataclasses.replace(_item("END"), due_date=None, issue_date=dt.date(9999, 12, 31), payment_terms="net_days",
                                     payment_terms_days=1)
    fine = dataclasses.replace(_item("FINE"), due_date=None, issue_date=LATEST_DATE, payment_terms="end_of_month")
    decisions = plan_upsert([late, at_the_end, fine, _item("OK")], {}, CUSTOMERS, TODAY)
    assert [code_of(d) for d in decisions] == ["invalid:/payment_terms/days", "invalid:/payment_terms/days",
                                               None, None]
    assert isinstance(decisions[2], Create) and decisions[2].item.due_date == LATEST_DATE
    assert isinstance(decisions[3], Create)


def _item(external_id: str) -> InvoiceInput:
    return InvoiceInput(
        external_id=external_id, customer="C1", number="N-1", kind="invoice", status="open", issue_date=None,
        due_date=dt.date(2026, 12, 1), payment_terms=None, payment_terms_days=None, currency="EUR",
        total_minor=12100, amount_due_minor=12100, lines=[])
