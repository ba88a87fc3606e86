"""Payment providers' webhooks. Exact paths, no redirects, no CSRF (the provider is not a browser), the raw
body read first and bounded.

Mollie: the body names a payment and nothing in it is trusted; we fetch the payment with the organization's
key. Unknown ids get 200 (revealing nothing); Mollie unreachable gets 503, so that Mollie retries.
Stripe: the signature over the raw body is checked against each of the organization's secrets; a bad one gets
400 and writes nothing. Events are recorded by id in the same transaction as their effect, so a redelivery
does nothing twice; unknown types get 200.

Organizations may share the install's provider keys (and so one Stripe account, which sends every event to
every organization's endpoint, and one Mollie account, whose payment ids any of them can fetch). Everything is
recorded per organization, and a payment of another organization's checkout gets 200 and leaves nothing here
(no event, no payment, no review item): the rightful organization's webhook records it as if this one had
never seen it.

Provider SDK calls (Mollie's fetch) run in threads of their own (portal.providers.calls), never on the loop.

Stripe sends an event for every payment, so its handler keeps each organization's id and payment configuration
(per app, after the first event) instead of reading them in a transaction of their own every time. The kept
configuration is never trusted on its own: the transaction that records an event first reads the
organization's payment_settings row again, and if it is not the row the signature was checked against, the
signature is checked again against the current configuration before anything is written. So a secret that was
removed is refused from the next event on, as without the cache, and a secret just added works at once: a
signature that fails against the kept configuration is tried against a fresh one before the 400.
Organizations are never renamed nor deleted, so a slug's id does not go stale.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal import metrics
from portal.db.organizations import organizations
from portal.db.payments import payment_settings, provider_events
from portal.domain import payments
from portal.domain.payment_settings import ProviderConfig, config_for
from portal.providers.calls import provider_call
from portal.providers.interface import BadWebhook, ProviderUnavailable, UnknownPayment
from portal.providers.mollie import PAYMENT_ID
from portal.providers.stripe import VerifiedEvent
from portal.services import Services
from portal.web.api.bodies import read_bounded
from portal.web.api.problems import HttpProblem

log = logging.getLogger(__name__)
MOLLIE_BODY_LIMIT = 1024
STRIPE_BODY_LIMIT = 256 * 1024
_SLUG = re.compile(r"[a-z0-9-]{1,63}")


def _services(request: Request) -> Services:
    return request.app.state.services


async def _organization(request: Request) -> tuple[int, ProviderConfig]:
    services = _services(request)
    slug = request.path_params["org"]
    if not _SLUG.fullmatch(slug):
        raise HttpProblem(404, "not-found", "Not found", "No such webhook.")

    def read(conn: sa.Connection) -> tuple[int, ProviderConfig] | None:
        org_id = conn.scalar(sa.select(organizations.c.id).where(organizations.c.slug == slug))
        return (int(org_id), config_for(conn, int(org_id), services.settings)) if org_id is not None else None

    found = await services.db.read(read)
    if found is None:
        raise HttpProblem(404, "not-found", "Not found", "No such webhook.")
    return found


def _empty(status: int) -> Response:
    return Response(status_code=status)


def _counted(provider: str, outcome: str, status: int) -> Response:
    """The answer to a provider, counted by outcome (quittance_webhooks_total)."""
    metrics.webhooks.labels(provider, outcome).inc()
    return _empty(status)


async def mollie(request: Request) -> Response:
    body = await read_bounded(request, MOLLIE_BODY_LIMIT)
    org_id, config = await _organization(request)
    try:
        payment_id = parse_qs(body.decode(), max_num_fields=5).get("id", [""])[0]
    except (UnicodeDecodeError, ValueError):
        return _counted("mollie", "malformed", 400)
    if not PAYMENT_ID.fullmatch(payment_id):
        return _counted("mollie", "malformed", 400)
    if "mollie" not in config.providers:
        return _counted("mollie", "not_offered", 200)
    services = _services(request)
    try:
        observation = await provider_call(services.providers.get("mollie", config).fetch, payment_id)
    except UnknownPayment:
        return _counted("mollie", "unknown_payment", 200)
    except ProviderUnavailable:
        log.warning("Mollie unreachable while handling the webhook for %s", payment_id)
        return _counted("mollie", "provider_unavailable", 503)
    outcome = await services.db.write(payments.apply, org_id, observation, services.now(), durable=True)
    if outcome.elsewhere:
        log.info("mollie %s: a payment of another organization, left to its own webhook", payment_id)
        return _counted("mollie", "elsewhere", 200)
    log.info("mollie %s: %s", payment_id, outcome)
    return _counted("mollie", metrics.count_payment(outcome), 200)


@dataclass(frozen=True)
class _Known:
    """An organization as the Stripe handler keeps it: its id, and its configuration with the payment_settings
    row (None: no row, the install's defaults) that the configuration was built from."""

    org_id: int
    settings_row: tuple[Any, ...] | None
    config: ProviderConfig


_ORG_ID = sa.select(organizations.c.id).where(organizations.c.slug == sa.bindparam("slug"))
_SETTINGS_ROW = sa.select(payment_settings).where(payment_settings.c.organization_id == sa.bindparam("org_id"))
# Record the event, or learn that this organization recorded it before, in one statement; a concurrent twin
# waits for the first one's transaction and then inserts nothing.
_RECORD_EVENT = {
    dialect: insert(provider_events).on_conflict_do_nothing(
        index_elements=["organization_id", "provider", "event_id"])
    .returning(provider_events.c.id)
    for dialect, insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))}
