"""Every staff route against every role: allowed at or above the route's role, a 403 page (and an audit entry,
nothing written) below it; no session at all is sent to the sign-in page."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from starlette.routing import Route

from portal.db.staff import audit_log
from portal.domain import staff as staff_domain
from portal.web.staff import pages
from tests.conftest import Tenant
from tests.web.staff_support import StaffBrowser, make_staff

# Each route, what it needs, and a body that would change something if it were let through.
MATRIX = {
    ("GET", "/staff"): ("viewer", None),
    ("POST", "/staff/organization"): ("viewer", {"organization": "ORG"}),
    ("GET", "/staff/account"): ("viewer", None),
    ("POST", "/staff/account/password"): ("viewer", {"current": "x", "password": "y", "password_again": "y"}),
    ("POST", "/staff/account/totp"): ("viewer", {"secret": "A" * 32, "code": "000000"}),
    ("GET", "/staff/settings/staff"): ("admin", None),
    ("POST", "/staff/settings/staff/role"): ("admin", {"email": "other@acme.example", "role": "admin"}),
    ("POST", "/staff/settings/staff/disable"): ("admin", {"email": "other@acme.example"}),
    ("POST", "/staff/settings/staff/totp"): ("admin", {"required": "1"}),
    ("GET", "/staff/settings/audit"): ("admin", None),
}


def test_the_matrix_names_every_signed_in_route_with_its_declared_role() -> None:
    declared = {}
    for route in pages.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                declared[(method, route.path)] = route.endpoint.required_role  # type: ignore[attr-defined]
    assert declared == {key: role for key, (role, _) in MATRIX.items()}


@pytest.mark.parametrize("role", staff_domain.ROLES)
def test_each_role_against_each_route(app: Any, tenant: Tenant, database: Any, clock: Any, role: str) -> None:
    make_staff(database, tenant.org, "me@acme.example", role, clock.now())
    make_staff(database, tenant.org, "other@acme.example", "viewer", clock.now())
    make_staff(database, tenant.org, "boss@acme.example", "admin", clock.now())
    browser = StaffBrowser(app)
    assert browser.sign_in("me@acme.example").status_code == 303
    for (method, path), (needed, body) in MATRIX.items():
        allowed = staff_domain.RANK[role] >= staff_domain.RANK[needed]
        before = database.run(lambda conn: staff_domain.staff_of(conn, tenant.org.id))
        if method == "GET":
            response = browser.client.get(path)
        else:
            data = {k: (str(tenant.org.id) if v == "ORG" else v) for k, v in (body or {}).items()}
            response = browser.post(path, data)
        if allowed:
            assert response.status_code in (200, 303, 422), (role, path, response.status_code)
        else:
            assert response.status_code == 403 and "Not allowed" in response.text, (role, path)
            assert database.run(lambda conn: staff_domain.staff_of(conn, tenant.org.id)) == before
            with database.transaction() as conn:
                last = conn.execute(sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(1)).one()
            assert last.action == "forbidden" and last.detail["path"] == path
        if browser.client.get("/staff/account").status_code != 200:  # a role change signed us out: sign in again
            browser.sign_in("me@acme.example")


@pytest.mark.parametrize("method,path", list(MATRIX))
def test_no_session_goes_to_sign_in(app: Any, tenant: Tenant, method: str, path: str) -> None:
    browser = StaffBrowser(app)
    response = browser.client.request(method, path, data={"csrf": "x"} if method == "POST" else None)
    assert response.status_code == 303 and response.headers["location"].startswith("/staff/login")
