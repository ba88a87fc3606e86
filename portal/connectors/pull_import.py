"""The pull importer: invoices from an upstream that only offers an API to read (e.g. `GET /v2/orders`).

Each run asks the upstream listing for what changed since the cursor, page by page, maps every item to a
customer and an invoice (`portal.connectors.mapping`), validates both exactly as the machine API validates a
pushed body, and stores each page in one transaction through the same services as the API (`upsert_customer`,
`upsert_invoices`). A bad item is reported and does not stop the others; upstream trouble (timeout, reset,
5xx, any answer that is not a page) ends the run with what was stored so far.

The cursor rule, exactly: the new cursor is the greatest `cursor_path` value among the items that were
stored (created, updated or unchanged); it never passes an item that was not stored:
- a run that fails before it reached the last page keeps the old cursor, because the pages it did not read
  may hold smaller values; unless the listing is declared sorted by the cursor (`cursor_ordered`) and the
  items did arrive in that order, in which case every unread item is at or after the last one read;
- with `hold_cursor_on_failure` (the default) a failed item holds the cursor at its own value, so the next
  run (which asks for values at or after the cursor) fetches it again, until it is fixed upstream or in the
  mapping;
- the cursor never moves backwards, and a run that stored nothing keeps it.
With `response_cursor_path` (the upstream's own sync token) the token of the last page is taken only when the
run read every page and, under `hold_cursor_on_failure`, nothing failed; otherwise the old cursor stays.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from pydantic import AfterValidator, Field, StringConstraints, model_validator

from portal.connectors.mapping import (
    DottedPath, MappedItem, Mapping, MappingError, MappingSpec, Scalar, loads_exact, resolve,
)
from portal.connectors.status_patch import HeaderName, HeaderValue
from portal.connectors.urls import upstream_url
from portal.db import Database
from portal.domain.customers import CustomerInput, upsert_customer
from portal.domain.invoices import InvoiceInput, upsert_invoices
from portal.errors import Conflict, FieldError, InvalidInput, QuittanceError
from portal.schemas.convert import customer_input, invoice_input
from portal.schemas.models import BatchInvoice, CustomerIn, Strict
from portal.schemas.validation import refusal, validate

MAX_ERRORS = 50   # item errors listed in one report; the rest are counted

ParamName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class PullImportSettings(Strict):
    """A pull_import connector's settings (docs/connectors.md describes each)."""

    url: Annotated[str, StringConstraints(max_length=2000), AfterValidator(upstream_url)]
    mapping: MappingSpec
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    params: dict[ParamName, Scalar] = Field(default_factory=dict)
    items_path: DottedPath | None = None
    next_path: DottedPath | None = None
    page_param: ParamName | None = None
    first_page: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    page_size_param: ParamName | None = None
    page_size: Annotated[int, Field(ge=1, le=10_000)] | None = None
    updated_since_param: ParamName | None = None
    cursor_path: DottedPath | None = None
    response_cursor_path: DottedPath | None = None
    cursor_ordered: bool = False
    hold_cursor_on_failure: bool = True
    max_pages: Annotated[int, Field(ge=1, le=1000)] = 20
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 30
    max_page_bytes: Annotated[int, Field(ge=1024, le=100 * 1024 * 1024)] = 10 * 1024 * 1024
    interval_seconds: Annotated[int, Field(ge=60, le=86_400)] = 300

    @model_validator(mode="after")
    def consistent(self) -> PullImportSettings:
        """Settings that only make sense together; the message names every field involved."""
        problems = []
        if self.next_path is not None and self.page_param is not None:
            problems.append("next_path, page_param: choose one way to page: next_path follows the link the "
                            "upstream gives, page_param counts pages")
        if self.page_param is None:
            problems += [f"{key}: only with page_param" for key in ("page_size_param", "page_size", "first_page")
                         if key in self.model_fields_set]
        for key in ("page_param", "page_size_param", "updated_since_param"):
            name = getattr(self, key)
            if name is not None and name in self.params:
                problems.append(f"params.{name}: set by {key} on every request; leave it out of params")
        if self.page_size_param is not None and self.page_size is None:
            problems.append("page_size: required with page_size_param (the page size to ask for)")
        if self.cursor_path is not None and self.response_cursor_path is not None:
            problems.append("cursor_path, response_cursor_path: choose one: the greatest value of a field of "
                            "the items, or the upstream's own token from the answer")
        if self.updated_since_param is not None and self.cursor_path is None and self.response_cursor_path is None:
            problems.append("updated_since_param: needs cursor_path (or response_cursor_path) to know what to send")
        if self.cursor_ordered and self.cursor_path is None:
            problems.append("cursor_ordered: only with cursor_path")
        if problems:
            raise refusal("; ".join(problems))
        return self


