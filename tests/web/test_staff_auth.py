"""Signing in to the back office, and what ends a staff session: sign-out, a password or role change,
disabling, the idle timeout. Failures throttled per account and address, CSRF and Origin checked, TOTP."""

from __future__ import annotations

import time
from typing import Any

import pyotp
import sqlalchemy as sa

from portal.db.access import sessions
from portal.db.staff import audit_log
from portal.domain import organizations as orgs
from portal.domain import staff as staff_domain
from tests.conftest import Tenant
from tests.support.smtp import smtp_server
from tests.web.staff_support import PASSWORD, StaffBrowser, make_staff


def actions(database: Any) -> list[str]:
    with database.transaction() as conn:
        return [row.action for row in conn.execute(sa.select(audit_log.c.action).order_by(audit_log.c.id))]


def test_sign_in_opens_a_server_side_session_in_an_httponly_cookie(app: Any, tenant: Tenant, database: Any,
                                                                   clock: Any) -> None:
    make_staff(database, tenant.org, "ann@acme.example", "finance", clock.now())
    browser = StaffBrowser(app)
    assert browser.client.get("/staff").headers["location"] == "/staff/login"
    response = browser.sign_in("Ann@Acme.example")
    assert response.status_code == 303 and response.headers["location"] == "/staff"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/staff" in cookie
    page = browser.client.get("/staff")
    assert page.status_code == 200 and "Dashboard" in page.text and "Acme" in page.text
    assert page.headers["cache-control"] == "no-store"
    with database.transaction() as conn:
        [row] = conn.execute(sa.select(sessions).where(sessions.c.kind == "staff")).all()
    assert row.organization_id == tenant.org.id and row.staff_person_id is not None
    assert browser.session_cookie not in [str(value) for value in row]
    assert actions(database)[-1] == "sign_in"


def test_a_new_session_id_at_each_sign_in(app: Any, tenant: Tenant, database: Any, clock: Any) -> None:
    make_staff(database, tenant.org, "ann@acme.example", "viewer", clock.now())
    browser = StaffBrowser(app)
    browser.sign_in("ann@acme.example")
    first = browser.session_cookie
    browser.sign_in("ann@acme.example")
    assert browser.session_cookie != first
    replay = StaffBrowser(app)
    replay.client.cookies.set("quittance_staff", first or "", path="/staff")
    assert replay.client.get("/staff").status_code == 303, "the session the browser had is ended"


def test_unknown_email_and_wrong_password_get_the_same_answer_in_about_the_same_time(
        app: Any, tenant: Tenant, database: Any, clock: Any) -> None:
    make_staff(database, tenant.org, "ann@acme.example", "viewer", clock.now())
    answers, times = [], []
    for email, password in (("ann@acme.example", "wrong password here"), ("nobody@acme.example", PASSWORD)) * 3:
        browser = StaffBrowser(app)
        token = browser.csrf("/staff/login")
        started = time.perf_counter()
        response = browser.client.post("/staff/login", data={"csrf": token, "email": email, "password": password})
        times.append(time.perf_counter() - started)
        answers.append((response.status_code, response.text.replace(email, "EMAIL").replace(token, "T")))
    assert answers[0][0] == 401 and len({text for _, text in answers}) == 1
    # The fastest of three each: the machine's other work only ever adds time.
    wrong, unknown = min(times[0::2]), min(times[1::2])
    assert 0.5 < unknown / wrong < 2, (wrong, unknown)
    assert actions(database)[-6:] == ["sign_in_failed"] * 6


def test_failures_are_throttled_per_account_and_the_throttle_expires(app: Any, tenant: Tenant, database: Any,
                                                                     clock: Any) -> None:
    make_staff(database, tenant.org, "ann@acme.example", "viewer", clock.now())
    browser = StaffBrowser(app)
    for _ in range(5):
        assert browser.sign_in("ann@acme.example", "not the password").status_code == 401
    refused = browser.sign_in("ann@acme.example")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert browser.session_cookie is None, "even the right password is refused during the lockout"
    # From another address too: the account is what is throttled. Dropping cookies changes nothing.
    assert StaffBrowser(app).sign_in("ann@acme.example").status_code == 429
    assert "sign_in_throttled" in actions(database)
    clock.advance(minutes=31)
    assert browser.sign_in("ann@acme.example").status_code == 303


