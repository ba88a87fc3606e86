"""The staff session and the one check every staff route goes through.

The cookie (`quittance_staff`, path /staff, HttpOnly, SameSite=Lax, Secure on https) holds an opaque random
secret; the session is a `sessions` row of kind "staff" bound to a person and to the organization in use.
A request is let in when that row is live (not ended, not past its absolute expiry), was used within the idle
timeout, and the person is still active staff of that organization; every query of the page is then scoped to
that organization. Using a session moves its `last_seen_at` (at most once a minute, so reading pages stays
cheap). Forms carry the debtor side's HMAC token derived from the session secret (portal.web.portal.session),
and a foreign Origin is refused the same way.

`staff_route(role)` wraps each handler: no session -> the sign-in page (303), a bad form -> 403, a role below
the route's -> the 403 page, the attempt in the audit log.
"""

from __future__ import annotations

import datetime as dt
import functools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from portal.domain import audit, sessions
from portal.domain import staff as staff_domain
from portal.i18n import Formatter, environment, language_of
from portal.services import Services
from portal.web.clients import client_address
from portal.web.portal.pages import Form, read_form
from portal.web.portal.session import CsrfFailure, check_csrf, csrf_token

COOKIE = "quittance_staff"
# Before a session exists (the sign-in and password forms): a random value whose HMAC the form carries.
FORM_COOKIE = "quittance_staff_form"
PATH = "/staff"
IDLE = dt.timedelta(minutes=30)
LIFETIME = dt.timedelta(hours=12)
TWO_FACTOR_LIFETIME = dt.timedelta(minutes=5)
TOUCH_EVERY = dt.timedelta(minutes=1)

Handler = Callable[[Request, "StaffContext"], Awaitable[Response]]


def services_of(request: Request) -> Services:
    return request.app.state.services


