"""Security headers on every response, as a plain ASGI middleware (cheap on the hot path).

The policy: no inline script or style, nothing from another origin, no framing, no Referer from debtor pages
(tokens must not leak), and no caching of anything a debtor sees.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal.settings import Settings

PRIVATE_PREFIXES = ("/portal", "/l/", "/staff")
# A checkout form's POST answers 303 to the provider's page, and browsers check that hop against form-action.
PROVIDER_CHECKOUT_ORIGINS = ("https://www.mollie.com", "https://checkout.stripe.com")


def provider_origins(settings: Settings) -> tuple[str, ...]:
    """Where checkout forms may lead: the providers' pages, or the emulators' when the SDKs point there."""
    local = tuple(_origin(url) for url in (settings.mollie_api_url, settings.stripe_api_url) if url)
    return local or PROVIDER_CHECKOUT_ORIGINS


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, https: bool, form_targets: tuple[str, ...] = ()) -> None:
        self.app = app
        self.https = https
        form_action = " ".join(("'self'", *form_targets))
        self.csp = ("default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'; "
                    f"form-action {form_action}; img-src 'self'; style-src 'self'; script-src 'self'")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = scope["path"].startswith(PRIVATE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", self.csp)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer" if private else "strict-origin-when-cross-origin")
                if private and "no-store" not in headers.get("Cache-Control", ""):
                    headers["Cache-Control"] = "no-store"
                if self.https:
                    headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
            await send(message)

        await self.app(scope, receive, send_with_headers)
