"""Paying from the portal: choose invoices and a method, confirm, go to the provider, come back.

The checkout is recorded before the provider is called, so a double click finds the same checkout and the
provider's idempotency key makes the same payment page. The return page reads our own state and, while the
checkout is still open, asks the provider: the webhook may arrive before or after the debtor does. What the
provider says is recorded through the same idempotent transition as its webhook; nothing the debtor decides
happens on a GET: leaving the payment page through the provider's cancel link offers a button, and only its
POST (with the CSRF token) cancels the checkout.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from portal import metrics
from portal.domain import checkouts, payments, rate_limits
from portal.domain.checkouts import OPEN_STATES
from portal.domain.links import DebtorScope
from portal.domain.payment_settings import PartialPolicy, ProviderConfig, config_for, partial_policy
from portal.money import format_minor
from portal.providers.calls import provider_call
from portal.providers.interface import CheckoutLine, CheckoutRequest, ProviderError
from portal.web.clients import refusal_headers
from portal.web.portal.pages import DebtorRequest, debtor_request, posted_secret, read_form, services_of
from portal.web.portal.view import Amount, row_view

# (provider, method) as offered on the pay page; the label is translated in the template.
MOLLIE_CHOICES = ("ideal", "bancontact", "banktransfer", "paypal", "creditcard", "kbc", "belfius")


def choices(config: ProviderConfig) -> list[tuple[str, str]]:
    offered: list[tuple[str, str]] = []
    if "mollie" in config.providers:
        offered += [("mollie", m) for m in MOLLIE_CHOICES if m in config.mollie_methods]
    if "stripe" in config.providers:
        offered.append(("stripe", "card"))
    return offered


def _ids(values: list[str]) -> list[int]:
    return [int(v) for v in values if v.isdigit() and len(v) < 18][: checkouts.MAX_INVOICES]


async def pay_page(request: Request) -> Response:
    """GET /portal/pay?invoice=…[&credit=…]: the selected open invoices, the customer's open credit notes to
    deduct, the total, the amount field when the seller takes partial payments, and the ways to pay."""
    ids = _ids(request.query_params.getlist("invoice"))
    credit_ids = _ids(request.query_params.getlist("credit"))
    settings = services_of(request).settings

    def read(conn: sa.Connection, scope: DebtorScope) -> PayPage:
        return _pay_page(conn, scope, ids, credit_ids, config_for(conn, scope.organization_id, settings))

    debtor_req, page = await debtor_request(request, read)
    return _render_pay(debtor_req, page, ids)


@dataclass(frozen=True)
class PayPage:
    """What the pay page shows: the selection (or the SelectionRefused saying why not), the open credit notes on
    offer, and the seller's partial payment and provider settings."""

    selection: Any
    credits: list[tuple[Any, int]]
    policy: PartialPolicy
    config: ProviderConfig


def _pay_page(conn: sa.Connection, scope: DebtorScope, ids: list[int], credit_ids: list[int],
              config: ProviderConfig) -> PayPage:
    selection = _selection_or_error(conn, scope, ids, credit_ids)
    credits = [] if isinstance(selection, checkouts.SelectionRefused) else checkouts.open_credits(
        conn, scope, selection.currency)
    return PayPage(selection, credits, partial_policy(conn, scope.organization_id), config)


