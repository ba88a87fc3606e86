"""An organization's colours and logo for its debtor pages, served as files so that the pages need no inline
style (the Content-Security-Policy forbids it)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.domain.organizations import branding_of, is_color
from portal.errors import NotFound
from portal.storage import read_bytes

def _luminance(hex_color: str) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def text_color_on(background: str) -> str:
    """White or near-black, whichever reads better on the brand colour (WCAG contrast ratio)."""
    luminance = _luminance(background)
    on_white = (1.05) / (luminance + 0.05)
    on_black = (luminance + 0.05) / 0.05
    return "#ffffff" if on_white >= on_black else "#1a1a1a"


async def _organization(request: Request) -> Any:
    return await request.app.state.services.db.read(branding_of, request.path_params["slug"])


async def theme(request: Request) -> Response:
    row = await _organization(request)
    color = row.brand_color if row.brand_color and is_color(row.brand_color) else "#1f4e79"
    css = f":root {{ --brand: {color}; --brand-text: {text_color_on(color)}; }}\n"
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


async def logo(request: Request) -> Response:
    row = await _organization(request)
    if not row.logo_sha256 or row.logo_type not in ("image/png", "image/jpeg"):
        raise NotFound("no logo")
    store = request.app.state.services.documents
    if not store.exists(row.logo_sha256):
        raise NotFound("no logo")
    return Response(read_bytes(store, row.logo_sha256), media_type=row.logo_type,
                    headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})


routes = [
    Route("/brand/{slug}/theme.css", theme, methods=["GET"]),
    Route("/brand/{slug}/logo", logo, methods=["GET"]),
]
