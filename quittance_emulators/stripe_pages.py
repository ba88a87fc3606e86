"""Hosted Checkout page and control endpoints of the local Stripe emulator: for tests and the demo, never production.

Plain HTML, no script: every outcome is a button in a form that POSTs back to `/c/pay/{id}`. Each page says
"TEST MODE — Stripe emulator" in its title, its banner and next to the buttons, so nobody mistakes it for Stripe.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from quittance_emulators.forms import THREE_DECIMAL, ZERO_DECIMAL, StripeEmulatorError

if TYPE_CHECKING:
    from quittance_emulators.stripe import StripeEmulator

LABEL = "TEST MODE — Stripe emulator"

OUTCOMES = (
    ("success", "Pay with a test card that succeeds", "Card 4242 4242 4242 4242: paid at once."),
    ("decline", "Pay with a test card that is declined", "Card 4000 0000 0000 0002: declined; you can retry."),
    ("delayed_success", "Pay by bank debit that succeeds later",
     "Completed now as unpaid; the payment succeeds shortly after."),
    ("delayed_failure", "Pay by bank debit that fails later",
     "Completed now as unpaid; the payment fails shortly after."),
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f6f8fa;color:#1a1f36}
.banner{background:#b3093c;color:#fff;padding:.6rem 1rem;font-weight:700;text-align:center}
main{max-width:36rem;margin:2rem auto;background:#fff;padding:1.5rem 2rem;border-radius:8px;border:1px solid #d0d7de}
table{width:100%;border-collapse:collapse}td,th{padding:.3rem 0;text-align:left}td.n,th.n{text-align:right}
button{display:block;width:100%;margin:.6rem 0 .1rem;padding:.7rem;font-size:1rem;border-radius:6px;
border:2px solid #3d3aa6;background:#635bff;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#3d3aa6}button:focus-visible{outline:3px solid #ffb000;outline-offset:2px}
.hint{margin:0 0 .8rem;font-size:.9rem;color:#4f566b}.alert{border:2px solid #b3093c;padding:.6rem;border-radius:6px}
"""


def format_amount(amount: int, currency: str) -> str:
    """Minor units as a plain decimal string with the currency code: 12345 eur → "123.45 EUR"."""
    digits = 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2
    sign, value = ("-" if amount < 0 else ""), abs(amount)
    if digits == 0:
        return f"{sign}{value} {currency.upper()}"
    whole, frac = divmod(value, 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d} {currency.upper()}"


def _page(title: str, body: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)} · {LABEL}</title><style>{_STYLE}</style></head>\n"
            f'<body><div class="banner" role="note">{LABEL}: no real payment is made</div>\n'
            f'<main aria-labelledby="title">{body}</main></body></html>\n')


def checkout_page(session: dict[str, Any], lines: list[dict[str, Any]], notice: str | None) -> str:
    """The payment page of an open Session; `notice` is the last decline message, shown as an alert."""
    currency = session["currency"]
    rows = "".join(
        f'<tr><td>{escape(line["description"])}</td><td class="n">{line["quantity"]}</td>'
        f'<td class="n">{escape(format_amount(line["amount_total"], currency))}</td></tr>' for line in lines)
    alert = f'<p class="alert" role="alert">{escape(notice)}</p>' if notice else ""
    action = f'/c/pay/{escape(session["id"])}'
    buttons = "".join(
        f'<form method="post" action="{action}"><input type="hidden" name="outcome" value="{value}">'
        f'<button type="submit" aria-describedby="hint-{value}">{escape(label)}</button></form>'
        f'<p class="hint" id="hint-{value}">{escape(hint)}</p>' for value, label, hint in OUTCOMES)
    if session.get("cancel_url"):
        buttons += (f'<form method="post" action="{action}"><input type="hidden" name="outcome" value="cancel">'
                    f'<button type="submit" class="secondary">Cancel and go back</button></form>')
    email = session.get("customer_email")
    body = (f'<h1 id="title">Pay {escape(format_amount(session["amount_total"], currency))}</h1>'
            f"<p><strong>{LABEL}</strong>. Choose an outcome below; no card details are asked.</p>"
            + (f"<p>Receipt to {escape(email)}</p>" if email else "") + alert
            + '<table><caption class="hint">Items</caption><thead><tr><th scope="col">Item</th>'
              '<th scope="col" class="n">Qty</th><th scope="col" class="n">Amount</th></tr></thead>'
            + f"<tbody>{rows}</tbody></table>"
            + f'<section aria-label="Test outcomes ({LABEL})"><h2>Test outcomes</h2>'
            + f'<p class="hint">{LABEL}</p>{buttons}</section>')
    return _page(f'Pay {format_amount(session["amount_total"], currency)}', body)


