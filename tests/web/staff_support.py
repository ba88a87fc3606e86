"""A staff member's browser for the back office tests: sign in through the form, read the form tokens."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

from portal.db import Database
from portal.domain import organizations as orgs
from portal.domain import staff as staff_domain

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'<input type="hidden" name="csrf" value="([^"]+)">')


def make_staff(database: Database, org: orgs.Organization, email: str, role: str, now: Any,
               password: str = PASSWORD, locale: str = "en") -> staff_domain.Person:
    def create(conn: Any) -> staff_domain.Person:
        person = staff_domain.add_staff(conn, org.id, email, role, now, locale=locale)
        staff_domain.set_password(conn, person.id, password, now)
        return person

    return database.run(create)


class StaffBrowser:
    def __init__(self, app: Any, **headers: str) -> None:
        self.client = TestClient(app, raise_server_exceptions=True, follow_redirects=False, headers=headers)

    def csrf(self, path: str) -> str:
        page = self.client.get(path)
        match = CSRF.search(page.text)
        assert match, f"no CSRF token on {path}: {page.status_code} {page.text[:300]}"
        return match.group(1)

    def sign_in(self, email: str, password: str = PASSWORD, **extra: str) -> Any:
        token = self.csrf("/staff/login")
        return self.client.post("/staff/login", data={"csrf": token, "email": email, "password": password,
                                                      "next": "/staff", **extra})

    def post(self, path: str, data: dict[str, str] | None = None, *, csrf_from: str = "/staff",
             **kwargs: Any) -> Any:
        body = {"csrf": self.csrf(csrf_from), **(data or {})}
        return self.client.post(path, data=body, **kwargs)

    @property
    def session_cookie(self) -> str | None:
        return self.client.cookies.get("quittance_staff")
