"""The pull importer against a real HTTP upstream on loopback (tests/support/fake_upstream.py), in the shape
of an order-to-billing API: orders with their prices and their notice's operator, paged with links.next."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.connectors import registry
from portal.connectors.mapping import Mapping, MappingError, loads_exact
from portal.connectors.pull_import import ImportReport, PullImporter
from portal.db import Database
from portal.errors import InvalidInput
from portal.money import exponent, parse_minor
from tests.conftest import START, Tenant
from tests.support.fake_upstream import FakeUpstream, Reply, order

TOKEN = "molink-test-token"

MAPPING: dict[str, Any] = {
    "external_id": {"template": "molink-{id}"},
    "number": "reference",
    "customer": {
        "external_id": {"template": "operator-{notice.operator.id}"},
        "name": "notice.operator.name",
        "email": "notice.operator.email",
        "locale": {"const": "fr-BE"},
    },
    "status": {"path": "state", "map": {"validated": "open", "paid": "paid", "cancelled": "cancelled"}},
    "issue_date": {"path": "created_at", "date": True},
    "currency": "prices.currency",
    "total": "prices.total_ttc",
    "title": "notice.title",
    "lines": [{
        "description": {"template": "Publication: {notice.title}"},
        "quantity": {"const": "1"},
        "unit_price": "prices.total_ht",
        "vat_rate": "prices.vat_rate",
        "total": {"path": "prices.total_ht_cents", "minor_units": True},
    }],
}


def at(day: int, hour: int = 10) -> str:
    return f"2026-10-{day:02d}T{hour:02d}:00:00+00:00"


def settings_for(upstream: FakeUpstream, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "url": upstream.url("/v2/orders"),
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "params": {"includes": "prices,notice.operator", "filter[status]": "validated,paid"},
        "items_path": "data",
        "next_path": "links.next",
        "updated_since_param": "filter[updated_at][gte]",
        "cursor_path": "updated_at",
        "interval_seconds": 300,
        "mapping": MAPPING,
    }
    settings.update(overrides)
    return {key: value for key, value in settings.items() if value is not None}


def run_import(database: Database, tenant: Tenant, settings: dict[str, Any], cursor: str | None = None,
               now: dt.datetime = START) -> ImportReport:
    async def go() -> ImportReport:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await PullImporter(settings, client).run(database, tenant.org.id, cursor, now)

    return asyncio.run(go())


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(token=TOKEN, per_page=3) as fake:
        yield fake


def five_orders(upstream: FakeUpstream) -> None:
    upstream.add(
        order(1001, updated_at=at(1), total_ht_cents=10_000),
        order(1002, updated_at=at(2), total_ht_cents=25_050, operator_id=78, operator_name="PF Dubois",
              operator_email="factures@pf-dubois.example"),
        order(1003, updated_at=at(3), state="paid", total_ht_cents=4_999, vat_rate="6"),
        order(1004, updated_at=at(4), total_ht_cents=1),
        order(1005, updated_at=at(5), total_ht_cents=99_999_99),
    )


def invoice(tenant: Tenant, external_id: str) -> dict[str, Any]:
    response = tenant.client.get(f"/api/v1/invoices/{external_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_two_pages_of_orders_are_mapped_and_imported(database: Database, tenant: Tenant,
                                                     upstream: FakeUpstream) -> None:
    five_orders(upstream)

    report = run_import(database, tenant, settings_for(upstream))

    assert report == ImportReport(fetched=5, created=5, updated=0, unchanged=0, failed=0, errors=[], cursor=at(5))
    first, second = upstream.requests_to("/v2/orders")
    assert first.query == {"includes": "prices,notice.operator", "filter[status]": "validated,paid"}
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert second.query["page"] == "2" and second.query["includes"] == "prices,notice.operator"
    assert second.headers["authorization"] == f"Bearer {TOKEN}"

    body = invoice(tenant, "molink-1001")
    assert body | {"lines": None} == body | {
        "customer": "operator-77", "number": "CMD-1001", "status": "open", "issue_date": "2026-10-01",
        "currency": "EUR", "total": "120.00", "amount_due": "120.00", "title": "Avis de décès n° 6001",
        "lines": None}
    assert body["lines"] == [{"description": "Publication: Avis de décès n° 6001", "quantity": "1",
                              "unit_price": "100.00", "vat_rate": "20", "total": "100.00"}]
    paid = invoice(tenant, "molink-1003")
    assert (paid["status"], paid["total"], paid["amount_due"]) == ("paid", "52.98", "0.00")
    assert paid["lines"][0]["total"] == "49.99"
    assert invoice(tenant, "molink-1004")["lines"][0]["total"] == "0.01"
    assert invoice(tenant, "molink-1005")["total"] == "119999.98"
    customer = tenant.client.get("/api/v1/customers/operator-78").json()
    assert (customer["name"], customer["email"], customer["locale"]) == (
        "PF Dubois", "factures@pf-dubois.example", "fr-BE")


def test_the_next_run_asks_only_for_what_changed(database: Database, tenant: Tenant,
                                                 upstream: FakeUpstream) -> None:
    five_orders(upstream)
    first = run_import(database, tenant, settings_for(upstream))
    assert first.cursor == at(5)

    upstream.update(1002, updated_at=at(6), prices={**order(1002, updated_at="", total_ht_cents=30_000)["prices"]})
    upstream.update(1003, updated_at=at(7))            # touched upstream, same content
    upstream.add(order(1006, updated_at=at(8)))
    upstream.requests.clear()

    report = run_import(database, tenant, settings_for(upstream), cursor=first.cursor)

    # The order at the cursor itself comes again (the filter is "at or after"): it is unchanged.
    assert report == ImportReport(fetched=4, created=1, updated=1, unchanged=2, failed=0, errors=[], cursor=at(8))
    asked = upstream.requests_to("/v2/orders")
    assert [r.query.get("filter[updated_at][gte]") for r in asked] == [at(5), at(5)]
    assert (invoice(tenant, "molink-1002")["total"], invoice(tenant, "molink-1002")["revision"]) == ("360.00", 2)
    assert [invoice(tenant, f"molink-{n}")["revision"] for n in (1001, 1003, 1004, 1005, 1006)] == [1, 1, 1, 1, 1]

    again = run_import(database, tenant, settings_for(upstream), cursor=report.cursor)
    assert again == ImportReport(fetched=1, created=0, updated=0, unchanged=1, failed=0, errors=[], cursor=at(8))


def test_a_bad_item_is_reported_and_the_others_are_stored(database: Database, tenant: Tenant,
                                                          upstream: FakeUpstream) -> None:
    upstream.add(
        order(1001, updated_at=at(1)),
        order(1002, updated_at=at(2), total_ttc="12.345"),
        order(1003, updated_at=at(3), state="archived"),
        order(1004, updated_at=at(4), operator_id=79, operator_email="not an address"),
        order(1005, updated_at=at(5)),
    )
    settings = settings_for(upstream, params={"includes": "prices,notice.operator"})

    report = run_import(database, tenant, settings)

    assert (report.fetched, report.created, report.failed) == (5, 2, 3)
    too_precise, unknown_status, bad_email, held = report.errors
    assert too_precise == "molink-1002: /total (from prices.total_ttc): EUR amounts have at most 2 decimals"
    assert unknown_status == ("page 1 item 3 (id 1003): status: 'archived' (from state) is not one of the mapped "
                              "values ('validated', 'paid', 'cancelled')")
    assert bad_email.startswith("molink-1004: /customer/email (from notice.operator.email): String should match")
    # The cursor does not pass an item that was not stored: the next run asks for 1002 again.
    assert report.cursor == at(2)
    assert held == f"the cursor is held at {at(2)!r} by molink-1002, which failed: the next run asks for it again"
    assert [tenant.client.get(f"/api/v1/invoices/molink-{n}").status_code for n in range(1001, 1006)] == [
        200, 404, 404, 404, 200]
    assert tenant.client.get("/api/v1/customers/operator-79").status_code == 404

    upstream.update(1002, updated_at=at(6), prices={**order(1002, updated_at="")["prices"], "total_ttc": "12.35"})
    fixed = run_import(database, tenant, settings, cursor=report.cursor)
    assert (fixed.created, fixed.unchanged, fixed.failed, fixed.cursor) == (1, 1, 2, at(3))
    assert invoice(tenant, "molink-1002")["total"] == "12.35"

    passing = run_import(database, tenant, {**settings, "hold_cursor_on_failure": False}, cursor=fixed.cursor)
    assert (passing.failed, passing.cursor) == (2, at(6))


def test_upstream_500_mid_pagination_keeps_the_cursor(database: Database, tenant: Tenant,
                                                      upstream: FakeUpstream) -> None:
    upstream.add(*(order(1000 + n, updated_at=at(n)) for n in range(1, 7)))
    upstream.on("GET", "/v2/orders", Reply(500, json={"error": "boom"}), when=lambda r: r.query.get("page") == "2")
    old = at(1, hour=0)

    report = run_import(database, tenant, settings_for(upstream), cursor=old)

    assert (report.fetched, report.created, report.failed, report.cursor) == (3, 3, 0, old)
    assert report.errors[0] == "page 2: upstream answered 500 Internal Server Error"
    assert report.errors[1].startswith(f"the cursor stays at {old!r}: the run did not reach the last page")

    resumed = run_import(database, tenant, settings_for(upstream), cursor=report.cursor)
    assert resumed == ImportReport(fetched=6, created=3, updated=0, unchanged=3, failed=0, errors=[],
                                   cursor=at(6))


def test_a_listing_sorted_by_the_cursor_moves_it_past_the_stored_pages(database: Database, tenant: Tenant,
                                                                       upstream: FakeUpstream) -> None:
    upstream.add(*(order(1000 + n, updated_at=at(n)) for n in range(1, 7)))
    upstream.on("GET", "/v2/orders", Reply(503, headers={"Retry-After": "120"}),
                when=lambda r: r.query.get("page") == "2")

    report = run_import(database, tenant, settings_for(upstream, cursor_ordered=True), cursor=at(1, hour=0))

    assert report.errors == ["page 2: upstream answered 503 Service Unavailable (Retry-After: 120)"]
    assert (report.created, report.cursor) == (3, at(3))


def test_nothing_completed_keeps_the_cursor(database: Database, tenant: Tenant, upstream: FakeUpstream) -> None:
    five_orders(upstream)
    upstream.on("GET", "/v2/orders", Reply(502), times=None)

    for cursor in (None, at(2)):
        report = run_import(database, tenant, settings_for(upstream, cursor_ordered=True), cursor=cursor)
        assert report == ImportReport(fetched=0, created=0, updated=0, unchanged=0, failed=0,
                                      errors=["page 1: upstream answered 502 Bad Gateway"], cursor=cursor)


@pytest.mark.parametrize(("reply", "problem"), [
    (Reply(delay=1.5), "no answer within 0.3 seconds (timeout_seconds)"),
    (Reply(reset=True), "the connection failed ("),
    (Reply(401, json={"error": "unauthenticated"}), "upstream answered 401 Unauthorized; check the credentials"),
    (Reply(200, body=b"<html>maintenance</html>", headers={"content-type": "text/html"}),
     "the answer is not JSON (text/html)"),
    (Reply(200, json={"orders": []}), "no list of items at 'data' (items_path)"),
])
def test_upstream_trouble_ends_the_run_with_what_was_stored(database: Database, tenant: Tenant,
                                                            upstream: FakeUpstream, reply: Reply,
                                                            problem: str) -> None:
    five_orders(upstream)
    upstream.on("GET", "/v2/orders", reply, when=lambda r: r.query.get("page") == "2")

    report = run_import(database, tenant, settings_for(upstream, timeout_seconds=0.3), cursor=at(1, hour=0))

    assert (report.fetched, report.created, report.cursor) == (3, 3, at(1, hour=0))
    assert report.errors[0].startswith(f"page 2: {problem}"), report.errors


def test_page_number_paging_and_the_page_cap(database: Database, tenant: Tenant, upstream: FakeUpstream) -> None:
    five_orders(upstream)
    settings = settings_for(upstream, next_path=None, page_param="page", page_size_param="per_page", page_size=2)

    report = run_import(database, tenant, settings)

    assert (report.fetched, report.created, report.errors, report.cursor) == (5, 5, [], at(5))
    assert [(r.query["page"], r.query["per_page"]) for r in upstream.requests_to("/v2/orders")] == [
        ("1", "2"), ("2", "2"), ("3", "2")]

    capped = run_import(database, tenant, {**settings, "max_pages": 2})
    assert (capped.fetched, capped.unchanged, capped.cursor) == (4, 4, None)
    assert capped.errors[0] == "stopped after max_pages (2) pages; the next run goes on"

    sorted_capped = run_import(database, tenant, {**settings, "max_pages": 2, "cursor_ordered": True})
    assert (sorted_capped.errors, sorted_capped.cursor) == (["stopped after max_pages (2) pages; the next run goes on"],
                                                            at(4))


def test_a_next_link_to_another_origin_is_not_followed(database: Database, tenant: Tenant,
                                                        upstream: FakeUpstream) -> None:
    with FakeUpstream() as elsewhere:
        upstream.on("GET", "/v2/orders", Reply(json={
            "data": [order(1001, updated_at=at(1))], "links": {"next": elsewhere.url("/v2/orders?page=2")}}))

        report = run_import(database, tenant, settings_for(upstream))

        assert (report.created, report.cursor) == (1, None)
        assert report.errors[0] == ("page 1: the next link goes to another origin (http://127.0.0.1); not followed, "
                                    "so the headers are not sent there")
        assert elsewhere.requests == []


def test_relative_next_links_are_followed(database: Database, tenant: Tenant, upstream: FakeUpstream) -> None:
    upstream.on("GET", "/v2/orders", Reply(json={
        "data": [order(1001, updated_at=at(1))],
        "links": {"next": "/v2/orders?per_page=10&includes=prices,notice.operator"}}))
    five_orders(upstream)
    upstream.orders.pop(0)

    report = run_import(database, tenant, settings_for(upstream))

    assert (report.fetched, report.created, report.errors, report.cursor) == (5, 5, [], at(5))
    # The link is taken as given: the configured params are not added to it.
    assert upstream.requests_to("/v2/orders")[1].query == {"per_page": "10", "includes": "prices,notice.operator"}


VALID = {"url": "https://upstream.example/v2/orders", "mapping": MAPPING}


@pytest.mark.parametrize(("settings", "path", "problem"), [
    ({"mapping": MAPPING}, "/settings/url", "Field required"),
    ({"url": "https://upstream.example/v2/orders"}, "/settings/mapping", "Field required"),
    ({**VALID, "url": "ftp://upstream.example/orders"}, "/settings/url", "an absolute http:// or https:// URL"),
    ({**VALID, "url": "https://me:secret@upstream.example/"}, "/settings/url",
     "no credentials in the URL; put them in headers (e.g. Authorization)"),
    ({**VALID, "url": "http://{invoice.number}:8450/"}, "/settings/url", "no {placeholders} in the scheme, host"),
    ({**VALID, "next_pth": "links.next"}, "/settings/next_pth", "Extra inputs are not permitted"),
    ({**VALID, "headers": {"Authorization": 12}}, "/settings/headers/Authorization", "Input should be a valid string"),
    ({**VALID, "headers": {"X-Token": "a\r\nX-Evil: 1"}}, "/settings/headers/X-Token",
     "text on one line"),
    ({**VALID, "headers": {"X Token": "a"}}, "/settings/headers/X Token", "'X Token' is not a valid header name"),
    ({**VALID, "next_path": "links.next", "page_param": "page"}, "/settings",
     "next_path, page_param: choose one way to page"),
    ({**VALID, "page_param": "page", "params": {"page": "1"}}, "/settings",
     "params.page: set by page_param on every request; leave it out of params"),
    ({**VALID, "next_path": "links..next"}, "/settings/next_path", "'links..next' is not a dotted path"),
    ({**VALID, "updated_since_param": "filter[updated_at][gte]"}, "/settings",
     "updated_since_param: needs cursor_path (or response_cursor_path)"),
    ({**VALID, "cursor_path": "updated_at", "response_cursor_path": "meta.token"}, "/settings",
     "cursor_path, response_cursor_path: choose one"),
    ({**VALID, "interval_seconds": 5}, "/settings/interval_seconds", "Input should be greater than or equal to 60"),
    ({**VALID, "max_pages": 0}, "/settings/max_pages", "Input should be greater than or equal to 1"),
    ({**VALID, "timeout_seconds": "30"}, "/settings/timeout_seconds", "Input should be a valid number"),
    ({**VALID, "mapping": []}, "/settings/mapping", "Input should be an object"),
    ({**VALID, "mapping": {**MAPPING, "amount": "prices.total"}}, "/settings/mapping/amount",
     "Extra inputs are not permitted"),
    ({**VALID, "mapping": {k: v for k, v in MAPPING.items() if k != "total"}}, "/settings/mapping/total",
     "Field required"),
    ({**VALID, "mapping": {**MAPPING, "customer": {"external_id": "notice.operator.id"}}},
     "/settings/mapping/customer/name", "Field required"),
    ({**VALID, "mapping": {**MAPPING, "total": {"path": "prices.total_cents", "minor_units": "yes"}}},
     "/settings/mapping/total/minor_units", "Input should be a valid boolean"),
    ({**VALID, "mapping": {**MAPPING, "title": {"path": "notice.title", "minor_units": True}}},
     "/settings/mapping/title", "minor_units: only for amounts"),
    ({**VALID, "mapping": {**MAPPING, "status": {"path": "state", "map": {}}}}, "/settings/mapping/status/map",
     "Dictionary should have at least 1 item"),
    ({**VALID, "mapping": {**MAPPING, "title": {"path": "notice.title", "const": "Avis"}}},
     "/settings/mapping/title", "give exactly one of path, const or template (got path, const)"),
    ({**VALID, "mapping": {**MAPPING, "currency": {"const": 1.5}}}, "/settings/mapping/currency/const",
     "text or a whole number (write decimals as text"),
    ({**VALID, "mapping": {**MAPPING, "number": {"template": "{reference!r}"}}},
     "/settings/mapping/number/template", "{reference}: no format specs or conversions"),
    ({**VALID, "mapping": {**MAPPING, "total": {"pth": "prices.total"}}}, "/settings/mapping/total/pth",
     "Extra inputs are not permitted"),
    ({**VALID, "mapping": {**MAPPING, "lines": [{"description": "notice.title"}]}},
     "/settings/mapping/lines/0/vat_rate", "Field required"),
    ({**VALID, "mapping": {**MAPPING, "lines": {"each": "prices.lines", "fields": {
        "description": "label", "quantity": "qty", "unit_price": "unit", "vat_rate": "vat", "total": "total",
        "discount": "discount"}}}}, "/settings/mapping/lines/fields/discount", "Extra inputs are not permitted"),
])
def test_bad_settings_are_refused_at_their_field(settings: dict[str, Any], path: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        registry.validate("pull_import", settings)

    assert any(e.path == path and e.message.startswith(problem) for e in refused.value.errors), refused.value.errors
    with pytest.raises(InvalidInput):
        PullImporter(settings, httpx.AsyncClient())


def test_good_settings_have_no_problems() -> None:
    registry.validate("pull_import", VALID)
    registry.validate("pull_import", {**VALID, "page_param": "page", "page_size_param": "per_page",
                                      "page_size": 100, "first_page": 0, "cursor_path": "updated_at",
                                      "cursor_ordered": True, "updated_since_param": "since",
                                      "hold_cursor_on_failure": False, "max_pages": 5, "timeout_seconds": 2.5,
                                      "items_path": "data"})
    registry.validate("pull_import", {**VALID, "response_cursor_path": "meta.sync_token",
                                      "updated_since_param": "since"})


CURRENCY = st.sampled_from(["EUR", "JPY", "KWD", "USD", "CLF"])
CENTS_MAPPING = Mapping({**MAPPING, "currency": "cur", "total": {"path": "amount", "minor_units": True},
                         "lines": {"each": "lines", "fields": {
                             "description": {"const": "x"}, "quantity": {"const": "1"}, "vat_rate": {"const": "0"},
                             "unit_price": {"path": "cents", "minor_units": True},
                             "total": {"path": "cents", "minor_units": True}}}})


def _sample(amount: Any, currency: str, lines: Any = ()) -> dict[str, Any]:
    return {"id": 1, "reference": "R", "state": "validated", "created_at": "2026-10-01", "cur": currency,
            "amount": amount, "notice": {"title": "t", "operator": {"id": 1, "name": "n"}},
            "lines": [{"cents": line} for line in lines]}


@given(minor=st.integers(min_value=-(10**20), max_value=10**20), currency=CURRENCY,
       form=st.sampled_from(["integer", "text", "json integer", "json decimal"]))
def test_minor_units_are_converted_exactly(minor: int, currency: str, form: str) -> None:
    if form == "integer":
        item = _sample(minor, currency, [minor])
    elif form == "text":
        item = _sample(str(minor), currency, [str(minor)])
    else:
        number = f"{minor}.00" if form == "json decimal" else str(minor)
        item = loads_exact(f'{{"id": 1, "reference": "R", "state": "validated", "created_at": "2026-10-01", '
                           f'"cur": "{currency}", "amount": {number}, "lines": [{{"cents": {number}}}], '
                           f'"notice": {{"title": "t", "operator": {{"id": 1, "name": "n"}}}}}}')

    mapped = CENTS_MAPPING.apply(item)

    decimals = exponent(currency)
    for text in (mapped.invoice["total"], mapped.invoice["lines"][0]["total"]):
        assert Decimal(text).scaleb(decimals) == minor
        assert len(text.partition(".")[2]) == decimals
        if abs(minor) < 10**15:
            assert parse_minor(text, currency, allow_negative=True) == minor


DECIMAL_MAPPING = Mapping({**{k: v for k, v in MAPPING.items() if k != "lines"}, "currency": "cur",
                          "total": "amount"})


@given(minor=st.integers(min_value=0, max_value=10**15 - 1), currency=CURRENCY)
def test_decimal_numbers_from_upstream_json_stay_exact(minor: int, currency: str) -> None:
    decimals = exponent(currency)
    text = f"{minor // 10**decimals}.{minor % 10**decimals:0{decimals}d}" if decimals else str(minor)
    item = loads_exact(f'{{"id": 1, "reference": "R", "state": "validated", "created_at": "2026-10-01", '
                       f'"cur": "{currency}", "amount": {text}, '
                       f'"notice": {{"title": "t", "operator": {{"id": 1, "name": "n"}}}}}}')

    total = DECIMAL_MAPPING.apply(item).invoice["total"]

    assert total == text
    assert parse_minor(total, currency) == minor


@pytest.mark.parametrize(("amount", "problem"), [
    ("12.5", "total: '12.5' is not a whole number of minor units"),
    (Decimal("12.5"), "total: '12.5' is not a whole number of minor units"),
    (12.0, "total: is a binary float; amounts are read exactly"),
    (True, "total: is true, not text or a number"),
    ({"cents": 1}, "total: is an object, not a single value"),
])
def test_minor_units_refuse_what_is_not_a_whole_number(amount: Any, problem: str) -> None:
    with pytest.raises(MappingError) as caught:
        CENTS_MAPPING.apply(_sample(amount, "EUR"))
    assert str(caught.value).startswith(problem)


def test_the_upstreams_own_cursor_is_taken_after_a_complete_run(database: Database, tenant: Tenant,
                                                                 upstream: FakeUpstream) -> None:
    def page(orders: list[dict[str, Any]], token: str, next_link: str | None) -> Reply:
        return Reply(json={"data": orders, "links": {"next": next_link}, "meta": {"sync_token": token}})

    upstream.on("GET", "/v2/orders", page([order(1001, updated_at=at(1))], "tok-1", "/v2/orders?page=2"),
                when=lambda r: "page" not in r.query)
    upstream.on("GET", "/v2/orders", page([order(1002, updated_at=at(2))], "tok-2", None),
                when=lambda r: r.query.get("page") == "2")
    settings = settings_for(upstream, cursor_path=None, response_cursor_path="meta.sync_token",
                            updated_since_param="since")

    report = run_import(database, tenant, settings, cursor="tok-0")

    assert (report.created, report.errors, report.cursor) == (2, [], "tok-2")
    assert upstream.requests_to("/v2/orders")[0].query["since"] == "tok-0"

    upstream.on("GET", "/v2/orders", page([order(1003, updated_at=at(3), state="lost")], "tok-3", None))
    held = run_import(database, tenant, settings, cursor=report.cursor)
    assert (held.failed, held.cursor) == (1, "tok-2")
