"""The authenticated caller of a machine API request, and helpers every handler uses."""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from portal import logs
from portal.domain import rate_limits
from portal.domain.organizations import Organization, authenticate
from portal.errors import FieldError, InvalidInput, NotFound, Unauthenticated
from portal.services import Services
from portal.web.api.operations import Handler
from portal.web.api.problems import HttpProblem
from portal.web.clients import client_address, refusal_headers

_EXTERNAL_ID = re.compile(r"[A-Za-z0-9._:@-]{1,200}")


@dataclass(frozen=True)
class ApiContext:
    request: Request
    organization: Organization
    services: Services

    @property
    def org_id(self) -> int:
        return self.organization.id

    def now(self) -> dt.datetime:
        return self.services.now()

    def external_id(self, name: str = "external_id") -> str:
        """A path id: anything outside the id alphabet cannot exist, so it is simply not found."""
        value = self.request.path_params[name]
        if not _EXTERNAL_ID.fullmatch(value):
            raise NotFound(f"no object {value!r}")
        return str(value)


def services_of(request: Request) -> Services:
    return request.app.state.services


async def authenticate_request(request: Request, handler: Handler) -> Response:
    """The organization of the bearer key. A client address whose keys failed too often lately is refused
    (429) whatever key it sends, a good one included, until its window has moved on, so that guessing keys
    gains nothing; only keys that fail count, so a busy billing system is never slowed by its own calls."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthenticated("send Authorization: Bearer <API key>")
    services = services_of(request)
    client, now = client_address(request), services.now()
    organization = await services.db.read(_authenticate_throttled, key.strip(), client, now)
    if isinstance(organization, rate_limits.Verdict):
        raise too_many_failed_keys(organization)
    if isinstance(organization, Unauthenticated):
        failures = await services.db.write(rate_limits.hit, rate_limits.API_KEY_FAILURES, client, now)
        if not failures.allowed:
            raise too_many_failed_keys(failures)
        raise organization
    logs.organization.set(organization.slug)
    return await handler(ApiContext(request, organization, services))


def _authenticate_throttled(conn: sa.Connection, key: str, client: str,
                            now: dt.datetime) -> Organization | rate_limits.Verdict | Unauthenticated:
    """In one transaction: the throttle's verdict if the client is refused, else the key's organization, or
    why the key authenticates nothing."""
    throttle = rate_limits.check(conn, rate_limits.API_KEY_FAILURES, client, now)
    if not throttle.allowed:
        return throttle
    try:
        return authenticate(conn, key)
    except Unauthenticated as exc:
        return exc


def too_many_failed_keys(verdict: rate_limits.Verdict) -> HttpProblem:
    return HttpProblem(429, "too-many-requests", "Too many requests",
                       "Too many failed API keys from this address; try again after the Retry-After seconds.",
                       headers=refusal_headers(rate_limits.API_KEY_FAILURES, verdict))


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def encode_cursor(last_id: int | None) -> str | None:
    if last_id is None:
        return None
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = text.partition(":")
        if prefix != "after" or not value.isdigit():
            raise ValueError(text)
        return int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("Bad cursor.", [FieldError("/cursor", "not a cursor this API gave out")]) from exc


def query_limit(request: Request, default: int = 100, maximum: int = 1000) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise InvalidInput("Bad limit.", [FieldError("/limit", f"an integer from 1 to {maximum}")])
    return int(raw)


def query_bool(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise InvalidInput(f"Bad {name}.", [FieldError(f"/{name}", "true or false")])
    return raw == "true"


def query_datetime(request: Request, name: str) -> dt.datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidInput(f"Bad {name}.", [FieldError(f"/{name}", "an ISO 8601 date-time")]) from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
