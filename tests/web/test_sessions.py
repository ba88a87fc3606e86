"""Debtor sessions kept on the server: an opaque cookie, a hashed row, ended by signing out on every process,
expiring by the clock, and dying with their link."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import sqlalchemy as sa

from portal.app import create_app
from portal.db.access import sessions
from tests.conftest import Tenant
from tests.web.test_portal import Debtor, invoice_id, link_for


def session_rows_now(database: Any) -> list[Any]:
    with database.transaction() as conn:
        return list(conn.execute(sa.select(sessions).order_by(sessions.c.id)))


def test_the_cookie_is_an_opaque_secret_stored_only_as_its_hash(tenant: Tenant, app: Any, database: Any,
                                                               clock: Any) -> None:
    debtor = Debtor(app)
    landing = debtor.open(link_for(tenant))
    secret = landing.cookies["quittance_session"]
    assert len(secret) == 43 and "." not in secret, "token_urlsafe(32), nothing signed or readable in it"
    assert "HttpOnly" in landing.headers["set-cookie"] and "SameSite=lax" in landing.headers["set-cookie"]
    [row] = session_rows_now(database)
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in [str(value) for value in row]
    assert (row.kind, row.revoked_at) == ("debtor", None) and row.link_id is not None
    assert row.expires_at.replace(tzinfo=dt.UTC) - clock.now() == dt.timedelta(minutes=60)
    # A made-up secret of the right shape opens nothing.
    stranger = Debtor(app)
    stranger.client.cookies.set("quittance_session", secret[:-2] + ("AA" if secret[-2:] != "AA" else "BB"))
    assert stranger.get("/portal").status_code == 401


def test_a_replayed_cookie_opens_nothing_after_sign_out(tenant: Tenant, app: Any, database: Any,
                                                       clock: Any) -> None:
    tenant.put_invoice("OPEN-1", number="F-001")
    debtor = Debtor(app)
    debtor.open(link_for(tenant))
    stolen = debtor.client.cookies["quittance_session"]
    csrf = debtor.csrf()
    open_id = invoice_id(database, "OPEN-1")
    assert debtor.post_form("/portal/sign-out", {"csrf": csrf}).status_code == 200
    assert debtor.get("/portal").status_code == 401

    replay = Debtor(app)
    replay.client.cookies.set("quittance_session", stolen)
    assert replay.get("/portal").status_code == 401
    assert replay.get(f"/portal/invoices/{open_id}/pdf").status_code == 401
    assert replay.post_form(f"/portal/invoices/{open_id}/remarks", {"csrf": csrf, "body": "x"}).status_code == 401
    assert replay.post_form("/portal/language", {"csrf": csrf, "language": "de"}).status_code == 401
    # Another server process on the same database knows it too.
    other_process = Debtor(create_app(app.state.services.settings, clock=clock, database=database))
    other_process.client.cookies.set("quittance_session", stolen)
    assert other_process.get("/portal").status_code == 401
    [row] = session_rows_now(database)
    assert row.revoked_at is not None
    assert tenant.client.get("/api/v1/remarks").json()["items"] == []


def test_a_session_opened_on_one_process_works_on_another(tenant: Tenant, app: Any, database: Any,
                                                        clock: Any) -> None:
    debtor = Debtor(app)
    debtor.open(link_for(tenant))
    other_process = Debtor(create_app(app.state.services.settings, clock=clock, database=database))
    other_process.client.cookies.update(debtor.client.cookies)
    assert other_process.get("/portal").status_code == 200
    csrf = debtor.csrf()
    assert other_process.post_form("/portal/language", {"csrf": csrf, "language": "de"}).status_code == 303


def test_sessions_expire_by_the_clock_and_are_pruned(tenant: Tenant, app: Any, database: Any,
                                                     clock: Any) -> None:
    debtor = Debtor(app)
    url = link_for(tenant)
    debtor.open(url)
    clock.advance(minutes=59, seconds=59)
    assert debtor.get("/portal").status_code == 200
    csrf = debtor.csrf()
    clock.advance(seconds=1)
    assert debtor.get("/portal").status_code == 401
    assert debtor.post_form("/portal/language", {"csrf": csrf, "language": "de"}).status_code == 401
    assert len(session_rows_now(database)) == 1, "kept a while after it ended"
    clock.advance(days=1)
    Debtor(app).open(url)
    assert len(session_rows_now(database)) == 1, "a new session prunes the ones long expired"


def test_a_link_probe_with_head_opens_no_session(tenant: Tenant, app: Any, database: Any) -> None:
    probe = Debtor(app).client.head(link_for(tenant).removeprefix("http://testserver"))
    assert probe.status_code == 303 and "set-cookie" not in probe.headers
    assert session_rows_now(database) == []


def test_revoking_the_link_ends_its_sessions_at_once(tenant: Tenant, app: Any, database: Any) -> None:
    debtor = Debtor(app)
    debtor.open(link_for(tenant))
    assert tenant.client.post("/api/v1/customers/C1/portal-links/revoke").json() == {"revoked": 1}
    assert debtor.get("/portal").status_code == 401
    [row] = session_rows_now(database)
    assert row.revoked_at is None, "the link row decides, on every request"


def test_a_form_posted_touches_last_seen(tenant: Tenant, app: Any, database: Any, clock: Any) -> None:
    debtor = Debtor(app)
    debtor.open(link_for(tenant))
    csrf = debtor.csrf()
    clock.advance(minutes=5)
    debtor.get("/portal")
    [row] = session_rows_now(database)
    assert row.last_seen_at == row.created_at, "a page that only reads writes nothing"
    tenant.put_invoice("OPEN-1", number="F-001")
    open_id = invoice_id(database, "OPEN-1")
    assert debtor.post_form(f"/portal/invoices/{open_id}/remarks", {"csrf": csrf, "body": "hi"}).status_code == 303
    [row] = session_rows_now(database)
    assert row.last_seen_at.replace(tzinfo=dt.UTC) == clock.now()