@dataclass(frozen=True)
class ImportReport:
    fetched: int
    created: int
    updated: int
    unchanged: int
    failed: int
    errors: list[str]
    cursor: str | None


class UpstreamError(Exception):
    """The upstream did not give us a page; the run ends here."""


@dataclass
class _Run:
    """What a run has done so far."""

    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    item_errors: int = 0
    stored: list[str] = field(default_factory=list)          # cursor values of stored items
    held: list[tuple[str, str]] = field(default_factory=list)  # (cursor value, label) of failed items
    last_seen: str | None = None
    out_of_order: str | None = None
    token: str | None = None

    def fail(self, label: str, reason: str, cursor_value: str | None) -> None:
        self.failed += 1
        self.item_errors += 1
        if self.item_errors <= MAX_ERRORS:
            self.errors.append(f"{label}: {reason}")
        if cursor_value is not None:
            self.held.append((cursor_value, label))

    def report(self, cursor: str | None) -> ImportReport:
        errors = list(self.errors)
        if self.item_errors > MAX_ERRORS:
            errors.append(f"... and {self.item_errors - MAX_ERRORS} more failed items")
        return ImportReport(fetched=self.fetched, created=self.created, updated=self.updated,
                            unchanged=self.unchanged, failed=self.failed, errors=errors, cursor=cursor)