def test_failures_are_throttled_per_client_address(app: Any, tenant: Tenant, database: Any, clock: Any) -> None:
    make_staff(database, tenant.org, "ann@acme.example", "viewer", clock.now())
    browser = StaffBrowser(app)
    for number in range(20):
        assert browser.sign_in(f"guess{number}@acme.example", "x" * 12).status_code == 401
    assert browser.sign_in("ann@acme.example").status_code == 429


def test_sign_out_ends_the_session_on_the_server(app: Any, tenant: Tenant, database: Any, clock: Any) -> None:
    make_staff(database, tenant.org, "ann@acme.example", "viewer", clock.now())
    browser = StaffBrowser(app)
    browser.sign_in("ann@acme.example")
    stolen = browser.session_cookie
    assert browser.post("/staff/logout").headers["location"] == "/staff/login?done=signed_out"
    replay = StaffBrowser(app)
    replay.client.cookies.set("quittance_staff", stolen or "", path="/staff")
    assert replay.client.get("/staff").status_code == 303
    assert actions(database)[-1] == "sign_out"


def test_idle_sessions_end(app: Any, tenant: Tenant, database: Any, clock: Any) -> None:
    make_staff(database, tenant.org, "ann@acme.example", "viewer", clock.now())
    browser = StaffBrowser(app)
    browser.sign_in("ann@acme.example")
    for _ in range(3):  # used every 25 minutes: still alive after 75
        clock.advance(minutes=25)
        assert browser.client.get("/staff").status_code == 200
    clock.advance(minutes=31)
    assert browser.client.get("/staff").status_code == 303


def test_a_password_change_ends_every_other_session(app: Any, tenant: Tenant, database: Any, clock: Any) -> None:
    make_staff(database, tenant.org, "ann@acme.example", "viewer", clock.now())
    laptop, phone = StaffBrowser(app), StaffBrowser(app)
    laptop.sign_in("ann@acme.example")
    phone.sign_in("ann@acme.example")
    new = "a much better passphrase"
    response = laptop.post("/staff/account/password", {"current": PASSWORD, "password": new, "password_again": new},
                           csrf_from="/staff/account")
    assert response.status_code == 303
    assert laptop.client.get("/staff").status_code == 200, "this browser got a fresh session"
    assert phone.client.get("/staff").status_code == 303
    assert StaffBrowser(app).sign_in("ann@acme.example").status_code == 401
    assert StaffBrowser(app).sign_in("ann@acme.example", new).status_code == 303
    wrong = laptop.post("/staff/account/password", {"current": "nope nope nope", "password": new + "!",
                                                    "password_again": new + "!"}, csrf_from="/staff/account")
    assert wrong.status_code == 422 and "password_changed" in actions(database)


def test_a_role_change_and_disabling_end_the_persons_sessions(app: Any, tenant: Tenant, database: Any,
                                                              clock: Any) -> None:
    make_staff(database, tenant.org, "admin@acme.example", "admin", clock.now())
    make_staff(database, tenant.org, "bob@acme.example", "finance", clock.now())
    admin, bob = StaffBrowser(app), StaffBrowser(app)
    admin.sign_in("admin@acme.example")
    bob.sign_in("bob@acme.example")
    assert admin.post("/staff/settings/staff/role", {"email": "bob@acme.example", "role": "viewer"}).status_code == 303
    assert bob.client.get("/staff").status_code == 303
    bob.sign_in("bob@acme.example")
    assert admin.post("/staff/settings/staff/disable", {"email": "bob@acme.example"}).status_code == 303
    assert bob.client.get("/staff").status_code == 303
    assert bob.sign_in("bob@acme.example").status_code == 401, "disabled everywhere: the same answer as a bad password"
    assert {"role_changed", "staff_disabled"} <= set(actions(database))
    # The last admin cannot be demoted from the back office.
    last = admin.post("/staff/settings/staff/role", {"email": "admin@acme.example", "role": "viewer"})
    assert last.status_code == 409 and admin.client.get("/staff/settings/staff").status_code == 200