def _render_pay(debtor_req: DebtorRequest, page: PayPage, ids: list[int], status: int = 200,
                problem: str | None = None, retry_after: int = 0, *, amount: str = "",
                refused: checkouts.AmountRefused | None = None,
                proposal: checkouts.Proposal | None = None, method: str = "") -> Response:
    retry_minutes = -(-retry_after // 60)
    selection = page.selection
    if isinstance(selection, checkouts.SelectionRefused):
        problem = problem or {"mixed_currencies": "currencies", "credit_covers": "credit_covers"}.get(
            selection.code, "nothing")
        return debtor_req.render("portal/pay.html", {"problem": problem, "rows": [], "ids": ids, "choices": [],
                                                     "retry_minutes": retry_minutes},
                                 status=422 if status == 200 else status)
    currency = selection.currency
    partial = page.policy.allows(currency)
    chosen = {row.id for row, _ in selection.credits}
    offered = choices(page.config)
    rows = {row.id: row for row, _ in (*selection.items, *selection.credits)}
    preview = None
    if proposal is not None:
        amount = format_minor(proposal.amount_minor, currency)  # what the confirmation posts, as we read it
        preview = [{"number": rows[share.id].number or rows[share.id].external_id, "kind": share.kind,
                    "applied": Amount(share.amount_minor, currency),
                    "remaining": Amount(share.remaining_minor, currency), "settled": share.settled}
                   for share in (*proposal.plan.credits, *proposal.plan.invoices)]
    return debtor_req.render("portal/pay.html", {
        "problem": problem, "ids": [row.id for row, _ in selection.items],
        "rows": [{**row_view(row, debtor_req.today), "pay": Amount(amount_, currency)}
                 for row, amount_ in selection.items],
        "credits": [{"id": row.id, "number": row.number or row.external_id, "issue_date": row.issue_date,
                     "credit": Amount(credit, currency), "chosen": row.id in chosen} for row, credit in page.credits],
        "credit_ids": sorted(chosen),
        "owed": Amount(selection.owed_minor, currency), "credit": Amount(selection.credit_minor, currency),
        "total": Amount(selection.amount_minor, currency), "choices": offered,
        "method": method if any(f"{p}:{m}" == method for p, m in offered) else "",
        "partial": partial, "minimum": Amount(max(1, page.policy.minimum_minor), currency),
        "currency": currency, "amount": amount, "total_plain": format_minor(selection.amount_minor, currency), "refused": refused, "preview": preview,
        "pay_now": Amount(proposal.amount_minor if proposal else selection.amount_minor, currency),
        # Partial amounts and credit notes are confirmed on a preview of their allocation before paying.
        "confirm_first": proposal is None and (partial or bool(page.credits)),
        "retry_minutes": retry_minutes,
    }, status=status)


async def preview_payment(request: Request) -> Response:
    """POST /portal/pay/preview: how the amount entered (and the credit notes ticked) will be shared among the
    selected invoices, oldest due first, with the button that pays it. Writes nothing; a bad amount is
    shown on the page (422) with what is wrong."""
    form = await read_form(request)
    services = services_of(request)
    posted_secret(request, form)
    ids, credit_ids = _ids(form.getlist("invoice")), _ids(form.getlist("credit"))
    amount, currency = str(form.get("amount", "")), form.get("currency")

    def read(conn: sa.Connection, scope: DebtorScope) -> tuple[PayPage, Any]:
        page = _pay_page(conn, scope, ids, credit_ids, config_for(conn, scope.organization_id, services.settings))
        if isinstance(page.selection, checkouts.SelectionRefused):
            return page, None
        try:
            return page, checkouts.choose_amount(page.selection, page.policy, amount,
                                                 str(currency) if currency is not None else None)
        except checkouts.AmountRefused as exc:
            return page, exc

    debtor_req, (page, outcome) = await debtor_request(request, read)
    method = str(form.get("method", ""))
    if isinstance(outcome, checkouts.AmountRefused):
        return _render_pay(debtor_req, page, ids, status=422, amount=amount[:40], refused=outcome, method=method)
    return _render_pay(debtor_req, page, ids, amount=amount[:40], proposal=outcome, method=method)


async def start_checkout(request: Request) -> Response:
    """POST /portal/checkout: record the checkout, create the provider's page, send the debtor there.
    Each start may create a payment at the provider, so a link may start only so many a minute
    (rate_limits.CHECKOUT_STARTS, counted in the checkout's own transaction)."""
    form = await read_form(request)
    services = services_of(request)
    posted_secret(request, form)
    ids, credit_ids = _ids(form.getlist("invoice")), _ids(form.getlist("credit"))
    amount, currency = form.get("amount"), form.get("currency")
    amount = str(amount) if amount is not None else None
    currency = str(currency) if currency is not None else None
    provider_name, _, method = str(form.get("method", "")).partition(":")
    now = services.now()

    def prepare(conn: sa.Connection, scope: DebtorScope) -> tuple[Any, Any, ProviderConfig]:
        """The checkout (and those it supersedes), or why not: "method" (not a way this seller offers),
        "selection" (these invoices cannot be paid together) or the AmountRefused."""
        config = config_for(conn, scope.organization_id, services.settings)
        if (provider_name, method) not in choices(config):
            return None, "method", config
        throttle = rate_limits.hit(conn, rate_limits.CHECKOUT_STARTS, str(scope.link_id), now,
                                   scope=str(scope.organization_id))
        if not throttle.allowed:
            return throttle, None, config
        try:
            return checkouts.start(conn, scope, ids, provider_name, method if provider_name == "mollie" else None,
                                   now, credit_ids=credit_ids, amount=amount, currency=currency), None, config
        except checkouts.SelectionRefused:
            return None, "selection", config
        except checkouts.AmountRefused as exc:
            return None, exc, config

    debtor_req, (started, refused, config) = await debtor_request(request, prepare, write=True, durable=True,
                                                                        now=now)

    async def page_again() -> PayPage:
        return await services.db.read(
            lambda conn: _pay_page(conn, debtor_req.scope, ids, credit_ids, config))

    if isinstance(started, rate_limits.Verdict):
        # The selection again, with when to try; nothing went to a provider.
        response = _render_pay(debtor_req, await page_again(), ids, status=429, problem="too_many",
                               retry_after=started.retry_after)
        response.headers.update(refusal_headers(rate_limits.CHECKOUT_STARTS, started))
        return response
    if isinstance(refused, checkouts.AmountRefused):
        return _render_pay(debtor_req, await page_again(), ids, status=422, amount=(amount or "")[:40],
                           refused=refused, method=str(form.get("method", "")))
    if refused is not None:
        return _render_pay(debtor_req, await page_again(), ids, status=422,
                           problem="method" if refused == "method" else None)
    checkout, superseded = started
    if checkout.status == "paid":
        return RedirectResponse(f"/portal/checkouts/{checkout.public_id}", status_code=303)
    if checkout.checkout_url and checkout.status in OPEN_STATES:
        return RedirectResponse(checkout.checkout_url, status_code=303)

    provider = services.providers.get(provider_name, config)
    items = await services.db.read(checkouts.items_of, checkout.id)
    base = services.settings.base_url
    description = _description(debtor_req.scope, items)
    request_ = CheckoutRequest(
        checkout_public_id=checkout.public_id, currency=checkout.currency, amount_minor=checkout.amount_minor,
        description=description, idempotency_key=f"quittance-{checkout.public_id}",
        lines=_lines(items, checkout.amount_minor, description),
        return_url=f"{base}/portal/checkouts/{checkout.public_id}",
        cancel_url=f"{base}/portal/checkouts/{checkout.public_id}?cancelled=1",
        webhook_url=f"{base}/webhooks/{provider_name}/{debtor_req.scope.organization_slug}",
        locale=debtor_req.language, method=checkout.method)
    try:
        opened = await provider_call(provider.create_checkout, request_)
    except ProviderError:
        await services.db.write(checkouts.provider_failed, checkout.id, services.now())
        return _render_pay(debtor_req, await page_again(), ids, status=503, problem="provider")
    await services.db.write(checkouts.opened_at_provider, checkout.id, opened.provider_ref, opened.url,
                            opened.expires_at, services.now(), durable=True)
    # Older open checkouts of these invoices are stopped at their provider once the debtor is on their way.
    cancel_old = BackgroundTask(_cancel_at_providers, services, config, superseded) if superseded else None
    return RedirectResponse(opened.url, status_code=303, background=cancel_old)


def _lines(items: Sequence[Any], amount_minor: int, description: str) -> tuple[CheckoutLine, ...]:
    """One line per invoice paid; with a credit note deducted, one line for the net amount (providers take no
    negative lines)."""
    if any(item.amount_minor < 0 for item in items):
        return (CheckoutLine(description[:250], amount_minor),)
    return tuple(CheckoutLine(f"{item.number or item.external_id}", item.amount_minor) for item in items)


def _selection_or_error(conn: sa.Connection, scope: DebtorScope, ids: list[int],
                        credit_ids: list[int] | None = None) -> Any:
    """The selection, or why it cannot be paid (a SelectionRefused, shown on the page)."""
    try:
        return checkouts.select_payable(conn, scope, ids, credit_ids)
    except checkouts.SelectionRefused as exc:
        return exc


def _description(scope: DebtorScope, items: Sequence[Any]) -> str:
    numbers = ", ".join(str(item.number or item.external_id) for item in items if item.amount_minor > 0)
    return f"{scope.organization_name}: {numbers}"[:255]


async def _cancel_at_providers(services: Any, config: ProviderConfig, superseded: list[Any]) -> None:
    for old in superseded:
        if old.provider_ref:
            try:
                await provider_call(services.providers.get(old.provider, config).cancel, old.provider_ref)
            except ProviderError:
                pass  # reconciliation picks it up; if it gets paid anyway, both payments are recorded


class ProviderPolls:
    """At most one question to the provider per checkout every few seconds: a tab left waiting on a bank
    transfer (open for days) must not turn into a stream of API calls. Per process, which is enough for that."""

    INTERVAL = 5.0

    def __init__(self) -> None:
        self._asked: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, public_id: str, now: float) -> bool:
        with self._lock:
            if now - self._asked.get(public_id, -self.INTERVAL) < self.INTERVAL:
                return False
            self._asked[public_id] = now
            if len(self._asked) > 10_000:  # forget the oldest questions rather than grow without bound
                for key in sorted(self._asked, key=self._asked.__getitem__)[:5_000]:
                    del self._asked[key]
            return True