@dataclass
class StaffContext:
    """A signed-in person in the organization in use."""

    request: Request
    session_id: int
    secret: str
    person: staff_domain.Person
    membership: staff_domain.Membership
    memberships: list[staff_domain.Membership]
    now: dt.datetime
    form: Form = field(default_factory=Form)

    @property
    def organization_id(self) -> int:
        return self.membership.organization_id

    @property
    def role(self) -> str:
        return self.membership.role

    @property
    def services(self) -> Services:
        return services_of(self.request)

    @property
    def client(self) -> str:
        return client_address(self.request)

    @property
    def language(self) -> str:
        return language_of(self.person.locale)

    def render(self, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        return render(self.request, template, self.language, {
            "staff": self, "csrf": csrf_token(self.secret), **context}, status=status, locale=self.person.locale)


def render(request: Request, template: str, language: str, context: dict[str, Any], *, status: int = 200,
           locale: str | None = None) -> HTMLResponse:
    html = environment(language).get_template(template).render(
        {"request_path": request.url.path, "language": language, "fmt": Formatter.for_language(language, locale),
         "scope": None, "staff": None, **context})
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def set_cookie(response: Response, services: Services, secret: str) -> None:
    response.set_cookie(COOKIE, secret, max_age=int(LIFETIME.total_seconds()), httponly=True, samesite="lax",
                        secure=services.settings.is_https, path=PATH)


def drop_cookie(response: Response, services: Services) -> None:
    response.delete_cookie(COOKIE, httponly=True, samesite="lax", secure=services.settings.is_https, path=PATH)


def cookie_secret(request: Request) -> str | None:
    value = request.cookies.get(COOKIE)
    return value if value and len(value) <= sessions.MAX_SECRET_LENGTH else None


# -- Forms before a session: the sign-in, two-factor and password pages ---------------------------------------


def form_secret(request: Request) -> tuple[str, bool]:
    """The browser's form cookie, or a new one (True: it must be set on the response)."""
    value = request.cookies.get(FORM_COOKIE)
    if value and 20 <= len(value) <= sessions.MAX_SECRET_LENGTH:
        return value, False
    return secrets.token_urlsafe(32), True


def set_form_cookie(response: Response, services: Services, value: str) -> None:
    response.set_cookie(FORM_COOKIE, value, max_age=86400, httponly=True, samesite="lax",
                        secure=services.settings.is_https, path=PATH)


def check_public_form(request: Request, form: Form) -> None:
    """A form posted before sign-in: Origin ours, token the HMAC of this browser's form cookie."""
    value = request.cookies.get(FORM_COOKIE, "")
    if not value:
        raise CsrfFailure("no form cookie")
    check_csrf(request, form.get("csrf"), value, services_of(request).settings)


# -- The check of every signed-in route -----------------------------------------------------------------------


class SignInNeeded(Exception):
    pass


@dataclass(frozen=True)
class _Loaded:
    session: sessions.Session
    person: staff_domain.Person
    membership: staff_domain.Membership
    memberships: list[staff_domain.Membership]


def load(conn: sa.Connection, secret: str, now: dt.datetime) -> _Loaded:
    """The live staff session of `secret` with its person and membership, or SignInNeeded. A session idle too
    long, or of an organization the person is no longer staff of, is ended here (the caller writes)."""
    found = sessions.find(conn, sessions.STAFF, secret, now)
    if found is None or found.staff_person_id is None or found.organization_id is None:
        raise SignInNeeded()
    last_seen = found.last_seen_at
    if last_seen is not None and last_seen.tzinfo is None:
        last_seen = last_seen.replace(tzinfo=dt.UTC)
    current = staff_domain.membership(conn, found.staff_person_id, found.organization_id)
    if current is None or (last_seen is not None and now - last_seen > IDLE):
        raise SignInNeeded()
    person = staff_domain.person(conn, found.staff_person_id)
    return _Loaded(found, person, current, staff_domain.memberships(conn, person.id))


async def staff_context(request: Request, now: dt.datetime) -> StaffContext:
    services = services_of(request)
    secret = cookie_secret(request)
    if secret is None:
        raise SignInNeeded()
    try:
        loaded = await services.db.read(load, secret, now)
    except SignInNeeded:
        # End what may be left of it (idle, or the membership gone), so the cookie is dead for good.
        await services.db.write(sessions.end, sessions.STAFF, secret, now)
        raise
    last_seen = loaded.session.last_seen_at
    if last_seen is not None and last_seen.tzinfo is None:
        last_seen = last_seen.replace(tzinfo=dt.UTC)
    if last_seen is None or now - last_seen >= TOUCH_EVERY:
        await services.db.write(sessions.touch, loaded.session.id, now)
    return StaffContext(request, loaded.session.id, secret, loaded.person, loaded.membership, loaded.memberships,
                        now)


def sign_in_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = "/staff/login" if request.method != "GET" or target == "/staff" else \
        f"/staff/login?next={quote(target, safe='')}"
    response = RedirectResponse(location, status_code=303)
    drop_cookie(response, services_of(request))
    return response


def forbidden(context: StaffContext) -> Response:
    return context.render("staff/forbidden.html", {}, status=403)


def staff_route(role: staff_domain.Role = "viewer", *, enrolment: bool = False) -> Callable[[Handler], Any]:
    """The route needs a signed-in person whose role in the organization in use is at least `role`. POSTs
    have their form read and checked (CSRF, Origin) before the handler runs. `enrolment`: the route stays
    open to a person who must still set up TOTP for an organization that requires it."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            services = services_of(request)
            now = services.now()
            try:
                context = await staff_context(request, now)
            except SignInNeeded:
                return sign_in_redirect(request)
            if request.method == "POST":
                context.form = await read_form(request)
                try:
                    check_csrf(request, context.form.get("csrf"), context.secret, services.settings)
                except CsrfFailure as exc:
                    await services.db.write(audit.record, audit.CSRF_REFUSED, now,
                                            organization_id=context.organization_id, person_id=context.person.id,
                                            client=context.client, detail={"path": request.url.path,
                                                                           "reason": str(exc)})
                    return context.render("staff/forbidden.html", {"expired_form": True}, status=403)
            if staff_domain.RANK[context.membership.role] < staff_domain.RANK[role]:
                await services.db.write(audit.record, audit.FORBIDDEN, now, organization_id=context.organization_id,
                                        person_id=context.person.id, client=context.client,
                                        detail={"path": request.url.path, "method": request.method,
                                                "role": context.membership.role, "needed": role})
                return forbidden(context)
            if context.membership.require_totp and not context.person.totp_enabled and not enrolment:
                return RedirectResponse("/staff/account", status_code=303)
            return await handler(request, context)

        endpoint.required_role = role  # type: ignore[attr-defined]
        return endpoint

    return wrap
