"""Signing in and out of the back office, the TOTP step, and passwords set or reset from a one-time link.

Sign-in answers an unknown email, a wrong password, a person without a password and a person disabled
everywhere with the same page, after the same argon2 work (an unknown email is verified against a dummy hash).
Failures count per account and per client address (rate_limits.STAFF_SIGN_IN_*); past either limit every
attempt is refused, a right password included, until the window has moved on. A new session is opened at each
sign-in (the one the browser had is ended), so a session id planted before sign-in is worth nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets as random
from urllib.parse import quote

import anyio.to_thread
import sqlalchemy as sa
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from portal.domain import audit, rate_limits, sessions
from portal.domain import staff as staff_domain
from portal.errors import InvalidInput
from portal.i18n import DEFAULT_LANGUAGE, language_of, translations
from portal.mail import MailError, build_message, message_id, render as render_mail, send, valid_address
from portal.web.clients import client_address, refusal_headers
from portal.web.portal.pages import read_form
from portal.web.portal.session import csrf_token
from portal.web.staff.session import (
    LIFETIME, TWO_FACTOR_LIFETIME, StaffContext, check_public_form, cookie_secret, drop_cookie, form_secret, render,
    services_of, set_cookie, set_form_cookie, staff_route,
)

log = logging.getLogger(__name__)
TWO_FACTOR_COOKIE = "quittance_staff_2fa"


def _language(request: Request) -> str:
    accepted = request.headers.get("accept-language", "")
    return language_of(accepted.split(",")[0].split(";")[0].strip()) if accepted else DEFAULT_LANGUAGE


def _public_page(request: Request, template: str, context: dict[str, object], status: int = 200) -> Response:
    """A page before sign-in, with a form token bound to this browser's form cookie."""
    value, new = form_secret(request)
    response = render(request, template, _language(request), {"csrf": csrf_token(value), **context}, status=status)
    if new:
        set_form_cookie(response, services_of(request), value)
    return response


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/staff") and "//" not in target and "\\" not in target:
        return target
    return "/staff"


async def login_page(request: Request) -> Response:
    return _public_page(request, "staff/login.html", {"next": _safe_next(request.query_params.get("next")),
                                                      "email": "", "error": None,
                                                      "done": request.query_params.get("done")})


