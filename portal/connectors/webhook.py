"""Signed webhook: each event POSTed as JSON to the billing system's URL.

`Quittance-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body" with the secret>` lets the receiver check that the
body came from us and is recent (docs/connectors.md shows how); `Idempotency-Key` is the same on every attempt
of one delivery, so a receiver can drop repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import httpx
import orjson

from portal.connectors.base import Event, Result
from portal.connectors.http import send
from portal.domain.outbox import EVENT_TYPES


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

    @staticmethod
    def validate_settings(settings: dict[str, Any]) -> list[str]:
        problems = []
        url = settings.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            problems.append("url: an http(s) URL")
        secret = settings.get("secret")
        if not isinstance(secret, str) or len(secret) < 16:
            problems.append("secret: at least 16 characters")
        events = settings.get("events")
        if events is not None and (not isinstance(events, list) or not set(events) <= set(EVENT_TYPES)):
            problems.append(f"events: a list of {', '.join(EVENT_TYPES)}")
        unknown = set(settings) - {"url", "secret", "events"}
        if unknown:
            problems.append(f"unknown settings: {', '.join(sorted(unknown))}")
        return problems

    def wants(self, event_type: str) -> bool:
        return event_type in self.events

    async def deliver(self, event: Event, idempotency_key: str) -> Result:
        body = orjson.dumps(event.as_json())
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key,
                   "Quittance-Signature": signature(self.secret, int(time.time()), body),
                   "Quittance-Event": event.type, "User-Agent": "Quittance-Webhooks/1"}
        return await send(self._client, "POST", self.url, content=body, headers=headers)
