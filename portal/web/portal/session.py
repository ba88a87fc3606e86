"""The debtor session: a signed cookie bound to the link that opened it, and the CSRF token of its forms.

The cookie holds the link id and a random nonce, signed for its own purpose; it lives `session_minutes`.
Every request re-checks the link row (links.resolve), so revoking or expiring the link ends the session at
once. Forms carry a token signed over the nonce, and the Origin header (when the browser sends one) must be
ours: a form posted from another site fails both ways.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from portal.settings import Settings
from portal.tokens import CSRF, DEBTOR_SESSION, InvalidToken, TokenService

COOKIE = "quittance_session"
LANGUAGE_COOKIE = "quittance_lang"


class NoSession(Exception):
    """No cookie, or one that is forged, expired or of a link that no longer works (then `link_id` says which,
    so the page can name whom to ask for a fresh link)."""

    def __init__(self, link_id: int | None = None) -> None:
        super().__init__("no usable debtor session")
        self.link_id = link_id


class CsrfFailure(Exception):
    pass


@dataclass(frozen=True)
class DebtorSession:
    link_id: int
    nonce: str


def open_session(response: Response, tokens: TokenService, settings: Settings, link_id: int) -> None:
    value = tokens.sign(DEBTOR_SESSION, {"l": link_id, "n": secrets.token_urlsafe(16)})
    response.set_cookie(COOKIE, value, max_age=settings.session_minutes * 60, httponly=True, samesite="lax",
                        secure=settings.is_https, path="/")


def close_session(response: Response, settings: Settings) -> None:
    response.delete_cookie(COOKIE, httponly=True, samesite="lax", secure=settings.is_https, path="/")


def read_session(request: Request, tokens: TokenService, settings: Settings) -> DebtorSession:
    value = request.cookies.get(COOKIE)
    if not value:
        raise NoSession()
    try:
        payload = tokens.verify(DEBTOR_SESSION, value, settings.session_minutes * 60)
    except InvalidToken as exc:
        raise NoSession() from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("l"), int) or not isinstance(payload.get("n"), str):
        raise NoSession()
    return DebtorSession(payload["l"], payload["n"])


def csrf_token(tokens: TokenService, session: DebtorSession) -> str:
    return tokens.sign(CSRF, session.nonce)


def check_csrf(request: Request, submitted: str | None, tokens: TokenService, session: DebtorSession,
               settings: Settings) -> None:
    """The form's token must be this session's. Browsers also say where a form came from: a foreign Origin,
    or Sec-Fetch-Site naming another site, is refused before the token is even read. Our pages send no
    Referer, and that makes Chromium send `Origin: null` on our own forms: null proves nothing either way,
    so the token decides."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        ours = urlsplit(settings.base_url)
        theirs = urlsplit(origin)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            raise CsrfFailure("foreign origin")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise CsrfFailure("cross-site request")
    try:
        if not submitted or tokens.verify(CSRF, submitted, settings.session_minutes * 60) != session.nonce:
            raise CsrfFailure("token does not match the session")
    except InvalidToken as exc:
        raise CsrfFailure("bad token") from exc