# An event about another organization's checkout is not kept: it is that organization's to record.
_FORGET_EVENT = provider_events.delete().where(provider_events.c.id == sa.bindparam("event_row"))
_STALE = object()  # the configuration changed since the signature was checked
_STRIPE_ATTEMPTS = 3


def _kept(request: Request, name: str, factory: Any) -> Any:
    """Something the Stripe handler keeps on the app (each app, and so each test, has its own)."""
    state = request.app.state
    kept = getattr(state, name, None)
    if kept is None:
        kept = factory()
        setattr(state, name, kept)
    return kept


def _settings_row(conn: sa.Connection, org_id: int) -> tuple[Any, ...] | None:
    row = conn.execute(_SETTINGS_ROW, {"org_id": org_id}).first()
    return tuple(row) if row is not None else None


async def _fresh(request: Request, slug: str) -> _Known:
    """Read the organization and its configuration, and keep them; 404 for no such organization."""
    services = _services(request)

    def read(conn: sa.Connection) -> _Known | None:
        org_id = conn.scalar(_ORG_ID, {"slug": slug})
        if org_id is None:
            return None
        # The row first: a configuration changed between the two reads then looks stale, never current.
        row = _settings_row(conn, int(org_id))
        return _Known(int(org_id), row, config_for(conn, int(org_id), services.settings))

    known = await services.db.read(read)
    if known is None:
        raise HttpProblem(404, "not-found", "Not found", "No such webhook.")
    _kept(request, "stripe_webhook_orgs", dict)[slug] = known
    return known


async def stripe(request: Request) -> Response:
    body = await read_bounded(request, STRIPE_BODY_LIMIT)
    slug = request.path_params["org"]
    if not _SLUG.fullmatch(slug):
        raise HttpProblem(404, "not-found", "Not found", "No such webhook.")
    services = _services(request)
    known: _Known | None = _kept(request, "stripe_webhook_orgs", dict).get(slug)
    fresh = known is None
    if known is None:
        known = await _fresh(request, slug)
    signature = request.headers.get("stripe-signature")
    now = services.now()

    def record(conn: sa.Connection, known: _Known, event: VerifiedEvent) -> Any:
        if _settings_row(conn, known.org_id) != known.settings_row:
            return _STALE  # nothing written yet
        recorded = conn.execute(_RECORD_EVENT[conn.dialect.name], {
            "organization_id": known.org_id, "provider": "stripe", "event_id": event.event_id,
            "event_type": event.event_type, "received_at": now}).first()
        if recorded is None:
            return None  # seen before
        if event.observation is None:
            return None
        outcome = payments.apply(conn, known.org_id, event.observation, now)
        if outcome.elsewhere:
            conn.execute(_FORGET_EVENT, {"event_row": recorded.id})
        return outcome

    for _ in range(_STRIPE_ATTEMPTS):
        try:
            event = services.providers.stripe(known.config).verify(body, signature)
        except BadWebhook:
            if fresh:
                return _counted("stripe", "bad_signature", 400)
            known, fresh = await _fresh(request, slug), True
            continue
        outcome = await services.db.write(record, known, event, durable=True)
        if outcome is not _STALE:
            log.info("stripe %s %s: %s", event.event_type, event.event_id, outcome)
            if outcome is None:
                return _counted("stripe", "duplicate_or_ignored", 200)
            if outcome.elsewhere:
                return _counted("stripe", "elsewhere", 200)
            return _counted("stripe", metrics.count_payment(outcome), 200)
        known, fresh = await _fresh(request, slug), True
    log.warning("stripe: the payment settings of %s kept changing while an event was checked", slug)
    return _counted("stripe", "settings_changing", 503)  # Stripe retries


routes = [
    Route("/webhooks/mollie/{org}", mollie, methods=["POST"]),
    Route("/webhooks/stripe/{org}", stripe, methods=["POST"]),
]
