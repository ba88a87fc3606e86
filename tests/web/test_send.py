"""POST /api/v1/invoices/{external_id}/send against a real SMTP server on loopback (aiosmtpd): the debtor's
email in their language, with a portal link that works and shows only this invoice, the amount due, the due
date and the PDF; escaped values; and nothing recorded when the mail server does not take the message."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from portal.app import create_app
from portal.db.customers import customers
from portal.db.portal import portal_links
from portal.domain import organizations as orgs
from portal.settings import Settings, SmtpSettings
from tests.conftest import Tenant, invoice_body
from tests.support.documents import make_pdf
from tests.support.smtp import MAIL_FROM, SmtpServer, free_port, smtp_server

PDF = {"Content-Type": "application/pdf"}
LINK = re.compile(r"http://testserver/l/[A-Za-z0-9._-]+")
# Tags that load or run something, stylesheet imports, and links to anywhere but the portal link.
EXTERNAL = re.compile(r"<(?:img|link|script|iframe|object|embed|style|form)\b|\ssrc\s*=\s*[\"']|url\(|@import"
                      r"|href\s*=\s*[\"'](?!http://testserver/l/|mailto:|tel:)", re.I)


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with smtp_server() as running:
        yield running


@pytest.fixture
def settings(tmp_path: Path, server: SmtpServer) -> Settings:
    """The suite's settings, with mail going to the loopback server."""
    return Settings(database_url="unused://", storage_dir=tmp_path / "documents", base_url="http://testserver",
                    smtp=server.settings())


def send(tenant: Tenant, external_id: str = "INV-1") -> Any:
    return tenant.client.post(f"/api/v1/invoices/{external_id}/send")


def timeline(tenant: Tenant, external_id: str = "INV-1") -> list[dict[str, Any]]:
    return tenant.client.get(f"/api/v1/invoices/{external_id}").json()["timeline"]  # type: ignore[no-any-return]


def link_count(database: Any) -> int:
    with database.transaction() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(portal_links)))


def with_smtp(app_settings: Settings, smtp: SmtpSettings, database: Any, clock: Any, tenant: Tenant) -> TestClient:
    """The same data through an app whose mail goes elsewhere."""
    other = create_app(dataclasses.replace(app_settings, smtp=smtp), clock=clock, database=database)
    return TestClient(other, headers={"Authorization": f"Bearer {tenant.key}"}, raise_server_exceptions=False)


def test_the_invoice_is_emailed_with_a_working_link_and_its_pdf(app: Any, tenant: Tenant, database: Any,
                                                               server: SmtpServer) -> None:
    database.run(lambda conn: orgs.set_branding(conn, tenant.org, contact_email="billing@acme.example",
                                                contact_phone="+32 2 555 01 02", color="#f5d90a"))
    assert tenant.put_invoice(title="Consulting, October").status_code == 201
    assert tenant.put_invoice("INV-2", number="2026-0002").status_code == 201
    pdf = make_pdf("Invoice 2026-0001")
    assert tenant.client.put("/api/v1/invoices/INV-1/document", content=pdf, headers=PDF).status_code == 201

    response = send(tenant)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["invoice"] == "INV-1" and body["to"] == "compta@dupont.example" and body["language"] == "fr"
    assert body["subject"] == "Facture 2026-0001 – Acme"
    assert body["link"]["scope"] == "invoice" and body["link"]["expires_at"] == "2027-01-31T09:30:00+00:00"
    assert body["attachment"] == {"filename": "2026-0001.pdf", "size": len(pdf),
                                  "sha256": hashlib.sha256(pdf).hexdigest()}
    assert body["attachment_omitted"] is None

    [mail] = server.received
    assert mail.mail_from == MAIL_FROM and mail.rcpt_tos == ["compta@dupont.example"]
    message = mail.message
    assert message["Subject"] == "Facture 2026-0001 – Acme"
    assert message["From"] == f"Acme <{MAIL_FROM}>" and message["Reply-To"] == "billing@acme.example"
    assert message["To"] == "Brasserie Dupont <compta@dupont.example>"
    assert message["Message-ID"] == body["message_id"]
    assert message["Quittance-Idempotency-Key"] == body["idempotency_key"]
    assert message["Date"] == "Mon, 02 Nov 2026 09:30:00 +0000" and message["Content-Language"] == "fr"
    assert message.get_content_type() == "multipart/mixed"

    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf" and attachment.get_filename() == "2026-0001.pdf"
    assert attachment.get_content() == pdf

    text, html = mail.part("plain"), mail.part("html")
    for part in (text, html):
        assert "Brasserie Dupont" in part and "Acme vous a envoyé la facture 2026-0001." in part
        assert "Consulting, October" in part
        assert "121,00\xa0€" in part and "1 décembre 2026" in part
        assert "Ce lien est valable jusqu’au 31 janvier 2027." in part
        assert "Le PDF est joint à cet e-mail." in part
    assert "Montant à payer\xa0: 121,00\xa0€" in text and "Échéance\xa0: 1 décembre 2026" in text
    assert "Vous pouvez aussi écrire à billing@acme.example ou appeler le +32 2 555 01 02." in text
    assert '<a href="mailto:billing@acme.example"' in html
    # A light brand colour gets dark text, as on the pages.
    assert "background:#f5d90a;color:#1a1a1a" in html
    assert not EXTERNAL.search(html)
    [url] = set(LINK.findall(text))
    assert set(LINK.findall(html)) == {url} == {body["link"]["url"]}

    # The link works, lands on /portal, and shows this invoice only.
    browser = TestClient(app)
    page = browser.get(url)
    assert page.status_code == 200 and page.url.path == "/portal"
    assert [r.status_code for r in page.history] == [303]
    assert "2026-0001" in page.text and "2026-0002" not in page.text

    [sent] = [entry for entry in timeline(tenant) if entry["kind"] == "sent"]
    assert sent["at"] == "2026-11-02T09:30:00+00:00"
    assert sent["detail"] == {"to": "compta@dupont.example", "language": "fr", "subject": body["subject"],
                              "message_id": body["message_id"], "idempotency_key": body["idempotency_key"],
                              "link_expires_at": "2027-01-31T09:30:00+00:00", "attachment": "2026-0001.pdf",
                              "attachment_omitted": None}

    again = send(tenant)
    assert again.status_code == 202
    assert again.json()["message_id"] != body["message_id"] and again.json()["link"]["url"] != url
    assert len(server.received) == 2 and [e["kind"] for e in timeline(tenant)].count("sent") == 2


