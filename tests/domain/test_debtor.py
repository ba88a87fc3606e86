"""Every page of a debtor session against the rules it implements, written out in Python: which invoices a
link shows (history pages, in which order, a page at a time, with what is outstanding and overdue; an invoice's
page and PDF; the zip selection; the payment selection), and that nothing outside its scope ever shows or can
be paid."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.db.customers import customers
from portal.db.invoices import invoices
from portal.db.portal import link_invoices, portal_links
from portal.domain import checkouts, debtor, links
from portal.errors import NotFound
from tests.conftest import Tenant

TODAY = dt.date(2026, 6, 15)
NOW = dt.datetime(2026, 6, 15, 12, tzinfo=dt.UTC)

an_invoice = st.fixed_dictionaries({
    # The debtor is C1; C2 is another customer of the same organization, O1 one of another organization.
    "customer": st.sampled_from(["C1", "C1", "C1", "C2", "O1"]),
    "kind": st.sampled_from(["invoice", "invoice", "credit_note"]),
    "status": st.sampled_from(["open", "open", "paid", "cancelled", "draft"]),
    "currency": st.sampled_from(["EUR", "EUR", "USD"]),
    "issue_date": st.one_of(st.none(), st.dates(dt.date(2024, 1, 1), dt.date(2026, 12, 31))),
    "due_in": st.one_of(st.none(), st.integers(-2, 2), st.integers(-60, 60)),  # due today is not overdue
    "total_minor": st.integers(1, 100_000),
    "due_percent": st.integers(0, 100),
    "paid_percent": st.integers(0, 120),
})


@pytest.fixture
def customer_ids(tenant: Tenant, other_tenant: Tenant, database: Any) -> dict[str, tuple[int, int]]:
    """C1, C2 and O1 (see an_invoice): each one's organization and customer id."""
    tenant.put_customer("C2", name="Someone else")
    other_tenant.put_customer("C1", name="Another organization's customer")
    with database.transaction() as conn:
        found = {(row.organization_id, row.external_id): (row.organization_id, row.id) for row in conn.execute(
            sa.select(customers.c.organization_id, customers.c.external_id, customers.c.id))}
    return {"C1": found[tenant.org.id, "C1"], "C2": found[tenant.org.id, "C2"], "O1": found[other_tenant.org.id, "C1"]}


def store(database: Any, customer_ids: dict[str, tuple[int, int]], drawn: list[dict[str, Any]],
          neighbour_scopes: list[list[int]]) -> list[dict[str, Any]]:
    """The drawn invoices, and a live link for C2 and for O1 beside the debtor's, each scoped to drawn invoices
    (positions in `drawn`): a query that joined the wrong links, or read another link's list, would show their
    invoices, or C1's twice."""
    rows = []
    for n, item in enumerate(drawn):
        total = item["total_minor"]
        organization_id, customer_id = customer_ids[item["customer"]]
        rows.append({
            "organization_id": organization_id, "external_id": f"X-{n}", "customer_id": customer_id,
            "number": f"N-{n}", "kind": item["kind"], "status": item["status"], "issue_date": item["issue_date"],
            "due_date": None if item["due_in"] is None else TODAY + dt.timedelta(days=item["due_in"]),
            "currency": item["currency"], "total_minor": total, "amount_due_minor": total * item["due_percent"] // 100,
            "paid_minor": total * item["paid_percent"] // 100, "lines": [], "revision": 1, "content_hash": "x",
            "created_at": NOW, "updated_at": NOW})

    def write(conn: sa.Connection) -> list[dict[str, Any]]:
        conn.execute(link_invoices.delete())
        conn.execute(portal_links.delete())
        conn.execute(invoices.delete())
        for row in rows:
            row["id"] = conn.execute(invoices.insert().values(row).returning(invoices.c.id)).scalar_one()
        for neighbour, listed in zip(("C2", "O1"), neighbour_scopes, strict=True):
            organization_id, customer_id = customer_ids[neighbour]
            add_link(conn, organization_id, customer_id, [rows[i % len(rows)]["id"] for i in listed])
        return rows

    return database.run(write)  # type: ignore[no-any-return]