def test_forms_without_the_sessions_token_or_from_another_origin_are_refused(app: Any, tenant: Tenant,
                                                                              database: Any, clock: Any) -> None:
    make_staff(database, tenant.org, "admin@acme.example", "admin", clock.now())
    make_staff(database, tenant.org, "bob@acme.example", "finance", clock.now())
    admin = StaffBrowser(app)
    admin.sign_in("admin@acme.example")
    change = {"email": "bob@acme.example", "role": "admin"}
    assert admin.client.post("/staff/settings/staff/role", data=change).status_code == 403
    assert admin.client.post("/staff/settings/staff/role", data={**change, "csrf": "0" * 64}).status_code == 403
    token = admin.csrf("/staff")
    foreign = admin.client.post("/staff/settings/staff/role", data={**change, "csrf": token},
                                headers={"Origin": "https://evil.test"})
    assert foreign.status_code == 403
    listing = database.run(lambda conn: staff_domain.staff_of(conn, tenant.org.id))
    assert {row.person.email: row.role for row in listing}["bob@acme.example"] == "finance", "nothing written"
    assert actions(database).count("csrf_refused") == 3
    # The sign-in form too: no token, or a foreign Origin.
    assert StaffBrowser(app).client.post("/staff/login", data={"email": "admin@acme.example",
                                                               "password": PASSWORD}).status_code == 403
    stranger = StaffBrowser(app)
    token = stranger.csrf("/staff/login")
    assert stranger.client.post("/staff/login", data={"csrf": token, "email": "admin@acme.example",
                                                      "password": PASSWORD},
                                headers={"Origin": "https://evil.test"}).status_code == 403


def test_a_session_only_opens_organizations_the_person_is_staff_of(app: Any, tenant: Tenant, other_tenant: Tenant,
                                                                   database: Any, clock: Any) -> None:
    third = database.run(lambda conn: orgs.create_organization(conn, "initech", "Initech", clock.now()))
    make_staff(database, tenant.org, "ann@firm.example", "finance", clock.now())
    database.run(lambda conn: staff_domain.add_staff(conn, other_tenant.org.id, "ann@firm.example", "viewer",
                                                     clock.now()))
    browser = StaffBrowser(app)
    browser.sign_in("ann@firm.example")
    page = browser.client.get("/staff")
    assert "Acme" in page.text and "Globex" in page.text, "the switcher lists both"
    refused = browser.post("/staff/organization", {"organization": str(third.id)})
    assert refused.status_code == 403
    with database.transaction() as conn:
        assert conn.scalar(sa.select(sessions.c.organization_id).where(sessions.c.kind == "staff",
                                                                       sessions.c.revoked_at.is_(None))) == tenant.org.id
    assert browser.post("/staff/organization", {"organization": str(other_tenant.org.id)}).status_code == 303
    assert '<span class="brand-name">Globex</span>' in browser.client.get("/staff").text
    # Disabled in the organization in use: the session opens nothing there any more.
    database.run(lambda conn: staff_domain.disable(conn, other_tenant.org.id, "ann@firm.example", clock.now()))
    assert browser.client.get("/staff").status_code == 303


