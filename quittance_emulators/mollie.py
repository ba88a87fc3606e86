"""Emulator of the Mollie v2 payments API, for tests and the demo: never use it in production.

An in-memory Mollie test-mode account that the unmodified mollie-api-python SDK talks to over loopback
(`Client(api_endpoint=emulator.base_url)`): payments (create, get with `embed`, cancel), refunds and chargebacks,
Mollie's error bodies, Bearer key check and `Idempotency-Key` replay; the hosted checkout page `/checkout/{id}`
and the control endpoints under `/_control/` (both in mollie_pages.py). Webhooks (form `id=tr_...`)
are real HTTP POSTs from background threads, retried on Mollie's 10-step schedule compressed by `clock_scale`.
Open and pending payments expire at `expiresAt` (real time), checked on access and by a sweeper thread.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import string
import threading
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from quittance_emulators import mollie_pages as pages
from quittance_emulators.server import ThreadedServer, free_port

HAL = "application/hal+json"
METHODS = ("ideal", "bancontact", "banktransfer", "creditcard", "paypal", "kbc", "belfius")
ZERO_DECIMAL = frozenset({"JPY", "ISK"})
CURRENCIES = ZERO_DECIMAL | {"EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "RON", "BGN", "AUD",
                             "CAD", "HKD", "NZD", "SGD", "ZAR", "MXN", "ILS", "PHP", "TWD"}
LOCALES = frozenset({"en_US", "en_GB", "nl_NL", "nl_BE", "fr_FR", "fr_BE", "de_DE", "de_AT", "de_CH", "es_ES",
                     "ca_ES", "pt_PT", "it_IT", "nb_NO", "sv_SE", "fi_FI", "da_DK", "is_IS", "hu_HU", "pl_PL",
                     "lv_LV", "lt_LT"})
STATUSES = ("open", "pending", "authorized", "paid", "canceled", "expired", "failed")
TRANSITIONS = {"open": frozenset(STATUSES) - {"open"}, "pending": frozenset(STATUSES) - {"open", "pending"},
               "authorized": frozenset({"paid", "canceled", "expired", "failed"})}
TIMESTAMPS = {"paid": "paidAt", "authorized": "authorizedAt", "canceled": "canceledAt", "expired": "expiredAt",
              "failed": "failedAt"}
WEBHOOK_STATUSES = frozenset(TIMESTAMPS)  # never on open or pending
METHOD_STATUSES = frozenset({"pending", "authorized", "paid", "failed"})  # the customer has picked a method
RETRY_MINUTES = (0, 1, 3, 7, 15, 31, 60, 120, 240, 1560)  # Mollie's schedule, minutes after the change
IDEMPOTENCY_TTL = 3600.0
DEFAULT_KEY = re.compile(r"^test_\w+$")
TITLES = {400: "Bad Request", 401: "Unauthorized Request", 404: "Not Found", 405: "Method Not Allowed",
          409: "Conflict", 422: "Unprocessable Entity"}
DOCS = {"documentation": {"href": "https://docs.mollie.com/overview/handling-errors", "type": "text/html"}}
CHARGEBACK_REASON = {"code": "AC01", "description": "Account identifier incorrect (i.e. invalid IBAN)"}
ALNUM = string.ascii_letters + string.digits


class MollieAPIError(ValueError):
    """A request the real API would refuse; rendered as Mollie's error body, raised as is by the Python controls."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"status": self.status, "title": TITLES.get(self.status, "Error"), "detail": self.detail}
        if self.field:
            body["field"] = self.field
        return JSONResponse({**body, "_links": DOCS}, self.status, media_type=HAL)


