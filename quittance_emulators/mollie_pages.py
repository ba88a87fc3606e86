"""The Mollie emulator's browser and demo surface (part of mollie.py): for tests and the demo, never production.

- The hosted checkout page `/checkout/{id}`: plain server-rendered HTML (no JavaScript), labelled TEST MODE on every
  page. One form POSTs the chosen outcome (`status`) and, when the payment has no preset method, the chosen `method`;
  the browser is then sent (303) to the payment's redirectUrl (cancelUrl, if set, on cancel), or back to the page
  for pending, where "Complete payment" finishes it.
- The control endpoints under `/_control/` (JSON or form bodies), mirroring MollieEmulator's Python controls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from copy import deepcopy
from html import escape
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from quittance_emulators.mollie import MollieEmulator

BANNER = "TEST MODE — Mollie emulator"
METHOD_LABELS = {"ideal": "iDEAL", "bancontact": "Bancontact", "banktransfer": "Bank transfer",
                 "creditcard": "Card", "paypal": "PayPal", "kbc": "KBC/CBC Payment Button",
                 "belfius": "Belfius Pay Button"}
OPEN_CHOICES = (("paid", "Paid", "the customer completes the payment"),
                ("failed", "Failed", "the bank or card issuer refuses the payment"),
                ("canceled", "Canceled", "the customer cancels and returns to the shop"),
                ("expired", "Expired", "the customer never finishes; the payment expires"),
                ("pending", "Pending", "the payment is started but not complete yet"),
                ("authorized", "Authorized", "the amount is held for a later capture"))
PENDING_CHOICES = (("paid", "Complete payment", "the pending payment succeeds"),
                   ("failed", "Failed", "the pending payment fails"),
                   ("expired", "Expired", "the pending payment expires"))
STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1a1a1a;background:#f6f6f8;line-height:1.5}
.banner{margin:0;padding:.6rem 1rem;background:#7a2900;color:#fff;font-weight:700;text-align:center}
main{max-width:34rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:.5rem}
dl{display:grid;grid-template-columns:auto 1fr;gap:.25rem 1rem}dt{font-weight:600}dd{margin:0}
fieldset{border:1px solid #bbb;border-radius:.4rem;margin:1rem 0;padding:.75rem}
legend{font-weight:600;padding:0 .25rem}.choice{margin:.4rem 0}
button{font:inherit;padding:.45rem 1rem;border:2px solid #0b3d91;border-radius:.3rem;background:#0b3d91;color:#fff;
min-width:9rem;cursor:pointer}button:focus-visible,input:focus-visible,a:focus-visible{outline:3px solid #e8a200;
outline-offset:2px}.hint{color:#444}.notice{padding:.5rem;border-left:4px solid #7a2900;background:#fff4ec}
"""


def _layout(title: str, body: str) -> str:
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)} — {BANNER}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<header><p class=\"banner\" role=\"note\">{BANNER}: no real money moves</p></header>\n"
            f"<main>\n{body}\n</main>\n</body>\n</html>\n")


def _summary(payment: dict[str, Any]) -> str:
    amount = payment["amount"]
    rows = (("Description", payment.get("description") or ""), ("Amount", f"{amount['currency']} {amount['value']}"),
            ("Payment", payment["id"]), ("Status", payment["status"]))
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in rows) + "</dl>"


def _buttons(choices: tuple[tuple[str, str, str], ...]) -> str:
    items = [f"<div class=\"choice\"><button type=\"submit\" name=\"status\" value=\"{value}\" "
             f"aria-describedby=\"hint-{value}\">{label}</button> "
             f"<span class=\"hint\" id=\"hint-{value}\">{escape(hint)}</span></div>" for value, label, hint in choices]
    return "<fieldset><legend>Test outcome</legend>" + "".join(items) + "</fieldset>"


def _method_picker(payment: dict[str, Any], methods: list[str]) -> str:
    preset = payment.get("method")
    if isinstance(preset, str):
        return f"<p>Payment method: {escape(METHOD_LABELS.get(preset, preset))}</p>"
    radios = [f"<div class=\"choice\"><input type=\"radio\" id=\"method-{m}\" name=\"method\" value=\"{m}\""
              f"{' checked' if i == 0 else ''}> <label for=\"method-{m}\">{escape(METHOD_LABELS.get(m, m))}</label>"
              "</div>" for i, m in enumerate(methods)]
    return "<fieldset><legend>Payment method</legend>" + "".join(radios) + "</fieldset>"


