"""The demo data that scripts/demo loads: idempotent, complete, with real PDFs, and printed credentials (the
API key, the debtor links) that work."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from portal.app import create_app
from portal.cli import main
from portal.clock import FrozenClock, as_utc
from portal.db import Database
from portal.db.customers import customers
from portal.db.invoices import invoice_conflicts, invoice_timeline, invoices
from portal.db.organizations import number_sequences, organizations
from portal.demo import CUSTOMERS, INVOICES, load_demo, sample_pdf
from portal.domain import lifecycle
from portal.domain import organizations as orgs
from portal.pdf import screen_pdf
from portal.settings import Settings
from portal.storage import LocalStore, read_bytes

SNAPSHOT_TABLES = (organizations, customers, invoices, invoice_timeline, invoice_conflicts, number_sequences)


def snapshot(conn: sa.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table.name: [tuple(row) for row in conn.execute(sa.select(table).order_by(*table.primary_key))]
            for table in SNAPSHOT_TABLES}


def demo_invoices(conn: sa.Connection) -> list[sa.Row[Any]]:
    return conn.execute(
        sa.select(invoices, customers.c.locale).join(customers, customers.c.id == invoices.c.customer_id)
        .order_by(invoices.c.external_id)).all()


def assert_valid_pdf(data: bytes) -> None:
    """The checks a reader makes before anything else: the header, the trailer, and a cross-reference table
    whose every entry points at the object it names."""
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    xref = int(re.search(rb"startxref\n(\d+)\n", data).group(1))  # type: ignore[union-attr]
    assert data[xref:].startswith(b"xref\n")
    entries = re.findall(rb"(\d{10}) 00000 n \n", data[xref:])
    assert entries
    for number, offset in enumerate(entries, start=1):
        assert data[int(offset):].startswith(b"%d 0 obj\n" % number)


def test_loading_twice_changes_nothing(database: Database, settings: Settings, clock: FrozenClock) -> None:
    store = LocalStore(settings.storage_dir)
    first = database.run(load_demo, store, clock.now())
    assert first.customers == {"created": len(CUSTOMERS)}
    assert first.invoices == {"created": len(INVOICES)}
    assert first.documents == {"created": sum(1 for demo in INVOICES if demo.with_document)}
    before = database.run(snapshot, write=False)

    # Later the same day: any write would show in an updated_at, a revision or a timeline row.
    clock.advance(hours=2)
    second = database.run(load_demo, store, clock.now())

    assert second.customers == {"unchanged": len(CUSTOMERS)}
    assert second.invoices == {"unchanged": len(INVOICES)}
    assert second.documents == {"unchanged": first.documents["created"]}
    assert second.kept == []
    assert database.run(snapshot, write=False) == before


def test_the_demo_shows_every_language_and_state(database: Database, settings: Settings,
                                                 clock: FrozenClock) -> None:
    database.run(load_demo, LocalStore(settings.storage_dir), clock.now())
    rows = database.run(demo_invoices, write=False)
    today = clock.now().date()

    assert {row.locale for row in rows} == {"fr-BE", "nl-BE", "en", "de", "sv"}
    assert {row.currency for row in rows} == {"EUR"}
    assert {row.status for row in rows} == {"draft", "open", "paid"}
    assert any(row.kind == "credit_note" for row in rows)
    assert any(row.status == "open" and row.due_date < today for row in rows), "an overdue invoice"
    assert any(row.status == "open" and row.due_date >= today for row in rows), "an invoice not yet due"
    assert any(row.status == "open" and row.document_sha256 is None for row in rows), "a missing PDF"
    activated = [row for row in rows if row.number == "Q-000001"]
    assert len(activated) == 1 and as_utc(activated[0].activated_at) == clock.now()


def test_every_attached_document_is_a_stored_pdf(database: Database, settings: Settings,
                                                 clock: FrozenClock) -> None:
    store = LocalStore(settings.storage_dir)
    database.run(load_demo, store, clock.now())
    with_documents = [row for row in database.run(demo_invoices, write=False) if row.document_sha256]

    assert len(with_documents) == sum(1 for demo in INVOICES if demo.with_document)
    for row in with_documents:
        data = read_bytes(store, row.document_sha256)
        assert hashlib.sha256(data).hexdigest() == row.document_sha256
        assert len(data) == row.document_size
        assert row.document_updated_at is not None
        assert_valid_pdf(data)
        staged = settings.storage_dir.parent / f"{row.document_sha256}.pdf"
        staged.write_bytes(data)
        screen_pdf(staged)  # what the API demands of an uploaded PDF
        assert f"{row.number})".encode() in data, "the invoice number is printed on its document"
    assert_valid_pdf(sample_pdf("WALK-1"))


def test_the_printed_key_and_links_work(database: Database, settings: Settings) -> None:
    # The commands stamp keys and links with the real time, so the app here runs on the real clock too.
    app = create_app(settings, database=database)
    runner = CliRunner()
    env = {"PORTAL_DATABASE_URL": database.engine.url.render_as_string(hide_password=False),
           "PORTAL_STORAGE_DIR": str(settings.storage_dir)}

    def portal(*args: str) -> str:
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    assert "invoices 10 created" in portal("demo", "load")
    first_key = portal("demo", "key").strip()
    assert "invoices 10 unchanged" in portal("demo", "load")
    key = portal("demo", "key").strip()

    client = TestClient(app)
    listing = client.get("/api/v1/invoices", headers={"Authorization": f"Bearer {key}"})
    assert listing.status_code == 200, listing.text
    assert sorted(item["external_id"] for item in listing.json()["items"]) == sorted(d.external_id for d in INVOICES)
    document = client.get("/api/v1/invoices/DEMO-101/document", headers={"Authorization": f"Bearer {key}"})
    assert document.status_code == 200 and document.content.startswith(b"%PDF-")
    revoked = client.get("/api/v1/invoices", headers={"Authorization": f"Bearer {first_key}"})
    assert revoked.status_code == 401

    printed = portal("demo", "links").splitlines()
    assert len(printed) == len(CUSTOMERS)
    for line, customer in zip(printed, CUSTOMERS, strict=True):
        # Each debtor link opens the portal on that customer's invoices.
        debtor = TestClient(app)
        page = debtor.get("/l/" + line.rsplit("/l/", 1)[1])
        assert page.status_code == 200 and page.url.path == "/portal", page.text
        assert customer.name in page.text


def test_a_later_load_moves_the_dates_along(database: Database, settings: Settings, clock: FrozenClock) -> None:
    store = LocalStore(settings.storage_dir)
    database.run(load_demo, store, clock.now())
    clock.advance(days=1)
    later = database.run(load_demo, store, clock.now())

    # Dated invoices follow today, PDFs included; the undated draft and the invoice Quittance activated stay.
    assert later.invoices == {"updated": len(INVOICES) - 2, "unchanged": 2}
    assert later.documents == {"updated": 7, "unchanged": 1}
    assert later.kept == []
    due = database.run(lambda conn: conn.execute(
        sa.select(invoices.c.due_date).where(invoices.c.external_id == "DEMO-102")).scalar_one(), write=False)
    assert due == clock.now().date() - dt.timedelta(days=18)


def test_a_demo_invoice_changed_through_the_api_is_kept(database: Database, settings: Settings,
                                                        clock: FrozenClock) -> None:
    store = LocalStore(settings.storage_dir)
    database.run(load_demo, store, clock.now())
    org = database.run(orgs.get_organization, "demo")
    # Someone following the walk-through activates the demo draft; a resend of the draft would undo that.
    database.run(lifecycle.activate, org.id, "DEMO-107", clock.now())

    again = database.run(load_demo, store, clock.now())

    assert again.invoices == {"unchanged": len(INVOICES) - 1, "kept": 1}
    assert len(again.kept) == 1 and again.kept[0].startswith("DEMO-107: ")
    status = database.run(lambda conn: conn.execute(
        sa.select(invoices.c.status).where(invoices.c.external_id == "DEMO-107")).scalar_one(), write=False)
    assert status == "open"