SUBJECTS = {"en": "Invoice 2026-0001 from Acme", "fr": "Facture 2026-0001 – Acme",
            "nl": "Factuur 2026-0001 van Acme", "de": "Rechnung 2026-0001 von Acme",
            "sv": "Faktura 2026-0001 från Acme"}
GREETINGS = {"en": "Dear Brasserie Dupont,", "fr": "Bonjour Brasserie Dupont,", "nl": "Beste Brasserie Dupont,",
             "de": "Guten Tag Brasserie Dupont,", "sv": "Hej Brasserie Dupont!"}
PAY = {"en": "Pay your invoice online", "fr": "Payez votre facture en ligne", "nl": "Betaal uw factuur online",
       "de": "Rechnung online bezahlen", "sv": "Betala din faktura online"}


@pytest.mark.parametrize("language", list(SUBJECTS))
def test_the_email_speaks_the_customers_language(tenant: Tenant, server: SmtpServer, language: str) -> None:
    tenant.put_customer(locale=language)
    assert tenant.put_invoice().status_code == 201
    response = send(tenant)
    assert response.status_code == 202, response.text
    [mail] = server.received
    assert mail.message["Subject"] == SUBJECTS[language] and mail.message["Content-Language"] == language
    text, html = mail.part("plain"), mail.part("html")
    assert text.startswith(GREETINGS[language]) and GREETINGS[language] in html
    assert PAY[language] in html and f'<html lang="{language}">' in html
    if language != "en":
        assert "Amount to pay" not in text and "Kind regards" not in text


def test_values_from_the_api_are_text_in_the_html(tenant: Tenant, server: SmtpServer, database: Any) -> None:
    # The API refuses a line break in a name (a single-line field); one stored before that rule is still
    # only text in the mail.
    name = "<script>alert(1)</script>\r\nBcc: victim@evil.example"
    assert tenant.client.put("/api/v1/customers/C1", json={"name": name}).status_code == 422
    tenant.put_customer(locale="en")
    with database.transaction() as conn:
        conn.execute(customers.update().where(customers.c.external_id == "C1").values(name=name))
    assert tenant.put_invoice(title='<script>alert(2)</script><img src="https://evil.example/t.gif">',
                              number="<b>7</b>").status_code == 201
    response = send(tenant)
    assert response.status_code == 202, response.text
    [mail] = server.received
    assert mail.rcpt_tos == ["compta@dupont.example"] and "Bcc" not in mail.message
    html = mail.part("html")
    assert "Dear &lt;script&gt;alert(1)&lt;/script&gt;\nBcc: victim@evil.example," in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;&lt;img src=&#34;https://evil.example/t.gif&#34;&gt;" in html
    assert "invoice &lt;b&gt;7&lt;/b&gt;." in html
    assert "<script" not in html and "<b>" not in html and not EXTERNAL.search(html)
    # The plain-text part is never rendered as HTML: there the values are as they were written.
    assert "<script>alert(2)</script>" in mail.part("plain")
    assert mail.message["Subject"] == "Invoice <b>7</b> from Acme"


def test_what_the_email_says_follows_the_invoice(tenant: Tenant, server: SmtpServer) -> None:
    tenant.put_customer(locale="en")
    tenant.put_invoice("PAID-1", number="2026-0003", status="paid", amount_due="0.00")
    tenant.put_invoice("CN-1", number="CN-0001", kind="credit_note", total="50.00", amount_due="0.00",
                       lines=[{"description": "Refund", "quantity": "1", "unit_price": "50.00", "vat_rate": "0",
                               "total": "50.00"}])
    assert send(tenant, "PAID-1").status_code == 202
    assert send(tenant, "CN-1").status_code == 202
    paid, credit = server.received
    assert "Nothing is left to pay on this invoice." in paid.part("plain")
    assert "See your invoice online" in paid.part("html") and "Pay your invoice online" not in paid.part("html")
    assert credit.message["Subject"] == "Credit note CN-0001 from Acme"
    assert "Acme has issued credit note CN-0001 to you." in credit.part("plain")
    assert "Amount: €50.00" in credit.part("plain")