def checkout_page(payment: dict[str, Any], methods: list[str], notice: str = "") -> str:
    """The hosted page for `payment` (rendered API JSON); `methods` are those the customer may pick."""
    pid = escape(payment["id"])
    status = payment["status"]
    parts = [f"<h1>Test payment {pid}</h1>", _summary(payment)]
    if notice:
        parts.append(f"<p class=\"notice\" role=\"alert\">{escape(notice)}</p>")
    if status == "open":
        parts += ["<p>Choose the outcome this test payment should have. The browser then returns to the shop.</p>",
                  f"<form method=\"post\" action=\"/checkout/{pid}\">", _method_picker(payment, methods),
                  _buttons(OPEN_CHOICES), "</form>"]
    elif status == "pending":
        parts += ["<p>This payment is pending. Complete it now, or return to the shop while it is still pending.</p>",
                  f"<form method=\"post\" action=\"/checkout/{pid}\">", _buttons(PENDING_CHOICES), "</form>",
                  f"<p><a href=\"{escape(payment['redirectUrl'])}\">Return to the shop (payment still pending)</a></p>"]
    else:
        parts += [f"<p>This payment is {escape(status)}; it can no longer be changed here.</p>",
                  f"<p><a href=\"{escape(payment['redirectUrl'])}\">Return to the shop</a></p>"]
    return _layout(f"Test payment {payment['id']}", "\n".join(parts))


def not_found_page(payment_id: str) -> str:
    return _layout("Payment not found", f"<h1>Payment not found</h1><p>No payment exists with token "
                                        f"{escape(payment_id)}.</p>")


async def checkout_endpoint(emulator: MollieEmulator, request: Request) -> Response:
    """`GET /checkout/{id}` shows the page; `POST` applies the chosen outcome under the emulator's lock."""
    pid = request.path_params["id"]
    form = await request.form() if request.method == "POST" else None
    with emulator._lock:
        try:
            payment = emulator._get(pid)
        except ValueError:  # MollieAPIError: unknown id
            return HTMLResponse(not_found_page(pid), 404)
        if form is None:
            return HTMLResponse(checkout_page(emulator._render(payment), payment.methods))
        choice, method = str(form.get("status", "")), str(form.get("method") or payment.methods[0])
        status = payment.data["status"]
        allowed = [c[0] for c in (OPEN_CHOICES if status == "open" else PENDING_CHOICES)]
        if status not in ("open", "pending") or choice not in allowed or method not in payment.methods:
            notice = f"'{choice}' is not possible for this payment (status {status}, method {method})."
            return HTMLResponse(checkout_page(emulator._render(payment), payment.methods, notice), 409)
        emulator._transition(payment, choice, method)
        target = (payment.data.get("cancelUrl") if choice == "canceled" else None) or payment.data["redirectUrl"]
    return RedirectResponse(f"/checkout/{pid}" if choice == "pending" else target, 303)


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() not in ("0", "false", "no", "off", "")


def control_routes(emulator: MollieEmulator) -> list[Route]:
    """`/_control/...`: set status, refund (and settle it), chargeback, reverse, resend, hold/release, deliveries."""
    from quittance_emulators.mollie import MollieAPIError  # mollie.py imports this module first

    emu = emulator
    actions: dict[str, tuple[list[str], Callable[[dict[str, Any], dict[str, Any]], Any]]] = {
        "/payments/{id}": (["GET"], lambda p, q: emu.payment(p["id"])),
        "/payments/{id}/status": (["POST"], lambda p, q: emu.set_status(
            p["id"], str(q.get("status", "")), method=str(q.get("method") or "ideal"),
            send_webhook=_flag(q.get("webhook", True)))),
        "/payments/{id}/refunds": (["POST"], lambda p, q: {"id": emu.refund(p["id"], q.get("amount"))}),
        "/payments/{id}/chargebacks": (["POST"], lambda p, q: {"id": emu.chargeback(p["id"], q.get("amount"))}),
        "/payments/{id}/webhook": (["POST"], lambda p, q: emu.send_webhook(p["id"])),
        "/refunds/{id}/status": (["POST"], lambda p, q: emu.settle_refund(p["id"], str(q.get("status", "")))),
        "/chargebacks/{id}/reverse": (["POST"], lambda p, q: emu.reverse_chargeback(p["id"])),
        "/webhooks/hold": (["POST"], lambda p, q: emu.hold_webhooks(_flag(q.get("hold", True)))),
        "/deliveries": (["GET"], lambda p, q: {"deliveries": deepcopy(emu.deliveries)}),
    }

    def endpoint(action: Callable[[dict[str, Any], dict[str, Any]], Any]) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            params: Any = {}
            try:
                if request.method == "POST" and "json" in request.headers.get("content-type", ""):
                    params = json.loads(await request.body() or b"{}")
                elif request.method == "POST":
                    params = dict(await request.form())
                if not isinstance(params, dict):
                    raise MollieAPIError(400, "The request body must be a JSON object or a form")
                result = action(dict(request.path_params), params)
            except ValueError as exc:  # MollieAPIError, or a malformed JSON body
                error = exc if isinstance(exc, MollieAPIError) else MollieAPIError(400, f"Invalid request body: {exc}")
                return error.response()
            return JSONResponse(result if result is not None else {"ok": True})
        return handle

    return [Route(f"/_control{path}", endpoint(action), methods=verbs) for path, (verbs, action) in actions.items()]