def add_link(conn: sa.Connection, organization_id: int, customer_id: int, scope_ids: list[int] | None,
             **values: Any) -> int:
    """A link row, scoped to `scope_ids` (None: the whole history). A scope may list any invoice here (only
    create_link checks them): the rule must still show only the link's customer's."""
    link_id = int(conn.execute(portal_links.insert().values(
        organization_id=organization_id, customer_id=customer_id, created_at=NOW, scoped=scope_ids is not None,
        **{"expires_at": NOW + dt.timedelta(days=1), **values}).returning(portal_links.c.id)).scalar_one())
    if scope_ids:
        conn.execute(link_invoices.insert(), [{"link_id": link_id, "invoice_id": invoice_id,
                                                "organization_id": organization_id}
                                               for invoice_id in sorted(set(scope_ids))])
    return link_id


def expected_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """Open first, the oldest due first (no due date last); then by issue date, newest first (none last);
    then the newest id."""
    is_open = row["status"] == "open"
    due = row["due_date"] if is_open else None
    issued = row["issue_date"]
    return (not is_open, due is None, due or dt.date.min, issued is None,
            -(issued or dt.date.min).toordinal(), -row["id"])


positions = st.lists(st.integers(0, 200), max_size=30)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=st.lists(an_invoice, min_size=20, max_size=80), scoped=st.booleans(), data=st.data(),
       neighbours=st.tuples(positions, positions),
       status=st.sampled_from([None, None, "open", "paid", "cancelled"]), year=st.sampled_from([None, None, 2025, 2026]))
