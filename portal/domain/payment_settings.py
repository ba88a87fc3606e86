"""Which payment providers an organization offers, with which keys. Anything not set falls back to the
install's PORTAL_* defaults, which is all a one-organization install needs. Keys and webhook secrets are stored
encrypted (portal.encryption) and opened only here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from portal.db import insert_or_ignore
from portal.db.invoices import invoices
from portal.db.payments import payment_settings
from portal.encryption import SecretBox, secret_box
from portal.errors import FieldError, InvalidInput
from portal.money import MoneyError, is_currency, parse_minor
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


SECRET_COLUMNS = ("mollie_api_key", "stripe_api_key", "stripe_webhook_secrets")


@dataclass(frozen=True)
class PartialPolicy:
    """Whether a debtor may pay less than what they selected, and the least they may pay then. The minimum is
    in one currency (the organization's); selections in another currency are paid in full."""

    allowed: bool = False
    minimum_minor: int = 0
    currency: str | None = None

    def allows(self, currency: str) -> bool:
        return self.allowed and (self.currency is None or self.currency == currency)


def partial_policy(conn: sa.Connection, organization_id: int) -> PartialPolicy:
    row = conn.execute(sa.select(payment_settings.c.partial_payments, payment_settings.c.partial_minimum_minor,
                                 payment_settings.c.partial_currency)
                       .where(payment_settings.c.organization_id == organization_id)).first()
    if row is None or not row.partial_payments:
        return PartialPolicy()
    return PartialPolicy(True, row.partial_minimum_minor or 0, row.partial_currency)


def organization_currency(conn: sa.Connection, organization_id: int) -> str:
    """The currency most of the organization's invoices are in (EUR before there are any)."""
    found = conn.execute(sa.select(invoices.c.currency).where(invoices.c.organization_id == organization_id)
                         .group_by(invoices.c.currency).order_by(sa.func.count().desc(), invoices.c.currency)
                         .limit(1)).scalar()
    return str(found or "EUR")


def partial_values(conn: sa.Connection, organization_id: int, allowed: bool | None, minimum: str | None,
                   currency: str | None) -> dict[str, Any]:
    """The columns for `portal payments configure --[no-]partial-payments --partial-minimum AMOUNT
    [--currency CUR]`, validated: the minimum is parsed in the currency's exact exponent."""
    values: dict[str, Any] = {}
    if allowed is not None:
        values["partial_payments"] = allowed
    if minimum is None and currency is None:
        return values
    if currency is not None and not is_currency(currency):
        raise InvalidInput(f"unknown currency {currency!r}", [FieldError("/currency", "not an ISO 4217 code")])
    code = currency or organization_currency(conn, organization_id)
    values["partial_currency"] = code
    if minimum is not None:
        try:
            values["partial_minimum_minor"] = parse_minor(minimum, code)
        except MoneyError as exc:
            raise InvalidInput(f"partial minimum: {exc}", [FieldError("/partial_minimum", str(exc))]) from exc
    return values


def config_for(conn: sa.Connection, organization_id: int, settings: Settings) -> ProviderConfig:
    row = conn.execute(sa.select(payment_settings).where(
        payment_settings.c.organization_id == organization_id)).first()
    box = secret_box(settings.encryption_keys)
    mollie_key = (box.open(row.mollie_api_key) if row and row.mollie_api_key else None) or settings.mollie_api_key
    stripe_key = (box.open(row.stripe_api_key) if row and row.stripe_api_key else None) or settings.stripe_api_key
    configured = tuple(row.providers) if row and row.providers else PROVIDERS
    offered = tuple(p for p in configured if (p == "mollie" and mollie_key) or (p == "stripe" and stripe_key))
    return ProviderConfig(
        providers=offered, mollie_api_key=mollie_key,
        mollie_methods=tuple(row.mollie_methods) if row and row.mollie_methods else ("ideal", "bancontact",
                                                                                     "banktransfer", "paypal"),
        stripe_api_key=stripe_key,
        stripe_webhook_secrets=tuple(box.open(secret) for secret in row.stripe_webhook_secrets)
        if row and row.stripe_webhook_secrets else settings.stripe_webhook_secrets)


def configure(conn: sa.Connection, organization_id: int, now: dt.datetime, box: SecretBox, *,
              providers: list[str] | None = None,
              mollie_api_key: str | None = None, mollie_methods: list[str] | None = None,
              stripe_api_key: str | None = None, stripe_webhook_secrets: list[str] | None = None,
              partial_payments: bool | None = None, partial_minimum: str | None = None,
              currency: str | None = None) -> None:
    """Change only what is given."""
    if providers is not None and not set(providers) <= set(PROVIDERS):
        raise InvalidInput(f"providers are {', '.join(PROVIDERS)}")
    if mollie_methods is not None and not set(mollie_methods) <= set(MOLLIE_METHODS):
        raise InvalidInput(f"Mollie methods are {', '.join(MOLLIE_METHODS)}")
    values = {key: value for key, value in {
        "providers": providers, "mollie_api_key": box.seal(mollie_api_key) if mollie_api_key else mollie_api_key,
        "mollie_methods": mollie_methods,
        "stripe_api_key": box.seal(stripe_api_key) if stripe_api_key else stripe_api_key,
        "stripe_webhook_secrets": [box.seal(secret) for secret in stripe_webhook_secrets]
        if stripe_webhook_secrets is not None else None}.items()
        if value is not None}
    values.update(partial_values(conn, organization_id, partial_payments, partial_minimum, currency))
    # The organization's first settings are inserted; if they exist (or a concurrent first configure inserted
    # them meanwhile), what is given is changed.
    created = insert_or_ignore(conn, payment_settings, {"organization_id": organization_id, "updated_at": now, **values},
                               ["organization_id"], returning=[payment_settings.c.organization_id]).first()
    if created is None:
        conn.execute(payment_settings.update().where(payment_settings.c.organization_id == organization_id)
                     .values(updated_at=now, **values))


def stored_secrets(conn: sa.Connection) -> list[tuple[int, dict[str, Any]]]:
    """Every organization's stored secret columns as they are in the database (sealed or not)."""
    rows = conn.execute(sa.select(payment_settings.c.organization_id,
                                  *(payment_settings.c[name] for name in SECRET_COLUMNS))).all()
    return [(row.organization_id, {name: getattr(row, name) for name in SECRET_COLUMNS if getattr(row, name)})
            for row in rows]


def reseal(conn: sa.Connection, box: SecretBox) -> int:
    """Encrypt every stored provider secret with the newest key; how many organizations' rows changed."""
    changed = 0
    for organization_id, secrets in stored_secrets(conn):
        values: dict[str, Any] = {}
        for name, stored in secrets.items():
            values[name] = ([box.reseal(item) for item in stored] if name == "stripe_webhook_secrets"
                            else box.reseal(stored))
        if values:
            conn.execute(payment_settings.update().where(payment_settings.c.organization_id == organization_id)
                         .values(**values))
            changed += 1
    return changed


def check_keys(conn: sa.Connection, box: SecretBox) -> None:
    """At start-up: raise EncryptionKeyError (naming PORTAL_ENCRYPTION_KEYS) unless every stored secret opens,
    so that a missing or wrong key stops the start instead of failing the first payment."""
    for _organization_id, secrets in stored_secrets(conn):
        for name, stored in secrets.items():
            for item in (stored if name == "stripe_webhook_secrets" else [stored]):
                box.open(item)
