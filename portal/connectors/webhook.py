"""Signed webhook: each event POSTed as JSON to the billing system's URL.

`Quittance-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body" with the secret>` lets the receiver check that the
body came from us and is recent (docs/connectors.md shows how); `Idempotency-Key` is the same on every attempt
of one delivery, so a receiver can drop repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated, Any

import httpx
import orjson
from pydantic import AfterValidator, StringConstraints

from portal.connectors.base import Event, Result
from portal.connectors.http import send
from portal.connectors.base import EventType
from portal.connectors.urls import upstream_url
from portal.domain.outbox import EVENT_TYPES
from portal.schemas.models import Strict


class WebhookSettings(Strict):
    url: Annotated[str, StringConstraints(max_length=2000), AfterValidator(upstream_url)]
    secret: Annotated[str, StringConstraints(min_length=16, max_length=500)]
    events: list[EventType] | None = None


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class WebhookConnector:
    type = "webhook"

    def __init__(self, settings: dict[str, Any], client: httpx.AsyncClient) -> None:
        self.url = str(settings["url"])
        self.secret = str(settings["secret"])
        self.events = tuple(settings.get("events") or EVENT_TYPES)
        self._client = client

    def wants(self, event_type: str) -> bool:
        return event_type in self.events

    async def deliver(self, event: Event, idempotency_key: str) -> Result:
        body = orjson.dumps(event.as_json())
        headers = {**event.headers(), "Content-Type": "application/json", "Idempotency-Key": idempotency_key,
                   "Quittance-Signature": signature(self.secret, int(time.time()), body),
                   "Quittance-Event": event.type, "User-Agent": "Quittance-Webhooks/1"}
        return await send(self._client, "POST", self.url, content=body, headers=headers)
