"""REST status patch: one configurable request per event type, e.g. seed 000's `PATCH /v2/notices/:id` with
`{"status": "billed"}`, or a billing API's "mark as paid" endpoint.

Templates name values with `{dotted.path}`: `{base}`, `{event.id}`, `{event.type}`, `{invoice.external_id}`,
`{invoice.number}`, `{data.amount}`… In a URL each value is percent-encoded (an id cannot change the path); in a
JSON body a string that is exactly one placeholder takes the value with its type. Nothing else is evaluated.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, model_validator

from portal.connectors.base import Event, EventType, Result
from portal.connectors.http import send
from portal.connectors.urls import templated_url, upstream_url
from portal.schemas.models import Strict
from portal.schemas.validation import refusal

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)\}")
METHODS = ("POST", "PUT", "PATCH")
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
BASE = "{base}"


def request_url(url: str, info: Any) -> str:
    """`{base}` followed by a path or query (never by text that would extend the base's host or port), or a
    URL with placeholders only in its path and query."""
    if url.startswith(BASE):
        rest = url.removeprefix(BASE)
        if rest and rest[0] not in "/?":
            raise refusal("after {base} comes the path (\"/...\") or the query (\"?...\"), nothing that "
                          "changes the host or port")
        return url
    return templated_url(url, info)


def one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise refusal("text on one line")
    return value


def header_name(name: str) -> str:
    if not re.fullmatch(HEADER_NAME, name):
        raise refusal(f"{name!r} is not a valid header name")
    return name


HeaderName = Annotated[str, StringConstraints(max_length=200), AfterValidator(header_name)]
HeaderValue = Annotated[str, StringConstraints(max_length=8000), AfterValidator(one_line)]


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class RequestSpec(Strict):
    # Any case is accepted ("patch"); the Literal is built from METHODS, valid at run time, unknown to mypy.
    method: Annotated[Literal[METHODS], BeforeValidator(_upper)]  # type: ignore[valid-type]  # Literal from a tuple, valid at run time
    url: Annotated[str, StringConstraints(max_length=2000), AfterValidator(request_url)]
    body: Any = None


class StatusPatchSettings(Strict):
    base: Annotated[str, StringConstraints(max_length=2000), AfterValidator(upstream_url)] | None = None
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    requests: Annotated[dict[EventType, RequestSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def base_when_used(self) -> StatusPatchSettings:
        uses = [event for event, spec in self.requests.items() if spec.url.startswith(BASE)]
        if uses and self.base is None:
            raise refusal(f"base: required, since requests/{uses[0]}/url starts with {{base}}")
        return self


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
        headers = {**event.headers(), **self.headers, "Idempotency-Key": idempotency_key, "User-Agent": "Quittance/1"}
        return await send(self._client, str(spec["method"]).upper(), url, json=body, headers=headers)
