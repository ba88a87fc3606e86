"""Request side of the local Stripe emulator (tests and the demo, never production): API keys, Stripe-style errors,
bracket-key form decoding as Stripe's API reads it (`a[b][0][c]=v`) and the Checkout Session parameter checks.

`parse_brackets` keeps every level as a dict of strings (indexed lists stay `{"0": …, "1": …}`): only the caller
knows whether a level is a list or a hash whose keys happen to be digits (`metadata[0]=x` is a hash).
The `as_*` helpers convert one value and raise `FormError` naming the parameter, the way Stripe replies.
"""

from __future__ import annotations

import base64
import re
import secrets
import string
import time
from typing import Any
from urllib.parse import parse_qsl

_ALPHABET = string.ascii_letters + string.digits
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    """A malformed or invalid parameter: becomes a 400 `invalid_request_error` with `param`."""

    def __init__(self, message: str, param: str | None = None, code: str = "parameter_invalid") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class StripeEmulatorError(ValueError):
    """A Stripe-style API error: the HTTP status and the `error` object the API replies with."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type, "code": code, "message": message, "param": param}}


def missing(kind: str, object_id: str) -> StripeEmulatorError:
    return StripeEmulatorError(404, f"No such {kind}: '{object_id}'", param="id", code="resource_missing")


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def unix_now() -> int:
    return int(time.time())


def check_api_key(header: str, api_keys: set[str] | None) -> str:
    """The secret key of an `Authorization` header (Bearer, or Basic with the key as user), or a 401 error.
    `api_keys=None` accepts any `sk_test_…` key."""
    scheme, _, value = header.partition(" ")
    key = value.strip() if scheme.lower() == "bearer" else ""
    if scheme.lower() == "basic":
        key = base64.b64decode(value.strip() + "==").decode("utf-8", "replace").partition(":")[0]
    if not key:
        raise StripeEmulatorError(401, "You did not provide an API key. Provide it in the Authorization header, "
                                       "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")
    if key in api_keys if api_keys is not None else key.startswith("sk_test_"):
        return key
    prefix = key[:8] if key.startswith(("sk_test_", "sk_live_", "rk_test_")) else key[:3]
    tail = key[-4:] if len(key) >= len(prefix) + 8 else ""
    raise StripeEmulatorError(401, f"Invalid API Key provided: {prefix}****{tail}")


def parse_brackets(raw: str | bytes) -> dict[str, Any]:
    """Decode an urlencoded body or query string with bracket keys into nested dicts of strings."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = _KEY.match(key)
        if not match:
            raise FormError(f"Invalid parameter name: {key}", key)
        path = [match.group(1), *_SEGMENT.findall(match.group(2))]
        node = root
        for depth, part in enumerate(path[:-1]):
            name = _name(path[: depth + 1])
            if part == "" and depth:
                raise FormError(f"Invalid array: {name}", name)
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise FormError(f"Invalid hash: {name} is both a value and a hash", name)
            node = child
        last = path[-1] if path[-1] != "" else str(len(node))
        if isinstance(node.get(last), dict):
            raise FormError(f"Invalid hash: {_name(path)} is both a value and a hash", _name(path))
        node[last] = value
    return root


def _name(path: list[str]) -> str:
    return path[0] + "".join(f"[{p}]" for p in path[1:])


def as_list(value: Any, param: str) -> list[Any]:
    """An indexed level (`x[0]`, `x[1]`…) as a list; indices must run 0..n-1."""
    if value is None:
        return []
    if not isinstance(value, dict) or not all(k.isdigit() for k in value):
        raise FormError(f"Invalid array: {param} must be sent as {param}[0], {param}[1]…", param)
    indices = sorted(int(k) for k in value)
    if indices != list(range(len(indices))):
        raise FormError(f"Invalid array: {param} has gaps in its indices", param)
    return [value[str(i)] for i in indices]


