"""REST status patch: one configurable request per event type, e.g. seed 000's `PATCH /v2/notices/:id` with
`{"status": "billed"}`, or a billing API's "mark as paid" endpoint.

Templates name values with `{dotted.path}`: `{base}`, `{event.id}`, `{event.type}`, `{invoice.external_id}`,
`{invoice.number}`, `{data.amount}`… In a URL each value is percent-encoded (an id cannot change the path); in a
JSON body a string that is exactly one placeholder takes the value with its type. Nothing else is evaluated.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx

from portal.connectors.base import Event, Result
from portal.connectors.http import send
from portal.domain.outbox import EVENT_TYPES

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)\}")
METHODS = ("POST", "PUT", "PATCH")


class MissingValue(KeyError):
    pass


def lookup(context: dict[str, Any], path: str) -> Any:
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value or value[part] is None:
            raise MissingValue(path)
        value = value[part]
    return value


def render_url(template: str, context: dict[str, Any]) -> str:
    def one(match: re.Match[str]) -> str:
        value = lookup(context, match.group(1))
        return str(value) if match.group(1) == "base" else quote(str(value), safe="")
    return _PLACEHOLDER.sub(one, template)


def render_body(template: Any, context: dict[str, Any]) -> Any:
    if isinstance(template, dict):
        return {key: render_body(value, context) for key, value in template.items()}
    if isinstance(template, list):
        return [render_body(value, context) for value in template]
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole:
            return lookup(context, whole.group(1))
        return _PLACEHOLDER.sub(lambda m: str(lookup(context, m.group(1))), template)
    return template


class StatusPatchConnector:
    type = "status_patch"

    def __init__(self, settings: dict[str, Any], client: httpx.AsyncClient) -> None:
        self.base = str(settings.get("base", "")).rstrip("/")
        self.headers = {str(k): str(v) for k, v in (settings.get("headers") or {}).items()}
        self.requests: dict[str, dict[str, Any]] = settings["requests"]
        self._client = client

    @staticmethod
    def validate_settings(settings: dict[str, Any]) -> list[str]:
        problems = []
        requests = settings.get("requests")
        if not isinstance(requests, dict) or not requests:
            return ["requests: an object mapping event types to a request"]
        for event_type, spec in requests.items():
            if event_type not in EVENT_TYPES:
                problems.append(f"requests.{event_type}: not an event type ({', '.join(EVENT_TYPES)})")
                continue
            if not isinstance(spec, dict) or str(spec.get("method", "")).upper() not in METHODS:
                problems.append(f"requests.{event_type}.method: one of {', '.join(METHODS)}")
            url = spec.get("url") if isinstance(spec, dict) else None
            if not isinstance(url, str) or not url.startswith(("{base}", "https://", "http://")):
                problems.append(f"requests.{event_type}.url: an http(s) URL or one starting with {{base}}")
        base = settings.get("base")
        if base is not None and (not isinstance(base, str) or not base.startswith(("https://", "http://"))):
            problems.append("base: an http(s) URL")
        headers = settings.get("headers")
        if headers is not None and not (isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())):
            problems.append("headers: an object of strings")
        unknown = set(settings) - {"base", "headers", "requests"}
        if unknown:
            problems.append(f"unknown settings: {', '.join(sorted(unknown))}")
        return problems

    def wants(self, event_type: str) -> bool:
        return event_type in self.requests

    async def deliver(self, event: Event, idempotency_key: str) -> Result:
        spec = self.requests[event.type]
        context = {"base": self.base, "event": {"id": event.id, "type": event.type,
                                                "created_at": event.created_at.isoformat()},
                   "invoice": event.invoice or {}, "customer": event.customer or {}, "data": event.data}
        try:
            url = render_url(spec["url"], context)
            body = render_body(spec.get("body"), context) if "body" in spec else None
        except MissingValue as exc:
            return Result("failed", f"the event has no value for {{{exc.args[0]}}}")
        headers = {**self.headers, "Idempotency-Key": idempotency_key, "User-Agent": "Quittance/1"}
        return await send(self._client, str(spec["method"]).upper(), url, json=body, headers=headers)
