"""create_app(settings) -> the Starlette application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asgi_correlation_id import CorrelationIdMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from portal.clock import Clock, SystemClock
from portal.db import Database
from portal.i18n import TEMPLATES_DIR
from portal.services import Services
from portal.settings import Settings
from portal.storage import open_store
from portal.providers.registry import ProviderRegistry
from portal.tokens import TokenService
from portal.web.api import connectors, customers, documents, events, invoices, lifecycle, links, remarks, send
from portal.web.api.context import authenticate_request, json_response
from portal.web.api.operations import Api
from portal.web import brand, health, metrics, webhooks
from portal.web.early_answers import DrainBeforeRefusal
from portal.web.errors import handlers
from portal.web.headers import SecurityHeaders, provider_origins
from portal.web.metrics import RequestMetrics
from portal.web.request_context import RouteContext, valid_request_id
from portal.web.portal import pages as portal_pages
from portal.web.portal import pay
from portal.web.staff import auth as staff_auth
from portal.web.staff import pages as staff_pages

VERSION = "0.1.0"


def build_api() -> Api:
    api = Api()
    for module in (customers, invoices, lifecycle, documents, links, remarks, events, connectors, send):
        module.register(api)
    return api


def create_app(settings: Settings, *, clock: Clock | None = None, database: Database | None = None) -> Starlette:
    """The application. It opens no database: its lifespan does (or uses `database`, a test's), and closes what
    it opened at the end. Requests are served inside the lifespan only (`app.state.services` is set there)."""
    clock = clock or SystemClock()
    documents = open_store(settings.document_store_url)
    tokens = TokenService(settings.signing_keys, clock)
    providers = ProviderRegistry(settings)

    def services_on(db: Database) -> Services:
        return Services(settings=settings, db=db, clock=clock, documents=documents, tokens=tokens,
                        providers=providers)

    api = build_api()
    openapi_document = api.openapi(title="Quittance machine API", version=VERSION,
                                   server_url=settings.base_url)

    async def openapi(_request: Request) -> Response:
        return json_response(openapi_document)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if database is not None:
            yield
            return
        db = Database.from_url(settings.database_url, echo=settings.echo_sql)
        try:
            await db.read(lambda conn: conn.exec_driver_sql("SELECT 1"))  # an unreachable database stops the start
            app.state.services = services_on(db)
            yield
        finally:
            db.dispose()

    routes = [
        Mount("/api/v1", routes=[Route("/openapi.json", openapi), *api.routes(authenticate_request)]),
        *portal_pages.routes,
        *pay.routes,
        *staff_auth.routes,
        *staff_pages.routes,
        *webhooks.routes,
        *brand.routes,
        *health.routes,
        *metrics.routes,
        Mount("/static", StaticFiles(directory=TEMPLATES_DIR.parent / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers=handlers(),
        middleware=[
            Middleware(DrainBeforeRefusal),
            # X-Request-ID: kept from a proxy when it looks like an id, else made; returned in the response.
            Middleware(CorrelationIdMiddleware, header_name="X-Request-ID", validator=valid_request_id,
                       transformer=str),
            Middleware(RouteContext, routes=routes),
            Middleware(RequestMetrics),
            Middleware(SecurityHeaders, https=settings.is_https, form_targets=provider_origins(settings)),
        ],
        lifespan=lifespan,
    )
    if database is not None:
        app.state.services = services_on(database)
    return app
