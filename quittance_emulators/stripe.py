"""Local, stateful emulator of Stripe's v1 Checkout API: for tests and the demo, never production.

The unmodified `stripe` SDK talks to it over loopback (`StripeClient(key, base_addresses={"api": emu.base_url})`):
form-urlencoded bracket keys in, Stripe-shaped JSON and errors out, Idempotency-Key replay. A hosted page at
`/c/pay/{id}` lets a person or a browser test pick an outcome; Events are signed like Stripe's
(`Stripe-Signature: t=…,v1=…`, one v1 per active secret) and POSTed from a background thread, retried with a
bounded backoff compressed by `clock_scale` (emulated seconds per real second). State lives in memory only.
Control endpoints under `/_control/` drive refunds, disputes, redelivery, reordering and secret rotation.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from quittance_emulators.forms import (FormError, StripeEmulatorError, as_bool, as_int, as_list, as_metadata, as_str,
                                    check_api_key, checkout_session_params, missing, new_id, parse_brackets, unix_now)
from quittance_emulators.server import ThreadedServer
from quittance_emulators.stripe_pages import control_endpoint, page_endpoint

API_VERSION = "2026-10-28.endive"
OUTCOMES = ("success", "decline", "delayed_success", "delayed_failure", "cancel")
MAX_ATTEMPTS = 3                    # test mode: three tries per endpoint
RETRY_BASE, RETRY_CAP = 900.0, 3 * 3600.0   # emulated seconds: 15 min, then ×4, at most 3 h
ASYNC_DELAY = 180.0                 # emulated seconds between completed(unpaid) and async_payment_*

__all__ = ["API_VERSION", "StripeEmulator", "StripeEmulatorError"]


class StripeEmulator:
    """In-memory Stripe test mode on `base_url`; see the module docstring and the guide (providers.md §3, §6)."""

    def __init__(self, api_keys: set[str] | None = None, *, webhook_secrets: list[str] | None = None,
                 clock_scale: float = 3600.0) -> None:
        self._api_keys = set(api_keys) if api_keys is not None else None
        self.webhook_secrets = list(webhook_secrets) if webhook_secrets else [new_id("whsec_", 32)]
        self.clock_scale = clock_scale
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._store: dict[str, dict[str, dict[str, Any]]] = {
            k: {} for k in ("checkout.session", "payment_intent", "charge", "refund", "dispute", "event")}
        self._extra: dict[str, dict[str, Any]] = {}       # per Session: lines, PaymentIntent data, decline notice
        self.events: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self._endpoints: dict[str, list[str]] = {}        # url -> secrets, newest first
        self._pending: dict[str, set[str]] = {}           # event id -> endpoints not yet answered 2xx
        self._idempotency: dict[tuple[str, str], tuple[Any, int, dict[str, Any], str]] = {}
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._held: list[tuple[str, str, int]] | None = None
        self._stopping = False
        self.app = Starlette(routes=[
            Route("/v1/checkout/sessions", self._api(self._create_session), methods=["POST"]),
            Route("/v1/checkout/sessions/{id}", self._api(self._get_session), methods=["GET"]),
            Route("/v1/checkout/sessions/{id}/line_items", self._api(self._get_lines), methods=["GET"]),
            Route("/v1/checkout/sessions/{id}/expire", self._api(self._api_expire), methods=["POST"]),
            Route("/v1/payment_intents/{id}", self._api(self._get_intent), methods=["GET"]),
            Route("/v1/charges/{id}", self._api(self._getter("charge")), methods=["GET"]),
            Route("/v1/disputes/{id}", self._api(self._getter("dispute")), methods=["GET"]),
            Route("/v1/refunds", self._api(self._api_refund), methods=["POST"]),
            Route("/v1/refunds/{id}", self._api(self._getter("refund")), methods=["GET"]),
            Route("/v1/events", self._api(self._list_events), methods=["GET"]),
            Route("/v1/events/{id}", self._api(self._getter("event")), methods=["GET"]),
            Route("/v1/{rest:path}", self._api(self._unknown), methods=["GET", "POST", "DELETE"]),
            Route("/c/pay/{id}", page_endpoint(self), methods=["GET", "POST"]),
            Route("/_control/{rest:path}", control_endpoint(self), methods=["GET", "POST"]),
        ])
        self._server = ThreadedServer(self.app)
        self.base_url = self._server.base_url
        self._http: httpx.Client | None = None
        self._thread = threading.Thread(target=self._run_sender, name="stripe-emulator-sender", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> StripeEmulator:
        self._http = httpx.Client(timeout=10.0, trust_env=False, follow_redirects=False)
        self._server.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._http is None:      # never started
            return
        self._thread.join(timeout=15)
        self._server.stop()
        self._http.close()

    def __enter__(self) -> StripeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP API --------------------------------------------------------------------------------------------

    def _api(self, handler: Callable[..., dict[str, Any]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            post = request.method == "POST"
            raw = (await request.body()).decode("utf-8", "replace") if post else request.url.query
            request_id = new_id("req_", 14)
            headers = {"Request-Id": request_id, "Stripe-Version": request.headers.get("stripe-version", API_VERSION)}
            idem = request.headers.get("idempotency-key") if post else None
            try:
                key = check_api_key(request.headers.get("authorization", ""), self._api_keys)
                if idem is not None and not 0 < len(idem) <= 255:
                    raise StripeEmulatorError(400, "Idempotency-Key must be 1 to 255 characters.")
            except StripeEmulatorError as exc:
                return JSONResponse(exc.body, exc.status, headers=headers)
            fingerprint = (request.url.path, sorted(parse_qsl(raw, keep_blank_values=True)))
            with self._lock:
                if idem is not None and (key, idem) in self._idempotency:
                    first, status, body, first_id = self._idempotency[(key, idem)]
                    if first != fingerprint:
                        status, body = 400, StripeEmulatorError(
                            400, "Keys for idempotent requests can only be used with the same parameters they were "
                            f"first used with. Try using a key other than '{idem}' if you meant to execute a "
                            "different request.", type="idempotency_error").body
                        return JSONResponse(body, status, headers=headers)
                    return JSONResponse(body, status, headers={**headers, "Request-Id": first_id,
                                                                "Idempotent-Replayed": "true"})
                try:
                    params = parse_brackets(raw)
                    status, body = 200, handler(params, {"id": request_id, "idempotency_key": idem},
                                                **request.path_params)
                except FormError as exc:
                    status, body = 400, StripeEmulatorError(400, exc.message, param=exc.param, code=exc.code).body
                except StripeEmulatorError as exc:
                    status, body = exc.status, exc.body
                if idem is not None:
                    self._idempotency[(key, idem)] = (fingerprint, status, body, request_id)
            return JSONResponse(body, status, headers=headers)
        return endpoint

    def _expand(self, params: dict[str, Any], allowed: set[str]) -> list[str]:
        paths = [str(as_str(p, f"expand[{i}]", required=True)) for i, p in
                 enumerate(as_list(params.get("expand"), "expand"))]
        for i, path in enumerate(paths):
            if path not in allowed:
                raise FormError(f"This property cannot be expanded ({path}).", f"expand[{i}]")
        return paths

    def _get(self, kind: str, object_id: str) -> dict[str, Any]:
        found = self._store[kind].get(object_id)
        if found is None:
            raise missing(kind, object_id)
        return found

    def _getter(self, kind: str) -> Callable[..., dict[str, Any]]:
        return lambda params, req, id: copy.deepcopy(self._get(kind, id))

    def _unknown(self, params: dict[str, Any], req: dict[str, Any], rest: str) -> dict[str, Any]:
        raise StripeEmulatorError(404, f"Unrecognized request URL: /v1/{rest}. The emulator serves Checkout only.")

    def _create_session(self, p: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        checked = checkout_session_params(p, unix_now())
        expand = self._expand(p, {"payment_intent", "line_items"})
        for line in checked["lines"]:
            line["id"] = new_id("li_")
            line["price"].update(id=new_id("price_"), product=new_id("prod_"))
        session_id = new_id("cs_test_a1", 56)
        session = {"id": session_id, "object": "checkout.session", **checked["session"], "customer": None,
                   "customer_details": None, "livemode": False, "mode": "payment", "payment_intent": None,
                   "payment_status": "unpaid", "status": "open", "ui_mode": "hosted",
                   "url": f"{self.base_url}/c/pay/{session_id}"}
        self._extra[session_id] = {"lines": checked["lines"], "notice": None, **checked["intent"]}
        self._store["checkout.session"][session_id] = session
        return self._render_session(session, expand)

    def _render_session(self, session: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        out = copy.deepcopy(session)
        if "line_items" in expand:
            out["line_items"] = self._get_lines({}, {}, session["id"])
        if ("payment_intent" in expand or "payment_intent.latest_charge" in expand) and session["payment_intent"]:
            intent = copy.deepcopy(self._get("payment_intent", session["payment_intent"]))
            if "payment_intent.latest_charge" in expand and intent.get("latest_charge"):
                intent["latest_charge"] = copy.deepcopy(self._get("charge", intent["latest_charge"]))
            out["payment_intent"] = intent
        return out

    def _get_session(self, p: dict[str, Any], req: dict[str, Any], id: str) -> dict[str, Any]:
        return self._render_session(self._get("checkout.session", id), self._expand(
            p, {"payment_intent", "payment_intent.latest_charge", "line_items"}))

    def _get_lines(self, p: dict[str, Any], req: dict[str, Any], id: str) -> dict[str, Any]:
        self._get("checkout.session", id)
        return {"object": "list", "data": copy.deepcopy(self._extra[id]["lines"]), "has_more": False,
                "url": f"/v1/checkout/sessions/{id}/line_items"}

    def _get_intent(self, p: dict[str, Any], req: dict[str, Any], id: str) -> dict[str, Any]:
        intent = copy.deepcopy(self._get("payment_intent", id))
        if self._expand(p, {"latest_charge"}) and intent["latest_charge"]:
            intent["latest_charge"] = copy.deepcopy(self._get("charge", intent["latest_charge"]))
        return intent

    def _api_expire(self, p: dict[str, Any], req: dict[str, Any], id: str) -> dict[str, Any]:
        expand = self._expand(p, {"payment_intent", "line_items"})
        self._expire(id, req)
        return self._render_session(self._get("checkout.session", id), expand)

    def _api_refund(self, p: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        intent = as_str(p.get("payment_intent"), "payment_intent", required=True)
        refund_id = self._refund(str(intent), as_int(p.get("amount"), "amount", minimum=1), req,
                                 reason=as_str(p.get("reason"), "reason"), metadata=as_metadata(p.get("metadata"),
                                                                                               "metadata"))
        return copy.deepcopy(self._store["refund"][refund_id])

    def _list_events(self, p: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        limit = min(as_int(p.get("limit"), "limit", minimum=1) or 10, 100)
        success = as_bool(p.get("delivery_success"), "delivery_success")
        kind, after = as_str(p.get("type"), "type"), as_str(p.get("starting_after"), "starting_after")
        items = [e for e in reversed(self.events) if (success is None or (e["pending_webhooks"] == 0) == success)
                 and (kind is None or e["type"] == kind or kind.endswith(".*") and e["type"].startswith(kind[:-1]))]
        if after is not None:
            ids = [e["id"] for e in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return {"object": "list", "data": copy.deepcopy(items[:limit]), "has_more": len(items) > limit,
                "url": "/v1/events"}

    # -- state changes (called with the lock held) -----------------------------------------------------------

    def _pay(self, session_id: str, outcome: str) -> str:
        if outcome not in OUTCOMES:
            raise StripeEmulatorError(400, f"Unknown outcome: {outcome}", param="outcome")
        session = self._get("checkout.session", session_id)
        if session["status"] != "open":
            raise StripeEmulatorError(400, f"This Checkout Session is {session['status']}, not open.")
        extra = self._extra[session_id]
        success = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session_id)
        if outcome == "cancel":
            if not session["cancel_url"]:
                raise StripeEmulatorError(400, "This Checkout Session has no cancel_url.")
            return str(session["cancel_url"])
        delayed = outcome.startswith("delayed")
        intent = self._store["payment_intent"].get(session["payment_intent"] or "")
        if intent is None:
            intent = {"id": new_id("pi_"), "object": "payment_intent", "amount": session["amount_total"],
                      "amount_received": 0, "canceled_at": None, "cancellation_reason": None,
                      "created": unix_now(), "currency": session["currency"], "customer": None,
                      "description": extra["description"], "last_payment_error": None, "latest_charge": None,
                      "livemode": False, "metadata": dict(extra["intent_metadata"]), "payment_method": None,
                      "payment_method_types": session["payment_method_types"], "status": "requires_payment_method"}
            self._store["payment_intent"][intent["id"]] = intent
            session["payment_intent"] = intent["id"]
        method = "sepa_debit" if delayed else "card"
        charge = {"id": new_id("ch_"), "object": "charge", "amount": intent["amount"], "amount_captured": 0,
                  "amount_refunded": 0, "captured": False, "created": unix_now(), "currency": intent["currency"],
                  "description": intent["description"], "disputed": False, "failure_code": None,
                  "failure_message": None, "livemode": False, "metadata": dict(intent["metadata"]), "paid": False,
                  "payment_intent": intent["id"], "payment_method": new_id("pm_"),
                  "payment_method_details": {"type": method}, "receipt_url": None, "refunded": False,
                  "status": "pending"}
        self._store["charge"][charge["id"]] = charge
        intent.update(latest_charge=charge["id"], payment_method=charge["payment_method"], last_payment_error=None)
        extra["notice"] = None
        if outcome == "decline":
            self._fail(intent, charge, "card_declined", "Your card was declined.")
            extra["notice"] = "Your card was declined (test card 4000 0000 0000 0002). Choose another outcome."
            self._emit("payment_intent.payment_failed", intent, None)
            return f"/c/pay/{session_id}"
        before = {"status": "open", "payment_status": "unpaid", "url": session["url"]}
        if delayed:
            intent["status"] = "processing"
            self._schedule(ASYNC_DELAY, lambda: self._settle(session_id, outcome == "delayed_success"))
        else:
            self._succeed(intent, charge)
        session.update(status="complete", payment_status="unpaid" if delayed else "paid", url=None)
        self._emit("checkout.session.completed", session,
                   {k: v for k, v in before.items() if session[k] != v})
        return success

    def _succeed(self, intent: dict[str, Any], charge: dict[str, Any]) -> None:
        charge.update(status="succeeded", paid=True, captured=True, amount_captured=charge["amount"])
        intent.update(status="succeeded", amount_received=intent["amount"])

    def _fail(self, intent: dict[str, Any], charge: dict[str, Any], code: str, message: str) -> None:
        charge.update(status="failed", failure_code=code, failure_message=message)
        intent.update(status="requires_payment_method", last_payment_error={
            "type": "card_error", "code": code, "decline_code": "generic_decline" if code == "card_declined" else None,
            "message": message, "charge": charge["id"], "payment_method": {"id": charge["payment_method"]}})

    def _settle(self, session_id: str, ok: bool) -> None:
        with self._lock:
            session = self._store["checkout.session"][session_id]
            intent = self._store["payment_intent"][session["payment_intent"]]
            if intent["status"] != "processing":
                return
            charge = self._store["charge"][intent["latest_charge"]]
            if ok:
                self._succeed(intent, charge)
                session["payment_status"] = "paid"
                self._emit("checkout.session.async_payment_succeeded", session, {"payment_status": "unpaid"})
            else:
                self._fail(intent, charge, "payment_method_provider_decline", "The bank debit failed.")
                self._emit("checkout.session.async_payment_failed", session, None)

    def _expire(self, session_id: str, req: dict[str, Any] | None = None) -> None:
        session = self._get("checkout.session", session_id)
        if session["status"] != "open":
            raise StripeEmulatorError(400, "Only Checkout Sessions with a status of `open` can be expired. This "
                                           f"Checkout Session has a status of `{session['status']}`.")
        intent = self._store["payment_intent"].get(session["payment_intent"] or "")
        if intent is not None:
            intent.update(status="canceled", canceled_at=unix_now(), cancellation_reason="abandoned")
        before = {"status": "open", "url": session["url"]}
        session.update(status="expired", url=None)
        self._emit("checkout.session.expired", session, before, req)

    def _refund(self, intent_id: str, amount: int | None, req: dict[str, Any] | None = None, *,
                reason: str | None = None, metadata: dict[str, str] | None = None) -> str:
        intent = self._get("payment_intent", intent_id)
        if intent["status"] != "succeeded":
            raise StripeEmulatorError(400, f"This PaymentIntent ({intent_id}) does not have a successful charge to "
                                           "refund.", param="payment_intent", code="charge_not_refundable")
        charge = self._store["charge"][intent["latest_charge"]]
        left = charge["amount"] - charge["amount_refunded"]
        if left == 0:
            raise StripeEmulatorError(400, f"Charge {charge['id']} has already been refunded.",
                                      code="charge_already_refunded")
        amount = left if amount is None else amount
        if not 0 < amount <= left:
            raise StripeEmulatorError(400, f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                                           f"({left})", param="amount", code="amount_too_large")
        refund = {"id": new_id("re_"), "object": "refund", "amount": amount, "charge": charge["id"],
                  "created": unix_now(), "currency": charge["currency"], "metadata": metadata or {},
                  "payment_intent": intent_id, "reason": reason, "status": "succeeded"}
        self._store["refund"][refund["id"]] = refund
        before = {"amount_refunded": charge["amount_refunded"], "refunded": False}
        charge.update(amount_refunded=charge["amount_refunded"] + amount, refunded=amount == left)
        self._emit("charge.refunded", charge, {k: v for k, v in before.items() if charge[k] != v}, req)
        return str(refund["id"])

    def _close(self, dispute: dict[str, Any], status: str) -> None:
        if status not in ("won", "lost") or dispute["status"] in ("won", "lost"):
            raise StripeEmulatorError(400, f"Cannot close dispute {dispute['id']} ({dispute['status']}) as "
                                           f"{status!r}: use won or lost, once.", param="status")
        before = {"status": dispute["status"]}
        dispute["status"] = status
        self._emit("charge.dispute.closed", dispute, before)

    # -- events and delivery ---------------------------------------------------------------------------------

    def _emit(self, kind: str, obj: dict[str, Any], previous: dict[str, Any] | None,
              req: dict[str, Any] | None = None) -> dict[str, Any]:
        event = {"id": new_id("evt_"), "object": "event", "api_version": API_VERSION, "created": unix_now(),
                 "data": {"object": copy.deepcopy(obj), "previous_attributes": previous or None},
                 "livemode": False, "pending_webhooks": len(self._endpoints),
                 "request": {"id": (req or {}).get("id"), "idempotency_key": (req or {}).get("idempotency_key")},
                 "type": kind}
        self._publish(event)
        return event

    def _publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._store["event"][event["id"]] = event
        self._pending[event["id"]] = set(self._endpoints)
        for url in self._endpoints:
            self._enqueue((event["id"], url, 1))

    def _enqueue(self, job: tuple[str, str, int], emulated_delay: float = 0.0) -> None:
        if self._held is not None:
            self._held.append(job)
        else:
            self._schedule(emulated_delay, job)

    def _schedule(self, emulated_delay: float, job: Any) -> None:
        heapq.heappush(self._heap, (time.monotonic() + emulated_delay / self.clock_scale, next(self._seq), job))
        self._cond.notify_all()

    def _run_sender(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                for session in list(self._store["checkout.session"].values()):
                    if session["status"] == "open" and session["expires_at"] <= time.time():
                        self._expire(session["id"])
                now = time.monotonic()
                if not self._heap or self._heap[0][0] > now:
                    self._cond.wait(min(1.0, self._heap[0][0] - now) if self._heap else 1.0)
                    continue
                job = heapq.heappop(self._heap)[2]
            if callable(job):
                job()
            else:
                self._deliver(*job)

    def _deliver(self, event_id: str, url: str, attempt: int) -> None:
        with self._lock:
            event = dict(self._store["event"][event_id], pending_webhooks=len(self._pending[event_id]))
            keys = list(self._endpoints.get(url, []))
        body, headers = self._sign(event, keys, unix_now())
        status: int | None = None
        try:
            assert self._http is not None
            status = self._http.post(url, content=body, headers=headers).status_code
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self._cond:
            if error is None:
                self._pending[event_id].discard(url)
                self._store["event"][event_id]["pending_webhooks"] = len(self._pending[event_id])
            elif attempt < MAX_ATTEMPTS:
                self._enqueue((event_id, url, attempt + 1), min(RETRY_BASE * 4 ** (attempt - 1), RETRY_CAP))
            self.deliveries.append({"event_id": event_id, "type": event["type"], "url": url, "status": status,
                                    "error": error, "at": time.time(), "attempt": attempt})
            self._cond.notify_all()

    @staticmethod
    def _sign(event: dict[str, Any], keys: list[str], timestamp: int) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(event, indent=2, ensure_ascii=False).encode("utf-8")
        text = body.decode("utf-8")
        signatures = [stripe.WebhookSignature.generate_signature_header(text, key, timestamp=timestamp)
                      .split(",", 1)[1] for key in keys]
        return body, {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Stripe/1.0 (emulator)",
                      "Stripe-Signature": ",".join([f"t={timestamp}", *signatures])}

    # -- public control interface ----------------------------------------------------------------------------

    def add_webhook_endpoint(self, url: str, secret: str | None = None) -> str:
        with self._lock:
            self._endpoints[url] = [secret] if secret else list(self._endpoints.get(url) or self.webhook_secrets)
            return self._endpoints[url][0]

    def _endpoint(self, url: str) -> list[str]:
        if url not in self._endpoints:
            raise StripeEmulatorError(404, f"No such webhook endpoint: '{url}'", code="resource_missing")
        return self._endpoints[url]

    def rotate_secret(self, endpoint_url: str) -> str:
        with self._lock:
            new = new_id("whsec_", 32)
            self._endpoint(endpoint_url).insert(0, new)
            return new

    def expire_old_secrets(self, endpoint_url: str) -> None:
        with self._lock:
            del self._endpoint(endpoint_url)[1:]

    def session(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._get("checkout.session", session_id))

    def complete(self, session_id: str, outcome: str) -> None:
        self.pay(session_id, outcome)

    def pay(self, session_id: str, outcome: str) -> str:
        """Apply one outcome of the hosted page; returns where the browser goes next (success_url with the id,
        cancel_url, or the page itself after a decline)."""
        with self._lock:
            return self._pay(session_id, outcome)

    def checkout_view(self, session_id: str) -> tuple[dict[str, Any], list[dict[str, Any]], str | None] | None:
        """What the hosted page shows: the Session, its line items and the last decline message (None if unknown)."""
        with self._lock:
            if session_id not in self._extra:
                return None
            extra = self._extra[session_id]
            return copy.deepcopy((self._store["checkout.session"][session_id], extra["lines"])) + (extra["notice"],)

    def expire(self, session_id: str) -> None:
        with self._lock:
            self._expire(session_id)

    def refund(self, payment_intent_id: str, amount: int | None = None) -> str:
        with self._lock:
            return self._refund(payment_intent_id, amount)

    def dispute(self, payment_intent_id: str, *, close_as: str | None = None) -> str:
        with self._lock:
            intent = self._get("payment_intent", payment_intent_id)
            if intent["status"] != "succeeded":
                raise StripeEmulatorError(400, f"PaymentIntent {payment_intent_id} has no successful charge.")
            charge = self._store["charge"][intent["latest_charge"]]
            dispute = {"id": new_id("dp_"), "object": "dispute", "amount": charge["amount"], "charge": charge["id"],
                       "created": unix_now(), "currency": charge["currency"], "is_charge_refundable": False,
                       "livemode": False, "metadata": {}, "payment_intent": payment_intent_id,
                       "reason": "fraudulent", "status": "needs_response"}
            self._store["dispute"][dispute["id"]] = dispute
            charge["disputed"] = True
            self._emit("charge.dispute.created", dispute, None)
            if close_as is not None:
                self._close(dispute, close_as)
            return str(dispute["id"])

    def close_dispute(self, dispute_id: str, status: str) -> None:
        """Close an open dispute as `won` or `lost` (charge.dispute.closed)."""
        with self._lock:
            self._close(self._get("dispute", dispute_id), status)

    def redeliver(self, event_id: str) -> None:
        with self._lock:
            self._get("event", event_id)
            for url in self._endpoints:
                self._pending[event_id].add(url)
                self._enqueue((event_id, url, 1))

    def duplicate_with_new_id(self, event_id: str) -> str:
        with self._lock:
            event = copy.deepcopy(self._get("event", event_id))
            event.update(id=new_id("evt_"), created=unix_now(), pending_webhooks=len(self._endpoints))
            self._publish(event)
            return str(event["id"])

    def hold_events(self, hold: bool) -> None:
        with self._lock:
            if hold and self._held is None:
                self._held = []
            elif not hold:
                self.release_events()

    def release_events(self, reverse: bool = False) -> None:
        with self._lock:
            held, self._held = self._held or [], None
            for job in reversed(held) if reverse else held:
                self._enqueue(job)

    def state(self) -> dict[str, Any]:
        """Events, delivery attempts, endpoints and whether deliveries are held: for the demo and browser tests."""
        with self._lock:
            return copy.deepcopy({"events": self.events, "deliveries": self.deliveries,
                                  "endpoints": list(self._endpoints), "held": self._held is not None})

    def wait_for_deliveries(self, count: int, timeout: float = 5.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise TimeoutError(f"{len(self.deliveries)} of {count} webhook deliveries after {timeout} s")

    def build_webhook(self, event: dict[str, Any], secret: str | None = None,
                      timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
        """Body and headers as the sender sends them, signed with `secret` (default: `webhook_secrets`)."""
        keys = [secret] if secret else list(self.webhook_secrets)
        return self._sign(event, keys, unix_now() if timestamp is None else timestamp)
