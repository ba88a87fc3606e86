"""The debtor session's cookie, and the CSRF token of its forms.

The cookie holds an opaque random secret (HttpOnly, SameSite=Lax, Secure on https) and nothing else; the
session itself is a row of the `sessions` table (portal.domain.sessions), bound to the link that opened it
and living `session_minutes`. Signing out ends the row, so a copy of the cookie opens nothing afterwards.
Every request also re-checks the link row (links.resolve), so revoking or expiring the link ends the session
at once.

Forms carry a token derived from the session's secret with HMAC: it names the session without revealing its
secret, needs no storage, and dies with the session. The Origin header (when the browser sends one) must also
be ours: a form posted from another site fails both ways.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from portal.domain import sessions
from portal.settings import Settings

COOKIE = "quittance_session"
LANGUAGE_COOKIE = "quittance_lang"
_CSRF_PURPOSE = b"quittance debtor form"


class NoSession(Exception):
    """No cookie, or one of a session that is unknown, ended or expired, or of a link that no longer works
    (then `link_id` says which, so the page can name whom to ask for a fresh link)."""

    def __init__(self, link_id: int | None = None) -> None:
        super().__init__("no usable debtor session")
        self.link_id = link_id


class CsrfFailure(Exception):
    pass


@dataclass(frozen=True)
class DebtorSession:
    id: int
    link_id: int
    # The cookie's value: the CSRF token is derived from it. Never stored.
    secret: str


def lifetime(settings: Settings) -> dt.timedelta:
    return dt.timedelta(minutes=settings.session_minutes)


def open_session(conn: sa.Connection, settings: Settings, organization_id: int, link_id: int,
                 now: dt.datetime) -> str:
    """A new debtor session bound to the link, in the caller's transaction; its secret is the cookie."""
    return sessions.open_session(conn, sessions.DEBTOR, now, lifetime(settings), organization_id=organization_id,
                                 link_id=link_id)


def set_cookie(response: Response, settings: Settings, secret: str) -> None:
    response.set_cookie(COOKIE, secret, max_age=settings.session_minutes * 60, httponly=True, samesite="lax",
                        secure=settings.is_https, path="/")


def close_session(response: Response, settings: Settings) -> None:
    response.delete_cookie(COOKIE, httponly=True, samesite="lax", secure=settings.is_https, path="/")


def cookie_secret(request: Request) -> str:
    """The session secret the browser sent; NoSession without one."""
    value = request.cookies.get(COOKIE)
    if not value or len(value) > sessions.MAX_SECRET_LENGTH:
        raise NoSession()
    return value


def read_session(conn: sa.Connection, secret: str, now: dt.datetime) -> DebtorSession:
    """The live debtor session of this secret, in the caller's transaction; NoSession if there is none."""
    found = sessions.find(conn, sessions.DEBTOR, secret, now)
    if found is None or found.link_id is None:
        raise NoSession()
    return DebtorSession(found.id, found.link_id, secret)


def end_session(conn: sa.Connection, secret: str, now: dt.datetime) -> bool:
    return sessions.end(conn, sessions.DEBTOR, secret, now)


def csrf_token(secret: str) -> str:
    return hmac.new(secret.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def check_csrf(request: Request, submitted: str | None, secret: str, settings: Settings) -> None:
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
    if not submitted or not hmac.compare_digest(submitted.encode(), csrf_token(secret).encode()):
        raise CsrfFailure("token does not match the session")


def touch(conn: sa.Connection, session: DebtorSession, now: dt.datetime) -> None:
    sessions.touch(conn, session.id, now)
