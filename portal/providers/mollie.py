"""Mollie through mollie-api-python 4.0.0 (synchronous: async callers go through portal.providers.calls).

A Mollie webhook carries only `id=tr_…`; the truth is fetched with the organization's key, so nothing in the
webhook body is trusted.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from mollie.api.client import Client
from mollie.api.error import Error as MollieError
from mollie.api.error import NotFoundError, RequestError, ResponseError, UnprocessableEntityError

from portal.domain.payments import ObservedStatus, PaymentObservation
from portal.providers.amounts import from_mollie, to_mollie
from portal.providers.interface import (
    CheckoutRequest, ProviderCheckout, ProviderError, ProviderUnavailable, UnknownPayment,
)

PAYMENT_ID = re.compile(r"tr_[A-Za-z0-9]{1,64}")
METHODS = ("ideal", "bancontact", "banktransfer", "creditcard", "paypal", "kbc", "belfius")
# Mollie's statuses to ours. `authorized` holds money without taking it: not paid yet.
_STATUS: dict[str, ObservedStatus] = {
    "open": "open", "pending": "processing", "authorized": "processing", "paid": "paid", "failed": "failed",
    "canceled": "cancelled", "expired": "expired",
}
_LOCALES = {"fr": "fr_BE", "nl": "nl_BE", "en": "en_GB", "de": "de_DE", "sv": "sv_SE"}


class MollieProvider:
    name = "mollie"

    def __init__(self, api_key: str, api_url: str = "", methods: tuple[str, ...] = ()) -> None:
        # Connect within 2 s and read within 5 s, so a webhook answers well inside Mollie's 15 s.
        self._client = Client(api_endpoint=api_url, timeout=(2, 5), retry=0)
        self._client.set_api_key(api_key)
        self.methods = methods

    def create_checkout(self, request: CheckoutRequest) -> ProviderCheckout:
        data: dict[str, Any] = {
            "amount": to_mollie(request.amount_minor, request.currency),
            "description": request.description[:255],
            "redirectUrl": request.return_url,
            "cancelUrl": request.cancel_url,
            "webhookUrl": request.webhook_url,
            "metadata": {"checkout": request.checkout_public_id},
            "locale": _LOCALES.get(request.locale[:2], "en_GB"),
        }
        if request.method:
            data["method"] = request.method
        elif self.methods:
            data["method"] = list(self.methods)
        payment = self._call(lambda: self._client.payments.create(data, idempotency_key=request.idempotency_key))
        expires = payment.get("expiresAt")
        return ProviderCheckout(provider_ref=payment["id"], url=payment["_links"]["checkout"]["href"],
                                expires_at=dt.datetime.fromisoformat(expires) if expires else None)

    def fetch(self, provider_ref: str) -> PaymentObservation:
        if not PAYMENT_ID.fullmatch(provider_ref):
            raise UnknownPayment("not a Mollie payment id")
        payment = self._call(lambda: self._client.payments.get(provider_ref))
        return observation(dict(payment))

    def cancel(self, provider_ref: str) -> None:
        try:
            payment = self._call(lambda: self._client.payments.get(provider_ref))
            if payment.get("isCancelable"):
                self._call(lambda: self._client.payments.delete(provider_ref))
        except UnknownPayment:
            return

    @staticmethod
    def _call(operation: Any) -> Any:
        try:
            return operation()
        except NotFoundError as exc:
            raise UnknownPayment("Mollie does not know this payment") from exc
        except UnprocessableEntityError as exc:
            raise ProviderError(f"Mollie refused the request: {exc}") from exc
        except RequestError as exc:
            raise ProviderUnavailable(f"Mollie could not be reached: {exc}") from exc
        except ResponseError as exc:
            if getattr(exc, "status", 500) >= 500:
                raise ProviderUnavailable(f"Mollie answered {exc}") from exc
            raise ProviderError(f"Mollie answered {exc}") from exc
        except MollieError as exc:
            raise ProviderUnavailable(f"Mollie answered something unreadable: {exc}") from exc


def observation(payment: dict[str, Any]) -> PaymentObservation:
    """A Mollie payment as we record it. Refunds and chargebacks leave the status at `paid`; their amounts say
    what was taken back."""
    amount = payment.get("amount") or {}
    currency = str(amount.get("currency") or "EUR")
    status = _STATUS.get(str(payment.get("status")), "open")
    # `paidAt` is what makes a payment paid (the SDK's is_paid() reads it too).
    if payment.get("paidAt"):
        status = "paid"
    metadata = payment.get("metadata") or {}
    paid = status == "paid"
    return PaymentObservation(
        provider="mollie", status=status,
        checkout_public_id=metadata.get("checkout") if isinstance(metadata, dict) else None,
        payment_id=str(payment["id"]), amount_minor=from_mollie(amount, currency), currency=currency,
        refunded_minor=from_mollie(payment.get("amountRefunded"), currency) if paid else None,
        charged_back_minor=from_mollie(payment.get("amountChargedBack"), currency) if paid else None,
        raw=payment)