def message_page(title: str, message: str, link: str | None = None) -> str:
    """A closed, expired or unknown Session: a heading, a sentence and an optional way back."""
    back = f'<p><a href="{escape(link)}">Return to the merchant</a></p>' if link else ""
    body = f'<h1 id="title">{escape(title)}</h1><p>{escape(message)}</p><p>{LABEL}</p>{back}'
    return _page(title, body)


def page_endpoint(emu: StripeEmulator) -> Callable[[Request], Awaitable[Response]]:
    """`GET /c/pay/{id}` shows the page (or why it is closed); `POST` applies the chosen outcome and redirects (303)."""

    async def endpoint(request: Request) -> Response:
        session_id = request.path_params["id"]
        view = emu.checkout_view(session_id)
        if view is None:
            return HTMLResponse(message_page("Session not found", "No such Checkout Session."), 404)
        if request.method == "POST":
            form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
            try:
                return RedirectResponse(emu.pay(session_id, form.get("outcome", "")), 303)
            except StripeEmulatorError as exc:
                return HTMLResponse(message_page("Payment not possible", str(exc)), exc.status)
        session, lines, notice = view
        if session["status"] == "open":
            return HTMLResponse(checkout_page(session, lines, notice), headers={"Cache-Control": "no-store"})
        if session["status"] == "complete":
            back = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session_id)
            return HTMLResponse(message_page("Payment complete", "This Checkout Session is complete.", back))
        return HTMLResponse(message_page("Session expired", "This Checkout Session has expired.",
                                         session["cancel_url"]))

    return endpoint


def control_endpoint(emu: StripeEmulator) -> Callable[[Request], Awaitable[Response]]:
    """`/_control/…` for the demo and browser tests: JSON or form bodies, JSON replies, no authentication
    (loopback test tool). POST sessions/{id}/complete (outcome) | sessions/{id}/expire |
    payment_intents/{id}/refund (amount) | payment_intents/{id}/dispute (close_as) | disputes/{id}/close (status) |
    events/{id}/redeliver | events/{id}/duplicate | events/hold | events/release (reverse) | endpoints (url, secret) |
    endpoints/rotate (url) | endpoints/expire_old (url); GET state."""

    def dispatch(parts: list[str], a: dict[str, Any]) -> dict[str, Any]:
        match parts:
            case ["sessions", sid, "complete"]:
                emu.complete(sid, str(a["outcome"]))
                return emu.session(sid)
            case ["sessions", sid, "expire"]:
                emu.expire(sid)
                return emu.session(sid)
            case ["payment_intents", pid, "refund"]:
                amount = a.get("amount")
                return {"refund": emu.refund(pid, None if amount in (None, "") else int(amount))}
            case ["payment_intents", pid, "dispute"]:
                return {"dispute": emu.dispute(pid, close_as=a.get("close_as") or None)}
            case ["disputes", did, "close"]:
                emu.close_dispute(did, str(a["status"]))
                return {"dispute": did}
            case ["events", "hold"]:
                emu.hold_events(True)
                return {"held": True}
            case ["events", "release"]:
                emu.release_events(reverse=str(a.get("reverse", "")).lower() in ("1", "true"))
                return {"held": False}
            case ["events", eid, "redeliver"]:
                emu.redeliver(eid)
                return {"event": eid}
            case ["events", eid, "duplicate"]:
                return {"event": emu.duplicate_with_new_id(eid)}
            case ["endpoints"]:
                return {"secret": emu.add_webhook_endpoint(str(a["url"]), a.get("secret") or None)}
            case ["endpoints", "rotate"]:
                return {"secret": emu.rotate_secret(str(a["url"]))}
            case ["endpoints", "expire_old"]:
                emu.expire_old_secrets(str(a["url"]))
                return {"url": a["url"]}
            case ["state"]:
                return emu.state()
        raise LookupError(f"Unknown control action: /_control/{'/'.join(parts)}")

    async def endpoint(request: Request) -> Response:
        parts = request.path_params["rest"].strip("/").split("/")
        if (request.method == "GET") != (parts == ["state"]):
            return JSONResponse({"error": "Use GET for /_control/state and POST for everything else."}, 405)
        raw = await request.body()
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                args = json.loads(raw or b"{}")
            else:
                args = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            return JSONResponse(dispatch(parts, args))
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, 404 if not isinstance(exc, KeyError) else 400)
        except StripeEmulatorError as exc:
            return JSONResponse({"error": str(exc)}, exc.status)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)

    return endpoint
