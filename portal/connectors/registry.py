"""Connector types by name: how to check their settings, which events they deliver, how to build them."""

from __future__ import annotations

from typing import Any

import httpx

from portal.connectors.base import Connector
from portal.connectors.status_patch import StatusPatchConnector
from portal.connectors.webhook import WebhookConnector
from portal.settings import Settings

DELIVERING = {"webhook": WebhookConnector, "status_patch": StatusPatchConnector}
TYPES = ("webhook", "status_patch", "pull_import", "email")


def _email() -> Any:
    from portal.connectors.email import EmailConnector

    return EmailConnector


def _importer() -> Any:
    from portal.connectors.pull_import import PullImporter

    return PullImporter


def validate(kind: str, settings: dict[str, Any]) -> list[str]:
    if kind not in TYPES:
        return [f"type: one of {', '.join(TYPES)}"]
    cls = DELIVERING.get(kind) or (_email() if kind == "email" else _importer())
    return list(cls.validate_settings(settings))


def event_types(kind: str, settings: dict[str, Any]) -> list[str]:
    """What the connector will be handed, decided when it is configured (fan-out reads only this)."""
    from portal.domain.outbox import EVENT_TYPES

    if kind == "pull_import":
        return []
    if kind == "email":
        return [t for t in EVENT_TYPES if _email().wants_type(settings, t)]
    if kind == "status_patch":
        return [t for t in EVENT_TYPES if t in settings["requests"]]
    return [t for t in EVENT_TYPES if t in (settings.get("events") or EVENT_TYPES)]


def build(kind: str, settings: dict[str, Any], client: httpx.AsyncClient, app_settings: Settings) -> Connector:
    if kind in DELIVERING:
        return DELIVERING[kind](settings, client)  # type: ignore[no-any-return]
    if kind == "email":
        return _email().from_settings(settings, app_settings)  # type: ignore[no-any-return]
    raise ValueError(f"{kind} connectors do not deliver events")


SECRET_KEYS = {"secret", "password", "authorization", "token", "api_key"}


def masked(settings: Any, key: str = "") -> Any:
    """Settings as shown back: secrets reduced to their last four characters."""
    if isinstance(settings, dict):
        return {k: masked(v, k.lower()) for k, v in settings.items()}
    if isinstance(settings, list):
        return [masked(v, key) for v in settings]
    if isinstance(settings, str) and any(word in key for word in SECRET_KEYS):
        return "…" + settings[-4:] if len(settings) > 8 else "…"
    return settings
