"""Reconciliation: ask the providers about checkouts whose webhooks may never come, and apply what they say
through the same service as the webhooks and the return page. Run by `portal reconcile` (and by the worker).

Async like the webhooks, so that every provider call goes through the same bounded threads
(portal.providers.calls): the worker's loop keeps delivering while a slow provider answers.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from portal import metrics
from portal.db import Database
from portal.domain import checkouts, payments
from portal.domain.payment_settings import config_for
from portal.providers.calls import provider_call
from portal.providers.interface import ProviderError, UnknownPayment
from portal.providers.registry import ProviderRegistry
from portal.settings import Settings

log = logging.getLogger(__name__)
# Stripe retries webhooks for up to 3 days, Mollie for about 26 hours: past that, only we can find out.
RETRY_WINDOW = dt.timedelta(days=3, hours=1)


@dataclass
class Report:
    asked: int = 0
    changed: int = 0
    unreachable: int = 0


async def reconcile(db: Database, providers: ProviderRegistry, settings: Settings, now: dt.datetime, *,
                    quiet_for: dt.timedelta = dt.timedelta(minutes=15)) -> Report:
    report = Report()
    due = await db.read(checkouts.to_reconcile, now, quiet_for=quiet_for, retry_window=RETRY_WINDOW)
    for checkout in due:
        config = await db.read(config_for, checkout.organization_id, settings)
        report.asked += 1
        try:
            observation = await provider_call(providers.get(checkout.provider, config).fetch, checkout.provider_ref)
        except UnknownPayment:
            log.warning("%s does not know checkout %s (%s)", checkout.provider, checkout.public_id,
                        checkout.provider_ref)
            continue
        except ProviderError as exc:
            report.unreachable += 1
            log.warning("could not ask %s about %s: %s", checkout.provider, checkout.public_id, exc)
            continue
        outcome = await db.write(payments.apply, checkout.organization_id, observation, now, durable=True)
        metrics.count_payment(outcome)
        if outcome.checkout_status != checkout.status or outcome.recorded_payment:
            report.changed += 1
    return report
