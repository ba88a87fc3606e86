"""The back office in Chromium: a finance person signs in, sees the dashboard, and signs out; the cookie they
had opens nothing afterwards. The sign-in page and the dashboard pass axe-core."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from e2e.conftest import NewContext, PortalServer, axe_problems, screenshot
from e2e.conftest import ORG_NAME, ORG_SLUG

EMAIL = "finance@harbour.example"
PASSWORD = "a finance password for e2e"


def create_staff(portal: PortalServer) -> None:
    """`portal staff create ... --password-stdin` against the server's database, as an operator would."""
    done = portal.command("staff", "create", ORG_SLUG, EMAIL, "--role", "finance", "--password-stdin",
                          stdin=PASSWORD + "\n")
    assert done.returncode in (0, 1), done.stderr
    assert done.returncode == 0 or "already" in done.stderr, done.stderr
    portal.secrets.append(PASSWORD)  # typed at sign-in: the server's log must not hold it either


def test_sign_in_see_the_dashboard_and_sign_out(new_context: NewContext, portal: PortalServer) -> None:
    create_staff(portal)
    context = new_context(bypass_csp=True)
    page = context.new_page()
    page.goto("/staff")
    expect(page).to_have_url(f"{portal.base_url}/staff/login")
    assert not axe_problems(page, "staff-login")
    screenshot(page, "staff-login")

    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{portal.base_url}/staff")
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    expect(page.locator(".staff-nav")).to_contain_text(ORG_NAME)
    receivables = page.get_by_role("table")
    expect(receivables).to_contain_text("EUR")
    # What is outstanding depends on what the payment tests before this one paid; its sum is tests/web's concern.
    expect(receivables.get_by_role("row").nth(1)).to_contain_text(re.compile(r"€\d{1,3}(,\d{3})*\.\d{2}"))
    assert not axe_problems(page, "staff-dashboard")
    screenshot(page, "staff-dashboard")
    cookie = next(c for c in context.cookies() if c["name"] == "quittance_staff")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{portal.base_url}/staff/login?done=signed_out")
    expect(page.get_by_role("status")).to_have_text("You are signed out")

    replay = new_context()
    replay.add_cookies([cookie])  # type: ignore[list-item]
    again = replay.new_page()
    again.goto("/staff")
    expect(again).to_have_url(f"{portal.base_url}/staff/login")
