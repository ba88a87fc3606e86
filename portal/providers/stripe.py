"""Stripe Checkout through stripe-python 16.1.0 (synchronous client: async callers go through
portal.providers.calls).

A Stripe webhook proves itself with `Stripe-Signature` over the raw body; every configured secret is tried, so
secrets rotate without a gap. Event ids are deduplicated by the caller; here an event becomes a
PaymentObservation, or None for the types we do not act on.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import orjson
import stripe
from stripe.params.checkout import SessionCreateParams

from portal.domain.payments import ObservedStatus, PaymentObservation
from portal.providers.amounts import from_stripe, to_stripe
from portal.providers.interface import (
    BadWebhook, CheckoutRequest, ProviderCheckout, ProviderError, ProviderUnavailable, UnknownPayment,
)

SESSION_ID = re.compile(r"cs_[A-Za-z0-9_]{1,200}")
SIGNATURE_TOLERANCE = 300  # seconds; never 0 or None, which would switch the timestamp check off
_LOCALES = {"fr": "fr", "nl": "nl", "en": "en", "de": "de", "sv": "sv"}


@dataclass(frozen=True)
class VerifiedEvent:
    event_id: str
    event_type: str
    observation: PaymentObservation | None


class StripeProvider:
    name = "stripe"

    def __init__(self, api_key: str, api_url: str = "", webhook_secrets: tuple[str, ...] = ()) -> None:
        options: dict[str, Any] = {"http_client": stripe.RequestsClient(timeout=(2, 10)), "max_network_retries": 1}
        if api_url:
            options["base_addresses"] = {"api": api_url}
        self._client = stripe.StripeClient(api_key, **options)
        self.webhook_secrets = webhook_secrets

    def create_checkout(self, request: CheckoutRequest) -> ProviderCheckout:
        currency = request.currency.lower()
        metadata = {"checkout": request.checkout_public_id}
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [{"quantity": 1, "price_data": {
                "currency": currency, "unit_amount": to_stripe(line.amount_minor, request.currency),
                "product_data": {"name": line.label[:250]}}} for line in request.lines],
            "success_url": request.return_url + "?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": request.cancel_url,
            "client_reference_id": request.checkout_public_id,
            "metadata": metadata,
            # Session metadata does not reach the PaymentIntent or the Charge: copy it there too.
            "payment_intent_data": {"metadata": metadata},
            "payment_method_types": ["card"],  # type: ignore[typeddict-unknown-key]  # the API takes it; the SDK type lacks it
            "locale": _LOCALES.get(request.locale[:2], "auto"),
            "submit_type": "pay",
        }
        session = self._call(lambda: self._client.v1.checkout.sessions.create(
            params, {"idempotency_key": request.idempotency_key}))
        return ProviderCheckout(provider_ref=session.id, url=session.url,
                                expires_at=dt.datetime.fromtimestamp(session.expires_at, dt.UTC)
                                if session.expires_at else None)

    def fetch(self, provider_ref: str) -> PaymentObservation:
        if not SESSION_ID.fullmatch(provider_ref):
            raise UnknownPayment("not a Stripe Checkout Session id")
        session = self._call(lambda: self._client.v1.checkout.sessions.retrieve(
            provider_ref, {"expand": ["payment_intent.latest_charge"]}))
        data = session.to_dict()
        observation = session_observation(data)
        intent = data.get("payment_intent")
        charge = intent.get("latest_charge") if isinstance(intent, dict) else None
        if isinstance(charge, dict) and observation.status == "paid":
            return PaymentObservation(**{**observation.__dict__, "refunded_minor": from_stripe(
                int(charge.get("amount_refunded") or 0), observation.currency)})
        return observation

    def cancel(self, provider_ref: str) -> None:
        try:
            self._call(lambda: self._client.v1.checkout.sessions.expire(provider_ref))
        except (UnknownPayment, ProviderError):
            return  # already complete or expired: nothing to stop

    def verify(self, body: bytes, signature: str | None) -> VerifiedEvent:
        """Check the signature against each secret, then read the raw body (never a re-serialised one)."""
        for secret in self.webhook_secrets:
            try:
                stripe.WebhookSignature.verify_header(body, signature, secret, SIGNATURE_TOLERANCE)
                break
            except stripe.SignatureVerificationError:
                continue
        else:
            raise BadWebhook("no valid Stripe-Signature for any configured secret")
        try:
            event = orjson.loads(body)
            return VerifiedEvent(str(event["id"]), str(event["type"]), event_observation(event))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BadWebhook("signed, but not a Stripe event") from exc

    @staticmethod
    def _call(operation: Any) -> Any:
        try:
            return operation()
        except stripe.InvalidRequestError as exc:
            if getattr(exc, "code", None) == "resource_missing":
                raise UnknownPayment("Stripe does not know this object") from exc
            raise ProviderError(f"Stripe refused the request: {exc.user_message or exc}") from exc
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            raise ProviderUnavailable(f"Stripe could not be reached: {exc}") from exc
        except stripe.StripeError as exc:
            status = getattr(exc, "http_status", None) or 500
            if status >= 500:
                raise ProviderUnavailable(f"Stripe answered {status}") from exc
            raise ProviderError(f"Stripe answered {status}: {exc}") from exc


def _session_status(session: dict[str, Any]) -> ObservedStatus:
    if session.get("status") == "expired":
        return "expired"
    if session.get("status") == "complete":
        return "paid" if session.get("payment_status") == "paid" else "processing"
    return "open"


def _intent_id(value: Any) -> str | None:
    if isinstance(value, dict):
        return str(value["id"])
    return str(value) if value else None


def session_observation(session: dict[str, Any], status: ObservedStatus | None = None) -> PaymentObservation:
    currency = str(session.get("currency") or "eur").upper()
    metadata = session.get("metadata") or {}
    return PaymentObservation(
        provider="stripe", status=status or _session_status(session),
        checkout_public_id=metadata.get("checkout") or session.get("client_reference_id"),
        payment_id=_intent_id(session.get("payment_intent")),
        amount_minor=from_stripe(int(session.get("amount_total") or 0), currency), currency=currency,
        raw=session)


def event_observation(event: dict[str, Any]) -> PaymentObservation | None:
    """The types that move money or a checkout; anything else is acknowledged and ignored."""
    kind = event["type"]
    obj = event["data"]["object"]
    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded", "checkout.session.expired"):
        return session_observation(obj)
    if kind == "checkout.session.async_payment_failed":
        return session_observation(obj, "failed")
    if kind == "charge.refunded":
        return _charge_observation(obj, refunded=int(obj.get("amount_refunded") or 0))
    if kind in ("charge.dispute.created", "charge.dispute.closed", "charge.dispute.funds_withdrawn",
                "charge.dispute.funds_reinstated"):
        reinstated = obj.get("status") == "won" or kind == "charge.dispute.funds_reinstated"
        return _charge_observation(obj, charged_back=0 if reinstated else int(obj.get("amount") or 0))
    return None


def _charge_observation(obj: dict[str, Any], *, refunded: int | None = None,
                        charged_back: int | None = None) -> PaymentObservation:
    """Charge and dispute events name the PaymentIntent; our checkout id rides in the copied metadata."""
    currency = str(obj.get("currency") or "eur").upper()
    metadata = obj.get("metadata") or {}
    return PaymentObservation(
        provider="stripe", status="paid", checkout_public_id=metadata.get("checkout"),
        payment_id=_intent_id(obj.get("payment_intent")), amount_minor=from_stripe(int(obj.get("amount") or 0), currency),
        currency=currency,
        refunded_minor=from_stripe(refunded, currency) if refunded is not None else None,
        charged_back_minor=from_stripe(charged_back, currency) if charged_back is not None else None,
        raw=obj)
