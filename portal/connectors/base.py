"""What every delivering connector implements, and what a delivery attempt can end in.

The worker hands a connector one event at a time, always with the same idempotency key for every attempt of
that delivery, and decides from the Result whether the delivery is done, retried later or dead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from portal.domain.outbox import EVENT_TYPES

Outcome = Literal["delivered", "retry", "failed"]
# An event type in connector settings; the names are spelled once, in portal.domain.outbox.
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]  # a Literal built from a tuple: valid at run time


@dataclass(frozen=True)
class Event:
    """One outbox event as connectors see it."""

    id: int
    type: str
    organization_slug: str
    created_at: dt.datetime
    data: dict[str, Any]
    invoice: dict[str, Any] | None = None      # external_id, number, customer, currency, total, amount_due, status
    customer: dict[str, Any] | None = None     # external_id, name, email, locale
    # The X-Request-ID of the request that caused the event (None for a command's): sent upstream with it.
    request_id: str | None = None

    def headers(self) -> dict[str, str]:
        """What every HTTP delivery of this event sends besides its own headers."""
        return {"X-Request-ID": self.request_id} if self.request_id else {}

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "organization": self.organization_slug,
                "created_at": self.created_at.isoformat(), "invoice": self.invoice, "data": self.data}


@dataclass(frozen=True)
class Result:
    """`retry` may say when (from a Retry-After); `failed` is permanent (a 4xx that will never succeed)."""

    outcome: Outcome
    detail: str = ""
    status_code: int | None = None
    retry_after: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def delivered(cls, status_code: int | None = None) -> Result:
        return cls("delivered", status_code=status_code)


class Connector(Protocol):
    type: str

    def wants(self, event_type: str) -> bool:
        """Whether this connector delivers events of this type at all."""

    async def deliver(self, event: Event, idempotency_key: str) -> Result:
        """One attempt. Never raises for upstream trouble: it is a Result."""