def _throttled(request: Request, verdict: rate_limits.Verdict, limit: rate_limits.Limit) -> Response:
    minutes = max(1, -(-verdict.retry_after // 60))
    response = _public_page(request, "staff/too_many.html", {"minutes": minutes}, status=429)
    response.headers.update(refusal_headers(limit, verdict))
    return response


async def _refuse_if_throttled(request: Request, account: str, client: str,
                               now: dt.datetime) -> Response | None:
    services = services_of(request)

    def check(conn: sa.Connection) -> tuple[rate_limits.Verdict, rate_limits.Limit] | None:
        for limit, key in ((rate_limits.STAFF_SIGN_IN_ACCOUNT, account), (rate_limits.STAFF_SIGN_IN_CLIENT, client)):
            verdict = rate_limits.check(conn, limit, key, now)
            if not verdict.allowed:
                return verdict, limit
        return None

    refused = await services.db.read(check)
    if refused is None:
        return None
    await services.db.write(audit.record, audit.SIGN_IN_THROTTLED, now, actor_email=account, client=client)
    return _throttled(request, *refused)


async def _failed(request: Request, account: str, client: str, now: dt.datetime, email: str,
                  next_target: str, *, template: str = "staff/login.html") -> Response:
    def count(conn: sa.Connection) -> None:
        rate_limits.hit(conn, rate_limits.STAFF_SIGN_IN_ACCOUNT, account, now)
        rate_limits.hit(conn, rate_limits.STAFF_SIGN_IN_CLIENT, client, now)
        audit.record(conn, audit.SIGN_IN_FAILED, now, actor_email=account, client=client)

    await services_of(request).db.write(count)
    return _public_page(request, template, {"next": next_target, "email": email, "error": "wrong"}, status=401)


async def login(request: Request) -> Response:
    services = services_of(request)
    form = await read_form(request)
    check_public_form(request, form)
    email = form.get("email", "")[:320]
    password = form.get("password", "")
    next_target = _safe_next(form.get("next"))
    account = staff_domain.normalize_email(email)
    client = client_address(request)
    now = services.now()
    refused = await _refuse_if_throttled(request, account, client, now)
    if refused is not None:
        return refused
    candidate = await services.db.read(staff_domain.sign_in_candidate, account)
    accepted, needs_rehash = await anyio.to_thread.run_sync(
        staff_domain.verify_password, candidate.password_hash if candidate else None, password)
    memberships = await services.db.read(staff_domain.memberships, candidate.person_id) if candidate else []
    if candidate is None or not accepted or not memberships:
        return await _failed(request, account, client, now, email, next_target)
    if needs_rehash and candidate.password_hash:
        new_hash = await anyio.to_thread.run_sync(staff_domain.hash_password, password)
        await services.db.write(staff_domain.store_rehash, candidate.person_id, candidate.password_hash, new_hash)
    old = cookie_secret(request)
    if candidate.totp_enabled:
        # The password was right; the session is opened by the code. Meanwhile a short session of its own kind
        # remembers whose code is awaited, and opens nothing else.
        def pending(conn: sa.Connection) -> str:
            if old:
                sessions.end(conn, sessions.STAFF, old, now)
            return sessions.open_session(conn, sessions.STAFF_2FA, now, TWO_FACTOR_LIFETIME,
                                         staff_person_id=candidate.person_id)

        secret = await services.db.write(pending)
        response = RedirectResponse(f"/staff/login/code?next={quote(next_target, safe='/')}", status_code=303)
        response.set_cookie(TWO_FACTOR_COOKIE, secret, max_age=int(TWO_FACTOR_LIFETIME.total_seconds()),
                            httponly=True, samesite="lax", secure=services.settings.is_https, path="/staff")
        return response
    return await _open(request, candidate.person_id, memberships[0].organization_id, account, client, now,
                       next_target, old)


async def _open(request: Request, person_id: int, organization_id: int, account: str, client: str,
                now: dt.datetime, next_target: str, old: str | None) -> Response:
    services = services_of(request)

    def open_staff_session(conn: sa.Connection) -> str:
        if old:
            sessions.end(conn, sessions.STAFF, old, now)
        secret = sessions.open_session(conn, sessions.STAFF, now, LIFETIME, organization_id=organization_id,
                                       staff_person_id=person_id)
        audit.record(conn, audit.SIGN_IN, now, organization_id=organization_id, person_id=person_id,
                     actor_email=account, client=client)
        return secret

    secret = await services.db.write(open_staff_session)
    response = RedirectResponse(next_target, status_code=303)
    set_cookie(response, services, secret)
    response.delete_cookie(TWO_FACTOR_COOKIE, path="/staff")
    return response


async def code_page(request: Request) -> Response:
    return _public_page(request, "staff/code.html", {"next": _safe_next(request.query_params.get("next")),
                                                     "error": None})


async def code(request: Request) -> Response:
    """The TOTP step: the pending session names the person; a right code opens the real session. Wrong codes
    count against the same limits as wrong passwords."""
    services = services_of(request)
    form = await read_form(request)
    check_public_form(request, form)
    next_target = _safe_next(form.get("next"))
    pending = request.cookies.get(TWO_FACTOR_COOKIE, "")
    client = client_address(request)
    now = services.now()
    found = await services.db.read(sessions.find, sessions.STAFF_2FA, pending, now)
    if found is None or found.staff_person_id is None:
        return RedirectResponse("/staff/login", status_code=303)
    person = await services.db.read(staff_domain.person, found.staff_person_id)
    refused = await _refuse_if_throttled(request, person.email, client, now)
    if refused is not None:
        return refused

    def verify(conn: sa.Connection) -> bool:
        if not staff_domain.check_totp(conn, person.id, form.get("code", ""), now):
            return False
        sessions.end(conn, sessions.STAFF_2FA, pending, now)
        return True

    if not await services.db.write(verify):
        def count(conn: sa.Connection) -> None:
            rate_limits.hit(conn, rate_limits.STAFF_SIGN_IN_ACCOUNT, person.email, now)
            rate_limits.hit(conn, rate_limits.STAFF_SIGN_IN_CLIENT, client, now)
            audit.record(conn, audit.SIGN_IN_FAILED, now, person_id=person.id, actor_email=person.email,
                         client=client, detail={"step": "totp"})

        await services.db.write(count)
        return _public_page(request, "staff/code.html", {"next": next_target, "error": "wrong"}, status=401)
    memberships = await services.db.read(staff_domain.memberships, person.id)
    if not memberships:
        return RedirectResponse("/staff/login", status_code=303)
    return await _open(request, person.id, memberships[0].organization_id, person.email, client, now, next_target,
                       cookie_secret(request))


@staff_route("viewer", enrolment=True)
async def logout(request: Request, context: StaffContext) -> Response:
    services = context.services

    def end(conn: sa.Connection) -> None:
        sessions.end(conn, sessions.STAFF, context.secret, context.now)
        audit.record(conn, audit.SIGN_OUT, context.now, organization_id=context.organization_id,
                     person_id=context.person.id, client=context.client)

    await services.db.write(end)
    response = RedirectResponse("/staff/login?done=signed_out", status_code=303)
    drop_cookie(response, services)
    return response


# -- Passwords from a one-time link ----------------------------------------------------------------------------


async def forgot_page(request: Request) -> Response:
    return _public_page(request, "staff/forgot.html", {"sent": False})


async def forgot(request: Request) -> Response:
    """Always the same answer, whether the email is staff or not; a mail goes only to active staff."""
    services = services_of(request)
    form = await read_form(request)
    check_public_form(request, form)
    account = staff_domain.normalize_email(form.get("email", "")[:320])
    client = client_address(request)
    now = services.now()

    def request_reset(conn: sa.Connection) -> tuple[str, str, str] | None:
        for limit, key in ((rate_limits.STAFF_RESET_ACCOUNT, account), (rate_limits.STAFF_RESET_CLIENT, client)):
            if not rate_limits.hit(conn, limit, key, now).allowed:
                return None
        person = staff_domain.person_by_email(conn, account)
        if person is None or not staff_domain.memberships(conn, person.id):
            return None
        token = staff_domain.issue_token(conn, person.id, staff_domain.RESET_PASSWORD, now)
        audit.record(conn, audit.PASSWORD_RESET_REQUESTED, now, person_id=person.id, actor_email=account,
                     client=client)
        return person.email, person.locale, token

    issued = await services.db.write(request_reset)
    response = _public_page(request, "staff/forgot.html", {"sent": True})
    if issued is not None:
        # Sent after the answer, so that how long the answer takes does not tell whether the email is staff.
        response.background = BackgroundTask(_send_reset, request, *issued, now)
    return response


async def _send_reset(request: Request, email: str, locale: str, token: str, now: dt.datetime) -> None:
    settings = services_of(request).settings
    language = language_of(locale)
    url = f"{settings.base_url}/staff/password/{token}"
    if not settings.smtp.configured or valid_address(email) is None:
        log.warning("a staff password reset was asked for, but mail is not configured: no mail sent")
        return
    subject = translations(language).gettext("Reset your Quittance password")
    text, html = render_mail("staff_reset", language, {"url": url, "subject": subject, "heading": "Quittance"})
    key = f"staff-reset:{random.token_hex(8)}"
    message = build_message(mail_from=settings.smtp.mail_from, sender_name="Quittance", to=email, to_name=None,
                            subject=subject, text=text, html=html, language=language, idempotency_key=key,
                            message_id=message_id(settings.smtp.mail_from, key), now=now)
    try:
        await send(settings.smtp, message)
    except MailError as exc:
        log.warning("the staff password reset mail was not sent: %s", exc.detail)


async def password_page(request: Request) -> Response:
    services = services_of(request)
    token = request.path_params["token"]
    try:
        person = await services.db.read(staff_domain.token_person, token, services.now())
    except staff_domain.InvalidStaffToken:
        return _public_page(request, "staff/link_invalid.html", {}, status=404)
    return _public_page(request, "staff/password.html", {"email": person.email, "error": None})


async def password(request: Request) -> Response:
    services = services_of(request)
    form = await read_form(request)
    check_public_form(request, form)
    token = request.path_params["token"]
    new, again = form.get("password", ""), form.get("password_again", "")
    now = services.now()
    if new != again:
        error: str | None = "mismatch"
    else:
        error = staff_domain.password_problem(new)
    if error is None:
        try:
            await services.db.write(staff_domain.set_password_with_token, token, new, now,
                                    client=client_address(request))
        except staff_domain.InvalidStaffToken:
            return _public_page(request, "staff/link_invalid.html", {}, status=404)
        except InvalidInput:
            error = "too_short"
        else:
            return RedirectResponse("/staff/login?done=password", status_code=303)
    try:
        person = await services.db.read(staff_domain.token_person, token, now)
    except staff_domain.InvalidStaffToken:
        return _public_page(request, "staff/link_invalid.html", {}, status=404)
    return _public_page(request, "staff/password.html", {"email": person.email, "error": error}, status=422)


routes = [
    Route("/staff/login", login_page, methods=["GET"]),
    Route("/staff/login", login, methods=["POST"]),
    Route("/staff/login/code", code_page, methods=["GET"]),
    Route("/staff/login/code", code, methods=["POST"]),
    Route("/staff/logout", logout, methods=["POST"]),
    Route("/staff/password/forgot", forgot_page, methods=["GET"]),
    Route("/staff/password/forgot", forgot, methods=["POST"]),
    Route("/staff/password/{token}", password_page, methods=["GET"]),
    Route("/staff/password/{token}", password, methods=["POST"]),
]
