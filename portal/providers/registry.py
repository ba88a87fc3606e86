"""Provider adapters for an organization's configuration, built once per distinct configuration."""

from __future__ import annotations

import threading

from portal.domain.payment_settings import ProviderConfig
from portal.providers.interface import PaymentProvider
from portal.providers.mollie import MollieProvider
from portal.providers.stripe import StripeProvider
from portal.settings import Settings


class ProviderRegistry:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cache: dict[tuple[str, ...], PaymentProvider] = {}
        self._lock = threading.Lock()

    def get(self, name: str, config: ProviderConfig) -> PaymentProvider:
        key: tuple[str, ...]
        if name == "mollie":
            key = ("mollie", config.mollie_api_key, *config.mollie_methods)
        elif name == "stripe":
            key = ("stripe", config.stripe_api_key, *config.stripe_webhook_secrets)
        else:
            raise KeyError(name)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._build(name, config)
            return self._cache[key]

    def stripe(self, config: ProviderConfig) -> StripeProvider:
        provider = self.get("stripe", config)
        assert isinstance(provider, StripeProvider)
        return provider

    def _build(self, name: str, config: ProviderConfig) -> PaymentProvider:
        if name == "mollie":
            return MollieProvider(config.mollie_api_key, self._settings.mollie_api_url, config.mollie_methods)
        return StripeProvider(config.stripe_api_key, self._settings.stripe_api_url, config.stripe_webhook_secrets)
