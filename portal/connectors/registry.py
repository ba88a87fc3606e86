"""Connector types by name: how to check their settings, which events they deliver, how to build them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from portal.connectors.base import Connector
from portal.connectors.email import EmailConnector, EmailConnectorSettings
from portal.connectors.pull_import import PullImportSettings
from portal.connectors.status_patch import StatusPatchConnector, StatusPatchSettings
from portal.connectors.webhook import WebhookConnector, WebhookSettings
from portal.domain.outbox import EVENT_TYPES
from portal.errors import FieldError, InvalidInput
from portal.schemas.models import Strict
from portal.schemas.validation import validate as validate_model
from portal.settings import Settings

DELIVERING: dict[str, Callable[[dict[str, Any], httpx.AsyncClient], Connector]] = {"webhook": WebhookConnector, "status_patch": StatusPatchConnector}
TYPES = ("webhook", "status_patch", "pull_import", "email")


MODELS: dict[str, type[Strict]] = {"webhook": WebhookSettings, "status_patch": StatusPatchSettings,
                                   "pull_import": PullImportSettings, "email": EmailConnectorSettings}


def validate(kind: str, settings: Any, *, allow_private_networks: bool = False) -> None:
    """Raises InvalidInput with one FieldError per problem, at its JSON pointer under /settings. Literal
    internal addresses are refused here unless private networks are allowed; whatever the text, the
    connections themselves are checked (portal.connectors.network)."""
    if kind not in MODELS:
        raise InvalidInput("Unknown connector type.", [FieldError("/type", f"one of {', '.join(TYPES)}")])
    validate_model(MODELS[kind], settings, "/settings", context={"allow_private_networks": allow_private_networks})


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
        return DELIVERING[kind](settings, client)
    if kind == "email":
        return EmailConnector.from_settings(settings, app_settings)
    raise ValueError(f"{kind} connectors do not deliver events")


# Settings keys and header names whose values are secrets: a webhook's signing secret, an email password, and
# every header that carries credentials (Authorization, Cookie, X-Api-Key, X-Auth-Token, Signature...).
SECRET_WORDS = ("secret", "password", "passwd", "token", "key", "auth", "cookie", "signature", "credential",
                "session", "bearer")
_SECRET = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)


def masked(settings: Any, secret: bool = False) -> Any:
    """Settings as shown back: every value under a secret-looking key (or inside headers named so) reduced to
    its last four characters, and to nothing when it is too short to show any."""
    if isinstance(settings, dict):
        return {k: masked(v, secret or bool(_SECRET.search(str(k)))) for k, v in settings.items()}
    if isinstance(settings, list):
        return [masked(v, secret) for v in settings]
    if secret and settings is not None and not isinstance(settings, bool):
        text = str(settings)
        return "…" + text[-4:] if len(text) > 8 else "…"
    return settings
