"""Security headers on every response, as a plain ASGI middleware (cheap on the hot path).

The policy: no inline script or style, nothing from another origin, no framing, no Referer from debtor pages
(tokens must not leak), and no caching of anything a debtor sees.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "img-src 'self'; style-src 'self'; script-src 'self'")
PRIVATE_PREFIXES = ("/portal", "/l/")


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = scope["path"].startswith(PRIVATE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", CSP)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer" if private else "strict-origin-when-cross-origin")
                if private and "no-store" not in headers.get("Cache-Control", ""):
                    headers["Cache-Control"] = "no-store"
                if self.https:
                    headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
            await send(message)

        await self.app(scope, receive, send_with_headers)
