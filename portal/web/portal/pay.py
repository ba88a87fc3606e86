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
from portal.domain.payment_settings import ProviderConfig, config_for
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
    """GET /portal/pay?invoice=…: the selected open invoices, their total, and the ways to pay."""
    ids = _ids(request.query_params.getlist("invoice"))
    settings = services_of(request).settings

    def read(conn: sa.Connection, scope: DebtorScope) -> tuple[Any, ProviderConfig]:
        return _selection_or_error(conn, scope, ids), config_for(conn, scope.organization_id, settings)

    debtor_req, (selection, config) = await debtor_request(request, read)
    return _render_pay(debtor_req, selection, config, ids)


def _render_pay(debtor_req: DebtorRequest, selection: Any, config: ProviderConfig, ids: list[int],
                status: int = 200, problem: str | None = None, retry_after: int = 0) -> Response:
    retry_minutes = -(-retry_after // 60)
    if isinstance(selection, checkouts.SelectionRefused):
        problem = problem or ("currencies" if selection.code == "mixed_currencies" else "nothing")
        return debtor_req.render("portal/pay.html", {"problem": problem, "rows": [], "ids": ids, "choices": [],
                                                     "retry_minutes": retry_minutes},
                                 status=422 if status == 200 else status)
    return debtor_req.render("portal/pay.html", {
        "problem": problem, "ids": [row.id for row, _ in selection.items],
        "rows": [{**row_view(row, debtor_req.today), "pay": Amount(amount, selection.currency)}
                 for row, amount in selection.items],
        "total": Amount(selection.amount_minor, selection.currency), "choices": choices(config),
        "retry_minutes": retry_minutes,
    }, status=status)


async def start_checkout(request: Request) -> Response:
    """POST /portal/checkout: record the checkout, create the provider's page, send the debtor there.
    Each start may create a payment at the provider, so a link may start only so many a minute
    (rate_limits.CHECKOUT_STARTS, counted in the checkout's own transaction)."""
    form = await read_form(request)
    services = services_of(request)
    posted_secret(request, form)
    ids = _ids(form.getlist("invoice"))
    provider_name, _, method = str(form.get("method", "")).partition(":")
    now = services.now()

    def prepare(conn: sa.Connection, scope: DebtorScope) -> tuple[Any, str | None, ProviderConfig]:
        """The checkout (and those it supersedes), or why not: "method" (not a way this seller offers) or
        "selection" (these invoices cannot be paid together)."""
        config = config_for(conn, scope.organization_id, services.settings)
        if (provider_name, method) not in choices(config):
            return None, "method", config
        throttle = rate_limits.hit(conn, rate_limits.CHECKOUT_STARTS, str(scope.link_id), now,
                                   scope=str(scope.organization_id))
        if not throttle.allowed:
            return throttle, None, config
        try:
            return checkouts.start(conn, scope, ids, provider_name, method if provider_name == "mollie" else None,
                                   now), None, config
        except checkouts.SelectionRefused:
            return None, "selection", config

    debtor_req, (started, refused, config) = await debtor_request(request, prepare, write=True, durable=True,
                                                                        now=now)
    if isinstance(started, rate_limits.Verdict):
        selection = await services.db.read(lambda conn: _selection_or_error(conn, debtor_req.scope, ids))
        # The selection again, with when to try; nothing went to a provider.
        response = _render_pay(debtor_req, selection, config, ids, status=429, problem="too_many",
                               retry_after=started.retry_after)
        response.headers.update(refusal_headers(rate_limits.CHECKOUT_STARTS, started))
        return response
    if refused is not None:
        selection = await services.db.read(lambda conn: _selection_or_error(conn, debtor_req.scope, ids))
        return _render_pay(debtor_req, selection, config, ids, status=422,
                           problem="method" if refused == "method" else None)
    checkout, superseded = started
    if checkout.status == "paid":
        return RedirectResponse(f"/portal/checkouts/{checkout.public_id}", status_code=303)
    if checkout.checkout_url and checkout.status in OPEN_STATES:
        return RedirectResponse(checkout.checkout_url, status_code=303)

    provider = services.providers.get(provider_name, config)
    items = await services.db.read(checkouts.items_of, checkout.id)
    base = services.settings.base_url
    request_ = CheckoutRequest(
        checkout_public_id=checkout.public_id, currency=checkout.currency, amount_minor=checkout.amount_minor,
        description=_description(debtor_req.scope, items), idempotency_key=f"quittance-{checkout.public_id}",
        lines=tuple(CheckoutLine(f"{item.number or item.external_id}", item.amount_minor) for item in items),
        return_url=f"{base}/portal/checkouts/{checkout.public_id}",
        cancel_url=f"{base}/portal/checkouts/{checkout.public_id}?cancelled=1",
        webhook_url=f"{base}/webhooks/{provider_name}/{debtor_req.scope.organization_slug}",
        locale=debtor_req.language, method=checkout.method)
    try:
        opened = await provider_call(provider.create_checkout, request_)
    except ProviderError:
        await services.db.write(checkouts.provider_failed, checkout.id, services.now())
        selection = await services.db.read(lambda conn: _selection_or_error(conn, debtor_req.scope, ids))
        return _render_pay(debtor_req, selection, config, ids, status=503, problem="provider")
    await services.db.write(checkouts.opened_at_provider, checkout.id, opened.provider_ref, opened.url,
                            opened.expires_at, services.now(), durable=True)
    # Older open checkouts of these invoices are stopped at their provider once the debtor is on their way.
    cancel_old = BackgroundTask(_cancel_at_providers, services, config, superseded) if superseded else None
    return RedirectResponse(opened.url, status_code=303, background=cancel_old)


def _selection_or_error(conn: sa.Connection, scope: DebtorScope, ids: list[int]) -> Any:
    """The selection, or why it cannot be paid (a SelectionRefused, shown on the page)."""
    try:
        return checkouts.select_payable(conn, scope, ids)
    except checkouts.SelectionRefused as exc:
        return exc


def _description(scope: DebtorScope, items: Sequence[Any]) -> str:
    numbers = ", ".join(str(item.number or item.external_id) for item in items)
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
        "retry_ids": [item.id for item in items],
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
    Route("/portal/checkout", start_checkout, methods=["POST"]),
    Route("/portal/checkouts/{public_id}", return_page, methods=["GET"]),
    Route("/portal/checkouts/{public_id}/cancel", cancel_checkout, methods=["POST"]),
    Route("/portal/checkouts/{public_id}/status", checkout_status, methods=["GET"]),
]