def cursor_key(text: str) -> tuple[int, int, str]:
    """Order of cursor values: integers as numbers, ISO 8601 date-times as instants (naive ones as UTC),
    anything else as text."""
    if re.fullmatch(r"-?[0-9]{1,30}", text):
        return (0, int(text), "")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return (2, 0, text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return (1, 0, moment.isoformat(timespec="microseconds"))


class PullImporter:
    type = "pull_import"

    def __init__(self, settings: dict[str, Any], client: httpx.AsyncClient) -> None:
        """Raises InvalidInput for settings that PullImportSettings refuses. The address rule is not applied to
        the text here (it was when the connector was configured): it holds on every connection the client makes
        (portal.connectors.network)."""
        values = validate(PullImportSettings, settings, "/settings", context={"allow_private_networks": True})
        self.client = client
        try:
            self.url = httpx.URL(values.url)
        except httpx.InvalidURL as exc:
            raise InvalidInput("invalid fields", [FieldError("/settings/url", f"not a usable URL ({exc})")]) from None
        self.headers = {"Accept": "application/json", **values.headers}
        self.params = {key: str(value) for key, value in values.params.items()}
        self.items_path = values.items_path
        self.next_path = values.next_path
        self.page_param = values.page_param
        self.first_page = values.first_page
        self.page_size_param = values.page_size_param
        self.page_size = values.page_size
        self.updated_since_param = values.updated_since_param
        self.cursor_path = values.cursor_path
        self.response_cursor_path = values.response_cursor_path
        self.cursor_ordered = values.cursor_ordered
        self.hold_cursor_on_failure = values.hold_cursor_on_failure
        self.max_pages = values.max_pages
        self.timeout = float(values.timeout_seconds)
        self.max_page_bytes = values.max_page_bytes
        self.interval_seconds = values.interval_seconds
        self.mapping = Mapping(settings["mapping"])

    async def run(self, db: Database, organization_id: int, cursor: str | None, now: dt.datetime) -> ImportReport:
        """One import: every page from the cursor on, up to max_pages. Never raises for upstream trouble (it is
        in the report's errors); database errors do raise, with everything before them committed."""
        state = _Run()
        url = self.url
        params = dict(self.params)
        following = False   # a next link is requested as given, without params
        if cursor is not None and self.updated_since_param is not None:
            params[self.updated_since_param] = cursor
        page_number = self.first_page
        if self.page_param is not None:
            params[self.page_param] = str(page_number)
            if self.page_size_param is not None:
                params[self.page_size_param] = str(self.page_size)
        complete = False
        for page in range(1, self.max_pages + 1):
            try:
                body = await self._fetch(url, None if following else params)
                items = self._items(body)
            except UpstreamError as exc:
                state.errors.append(f"page {page}: {exc}")
                break
            state.fetched += len(items)
            await self._store(db, organization_id, now, page, items, state)
            if self.response_cursor_path is not None:
                token = resolve(body, self.response_cursor_path)
                usable = isinstance(token, (str, int)) and not isinstance(token, bool) and token != ""
                state.token = str(token) if usable else None
            if self.next_path is not None:
                link = resolve(body, self.next_path)
                if link is None or link == "":
                    complete = True
                    break
                try:
                    url, following = self._follow(url, link), True
                except UpstreamError as exc:
                    state.errors.append(f"page {page}: {exc}")
                    break
            elif self.page_param is not None:
                if not items or (self.page_size is not None and len(items) < self.page_size):
                    complete = True
                    break
                page_number += 1
                params[self.page_param] = str(page_number)
            else:
                complete = True
                break
        else:
            state.errors.append(f"stopped after max_pages ({self.max_pages}) pages; the next run goes on")
        return state.report(self._next_cursor(cursor, complete, state))

    async def _fetch(self, url: httpx.URL, params: dict[str, str] | None) -> Any:
        try:
            async with self.client.stream("GET", url, params=params, headers=self.headers,
                                          timeout=self.timeout) as response:
                if not 200 <= response.status_code < 300:
                    raise UpstreamError(_status_problem(response))
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_page_bytes:
                        raise UpstreamError(f"the page is larger than max_page_bytes ({self.max_page_bytes})")
        except httpx.TimeoutException:
            raise UpstreamError(f"no answer within {self.timeout:g} seconds (timeout_seconds)") from None
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise UpstreamError(f"the connection failed ({detail})") from None
        try:
            return loads_exact(bytes(body))
        except ValueError:
            raise UpstreamError(f"the answer is not JSON ({response.headers.get('content-type', 'no type')})") \
                from None

    def _items(self, body: Any) -> list[Any]:
        items = resolve(body, self.items_path) if self.items_path is not None else body
        if not isinstance(items, list):
            where = f"at {self.items_path!r}" if self.items_path is not None else "as the answer"
            raise UpstreamError(f"no list of items {where} (items_path)")
        return items

    def _follow(self, current: httpx.URL, link: Any) -> httpx.URL:
        """The next page's URL; only on the configured origin, so the headers (credentials) go nowhere else."""
        if not isinstance(link, str):
            raise UpstreamError(f"the next link at {self.next_path!r} is not text")
        try:
            target = current.join(link)
        except httpx.InvalidURL:
            raise UpstreamError(f"the next link {link[:100]!r} is not a URL") from None
        if (target.scheme, target.host, target.port) != (self.url.scheme, self.url.host, self.url.port):
            raise UpstreamError(f"the next link goes to another origin ({target.scheme}://{target.host}); "
                                f"not followed, so the headers are not sent there")
        return target

    async def _store(self, db: Database, organization_id: int, now: dt.datetime, page: int, items: list[Any],
                     state: _Run) -> None:
        """Map and validate the page's items, then write them in one transaction."""
        accepted: list[tuple[str, str | None, InvoiceInput, dict[str, Any]]] = []
        customers: dict[str, CustomerInput] = {}
        for index, item in enumerate(items):
            value = self._cursor_value(item)
            if value is not None:
                if state.last_seen is not None and state.out_of_order is None \
                        and cursor_key(value) < cursor_key(state.last_seen):
                    state.out_of_order = f"{value!r} came after {state.last_seen!r}"
                state.last_seen = value
            label = _label(item, page, index)
            try:
                mapped = self.mapping.apply(item)
            except MappingError as exc:
                state.fail(label, str(exc), value)
                continue
            label = mapped.external_id
            try:
                invoice, customer = self._validated(mapped)
            except InvalidInput as exc:
                state.fail(label, self._describe(exc), value)
                continue
            customers[customer.external_id] = customer
            accepted.append((label, value, invoice, {"external_id": mapped.external_id, **mapped.invoice}))
        if not accepted:
            return

        def write(conn: Any) -> list[Any]:
            for customer in customers.values():
                upsert_customer(conn, organization_id, customer, now)
            return upsert_invoices(conn, organization_id, [invoice for _, _, invoice, _ in accepted], now,
                                   raw_payloads=[raw for _, _, _, raw in accepted])

        outcomes = await db.write_bulk(write)
        for (label, value, _, _), outcome in zip(accepted, outcomes, strict=True):
            if outcome.result == "error":
                state.fail(label, self._describe(outcome.error), value)
                continue
            setattr(state, outcome.result, getattr(state, outcome.result) + 1)
            if value is not None:
                state.stored.append(value)

    def _validated(self, mapped: MappedItem) -> tuple[InvoiceInput, CustomerInput]:
        """Both bodies through the API's own validation and conversion; every field error of both at once."""
        errors: list[FieldError] = []
        invoice: InvoiceInput | None = None
        customer: CustomerInput | None = None
        try:
            body = validate(BatchInvoice, {"external_id": mapped.external_id, **mapped.invoice})
            invoice = invoice_input(mapped.external_id, body)
        except InvalidInput as exc:
            errors += exc.errors or [_whole(exc)]
        try:
            customer = customer_input(mapped.customer_external_id, validate(CustomerIn, mapped.customer, "/customer"))
        except InvalidInput as exc:
            errors += exc.errors or [_whole(exc)]
        if errors or invoice is None or customer is None:
            raise InvalidInput("invalid fields", errors)
        return invoice, customer

    def _describe(self, error: QuittanceError | None) -> str:
        if error is None:
            return "refused"
        if isinstance(error, InvalidInput) and error.errors:
            parts = []
            for problem in error.errors:
                source = self.mapping.source_of(problem.path)
                where = f"{problem.path} (from {source})" if source else problem.path
                parts.append(f"{where}: {problem.message}")
            return "; ".join(parts)
        if isinstance(error, Conflict):
            return f"{error.detail} ({error.code})"
        return error.detail

    def _cursor_value(self, item: Any) -> str | None:
        if self.cursor_path is None:
            return None
        value = resolve(item, self.cursor_path)
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            return None
        return str(value)

    def _next_cursor(self, old: str | None, complete: bool, state: _Run) -> str | None:
        if self.response_cursor_path is not None:
            if complete and state.token is not None and not (self.hold_cursor_on_failure and state.failed):
                return state.token
            return old
        if self.cursor_path is None:
            return old
        if self.cursor_ordered and state.out_of_order is not None:
            state.errors.append(f"items are not sorted by {self.cursor_path} ({state.out_of_order}), although "
                                f"cursor_ordered says so; the cursor only moves after a complete run")
        ordered = self.cursor_ordered and state.out_of_order is None
        if not complete and not ordered:
            if state.stored:
                state.errors.append(f"the cursor stays at {old!r}: the run did not reach the last page, and the "
                                    f"pages it did not read may hold earlier {self.cursor_path} values "
                                    f"(sort the listing by it and set cursor_ordered to move on anyway)")
            return old
        candidate = max(state.stored, key=cursor_key) if state.stored else None
        if self.hold_cursor_on_failure and state.held:
            value, label = min(state.held, key=lambda held: cursor_key(held[0]))
            if candidate is None or cursor_key(value) < cursor_key(candidate):
                candidate = value
                state.errors.append(f"the cursor is held at {value!r} by {label}, which failed: the next run "
                                    f"asks for it again")
        if candidate is None or (old is not None and cursor_key(candidate) < cursor_key(old)):
            return old
        return candidate


def _whole(error: InvalidInput) -> FieldError:
    return FieldError("", error.detail)


def _label(item: Any, page: int, index: int) -> str:
    label = f"page {page} item {index + 1}"
    upstream_id = item.get("id") if isinstance(item, dict) else None
    if isinstance(upstream_id, (str, int)) and not isinstance(upstream_id, bool):
        label += f" (id {str(upstream_id)[:100]})"
    return label


def _status_problem(response: httpx.Response) -> str:
    text = f"upstream answered {response.status_code} {response.reason_phrase}".rstrip()
    retry_after = response.headers.get("retry-after")
    if retry_after:
        text += f" (Retry-After: {retry_after[:40]})"
    if 300 <= response.status_code < 400:
        text += "; redirects are not followed: set url to the final address"
    elif response.status_code in (401, 403):
        text += "; check the credentials in headers"
    elif response.status_code == 404:
        text += "; check url"
    return text
