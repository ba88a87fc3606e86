"""Connector types by name: how to check their settings, which events they deliver, how to build them."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import httpx

from portal.connectors.base import Connector
from portal.connectors.email import EmailConnector
from portal.connectors.pull_import import PullImporter
from portal.connectors.status_patch import StatusPatchConnector
from portal.connectors.webhook import WebhookConnector
from portal.domain.outbox import EVENT_TYPES
from portal.settings import Settings

DELIVERING = {"webhook": WebhookConnector, "status_patch": StatusPatchConnector}
TYPES = ("webhook", "status_patch", "pull_import", "email")


def validate(kind: str, settings: dict[str, Any], *, allow_private_networks: bool = False) -> list[str]:
    if kind not in TYPES:
        return [f"type: one of {', '.join(TYPES)}"]
    cls = DELIVERING.get(kind) or (EmailConnector if kind == "email" else PullImporter)
    problems = list(cls.validate_settings(settings))
    if not allow_private_networks:
        problems += [f"{key}: {url} is a loopback, private or link-local address; our worker will not call it"
                     for key, url in _urls(settings) if _is_internal(url)]
    return problems


def _urls(settings: dict[str, Any]) -> list[tuple[str, str]]:
    found = [(key, str(settings[key])) for key in ("url", "base") if isinstance(settings.get(key), str)]
    for event_type, spec in (settings.get("requests") or {}).items():
        if isinstance(spec, dict) and isinstance(spec.get("url"), str) and not spec["url"].startswith("{base}"):
            found.append((f"requests.{event_type}.url", spec["url"]))
    return found


def _is_internal(url: str) -> bool:
    """Addresses a tenant must not make our servers call (cloud metadata, the database, the admin network).
    A name that resolves to such an address is caught at the network level, not here."""
    host = (urlsplit(url).hostname or "").strip("[]").lower()
    if host == "localhost" or host.endswith((".localhost", ".internal", ".local")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


def event_types(kind: str, settings: dict[str, Any]) -> list[str]:
    """What the connector will be handed, decided when it is configured (fan-out reads only this)."""
    if kind == "pull_import":
        return []
    if kind == "email":
        return [t for t in EVENT_TYPES if EmailConnector.wants_type(settings, t)]
    if kind == "status_patch":
        return [t for t in EVENT_TYPES if t in settings["requests"]]
    return [t for t in EVENT_TYPES if t in (settings.get("events") or EVENT_TYPES)]


def build(kind: str, settings: dict[str, Any], client: httpx.AsyncClient, app_settings: Settings) -> Connector:
    if kind in DELIVERING:
        return DELIVERING[kind](settings, client)  # type: ignore[no-any-return]
    if kind == "email":
        return EmailConnector.from_settings(settings, app_settings)  # type: ignore[no-any-return]
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