def test_every_page_shows_what_the_rules_say(database: Any, customer_ids: dict[str, tuple[int, int]],
                                            drawn: list[dict[str, Any]], scoped: bool, data: Any,
                                            neighbours: tuple[list[int], list[int]], status: str | None,
                                            year: int | None) -> None:
    rows = store(database, customer_ids, drawn, list(neighbours))
    organization_id, customer_id = customer_ids["C1"]
    visible = [r for r in rows if r["customer_id"] == customer_id and r["status"] != "draft"]
    scope_ids = None
    if scoped:
        scope_ids = data.draw(st.lists(st.sampled_from([r["id"] for r in rows]), unique=True))
        visible = [r for r in visible if r["id"] in scope_ids]
    link_id = database.run(lambda conn: add_link(conn, organization_id, customer_id, scope_ids))
    scope = database.run(lambda conn: links.resolve(conn, link_id, NOW))
    assert (scope.organization_id, scope.customer_id, scope.scoped) == (organization_id, customer_id, scoped)

    # The history, page by page.
    matching = sorted((r for r in visible if (status is None or r["status"] == status)
                       and (year is None or (r["issue_date"] is not None and r["issue_date"].year == year))),
                      key=expected_order)
    pages = max(1, -(-len(matching) // debtor.PAGE_SIZE))
    for page_number in range(1, pages + 2):  # and one past the end
        page = database.run(lambda conn, n=page_number: debtor.history(conn, scope, TODAY, status=status,
                                                                        year=year, page=n))
        shown = matching[(page_number - 1) * debtor.PAGE_SIZE:page_number * debtor.PAGE_SIZE]
        assert [item.id for item in page.items] == [r["id"] for r in shown]
        for item, row in zip(page.items, shown, strict=True):
            assert (item.number, item.kind, item.status, item.issue_date, item.due_date, item.currency,
                    item.total_minor, item.amount_due_minor, item.paid_minor) == (
                row["number"], row["kind"], row["status"], row["issue_date"], row["due_date"], row["currency"],
                row["total_minor"], row["amount_due_minor"], row["paid_minor"])
        assert (page.total, page.pages) == (len(matching), pages)
    owed = {r["id"]: debtor.outstanding_minor(SimpleNamespace(**r)) for r in visible}
    late = [r for r in visible if owed[r["id"]] and r["due_date"] is not None and r["due_date"] < TODAY]
    assert page.summary.outstanding == per_currency(visible, owed)
    assert page.summary.overdue == per_currency(late, owed)
    assert page.summary.open_count == sum(1 for amount in owed.values() if amount)
    assert page.summary.overdue_count == len(late)
    # Open credit notes count in the balance, with the credit they still hold.
    credit = {r["id"]: debtor.credit_minor(SimpleNamespace(**r)) for r in visible}
    assert page.summary.credit == per_currency(visible, credit)
    balance = {c: page.summary.outstanding.get(c, 0) - page.summary.credit.get(c, 0)
               for c in {*page.summary.outstanding, *page.summary.credit}}
    assert page.summary.balance == {c: v for c, v in balance.items() if v}
    assert page.summary.years == sorted({r["issue_date"].year for r in visible if r["issue_date"]}, reverse=True)

    # The invoice page (and the PDF and the remark form, which read it through the same function), the zip
    # selection and the payment selection: every invoice of every customer, and one that does not exist.
    visible_ids = [r["id"] for r in visible]
    every_id = [r["id"] for r in rows] + [max(r["id"] for r in rows) + 1]

    def every_page(conn: sa.Connection) -> None:
        for invoice_id in every_id:
            if invoice_id in visible_ids:
                assert debtor.invoice(conn, scope, invoice_id).id == invoice_id
            else:
                with pytest.raises(NotFound):
                    debtor.invoice(conn, scope, invoice_id)
            try:
                selection = checkouts.select_payable(conn, scope, [invoice_id])
            except NotFound:
                assert invoice_id not in visible_ids, "a visible invoice must be found"
            except checkouts.SelectionRefused as refused:
                assert refused.code == "nothing_to_pay" and not owed[invoice_id]
            else:
                assert [(row.id, amount) for row, amount in selection.items] == [(invoice_id, owed[invoice_id])]
        asked = every_id + every_id[:5]  # and some twice
        assert [row.id for row in debtor.invoices_by_ids(conn, scope, asked)] == [
            i for i in every_id if i in visible_ids]

    database.run(every_page, write=False)


def per_currency(rows: list[dict[str, Any]], owed: dict[int, int]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for r in rows:
        sums[r["currency"]] = sums.get(r["currency"], 0) + owed[r["id"]]
    return {currency: amount for currency, amount in sums.items() if amount}


def test_a_link_that_no_longer_works_shows_nothing(database: Any, customer_ids: dict[str, tuple[int, int]]) -> None:
    rows = store(database, customer_ids, [{"customer": "C1", "kind": "invoice", "status": "open", "currency": "EUR",
                                           "issue_date": TODAY, "due_in": 10, "total_minor": 100, "due_percent": 100,
                                           "paid_percent": 0}], [[], []])
    organization_id, customer_id = customer_ids["C1"]

    def link(scope_ids: list[int] | None = None, **values: Any) -> int:
        return database.run(lambda conn: add_link(conn, organization_id, customer_id, scope_ids, **values))

    expired = link(expires_at=NOW)
    revoked = link(revoked_at=NOW)
    live = link(expires_at=NOW + dt.timedelta(seconds=1))
    for link_id in (expired, revoked, live + 1000):
        with pytest.raises(links.LinkNotUsable):
            database.run(lambda conn, link_id=link_id: links.resolve(conn, link_id, NOW))
    scope = database.run(lambda conn: links.resolve(conn, live, NOW))
    page = database.run(lambda conn: debtor.history(conn, scope, TODAY))
    assert [item.number for item in page.items] == ["N-0"]

    # A scoped link with no invoices listed (none survived, say) shows nothing: the rule fails closed.
    empty_link = link([])
    empty = database.run(lambda conn: links.resolve(conn, empty_link, NOW))
    page = database.run(lambda conn: debtor.history(conn, empty, TODAY))
    assert page.items == [] and page.summary.open_count == 0 and page.total == 0
    with pytest.raises(NotFound):
        database.run(lambda conn: debtor.invoice(conn, empty, rows[0]["id"]))