def test_a_pdf_too_large_to_attach_is_left_on_the_portal(tenant: Tenant, server: SmtpServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("portal.web.api.send.MAX_ATTACHMENT_BYTES", 100)
    tenant.put_customer(locale="en")
    tenant.put_invoice()
    assert tenant.client.put("/api/v1/invoices/INV-1/document", content=make_pdf(), headers=PDF).status_code == 201
    body = send(tenant).json()
    assert body["attachment"] is None and body["attachment_omitted"] == "too_large"
    [mail] = server.received
    assert list(mail.message.iter_attachments()) == []
    assert "The PDF is too large to attach; you can download it from the page above." in mail.part("plain")


def test_no_email_address_is_422_and_drafts_are_409(tenant: Tenant, server: SmtpServer, database: Any) -> None:
    tenant.put_customer(email=None)
    tenant.put_invoice()
    response = send(tenant)
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/no-recipient") and "C1" in response.json()["detail"]

    tenant.put_customer()
    tenant.client.put("/api/v1/invoices/DRAFT-1", json=invoice_body(status="draft", number=None))
    draft = send(tenant, "DRAFT-1")
    assert draft.status_code == 409 and draft.json()["code"] == "not_sendable"
    assert send(tenant, "NOPE").status_code == 404
    assert server.received == [] and link_count(database) == 0
    assert [e["kind"] for e in timeline(tenant)] == ["created"]


def test_smtp_down_is_503_and_nothing_is_recorded(settings: Settings, database: Any, clock: Any,
                                                  tenant: Tenant) -> None:
    tenant.put_invoice()
    down = SmtpSettings(host="127.0.0.1", port=free_port(), starttls=False, mail_from=MAIL_FROM, timeout=2)
    client = with_smtp(settings, down, database, clock, tenant)
    response = client.post("/api/v1/invoices/INV-1/send")
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "60"
    assert response.json()["type"].endswith("/mail-unavailable")
    assert "nothing was recorded" in response.json()["detail"]
    assert "127.0.0.1" not in response.text  # the server's mail setup is not the caller's business
    assert [e["kind"] for e in timeline(tenant)] == ["created"]
    assert link_count(database) == 0

    unconfigured = with_smtp(settings, SmtpSettings(), database, clock, tenant)
    assert unconfigured.post("/api/v1/invoices/INV-1/send").status_code == 503
    assert link_count(database) == 0


def test_starttls_required_but_not_offered_is_503(settings: Settings, database: Any, clock: Any, tenant: Tenant,
                                                  server: SmtpServer) -> None:
    tenant.put_invoice()
    client = with_smtp(settings, server.settings(starttls=True), database, clock, tenant)
    assert client.post("/api/v1/invoices/INV-1/send").status_code == 503
    assert server.received == [] and link_count(database) == 0


def test_a_refused_recipient_is_422_and_nothing_is_recorded(tenant: Tenant, server: SmtpServer,
                                                           database: Any) -> None:
    tenant.put_invoice()
    server.mailbox.refuse["compta@dupont.example"] = "550 5.1.1 <compta@dupont.example>: No such user"
    response = send(tenant)
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/mail-refused") and "No such user" in response.json()["detail"]
    assert [e["kind"] for e in timeline(tenant)] == ["created"] and link_count(database) == 0

    server.mailbox.refuse["compta@dupont.example"] = "452 4.2.2 Mailbox full, try later"
    assert send(tenant).status_code == 503
    assert server.received == [] and link_count(database) == 0


def test_a_message_that_may_have_gone_keeps_its_link(app: Any, tenant: Tenant, server: SmtpServer,
                                                     database: Any) -> None:
    """The server takes the message and hangs up before saying so: 503, but the link in it must work."""
    tenant.put_invoice()
    server.mailbox.hang_up_after_data = True
    response = send(tenant)
    assert response.status_code == 503 and "may still arrive" in response.json()["detail"]
    assert [e["kind"] for e in timeline(tenant)] == ["created"] and link_count(database) == 1
    [mail] = server.received
    [url] = set(LINK.findall(mail.part("plain")))
    page = TestClient(app).get(url)
    assert page.status_code == 200 and page.url.path == "/portal"


def test_the_operation_is_in_the_openapi_document(app: Any) -> None:
    document = TestClient(app).get("/api/v1/openapi.json").json()
    operation = document["paths"]["/api/v1/invoices/{external_id}/send"]["post"]
    assert operation["operationId"] == "sendInvoice"
    assert set(operation["responses"]) == {"202", "401", "404", "409", "422", "503"}
