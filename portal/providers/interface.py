"""What Quittance asks of a payment provider, and the errors an adapter may raise.

Two webhook models hide behind it: Stripe proves an event with a signature, Mollie only names a payment
that must be fetched. Either way an adapter turns it into a trusted PaymentObservation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from portal.domain.payments import PaymentObservation
from portal.errors import QuittanceError


class ProviderError(QuittanceError):
    """The provider could not be reached, or answered with an error we cannot act on."""


class ProviderUnavailable(ProviderError):
    """Worth retrying later (network, 5xx, timeout): webhooks answer 503 so the provider retries."""


class UnknownPayment(ProviderError):
    """The provider does not know this id (or not for our key)."""


class BadWebhook(QuittanceError):
    """A webhook that does not prove itself: bad signature, malformed body."""


@dataclass(frozen=True)
class CheckoutLine:
    label: str
    amount_minor: int


@dataclass(frozen=True)
class CheckoutRequest:
    checkout_public_id: str
    currency: str
    amount_minor: int
    description: str
    lines: tuple[CheckoutLine, ...]
    return_url: str
    cancel_url: str
    webhook_url: str
    locale: str
    method: str | None
    idempotency_key: str


@dataclass(frozen=True)
class ProviderCheckout:
    provider_ref: str
    url: str
    expires_at: dt.datetime | None


class PaymentProvider(Protocol):
    name: str

    def create_checkout(self, request: CheckoutRequest) -> ProviderCheckout:
        """Create the provider's payment page; idempotent on `request.idempotency_key`."""

    def fetch(self, provider_ref: str) -> PaymentObservation:
        """The current state of a checkout at the provider (Mollie tr_, Stripe cs_)."""

    def cancel(self, provider_ref: str) -> None:
        """Stop a checkout that was superseded; a no-op when it can no longer be stopped."""
