"""The provider emulators for tests: started once per run, on loopback, with the real SDKs pointed at them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from quittance_emulators.mollie import MollieEmulator
from quittance_emulators.stripe import StripeEmulator
from portal.settings import Settings

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
MOLLIE_KEY = "test_quittance"
STRIPE_KEY = "sk_test_quittance"
STRIPE_SECRET = "whsec_quittance_tests"


@pytest.fixture(scope="session")
def mollie() -> Iterator[MollieEmulator]:
    with MollieEmulator({MOLLIE_KEY}) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def stripe_emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator({STRIPE_KEY}, webhook_secrets=[STRIPE_SECRET]) as emulator:
        yield emulator


def with_providers(settings: Settings, mollie: Any, stripe_emulator: Any) -> Settings:
    return replace(settings, mollie_api_key=MOLLIE_KEY, mollie_api_url=mollie.base_url, stripe_api_key=STRIPE_KEY,
                   stripe_api_url=stripe_emulator.base_url, stripe_webhook_secrets=(STRIPE_SECRET,))