def as_hash(value: Any, param: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FormError(f"Invalid hash: {param} must be sent as {param}[key]=value", param)
    return value


def as_str(value: Any, param: str, *, required: bool = False, max_length: int | None = None) -> str | None:
    if value is None or value == "":
        if required:
            raise FormError(f"Missing required param: {param}.", param, "parameter_missing")
        return None
    if not isinstance(value, str):
        raise FormError(f"Invalid string: {param} must be a string", param)
    if max_length is not None and len(value) > max_length:
        raise FormError(f"Invalid string: {param} must be at most {max_length} characters", param)
    return value


def as_int(value: Any, param: str, *, required: bool = False, minimum: int | None = None) -> int | None:
    text = as_str(value, param, required=required)
    if text is None:
        return None
    if not re.fullmatch(r"-?\d{1,18}", text):
        raise FormError(f"Invalid integer: {text}", param)
    number = int(text)
    if minimum is not None and number < minimum:
        raise FormError(f"This value must be greater than or equal to {minimum}.", param)
    return number


def as_bool(value: Any, param: str) -> bool | None:
    text = as_str(value, param)
    if text is None:
        return None
    if text not in ("true", "false"):
        raise FormError(f"Invalid boolean: {text}", param)
    return text == "true"


# -- Checkout Session parameters (POST /v1/checkout/sessions) -------------------------------------------------

ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf",
                "xof", "xpf"}
THREE_DECIMAL = {"bhd", "jod", "kwd", "omr", "tnd"}
EXPIRY_SLACK = 10   # seconds of leeway on the 30 min / 24 h expires_at bounds
SESSION_PARAMS = {
    "mode", "line_items", "success_url", "cancel_url", "client_reference_id", "metadata", "payment_intent_data",
    "expires_at", "customer_email", "customer", "customer_creation", "locale", "payment_method_types",
    "submit_type", "ui_mode", "expand", "currency", "billing_address_collection", "allow_promotion_codes",
    "automatic_tax", "consent_collection", "custom_text", "invoice_creation", "payment_method_options",
    "phone_number_collection", "tax_id_collection", "after_expiration", "branding_settings", "discounts"}
LOCALES = {"auto", "bg", "cs", "da", "de", "el", "en", "en-GB", "es", "es-419", "et", "fi", "fil", "fr", "fr-CA",
           "hr", "hu", "id", "it", "ja", "ko", "lt", "lv", "ms", "mt", "nb", "nl", "pl", "pt", "pt-BR", "ro", "ru",
           "sk", "sl", "sv", "th", "tr", "vi", "zh", "zh-HK", "zh-TW"}
METHOD_TYPES = {"card", "ideal", "bancontact", "sepa_debit", "eps", "p24", "link", "paypal", "klarna"}
SUBMIT_TYPES = {"auto", "pay", "book", "donate"}


def as_metadata(value: Any, param: str) -> dict[str, str]:
    """Stripe metadata: at most 50 keys, keys ≤ 40 characters, string values ≤ 500; empty values are dropped."""
    data = as_hash(value, param)
    if len(data) > 50:
        raise FormError("Invalid metadata: at most 50 keys are allowed", param)
    for key, item in data.items():
        name = f"{param}[{key}]"
        if len(key) > 40:
            raise FormError(f"Invalid metadata: keys must be at most 40 characters ({key})", name)
        if not isinstance(item, str):
            raise FormError("Invalid metadata: values must be strings", name)
        if len(item) > 500:
            raise FormError("Invalid metadata: values must be at most 500 characters", name)
    return {key: item for key, item in data.items() if item != ""}


def as_url(value: Any, param: str, *, required: bool = False) -> str | None:
    text = as_str(value, param, required=required, max_length=5000)
    if text is not None and not re.match(r"^https?://[^\s/?#]+", text):
        raise FormError(f"Not a valid URL: {param}", param, "url_invalid")
    return text


def _choice(value: Any, param: str, allowed: set[str]) -> str | None:
    text = as_str(value, param)
    if text is not None and text not in allowed:
        raise FormError(f"Invalid {param}: {text}", param)
    return text


