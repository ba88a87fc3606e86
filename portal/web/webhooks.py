"""Payment providers' webhooks. Exact paths, no redirects, no CSRF (the provider is not a browser), the raw
body read first and bounded.

Mollie: the body names a payment and nothing in it is trusted; we fetch the payment with the organization's
key. Unknown ids get 200 (revealing nothing); Mollie unreachable gets 503, so that Mollie retries.
Stripe: the signature over the raw body is checked against each of the organization's secrets; a bad one gets
400 and writes nothing. Events are recorded by id in the same transaction as their effect, so a redelivery
does nothing twice; unknown types get 200.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.db.organizations import organizations
from portal.db.payments import provider_events
from portal.domain import payments
from portal.domain.payment_settings import ProviderConfig, config_for
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
    return request.app.state.services  # type: ignore[no-any-return]


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


async def mollie(request: Request) -> Response:
    body = await read_bounded(request, MOLLIE_BODY_LIMIT)
    org_id, config = await _organization(request)
    try:
        payment_id = parse_qs(body.decode(), max_num_fields=5).get("id", [""])[0]
    except (UnicodeDecodeError, ValueError):
        return _empty(400)
    if not PAYMENT_ID.fullmatch(payment_id) or "mollie" not in config.providers:
        return _empty(400 if not PAYMENT_ID.fullmatch(payment_id) else 200)
    services = _services(request)
    try:
        observation = await run_in_threadpool(services.providers.get("mollie", config).fetch, payment_id)
    except UnknownPayment:
        return _empty(200)
    except ProviderUnavailable:
        log.warning("Mollie unreachable while handling the webhook for %s", payment_id)
        return _empty(503)
    outcome = await services.db.write(payments.apply, org_id, observation, services.now())
    log.info("mollie %s: %s", payment_id, outcome)
    return _empty(200)


async def stripe(request: Request) -> Response:
    body = await read_bounded(request, STRIPE_BODY_LIMIT)
    org_id, config = await _organization(request)
    services = _services(request)
    try:
        event = services.providers.stripe(config).verify(body, request.headers.get("stripe-signature"))
    except BadWebhook:
        return _empty(400)
    now = services.now()

    def record(conn: sa.Connection, event: VerifiedEvent) -> payments.Outcome | None:
        seen = conn.scalar(sa.select(provider_events.c.id).where(
            provider_events.c.provider == "stripe", provider_events.c.event_id == event.event_id))
        if seen is not None:
            return None
        conn.execute(provider_events.insert().values(
            organization_id=org_id, provider="stripe", event_id=event.event_id, event_type=event.event_type,
            received_at=now))
        return payments.apply(conn, org_id, event.observation, now) if event.observation else None

    outcome = await services.db.write(record, event)
    log.info("stripe %s %s: %s", event.event_type, event.event_id, outcome)
    return _empty(200)


routes = [
    Route("/webhooks/mollie/{org}", mollie, methods=["POST"]),
    Route("/webhooks/stripe/{org}", stripe, methods=["POST"]),
]
