"""Which payment providers an organization offers, with which keys. Anything not set falls back to the
install's PORTAL_* defaults, which is all a one-organization install needs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from portal.db import insert_or_ignore
from portal.db.payments import payment_settings
from portal.errors import InvalidInput
from portal.settings import Settings

PROVIDERS = ("mollie", "stripe")
MOLLIE_METHODS = ("ideal", "bancontact", "banktransfer", "creditcard", "paypal", "kbc", "belfius")


@dataclass(frozen=True)
class ProviderConfig:
    providers: tuple[str, ...]
    mollie_api_key: str
    mollie_methods: tuple[str, ...]
    stripe_api_key: str
    stripe_webhook_secrets: tuple[str, ...]


def config_for(conn: sa.Connection, organization_id: int, settings: Settings) -> ProviderConfig:
    row = conn.execute(sa.select(payment_settings).where(
        payment_settings.c.organization_id == organization_id)).first()
    mollie_key = (row.mollie_api_key if row else None) or settings.mollie_api_key
    stripe_key = (row.stripe_api_key if row else None) or settings.stripe_api_key
    configured = tuple(row.providers) if row and row.providers else PROVIDERS
    offered = tuple(p for p in configured if (p == "mollie" and mollie_key) or (p == "stripe" and stripe_key))
    return ProviderConfig(
        providers=offered, mollie_api_key=mollie_key,
        mollie_methods=tuple(row.mollie_methods) if row and row.mollie_methods else ("ideal", "bancontact",
                                                                                     "banktransfer", "paypal"),
        stripe_api_key=stripe_key,
        stripe_webhook_secrets=tuple(row.stripe_webhook_secrets) if row and row.stripe_webhook_secrets
        else settings.stripe_webhook_secrets)


def configure(conn: sa.Connection, organization_id: int, now: dt.datetime, *, providers: list[str] | None = None,
              mollie_api_key: str | None = None, mollie_methods: list[str] | None = None,
              stripe_api_key: str | None = None, stripe_webhook_secrets: list[str] | None = None) -> None:
    """Change only what is given."""
    if providers is not None and not set(providers) <= set(PROVIDERS):
        raise InvalidInput(f"providers are {', '.join(PROVIDERS)}")
    if mollie_methods is not None and not set(mollie_methods) <= set(MOLLIE_METHODS):
        raise InvalidInput(f"Mollie methods are {', '.join(MOLLIE_METHODS)}")
    values = {key: value for key, value in {
        "providers": providers, "mollie_api_key": mollie_api_key, "mollie_methods": mollie_methods,
        "stripe_api_key": stripe_api_key, "stripe_webhook_secrets": stripe_webhook_secrets}.items()
        if value is not None}
    # The organization's first settings are inserted; if they exist (or a concurrent first configure inserted
    # them meanwhile), what is given is changed.
    created = insert_or_ignore(conn, payment_settings, {"organization_id": organization_id, "updated_at": now, **values},
                               ["organization_id"], returning=[payment_settings.c.organization_id]).first()
    if created is None:
        conn.execute(payment_settings.update().where(payment_settings.c.organization_id == organization_id)
                     .values(updated_at=now, **values))