def _line(item: Any, i: int, currency: str | None) -> dict[str, Any]:
    """One `line_items[i]` with `price_data`, as a line item object without ids."""
    name = f"line_items[{i}]"
    item = as_hash(item, name)
    if "price" in item:
        raise FormError(f"No such price: '{item['price']}' (the emulator takes price_data only)", f"{name}[price]",
                        "resource_missing")
    param = f"{name}[price_data]"
    data = as_hash(item.get("price_data"), param)
    if not data:
        raise FormError(f"Missing required param: {param}.", param, "parameter_missing")
    cur = str(as_str(data.get("currency"), f"{param}[currency]", required=True)).lower()
    if not re.fullmatch(r"[a-z]{3}", cur):
        raise FormError(f"Invalid currency: {cur}", f"{param}[currency]")
    if currency is not None and cur != currency:
        raise FormError("All line items must use the same currency", f"{param}[currency]")
    amount = int(as_int(data.get("unit_amount"), f"{param}[unit_amount]", required=True, minimum=0) or 0)
    step = 10 if cur in THREE_DECIMAL else 100 if cur == "isk" else 1
    if amount % step:
        raise FormError(f"Invalid amount for {cur}: card payments need a multiple of {step}",
                        f"{param}[unit_amount]", "amount_invalid")
    product = as_hash(data.get("product_data"), f"{param}[product_data]")
    title = as_str(product.get("name"), f"{param}[product_data][name]", required=True, max_length=250)
    quantity = int(as_int(item.get("quantity"), f"{name}[quantity]", required=True, minimum=1) or 0)
    price: dict[str, Any] = {"id": None, "object": "price", "active": False, "currency": cur, "livemode": False, "metadata": {},
             "product": None, "type": "one_time", "unit_amount": amount}
    return {"id": None, "object": "item", "amount_discount": 0, "amount_subtotal": amount * quantity,
            "amount_tax": 0, "amount_total": amount * quantity, "currency": cur, "description": title,
            "price": price, "quantity": quantity}


def checkout_session_params(p: dict[str, Any], now: int) -> dict[str, Any]:
    """Validate a Session create request like Stripe (400 with `param`); returns the Session's own fields
    (`session`), its line items (`lines`) and what goes to the PaymentIntent (`intent`)."""
    for name in p:
        if name not in SESSION_PARAMS:
            raise FormError(f"Received unknown parameter: {name}", name, "parameter_unknown")
    mode = as_str(p.get("mode"), "mode", required=True)
    if mode != "payment":
        raise FormError(f"Invalid mode: {mode} (the emulator supports mode=payment only)", "mode")
    if (as_str(p.get("ui_mode"), "ui_mode") or "hosted") not in ("hosted", "hosted_page"):
        raise FormError("Invalid ui_mode: the emulator serves the hosted page only", "ui_mode")
    success_url = as_url(p.get("success_url"), "success_url", required=True)
    cancel_url = as_url(p.get("cancel_url"), "cancel_url")
    items = as_list(p.get("line_items"), "line_items")
    if not items:
        raise FormError("Missing required param: line_items.", "line_items", "parameter_missing")
    if len(items) > 100:
        raise FormError("line_items can have at most 100 items", "line_items")
    lines: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        lines.append(_line(item, i, lines[0]["currency"] if lines else None))
    total = sum(line["amount_total"] for line in lines)
    if total > 99_999_999:
        raise FormError("The total amount is too large (at most 99999999 minor units)", "line_items",
                        "amount_too_large")
    expires_at = as_int(p.get("expires_at"), "expires_at")
    if expires_at is not None and expires_at < now + 1800 - EXPIRY_SLACK:
        raise FormError("The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.",
                        "expires_at")
    if expires_at is not None and expires_at > now + 86400 + EXPIRY_SLACK:
        raise FormError("The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
                        "expires_at")
    email = as_str(p.get("customer_email"), "customer_email", max_length=800)
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise FormError(f"Invalid email address: {email}", "customer_email", "email_invalid")
    types = [str(as_str(t, f"payment_method_types[{i}]", required=True))
             for i, t in enumerate(as_list(p.get("payment_method_types"), "payment_method_types"))]
    for i, kind in enumerate(types):
        _choice(kind, f"payment_method_types[{i}]", METHOD_TYPES)
    intent_data = as_hash(p.get("payment_intent_data"), "payment_intent_data")
    session = {
        "amount_subtotal": total, "amount_total": total, "cancel_url": cancel_url,
        "client_reference_id": as_str(p.get("client_reference_id"), "client_reference_id", max_length=200),
        "created": now, "currency": lines[0]["currency"], "customer_email": email,
        "expires_at": expires_at or now + 86400, "locale": _choice(p.get("locale"), "locale", LOCALES),
        "metadata": as_metadata(p.get("metadata"), "metadata"), "payment_method_types": types or ["card"],
        "submit_type": _choice(p.get("submit_type"), "submit_type", SUBMIT_TYPES), "success_url": success_url}
    intent = {"intent_metadata": as_metadata(intent_data.get("metadata"), "payment_intent_data[metadata]"),
              "description": as_str(intent_data.get("description"), "payment_intent_data[description]")}
    return {"session": session, "lines": lines, "intent": intent}