@dataclass
class _Payment:
    data: dict[str, Any]  # stored API fields in Mollie's order; derived ones are added when rendered
    key: str  # the API key that created it: other keys get 404, as other Mollie accounts would
    methods: list[str]  # methods the customer may pick
    refunds: list[dict[str, Any]] = field(default_factory=list)
    chargebacks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def currency(self) -> str:
        return str(self.data["amount"]["currency"])

    def refunded(self) -> Decimal:
        counted = (r for r in self.refunds if r["status"] not in ("failed", "canceled"))
        return sum((Decimal(r["amount"]["value"]) for r in counted), Decimal(0))

    def charged_back(self) -> Decimal:
        return sum((Decimal(c["amount"]["value"]) for c in self.chargebacks if c["reversedAt"] is None), Decimal(0))

    def remaining(self) -> Decimal:
        """What can still be refunded: the amount less refunds and chargebacks not reversed."""
        return max(Decimal(self.data["amount"]["value"]) - self.refunded() - self.charged_back(), Decimal(0))


def _decimals(currency: str) -> int:
    return 0 if currency in ZERO_DECIMAL else 2


def _money(value: Decimal, currency: str) -> dict[str, str]:
    return {"value": f"{value:.{_decimals(currency)}f}", "currency": currency}


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def _new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(ALNUM) for _ in range(10))


def _parse_amount(raw: Any, currency: str | None = None) -> Decimal:
    """`{currency, value}` with a string value carrying exactly the currency's decimals (EUR "10.00", JPY "10")."""
    if not isinstance(raw, dict):
        raise MollieAPIError(422, "The amount is required", "amount")
    cur = raw.get("currency")
    if not isinstance(cur, str) or cur not in CURRENCIES:
        raise MollieAPIError(422, "The amount contains an invalid currency", "amount.currency")
    if currency is not None and cur != currency:
        raise MollieAPIError(422, f"The currency must be {currency}, the currency of the payment", "amount.currency")
    value, places = raw.get("value"), _decimals(cur)
    pattern = r"[0-9]+" + (rf"\.[0-9]{{{places}}}" if places else "")
    if not isinstance(value, str) or not re.fullmatch(pattern, value) or Decimal(value) <= 0:
        raise MollieAPIError(422, "The amount contains an invalid value", "amount.value")
    return Decimal(value)