def test_totp_enrolment_and_sign_in_with_a_code(app: Any, tenant: Tenant, database: Any, clock: Any) -> None:
    make_staff(database, tenant.org, "ann@acme.example", "admin", clock.now())
    browser = StaffBrowser(app)
    browser.sign_in("ann@acme.example")
    page = browser.client.get("/staff/account")
    assert "<svg" in page.text
    secret = page.text.split('name="secret" value="')[1].split('"')[0]
    totp = pyotp.TOTP(secret)
    assert browser.post("/staff/account/totp", {"secret": secret, "code": "000000"},
                        csrf_from="/staff/account").status_code == 422
    assert browser.post("/staff/account/totp", {"secret": secret, "code": totp.at(clock.now())},
                        csrf_from="/staff/account").status_code == 303

    other = StaffBrowser(app)
    step = other.sign_in("ann@acme.example")
    assert step.headers["location"].startswith("/staff/login/code") and other.session_cookie is None
    assert other.client.get("/staff").status_code == 303, "the password alone opens nothing"
    token = other.csrf("/staff/login/code")
    used = totp.at(clock.now())
    assert other.client.post("/staff/login/code", data={"csrf": token, "code": used}).status_code == 401, \
        "the code used for enrolment is not accepted again"
    clock.advance(seconds=30)
    assert other.client.post("/staff/login/code", data={"csrf": token, "code": "123456"}).status_code == 401
    done = other.client.post("/staff/login/code", data={"csrf": token, "code": totp.at(clock.now())})
    assert done.status_code == 303 and other.client.get("/staff").status_code == 200


def test_an_organization_can_require_totp(app: Any, tenant: Tenant, database: Any, clock: Any) -> None:
    make_staff(database, tenant.org, "admin@acme.example", "admin", clock.now())
    make_staff(database, tenant.org, "bob@acme.example", "viewer", clock.now())
    admin = StaffBrowser(app)
    admin.sign_in("admin@acme.example")
    assert admin.post("/staff/settings/staff/totp", {"required": "1"}).status_code == 303
    bob = StaffBrowser(app)
    bob.sign_in("bob@acme.example")
    assert bob.client.get("/staff").headers["location"] == "/staff/account"
    assert "requires two-factor" in bob.client.get("/staff/account").text


def test_password_reset_by_a_one_time_emailed_link(app: Any, tenant: Tenant, database: Any, clock: Any,
                                                   settings: Any) -> None:
    import dataclasses

    from portal.app import create_app

    make_staff(database, tenant.org, "ann@acme.example", "viewer", clock.now())
    with smtp_server() as smtp:
        mailing = create_app(dataclasses.replace(settings, smtp=smtp.settings()), clock=clock, database=database)
        browser = StaffBrowser(mailing)
        for email in ("ann@acme.example", "nobody@acme.example"):
            token = browser.csrf("/staff/password/forgot")
            answer = browser.client.post("/staff/password/forgot", data={"csrf": token, "email": email})
            assert answer.status_code == 200 and "on its way" in answer.text
        [mail] = smtp.received
    assert mail.rcpt_tos == ["ann@acme.example"]
    link = next(line for line in mail.part("plain").splitlines() if "/staff/password/" in line).strip()
    path = link.removeprefix("http://testserver")
    form = browser.client.get(path)
    assert form.status_code == 200 and "ann@acme.example" in form.text
    new = "reset to something long"
    token = browser.csrf(path)
    assert browser.client.post(path, data={"csrf": token, "password": new, "password_again": "other"}).status_code \
        == 422
    assert browser.client.post(path, data={"csrf": token, "password": new,
                                           "password_again": new}).headers["location"] == "/staff/login?done=password"
    assert browser.client.get(path).status_code == 404, "one-time"
    assert browser.sign_in("ann@acme.example", new).status_code == 303


def test_set_password_links_expire_after_24_hours(app: Any, tenant: Tenant, database: Any, clock: Any) -> None:
    def invite(conn: Any) -> str:
        person = staff_domain.add_staff(conn, tenant.org.id, "new@acme.example", "viewer", clock.now())
        return staff_domain.issue_token(conn, person.id, staff_domain.SET_PASSWORD, clock.now())

    token = database.run(invite)
    browser = StaffBrowser(app)
    assert browser.client.get(f"/staff/password/{token}").status_code == 200
    clock.advance(hours=24, seconds=1)
    assert browser.client.get(f"/staff/password/{token}").status_code == 404


