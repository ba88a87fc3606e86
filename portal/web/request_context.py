"""What every request's log lines (and metrics) know about it: its id, the route it matched, the organization.

The route is the template (`/api/v1/invoices/{external_id}`), never the path: paths carry link tokens and
object ids, which would leak secrets into logs and give metrics a series per invoice. It is worked out before
the request is handled, with Starlette's public `matches`, so that the handler's own log lines carry it too.
"""

from __future__ import annotations

import re

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from portal import logs

# What an id from a proxy may look like to be kept (nginx's $request_id, a UUID, a trace id); anything else
# (too long, control characters that would forge log lines) is replaced by a fresh id.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
UNMATCHED = "unmatched"


def route_template(routes: list[BaseRoute], scope: Scope, prefix: str = "") -> str:
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            return route_template(route.routes, {**scope, **child}, prefix + route.path)
        return prefix + getattr(route, "path", "")
    return UNMATCHED


class RouteContext:
    """Sets `logs.route` (and clears `logs.organization`) for the request it wraps."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route_token = logs.route.set(route_template(self.routes, scope))
        organization_token = logs.organization.set(None)
        try:
            await self.app(scope, receive, send)
        finally:
            logs.organization.reset(organization_token)
            logs.route.reset(route_token)



def valid_request_id(value: str) -> bool:
    return REQUEST_ID.fullmatch(value) is not None