def _url(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value in (None, "") and not required:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise MollieAPIError(422, f"The {name} is missing or invalid", name)
    return value


def _validate_payment(body: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(body, dict):
        raise MollieAPIError(400, "The request body is not a valid JSON object")
    amount: Any = body.get("amount")  # JSON, checked by _parse_amount
    _parse_amount(amount)
    description = body.get("description")
    if not isinstance(description, str) or not description.strip():
        raise MollieAPIError(422, "The description is required", "description")
    method = body.get("method")
    methods = [method] if isinstance(method, str) else method
    if method is not None and (not isinstance(methods, list) or not methods or any(m not in METHODS for m in methods)):
        raise MollieAPIError(422, "The payment method is invalid or not activated", "method")
    locale = body.get("locale")
    if locale is not None and locale not in LOCALES:
        raise MollieAPIError(422, "The locale is invalid", "locale")
    metadata = body.get("metadata")
    if len(json.dumps(metadata, separators=(",", ":")).encode()) > 1024:
        raise MollieAPIError(422, "The metadata is too large: at most 1024 bytes", "metadata")
    fields = {"amount": {"value": amount["value"], "currency": amount["currency"]},
              "description": description[:255], "method": method if isinstance(method, str) else None,
              "metadata": metadata, "redirectUrl": _url(body, "redirectUrl", required=True),
              "cancelUrl": _url(body, "cancelUrl"), "webhookUrl": _url(body, "webhookUrl"), "locale": locale}
    return fields, list(methods or METHODS)


def _canonical(raw: bytes) -> str:
    try:
        return json.dumps(json.loads(raw), sort_keys=True)
    except ValueError:
        return raw.decode("utf-8", "replace")


class MollieEmulator:
    """In-memory Mollie test-mode account. Python controls and HTTP requests share one lock: thread-safe."""

    def __init__(self, api_keys: set[str] | None = None, *, clock_scale: float = 3600.0,
                 webhook_timeout: float = 15.0) -> None:
        self.api_keys = None if api_keys is None else set(api_keys)
        self.clock_scale = clock_scale
        self.webhook_timeout = webhook_timeout
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.deliveries: list[dict[str, Any]] = []
        self._now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)  # tests may move it past expiresAt
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._payments: dict[str, _Payment] = {}
        self._idempotency: dict[tuple[str, str], tuple[float, tuple[str, str, str], int, dict[str, Any]]] = {}
        self._hold = False
        self._held: list[str] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._server: ThreadedServer | None = None
        self._client: httpx.Client | None = None  # shared by the delivery threads (httpx allows that)
        self.app = Starlette(routes=self._routes(), exception_handlers={
            HTTPException: self._http_error})  # type: ignore[dict-item]  # called only with its key's class

    # lifecycle

    def start(self) -> MollieEmulator:
        self._stopping.clear()
        self._http()  # building its TLS context takes a while: not on the first webhook's clock
        self._server = ThreadedServer(self.app, port=self.port).start()
        self._spawn(self._sweep, "mollie-expiry")
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.stop()
            self._server = None
        deadline = time.monotonic() + 2
        for thread in list(self._threads):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> MollieEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Python controls

    def payment(self, payment_id: str) -> dict[str, Any]:
        with self._lock:
            return self._render(self._get(payment_id))

    def set_status(self, payment_id: str, status: str, *, method: str = "ideal", send_webhook: bool = True) -> None:
        """Move a payment to `status` as Mollie would. `method` applies when none was preset (and is one the
        payment allows, else its first allowed method); raises MollieAPIError for a transition Mollie never makes."""
        with self._lock:
            payment = self._get(payment_id)
            if method not in payment.methods:
                method = payment.methods[0]
            self._transition(payment, status, method, send_webhook)

    def refund(self, payment_id: str, amount_value: str | None = None) -> str:
        """Refund (default: all that remains) a paid payment; the refund is `processing`; a webhook follows."""
        with self._lock:
            payment = self._get(payment_id)
            amount = None if amount_value is None else {"value": amount_value, "currency": payment.currency}
            return str(self._create_refund(payment, {"amount": amount} if amount else {}, required=False)["id"])

    def settle_refund(self, refund_id: str, status: str = "refunded") -> None:
        """Finish a `processing` refund as `refunded` or `failed` (a failed refund no longer counts); webhook."""
        with self._lock:
            payment, refund = self._find("refunds", refund_id)
            if refund["status"] != "processing" or status not in ("refunded", "failed"):
                raise MollieAPIError(422, f"The refund cannot change from {refund['status']} to {status}", "status")
            refund["status"] = status
            self._queue_webhook(payment)

    def chargeback(self, payment_id: str, amount_value: str | None = None) -> str:
        """Charge back (default: all not yet charged back) a paid payment; status stays paid; webhook."""
        with self._lock:
            payment = self._get(payment_id)
            currency, total = payment.currency, Decimal(payment.data["amount"]["value"])
            if payment.data["status"] != "paid":
                raise MollieAPIError(422, "Only paid payments can be charged back", "status")
            room = total - payment.charged_back()
            value = room if amount_value is None else _parse_amount({"value": amount_value, "currency": currency})
            if not 0 < value <= room:
                raise MollieAPIError(422, f"The chargeback amount exceeds {_money(room, currency)['value']}", "amount")
            pid, cid = payment.data["id"], _new_id("chb_")
            payment.chargebacks.append({
                "resource": "chargeback", "id": cid, "amount": _money(value, currency),
                "settlementAmount": _money(-value, currency), "createdAt": _iso(self._now()),
                "reason": dict(CHARGEBACK_REASON), "reversedAt": None, "paymentId": pid,
                "_links": {"self": self._link(f"/v2/payments/{pid}/chargebacks/{cid}"),
                           "payment": self._link(f"/v2/payments/{pid}")}})
            self._queue_webhook(payment)
            return cid

    def reverse_chargeback(self, chargeback_id: str) -> None:
        with self._lock:
            payment, chargeback = self._find("chargebacks", chargeback_id)
            if chargeback["reversedAt"] is not None:
                raise MollieAPIError(422, "The chargeback has already been reversed", "reversedAt")
            chargeback["reversedAt"] = _iso(self._now())
            self._queue_webhook(payment)

    def send_webhook(self, payment_id: str) -> None:
        with self._lock:
            payment = self._get(payment_id)
            if not payment.data.get("webhookUrl"):
                raise MollieAPIError(422, "The payment has no webhookUrl", "webhookUrl")
            self._queue_webhook(payment)

    def hold_webhooks(self, hold: bool) -> None:
        """While held, deliveries queue up; releasing starts them (each on its own schedule) in order."""
        with self._lock:
            self._hold = hold
            held, self._held = ([], self._held) if hold else (self._held, [])
            for payment_id in held:
                self._queue_webhook(self._payments[payment_id])

    def wait_for_deliveries(self, count: int, timeout: float = 5.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise TimeoutError(f"{len(self.deliveries)} webhook deliveries after {timeout} s, expected {count}")

    # state

    def _get(self, payment_id: str, key: str | None = None) -> _Payment:
        payment = self._payments.get(payment_id)
        if payment is None or (key is not None and payment.key != key):
            raise MollieAPIError(404, f"No payment exists with token {payment_id}.")
        self._expire_if_due(payment)
        return payment

    def _find(self, kind: str, object_id: str) -> tuple[_Payment, dict[str, Any]]:
        for payment in self._payments.values():
            for item in getattr(payment, kind):
                if item["id"] == object_id:
                    return payment, item
        raise MollieAPIError(404, f"No {kind[:-1]} exists with token {object_id}.")

    def _expire_if_due(self, payment: _Payment) -> None:
        data = payment.data
        if data["status"] in ("open", "pending") and self._now() >= dt.datetime.fromisoformat(data["expiresAt"]):
            self._transition(payment, "expired")
            data["expiredAt"] = data["expiresAt"]

    def _transition(self, payment: _Payment, status: str, method: str | None = None, webhook: bool = True) -> None:
        data = payment.data
        if status not in TRANSITIONS.get(data["status"], ()):
            raise MollieAPIError(422, f"The payment cannot change from {data['status']} to {status}", "status")
        data["status"] = status
        if status in TIMESTAMPS:
            data[TIMESTAMPS[status]] = _iso(self._now())
        if method and data.get("method") is None and status in METHOD_STATUSES:
            data["method"] = method
        if webhook and status in WEBHOOK_STATUSES:
            self._queue_webhook(payment)

    def _link(self, path: str, media_type: str = HAL) -> dict[str, str]:
        return {"href": f"{self.base_url}{path}", "type": media_type}

    def _create_payment(self, key: str, body: Any) -> dict[str, Any]:
        fields, methods = _validate_payment(body)
        now, pid = self._now(), _new_id("tr_")
        lifetime = dt.timedelta(days=12) if fields["method"] == "banktransfer" else dt.timedelta(minutes=15)
        data = {"resource": "payment", "id": pid, "mode": "test", "createdAt": _iso(now), "amount": fields["amount"],
                "description": fields["description"], "method": fields["method"], "metadata": fields["metadata"],
                "status": "open", "isCancelable": True, "expiresAt": _iso(now + lifetime),
                "profileId": "pfl_emulator00", "sequenceType": "oneoff", "redirectUrl": fields["redirectUrl"]}
        if fields["cancelUrl"]:
            data["cancelUrl"] = fields["cancelUrl"]
        data.update(webhookUrl=fields["webhookUrl"], locale=fields["locale"])
        self._payments[pid] = payment = _Payment(data, key, methods)
        return self._render(payment)

    def _create_refund(self, payment: _Payment, body: Any, required: bool = True) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise MollieAPIError(400, "The request body is not a valid JSON object")
        if payment.data["status"] != "paid":
            raise MollieAPIError(422, "The payment cannot be refunded: it is not paid", "amount")
        currency, remaining, pid = payment.currency, payment.remaining(), payment.data["id"]
        if body.get("amount") is None and not required:
            value = remaining
        else:
            value = _parse_amount(body.get("amount"), currency)
        if not 0 < value <= remaining:
            raise MollieAPIError(422, f"The amount is higher than the amount that can be refunded "
                                      f"({_money(remaining, currency)['value']} {currency})", "amount.value")
        rid = _new_id("re_")
        refund = {"resource": "refund", "id": rid, "amount": _money(value, currency), "status": "processing",
                  "createdAt": _iso(self._now()), "description": str(body.get("description") or ""),
                  "metadata": body.get("metadata"), "paymentId": pid,
                  "settlementAmount": _money(-value, currency),
                  "_links": {"self": self._link(f"/v2/payments/{pid}/refunds/{rid}"),
                             "payment": self._link(f"/v2/payments/{pid}")}}
        payment.refunds.append(refund)
        self._queue_webhook(payment)
        return deepcopy(refund)

    def _render(self, payment: _Payment, embed: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        data, pid = dict(payment.data), payment.data["id"]
        status, currency = data["status"], payment.currency
        data["isCancelable"] = status == "open"
        if data.get("paidAt"):
            data["amountRefunded"] = _money(payment.refunded(), currency)
            data["amountRemaining"] = _money(payment.remaining(), currency)
            if payment.charged_back():
                data["amountChargedBack"] = _money(payment.charged_back(), currency)
        links = {"self": self._link(f"/v2/payments/{pid}")}
        if status == "open":
            links["checkout"] = self._link(f"/checkout/{pid}", "text/html")
        links["changePaymentState"] = self._link(f"/checkout/{pid}", "text/html")
        for kind in ("refunds", "chargebacks"):
            if getattr(payment, kind):
                links[kind] = self._link(f"/v2/payments/{pid}/{kind}")
        links["documentation"] = {"href": "https://docs.mollie.com/reference/get-payment", "type": "text/html"}
        data["_links"] = links
        embedded = {kind: getattr(payment, kind) for kind in ("refunds", "chargebacks")
                    if kind in embed and getattr(payment, kind)}
        if embedded:
            data["_embedded"] = embedded
        return deepcopy(data)

    def _list(self, payment: _Payment, kind: str) -> dict[str, Any]:
        items = getattr(payment, kind)
        return deepcopy({"count": len(items), "_embedded": {kind: items},
                         "_links": {"self": self._link(f"/v2/payments/{payment.data['id']}/{kind}"),
                                    "previous": None, "next": None, **DOCS}})

    # webhooks

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _queue_webhook(self, payment: _Payment) -> None:
        pid, url = payment.data["id"], payment.data.get("webhookUrl")
        if not url:
            return
        if self._hold:
            self._held.append(pid)
        else:
            self._spawn(self._deliver, f"mollie-webhook-{pid}", pid, url, time.monotonic())

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.webhook_timeout, follow_redirects=False, trust_env=False,
                                            headers={"User-Agent": "Mollie.nl HTTP client/1.0"})
            return self._client

    def _deliver(self, payment_id: str, url: str, start: float) -> None:
        """One change's delivery: attempts at Mollie's offsets (compressed) from `start` until a 2xx in time."""
        for attempt, minutes in enumerate(RETRY_MINUTES, start=1):
            if self._stopping.wait(max(0.0, start + minutes * 60 / self.clock_scale - time.monotonic())):
                return
            status, error, at, sent = None, None, time.time(), time.monotonic()
            try:
                status = self._http().post(url, data={"id": payment_id}).status_code
                if time.monotonic() - sent > self.webhook_timeout:
                    error = f"answered after more than {self.webhook_timeout} s"
            except (httpx.HTTPError, httpx.InvalidURL, RuntimeError) as exc:  # RuntimeError: closed by stop()
                error = f"{type(exc).__name__}: {exc}"
            with self._changed:
                self.deliveries.append({"payment_id": payment_id, "url": url, "status": status, "error": error,
                                        "at": at, "attempt": attempt})
                self._changed.notify_all()
            if error is None and status is not None and 200 <= status < 300:
                return

    def _sweep(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for payment in list(self._payments.values()):
                    self._expire_if_due(payment)

    # HTTP

    def _routes(self) -> list[Route]:
        return [
            Route("/v2/payments", self._api(lambda k, r, b: (201, self._create_payment(k, b)), idempotent=True),
                  methods=["POST"]),
            Route("/v2/payments/{id}", self._api(self._payment_endpoint, idempotent=True), methods=["GET", "DELETE"]),
            Route("/v2/payments/{id}/refunds", self._api(self._refunds_endpoint, idempotent=True),
                  methods=["GET", "POST"]),
            Route("/v2/payments/{id}/refunds/{sub}", self._api(self._item_endpoint("refunds")), methods=["GET"]),
            Route("/v2/payments/{id}/chargebacks", self._api(
                lambda k, r, b: (200, self._list(self._get(r.path_params["id"], k), "chargebacks"))), methods=["GET"]),
            Route("/v2/payments/{id}/chargebacks/{sub}", self._api(self._item_endpoint("chargebacks")),
                  methods=["GET"]),
            Route("/checkout/{id}", partial(pages.checkout_endpoint, self), methods=["GET", "POST"]),
            *pages.control_routes(self),
        ]

    def _authenticate(self, request: Request) -> str:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        valid = key in self.api_keys if self.api_keys is not None else bool(DEFAULT_KEY.match(key))
        if scheme.lower() != "bearer" or not valid:
            raise MollieAPIError(401, "Missing authentication, or failed to authenticate")
        return key

    def _api(self, action: Callable[[str, Request, Any], tuple[int, dict[str, Any]]],
             idempotent: bool = False) -> Callable[[Request], Any]:
        """Wrap an API action: authentication, JSON body, idempotent replay of successful POST/DELETE replies."""
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                key = self._authenticate(request)
                replay_key = request.headers.get("idempotency-key") if idempotent and request.method != "GET" else None
                fingerprint = (request.method, request.url.path, _canonical(raw))
                with self._lock:
                    cached = self._idempotency.get((key, replay_key)) if replay_key else None
                    if cached and time.monotonic() - cached[0] < IDEMPOTENCY_TTL:
                        if cached[1] != fingerprint:
                            raise MollieAPIError(422, "The Idempotency-Key was already used for a different request")
                        return JSONResponse(cached[3], cached[2], {"Idempotent-Replayed": "true"}, media_type=HAL)
                    try:
                        body = json.loads(raw) if raw.strip() else {}
                    except ValueError:
                        raise MollieAPIError(400, "The request body is not valid JSON") from None
                    status, payload = action(key, request, body)
                    if replay_key:
                        self._idempotency[(key, replay_key)] = (time.monotonic(), fingerprint, status, payload)
                return JSONResponse(payload, status, media_type=HAL)
            except MollieAPIError as exc:
                return exc.response()
        return endpoint

    def _payment_endpoint(self, key: str, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
        payment = self._get(request.path_params["id"], key)
        if request.method == "DELETE":
            if payment.data["status"] != "open":
                raise MollieAPIError(422, f"The payment cannot be canceled: its status is {payment.data['status']}")
            self._transition(payment, "canceled")
            return 200, self._render(payment)
        embed = {part.strip() for part in request.query_params.get("embed", "").split(",")}
        return 200, self._render(payment, embed)

    def _refunds_endpoint(self, key: str, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
        payment = self._get(request.path_params["id"], key)
        if request.method == "POST":
            return 201, self._create_refund(payment, body)
        return 200, self._list(payment, "refunds")

    def _item_endpoint(self, kind: str) -> Callable[[str, Request, Any], tuple[int, dict[str, Any]]]:
        def action(key: str, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
            payment, sub = self._get(request.path_params["id"], key), request.path_params["sub"]
            for item in getattr(payment, kind):
                if item["id"] == sub:
                    return 200, deepcopy(item)
            raise MollieAPIError(404, f"No {kind[:-1]} exists with token {sub}.")
        return action

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith(("/v2/", "/_control/")):
            detail = "The resource does not exist" if exc.status_code == 404 else str(exc.detail)
            return MollieAPIError(exc.status_code, detail).response()
        return PlainTextResponse(str(exc.detail), exc.status_code)
