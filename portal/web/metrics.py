"""`GET /metrics` (Prometheus text format) and the middleware that counts and times every request.

The endpoint exists only when `PORTAL_METRICS_TOKEN` is set (404 otherwise), and answers only
`Authorization: Bearer <that token>`: counts of payments and deliveries are business data.
"""

from __future__ import annotations

import hmac
import time

import anyio
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal import logs, metrics
from portal.domain.operations_state import outbox_state
from portal.services import Services
from portal.web.request_context import UNMATCHED


class RequestMetrics:
    """Counts each HTTP request by route template, method and status, and observes how long it took. Goes
    inside `RouteContext`, which has worked out the route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts: an exception that escapes becomes a 500
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = logs.route.get() or UNMATCHED
            metrics.requests.labels(route, scope["method"], str(status)).inc()
            metrics.request_seconds.labels(route, scope["method"]).observe(time.perf_counter() - started)


async def metrics_endpoint(request: Request) -> Response:
    services: Services = request.app.state.services
    token = services.settings.metrics_token
    if not token:
        return PlainTextResponse("Not Found", status_code=404)
    scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(supplied.strip().encode(), token.encode()):
        return PlainTextResponse("Unauthorized", status_code=401, headers={"WWW-Authenticate": "Bearer"})
    state = await services.db.read(outbox_state)
    # In multiprocess mode this reads every process's file: not on the event loop.
    body = await anyio.to_thread.run_sync(metrics.exposition, state, services.now())
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


routes = [Route("/metrics", metrics_endpoint, methods=["GET"])]
