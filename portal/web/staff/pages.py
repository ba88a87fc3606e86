"""The back office's pages: the dashboard, the organization switcher, the person's own account (password,
TOTP) and the admin's staff page (roles, disabling, TOTP for everyone). Every route declares its role
(staff_route); each handler calls one domain function scoped to the organization in use."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import segno
import sqlalchemy as sa
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from portal.domain import audit, sessions
from portal.domain import staff as staff_domain
from portal.domain.dashboard import AGE_BUCKETS, dashboard as build_dashboard
from portal.errors import Conflict, InvalidInput, NotFound
from portal.web.staff.session import LIFETIME, StaffContext, set_cookie, staff_route


@staff_route("viewer")
async def dashboard(request: Request, context: StaffContext) -> Response:
    board = await context.services.db.read(build_dashboard, context.organization_id, context.now.date())
    return context.render("staff/dashboard.html", {"board": board, "buckets": AGE_BUCKETS})


@staff_route("viewer", enrolment=True)
async def switch_organization(request: Request, context: StaffContext) -> Response:
    """Use another organization the person is staff of; any other id is refused and nothing changes."""
    raw = context.form.get("organization", "")
    target = int(raw) if raw.isdigit() and len(raw) < 18 else None
    if target is None or target not in {m.organization_id for m in context.memberships}:
        return context.render("staff/forbidden.html", {}, status=403)

    def switch(conn: sa.Connection) -> None:
        if staff_domain.membership(conn, context.person.id, target) is None:
            raise NotFound("not staff there")
        sessions.set_organization(conn, context.session_id, target, context.now)
        audit.record(conn, audit.ORGANIZATION_SWITCHED, context.now, organization_id=target,
                     person_id=context.person.id, client=context.client,
                     detail={"from": context.organization_id})

    await context.services.db.write(switch)
    return RedirectResponse("/staff", status_code=303)


def _qr(uri: str) -> Markup:
    # segno writes the SVG itself; nothing in it comes from a person but the URI it encodes.
    return Markup(segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff"))


def _account(context: StaffContext, **extra: Any) -> Response:
    status = extra.pop("status", 200)
    secret = extra.pop("totp_secret", None) or staff_domain.new_totp_secret()
    uri = staff_domain.totp_uri(secret, context.person.email)
    return context.render("staff/account.html", {
        "totp_secret": secret, "totp_qr": _qr(uri), "errors": {}, "notice": None, **extra}, status=status)


@staff_route("viewer", enrolment=True)
async def account(request: Request, context: StaffContext) -> Response:
    return _account(context, notice=request.query_params.get("done"))


@staff_route("viewer", enrolment=True)
async def change_password(request: Request, context: StaffContext) -> Response:
    """A new password ends every session of the person (on every device); this browser gets a fresh one."""
    services = context.services
    form = context.form
    current, new = form.get("current", ""), form.get("password", "")
    problem = "mismatch" if new != form.get("password_again", "") else staff_domain.password_problem(new)
    candidate = await services.db.read(staff_domain.sign_in_candidate, context.person.email)
    accepted, _ = await anyio.to_thread.run_sync(staff_domain.verify_password,
                                                 candidate.password_hash if candidate else None, current)
    if not accepted:
        problem = "wrong_current"
    if problem is not None:
        return _account(context, errors={"password": problem}, status=422)
    new_hash = await anyio.to_thread.run_sync(staff_domain.hash_password, new)

    def change(conn: sa.Connection) -> str:
        staff_domain.set_password(conn, context.person.id, new, context.now, client=context.client,
                                  organization_id=context.organization_id, password_hash=new_hash)
        return sessions.open_session(conn, sessions.STAFF, context.now, LIFETIME,
                                     organization_id=context.organization_id, staff_person_id=context.person.id)

    secret = await services.db.write(change)
    response = RedirectResponse("/staff/account?done=password", status_code=303)
    set_cookie(response, services, secret)
    return response


@staff_route("viewer", enrolment=True)
async def enable_totp(request: Request, context: StaffContext) -> Response:
    secret = context.form.get("secret", "")
    if len(secret) != 32 or not secret.isalnum():
        return _account(context, errors={"totp": "wrong"}, status=422)
    done = await context.services.db.write(staff_domain.enable_totp, context.person.id, secret,
                                           context.form.get("code", ""), context.now,
                                           organization_id=context.organization_id, client=context.client)
    if not done:
        return _account(context, errors={"totp": "wrong"}, totp_secret=secret, status=422)
    return RedirectResponse("/staff/account?done=totp", status_code=303)


# -- Staff of the organization (admin) ---------------------------------------------------------------------


def _staff_page(context: StaffContext, listing: list[staff_domain.StaffListing], **extra: Any) -> Response:
    status = extra.pop("status", 200)
    return context.render("staff/team.html", {"listing": listing, "roles": staff_domain.ROLES, "error": None,
                                              **extra}, status=status)


@staff_route("admin")
async def team(request: Request, context: StaffContext) -> Response:
    listing = await context.services.db.read(staff_domain.staff_of, context.organization_id)
    return _staff_page(context, listing)


async def _team_action(context: StaffContext, action: Any) -> Response:
    services = context.services
    try:
        await services.db.write(action)
    except (Conflict, NotFound, InvalidInput) as exc:
        code = exc.code if isinstance(exc, Conflict) else "not_found" if isinstance(exc, NotFound) else "invalid"
        listing = await services.db.read(staff_domain.staff_of, context.organization_id)
        return _staff_page(context, listing, error=code, status=409 if isinstance(exc, Conflict) else 422)
    return RedirectResponse("/staff/settings/staff", status_code=303)


@staff_route("admin")
async def change_role(request: Request, context: StaffContext) -> Response:
    email, role = context.form.get("email", ""), context.form.get("role", "")
    return await _team_action(context, lambda conn: staff_domain.change_role(
        conn, context.organization_id, email, role, context.now, actor_id=context.person.id, client=context.client))


@staff_route("admin")
async def disable(request: Request, context: StaffContext) -> Response:
    email = context.form.get("email", "")
    return await _team_action(context, lambda conn: staff_domain.disable(
        conn, context.organization_id, email, context.now, actor_id=context.person.id, client=context.client))


@staff_route("admin")
async def require_totp(request: Request, context: StaffContext) -> Response:
    required = context.form.get("required") == "1"
    return await _team_action(context, lambda conn: staff_domain.set_require_totp(
        conn, context.organization_id, required, context.now, actor_id=context.person.id, client=context.client))


@staff_route("admin")
async def audit_log(request: Request, context: StaffContext) -> Response:
    """The newest 100 entries of the organization's audit log (read-only: nothing in the product edits it)."""
    rows = await context.services.db.read(audit.entries, context.organization_id)
    return context.render("staff/audit.html", {"rows": rows})


routes = [
    Route("/staff", dashboard, methods=["GET"]),
    Route("/staff/organization", switch_organization, methods=["POST"]),
    Route("/staff/account", account, methods=["GET"]),
    Route("/staff/account/password", change_password, methods=["POST"]),
    Route("/staff/account/totp", enable_totp, methods=["POST"]),
    Route("/staff/settings/staff", team, methods=["GET"]),
    Route("/staff/settings/staff/role", change_role, methods=["POST"]),
    Route("/staff/settings/staff/disable", disable, methods=["POST"]),
    Route("/staff/settings/staff/totp", require_totp, methods=["POST"]),
    Route("/staff/settings/audit", audit_log, methods=["GET"]),
]