def test_a_disabled_person_signing_in_elsewhere_keeps_their_other_organizations(
        app: Any, tenant: Tenant, other_tenant: Tenant, database: Any, clock: Any) -> None:
    make_staff(database, tenant.org, "ann@firm.example", "finance", clock.now())
    database.run(lambda conn: staff_domain.add_staff(conn, other_tenant.org.id, "ann@firm.example", "viewer",
                                                     clock.now()))
    database.run(lambda conn: staff_domain.disable(conn, tenant.org.id, "ann@firm.example", clock.now()))
    browser = StaffBrowser(app)
    assert browser.sign_in("ann@firm.example").status_code == 303
    assert '<span class="brand-name">Globex</span>' in browser.client.get("/staff").text


def test_the_back_office_speaks_the_staff_members_language_and_formats(app: Any, tenant: Tenant, database: Any,
                                                                      clock: Any) -> None:
    assert tenant.put_invoice("BIG", number="BIG", total="1234.50", lines=[]).status_code == 201
    make_staff(database, tenant.org, "anne@acme.example", "viewer", clock.now(), locale="fr-BE")
    browser = StaffBrowser(app)
    browser.sign_in("anne@acme.example")
    page = browser.client.get("/staff")
    assert '<html lang="fr">' in page.text and "Tableau de bord" in page.text and "Dashboard" not in page.text
    assert "1\u202f234,50\xa0€" in page.text, "amounts as a reader in Belgium writes them"
    assert "2 nov. 2026" in page.text


def test_the_demo_finance_account_signs_in_with_the_password_printed_last(app: Any, database: Any, clock: Any,
                                                                           settings: Any) -> None:
    from portal.demo import load_demo, reset_demo_staff
    from portal.storage import LocalStore

    database.run(load_demo, LocalStore(settings.storage_dir), clock.now())
    email, first = database.run(reset_demo_staff, clock.now())
    email, second = database.run(reset_demo_staff, clock.now())
    browser = StaffBrowser(app)
    assert browser.sign_in(email, first).status_code == 401, "the password printed before stops working"
    assert browser.sign_in(email, second).status_code == 303
    page = browser.client.get("/staff")
    assert "Comptoir Brabançon SRL" in page.text and "Staff</a>" not in page.text, "finance, not admin"
    assert "€" in page.text


def test_sign_in_returns_to_the_page_asked_for_and_only_to_a_staff_page(app: Any, tenant: Tenant, database: Any,
                                                                        clock: Any) -> None:
    make_staff(database, tenant.org, "ann@acme.example", "viewer", clock.now())
    browser = StaffBrowser(app)
    assert browser.client.get("/staff/account").headers["location"] == "/staff/login?next=%2Fstaff%2Faccount"
    assert browser.sign_in("ann@acme.example", next="/staff/account").headers["location"] == "/staff/account"
    for elsewhere in ("https://evil.test/staff", "//evil.test/staff", "/portal"):
        assert browser.sign_in("ann@acme.example", next=elsewhere).headers["location"] == "/staff"


def test_admins_read_the_audit_log_with_who_what_and_from_where(app: Any, tenant: Tenant, database: Any,
                                                                clock: Any) -> None:
    make_staff(database, tenant.org, "admin@acme.example", "admin", clock.now())
    browser = StaffBrowser(app)
    browser.sign_in("admin@acme.example", "not it at all")
    browser.sign_in("admin@acme.example")
    page = browser.client.get("/staff/settings/audit")
    assert page.status_code == 200
    rows = page.text.split("<tbody>")[1]
    assert rows.index("<code>sign_in</code>") < rows.index("<code>staff_invited</code>"), "newest first"
    assert "admin@acme.example" in rows and "testclient" in rows
    assert "sign_in_failed" not in rows, "a failure before sign-in belongs to no organization's log"