POLLS = ProviderPolls()
# Without JavaScript the page reloads itself this many times (every 5 s), then offers a "check again" link.
NOSCRIPT_CHECKS = 36


async def _current_checkout(request: Request) -> tuple[DebtorRequest, Any]:
    """The checkout as we know it, brought up to date by the provider while it is still open: the webhook may
    come before or after the debtor. Reconciled through the same service, so both orders are safe."""
    public_id = request.path_params["public_id"]
    services = services_of(request)

    def read(conn: sa.Connection, scope: DebtorScope) -> tuple[Any, ProviderConfig]:
        return checkouts.for_debtor(conn, scope, public_id), config_for(conn, scope.organization_id, services.settings)

    debtor_req, (checkout, config) = await debtor_request(request, read)
    if checkout.provider_ref and checkout.status in ("open", "processing") and POLLS.due(
            public_id, services.now().timestamp()):
        await _observe(services, config, checkout)
        checkout = await services.db.read(lambda conn: checkouts.for_debtor(conn, debtor_req.scope, public_id))
    return debtor_req, checkout


async def _observe(services: Any, config: ProviderConfig, checkout: Any) -> None:
    """Ask the provider about the checkout and record what it says (as its webhook would)."""
    provider = services.providers.get(checkout.provider, config)
    with contextlib.suppress(ProviderError):
        observation = await provider_call(provider.fetch, checkout.provider_ref)
        outcome = await services.db.write(payments.apply, checkout.organization_id, observation, services.now(),
                                          durable=True)
        metrics.count_payment(outcome)


async def return_page(request: Request) -> Response:
    """GET /portal/checkouts/{id}: paid, processing, failed or cancelled. While waiting, the page updates itself
    in place with JavaScript, or reloads a bounded number of times without it, and always offers a link.
    Back through the provider's cancel link (`?cancelled=1`) with the checkout still open, it waits for
    nothing and offers to cancel the payment (a POST) or to try again."""
    debtor_req, checkout = await _current_checkout(request)
    items = await debtor_req.services.db.read(checkouts.items_of, checkout.id)
    left = request.query_params.get("cancelled") == "1" and checkout.status == "open"
    waiting = checkout.status in OPEN_STATES and not left
    raw_check = request.query_params.get("check", "0")
    check = int(raw_check) if raw_check.isdigit() and len(raw_check) < 4 else 0
    return debtor_req.render("portal/checkout.html", {
        "checkout": checkout, "items": items, "waiting": waiting, "left": left, "check": check,
        "reload_without_script": waiting and check < NOSCRIPT_CHECKS,
        "amount": Amount(checkout.amount_minor, checkout.currency),
        "retry_ids": [item.id for item in items if item.kind == "invoice"],
        "retry_credit_ids": [item.id for item in items if item.kind == "credit_note"],
    })


async def cancel_checkout(request: Request) -> Response:
    """POST /portal/checkouts/{id}/cancel: the debtor gives up this payment. Stripe keeps a Session open for a
    day: without this the return page would wait that long. Cancelled here first, then stopped at the
    provider; if it was paid after all, the provider's answer says so and the payment is recorded."""
    form = await read_form(request)
    services = services_of(request)
    posted_secret(request, form)
    public_id = request.path_params["public_id"]
    now = services.now()

    def cancel(conn: sa.Connection, scope: DebtorScope) -> tuple[Any, ProviderConfig]:
        checkout = checkouts.for_debtor(conn, scope, public_id)
        checkouts.cancelled_by_debtor(conn, checkout.id, now)
        return checkout, config_for(conn, scope.organization_id, services.settings)

    _, (checkout, config) = await debtor_request(request, cancel, write=True, durable=True, now=now)
    if checkout.provider_ref and checkout.status == "open":
        with contextlib.suppress(ProviderError):
            await provider_call(services.providers.get(checkout.provider, config).cancel, checkout.provider_ref)
        await _observe(services, config, checkout)
    return RedirectResponse(f"/portal/checkouts/{public_id}", status_code=303)


async def checkout_status(request: Request) -> Response:
    """GET /portal/checkouts/{id}/status: what the waiting page polls."""
    _, checkout = await _current_checkout(request)
    return JSONResponse({"status": checkout.status, "waiting": checkout.status in OPEN_STATES},
                        headers={"Cache-Control": "no-store"})


routes = [
    Route("/portal/pay", pay_page, methods=["GET"]),
    Route("/portal/pay/preview", preview_payment, methods=["POST"]),
    Route("/portal/checkout", start_checkout, methods=["POST"]),
    Route("/portal/checkouts/{public_id}", return_page, methods=["GET"]),
    Route("/portal/checkouts/{public_id}/cancel", cancel_checkout, methods=["POST"]),
    Route("/portal/checkouts/{public_id}/status", checkout_status, methods=["GET"]),
]
