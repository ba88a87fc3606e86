"""The email connector against a real SMTP server on loopback (aiosmtpd, tests/support/smtp.py): receipts to
debtors in their language, remarks to the finance address, and SMTP trouble sorted into retry and failed.
The last tests run it through the outbox worker, from a remark written in the portal to the message."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from portal.connectors import registry
from portal.errors import InvalidInput
from portal.connectors.base import Event, Result
from portal.connectors.email import EmailConnector
from portal.db.connectors import deliveries
from portal.db.invoices import invoices
from portal.domain.outbox import announce
from portal.settings import Settings, SmtpSettings
from portal.worker import Worker, WorkerSettings
from tests.conftest import ENCRYPTION_KEY, START, Tenant
from tests.support.smtp import MAIL_FROM, SmtpServer, free_port, silent_server, smtp_server

FINANCE = "finance@acme.example"
CUSTOMER = {"external_id": "C1", "name": "Brasserie Dupont", "email": "compta@dupont.example", "locale": "fr-BE"}
INVOICE = {"external_id": "INV-1", "number": "2026-0001", "currency": "EUR", "total": "121.00",
           "amount_due": "121.00", "amount_paid": "121.00", "status": "open", "customer": "C1"}
PAID = {"invoice": "INV-1", "number": "2026-0001", "provider": "mollie", "payment_id": "tr_WDqYK6vllg",
        "amount": "121.00", "currency": "EUR", "amount_paid": "121.00", "overpaid": None}
SETTINGS = {"finance_address": FINANCE, "receipts": True, "sender_name": "Acme Billing"}
# What an HTML part must never hold: a tag that loads or runs something, a stylesheet import, a link to
# anywhere but our own pages, a mail address or a phone number.
EXTERNAL = re.compile(r"<(?:img|link|script|iframe|object|embed|style|form)\b|\ssrc\s*=\s*[\"']|url\(|@import"
                      r"|href\s*=\s*[\"'](?!http://testserver/l/|mailto:|tel:)", re.I)


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with smtp_server() as running:
        yield running


def event(event_type: str = "invoice.paid", data: dict[str, Any] | None = None, *,
          customer: dict[str, Any] | None = None, invoice: dict[str, Any] | None = None, event_id: int = 7) -> Event:
    return Event(id=event_id, type=event_type, organization_slug="acme", created_at=START,
                 data=PAID if data is None else data, invoice=INVOICE if invoice is None else invoice,
                 customer=CUSTOMER if customer is None else customer)


def deliver(connector: EmailConnector, item: Event, key: str = "dlv-0001") -> Result:
    return asyncio.run(connector.deliver(item, key))


def connector(smtp: SmtpSettings, **settings: Any) -> EmailConnector:
    return EmailConnector({**SETTINGS, **settings}, smtp)


# -- Settings --------------------------------------------------------------------------------------------------


def test_settings_are_checked_and_decide_the_events() -> None:
    registry.validate("email", SETTINGS)
    registry.validate("email", {})
    with pytest.raises(InvalidInput) as refused:
        registry.validate("email", {"finance_address": "not an address", "receipts": "yes", "language": "it",
                                    "sender_name": "", "cc": "x"})
    assert {error.path: error.message for error in refused.value.errors} == {
        "/settings/finance_address": "an email address such as finance@example.com",
        "/settings/receipts": "Input should be a valid boolean",
        "/settings/language": "Input should be 'en', 'fr', 'nl', 'de' or 'sv'",
        "/settings/sender_name": "String should have at least 1 character",
        "/settings/cc": "Extra inputs are not permitted"}
    with pytest.raises(InvalidInput, match="invalid fields") as bad:
        EmailConnector({"finance_address": "a,b@acme.example"}, SmtpSettings())
    assert bad.value.errors[0].path == "/settings/finance_address"

    both = EmailConnector(SETTINGS, SmtpSettings())
    assert both.type == "email"
    assert [t for t in ("invoice.paid", "invoice.partially_paid", "payment.refunded", "payment.charged_back",
                        "payment.needs_review", "remark.created") if both.wants(t)] == [
        "invoice.paid", "invoice.partially_paid", "remark.created"]
    assert not EmailConnector({"finance_address": FINANCE}, SmtpSettings()).wants("invoice.paid")
    assert not EmailConnector({"receipts": True}, SmtpSettings()).wants("remark.created")
    # The registry works the event types out from the settings alone.
    registry.validate("email", {"receipts": True})
    assert registry.event_types("email", {"receipts": True}) == ["invoice.paid", "invoice.partially_paid"]
    assert registry.event_types("email", {"finance_address": FINANCE}) == ["remark.created"]


# -- Receipts --------------------------------------------------------------------------------------------------


def test_a_paid_invoice_sends_the_debtor_a_receipt_in_their_language(server: SmtpServer) -> None:
    result = deliver(connector(server.settings()), event())
    assert result.outcome == "delivered" and result.status_code == 250, result
    [mail] = server.received
    assert mail.mail_from == MAIL_FROM and mail.rcpt_tos == ["compta@dupont.example"]
    message = mail.message
    assert message["Subject"] == "Paiement reçu pour la facture 2026-0001"
    assert message["From"] == f"Acme Billing <{MAIL_FROM}>"
    assert message["To"] == "Brasserie Dupont <compta@dupont.example>"
    assert message["Reply-To"] == FINANCE
    assert message["Content-Language"] == "fr" and message["Auto-Submitted"] == "auto-generated"
    assert message["Quittance-Idempotency-Key"] == "dlv-0001"
    assert re.fullmatch(r"<[0-9a-f]{40}@quittance\.example>", message["Message-ID"])
    assert message["Date"].endswith("+0000")
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]

    text, html = mail.part("plain"), mail.part("html")
    for body in (text, html):
        assert "Nous avons bien reçu votre paiement de 121,00\xa0€ pour la facture 2026-0001 le 2 novembre 2026. " \
               "Merci." in body
        assert "La facture est maintenant entièrement payée." in body
        assert "tr_WDqYK6vllg" in body
    assert text.startswith("Bonjour Brasserie Dupont,\n\nNous avons bien reçu votre paiement de 121,00")
    assert '<html lang="fr">' in html and not EXTERNAL.search(html)


def test_a_partial_payment_says_what_is_left_and_each_language_has_its_subject(server: SmtpServer) -> None:
    subjects = {"en": "Payment received for invoice 2026-0001", "fr": "Paiement reçu pour la facture 2026-0001",
                "nl": "Betaling ontvangen voor factuur 2026-0001", "de": "Zahlung für Rechnung 2026-0001 eingegangen",
                "sv": "Betalning mottagen för faktura 2026-0001"}
    still = {"en": "Still to pay on this invoice: €79.00.", "fr": "Reste à payer sur cette facture\xa0: 79,00\xa0€.",
             "nl": "Nog te betalen op deze factuur: € 79,00.", "de": "Auf diese Rechnung noch zu zahlen: 79,00\xa0€.",
             "sv": "Kvar att betala på fakturan: 79,00\xa0€."}
    partial = {**PAID, "amount": "42.00", "amount_paid": "42.00"}
    for language in subjects:
        customer = {**CUSTOMER, "locale": language}
        result = deliver(connector(server.settings()), event("invoice.partially_paid", partial, customer=customer,
                                                             invoice={**INVOICE, "amount_paid": "42.00"}))
        assert result.outcome == "delivered", result
        mail = server.received[-1]
        assert mail.message["Subject"] == subjects[language]
        text = mail.part("plain")
        assert still[language].replace("\xa0", " ") in text.replace("\xa0", " ").replace("\u202f", " ")
        assert "paid in full" not in text


def test_an_overpayment_is_mentioned(server: SmtpServer) -> None:
    deliver(connector(server.settings()), event(data={**PAID, "amount": "150.00", "amount_paid": "150.00",
                                                      "overpaid": "29.00"}, customer={**CUSTOMER, "locale": "en"}))
    assert "You paid €29.00 more than the invoice total" in server.received[0].part("plain")


def test_no_receipt_without_a_usable_email(server: SmtpServer) -> None:
    for email in (None, "", "a,b@dupont.example"):
        result = deliver(connector(server.settings()), event(customer={**CUSTOMER, "email": email}))
        assert result.outcome == "delivered" and "no usable email" in result.detail
    assert server.received == []


def test_names_and_titles_are_text_in_the_html_and_cannot_add_headers(server: SmtpServer) -> None:
    customer = {**CUSTOMER, "name": "<script>alert(1)</script>\r\nBcc: victim@evil.example"}
    deliver(connector(server.settings(), sender_name='Acme <img src="https://evil.example/t.gif">'),
            event(customer=customer))
    [mail] = server.received
    assert mail.rcpt_tos == ["compta@dupont.example"]
    assert "Bcc" not in mail.message and "victim" not in str(mail.message["To"].addresses[0].addr_spec)
    html = mail.part("html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=&#34;https://evil.example/t.gif&#34;&gt;" in html
    assert "<script" not in html and not EXTERNAL.search(html)


def test_each_attempt_of_a_delivery_is_the_same_message(server: SmtpServer) -> None:
    sending = connector(server.settings())
    deliver(sending, event(), "dlv-0001")
    deliver(sending, event(), "dlv-0001")
    deliver(sending, event(), "dlv-0002")
    first, again, other = (mail.message for mail in server.received)
    assert first["Message-ID"] == again["Message-ID"] != other["Message-ID"]
    assert first["Quittance-Idempotency-Key"] == again["Quittance-Idempotency-Key"] == "dlv-0001"


# -- Remarks ---------------------------------------------------------------------------------------------------


def test_a_remark_goes_to_the_finance_address_with_how_to_answer(server: SmtpServer) -> None:
    remark = {"remark_id": 3, "invoice": "INV-1", "number": "2026-0001", "reply_to": "jan@dupont.example",
              "body": "The VAT rate is wrong.\n<script>alert('x')</script>"}
    result = deliver(connector(server.settings(), language="de"), event("remark.created", remark))
    assert result.outcome == "delivered", result
    [mail] = server.received
    assert mail.rcpt_tos == [FINANCE]
    message = mail.message
    assert message["Subject"] == "Nachricht von Brasserie Dupont zur Rechnung 2026-0001"
    assert message["Reply-To"] == "jan@dupont.example" and message["Content-Language"] == "de"
    text, html = mail.part("plain"), mail.part("html")
    assert ("Brasserie Dupont hat eine Nachricht zur Rechnung 2026-0001 geschrieben (INV-1 in Ihrem "
            "Abrechnungssystem):") in text
    assert "> The VAT rate is wrong.\n> <script>alert('x')</script>" in text
    assert "POST /api/v1/invoices/INV-1/remarks" in text and "POST /api/v1/invoices/INV-1/remarks" in html
    assert "Antwort erbeten an: jan@dupont.example" in text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html and "<script" not in html


def test_a_remark_without_an_email_to_answer_to_has_no_reply_to(server: SmtpServer) -> None:
    remark = {"remark_id": 3, "invoice": "INV-1", "number": "2026-0001", "reply_to": "+32 2 555 01 02",
              "body": "Call me"}
    deliver(connector(server.settings()), event("remark.created", remark, customer={**CUSTOMER, "email": None}))
    message = server.received[0].message
    assert message["Reply-To"] is None
    assert "They would like the answer at: +32 2 555 01 02" in server.received[0].part("plain")
    assert "Replying to this email" not in server.received[0].part("plain")


def test_other_events_are_not_delivered() -> None:
    assert deliver(connector(SmtpSettings()), event("payment.refunded", {})).outcome == "failed"


# -- SMTP trouble ----------------------------------------------------------------------------------------------


def test_nothing_listening_is_retried() -> None:
    smtp = SmtpSettings(host="127.0.0.1", port=free_port(), starttls=False, mail_from=MAIL_FROM, timeout=2)
    result = deliver(connector(smtp), event())
    assert result.outcome == "retry" and "Connection refused" in result.detail, result


def test_a_server_that_never_answers_is_retried() -> None:
    with silent_server() as port:
        smtp = SmtpSettings(host="127.0.0.1", port=port, starttls=False, mail_from=MAIL_FROM, timeout=0.5)
        result = deliver(connector(smtp), event())
    assert result.outcome == "retry" and "timed out" in result.detail, result


def test_unconfigured_mail_is_retried() -> None:
    assert deliver(connector(SmtpSettings()), event()).outcome == "retry"


def test_a_temporary_refusal_is_retried_and_a_permanent_one_fails(server: SmtpServer) -> None:
    server.mailbox.refuse["compta@dupont.example"] = "450 4.2.1 Mailbox busy, try later"
    busy = deliver(connector(server.settings()), event())
    assert (busy.outcome, busy.status_code) == ("retry", 450) and "Mailbox busy" in busy.detail

    server.mailbox.refuse["compta@dupont.example"] = "550 5.1.1 No such user"
    gone = deliver(connector(server.settings()), event())
    assert (gone.outcome, gone.status_code) == ("failed", 550) and "No such user" in gone.detail
    assert server.received == []


def test_a_lost_answer_is_retried_with_the_same_message(server: SmtpServer) -> None:
    """The server took it but the answer never came: the retry is recognisable as the same message."""
    sending = connector(server.settings())
    server.mailbox.hang_up_after_data = True
    assert deliver(sending, event(), "dlv-0009").outcome == "retry"
    server.mailbox.hang_up_after_data = False
    assert deliver(sending, event(), "dlv-0009").outcome == "delivered"
    first, again = (mail.message for mail in server.received)
    assert first["Message-ID"] == again["Message-ID"]
    assert first["Quittance-Idempotency-Key"] == again["Quittance-Idempotency-Key"] == "dlv-0009"


def test_starttls_is_required_when_configured(server: SmtpServer) -> None:
    """aiosmtpd without a certificate offers no STARTTLS: nothing may go out in the clear."""
    result = deliver(connector(server.settings(starttls=True)), event())
    assert result.outcome == "retry" and "STARTTLS" in result.detail
    assert server.received == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_the_configured_login_is_used() -> None:
    with smtp_server(login_required=True) as server:
        server.mailbox.accounts["quittance"] = "s3cret"
        assert deliver(connector(server.settings(username="quittance", password="s3cret")), event()).outcome \
            == "delivered"
        wrong = deliver(connector(server.settings(username="quittance", password="wrong")), event())
        anonymous = deliver(connector(server.settings()), event())
        # smtplib tries each mechanism the server offers (PLAIN, then LOGIN) before giving up.
        assert server.mailbox.logins[0] == ("quittance", "s3cret")
        assert set(server.mailbox.logins[1:]) == {("quittance", "wrong")}
        assert len(server.received) == 1
    assert (wrong.outcome, wrong.status_code) == ("retry", 535)
    assert anonymous.outcome == "retry"


def test_the_password_is_not_in_the_settings_repr() -> None:
    assert "s3cret" not in repr(Settings(smtp=SmtpSettings(password="s3cret")))


# -- Through the outbox worker ---------------------------------------------------------------------------------

CSRF = re.compile(r'<input type="hidden" name="csrf" value="([^"]+)">')


def drain(database: Any, clock: Any, smtp: SmtpSettings) -> None:
    async def go() -> None:
        worker = Worker(database, Settings(smtp=smtp, encryption_keys=(ENCRYPTION_KEY,)), clock=clock,
                        options=WorkerSettings(timeout_seconds=2, reconcile_seconds=1e9))
        try:
            await worker.drain()
        finally:
            await worker.aclose()
    asyncio.run(go())


def delivery_states(database: Any) -> list[tuple[str, int, int | None]]:
    with database.transaction() as conn:
        return [(r.status, r.attempts, r.last_status)
                for r in conn.execute(sa.select(deliveries).order_by(deliveries.c.id))]


def write_remark(app: Any, tenant: Tenant, body: str, reply_to: str) -> None:
    """A debtor opens their link and writes a remark on the invoice page."""
    link = tenant.client.post("/api/v1/customers/C1/portal-links", json={}).json()["url"]
    browser = TestClient(app)
    page = browser.get(link)
    invoice_path = re.search(r'href="(/portal/invoices/\d+)"', page.text)
    assert invoice_path, page.text
    invoice_page = browser.get(invoice_path.group(1))
    csrf = CSRF.search(invoice_page.text)
    assert csrf
    posted = browser.post(f"{invoice_path.group(1)}/remarks", data={"csrf": csrf.group(1), "body": body,
                                                                    "reply_to": reply_to})
    assert posted.status_code == 200, posted.text


def test_a_remark_in_the_portal_reaches_finance_through_the_worker(app: Any, tenant: Tenant, database: Any,
                                                                  clock: Any, server: SmtpServer) -> None:
    put = tenant.client.put("/api/v1/connectors/mail", json={"type": "email", "settings": {
        "finance_address": FINANCE, "receipts": True, "language": "fr"}})
    assert put.status_code == 201, put.text
    assert put.json()["event_types"] == ["invoice.paid", "invoice.partially_paid", "remark.created"]
    assert tenant.put_invoice().status_code == 201
    write_remark(app, tenant, "Le taux de TVA est erroné.", "jan@dupont.example")

    drain(database, clock, server.settings())
    assert delivery_states(database) == [("delivered", 1, 250)]
    [mail] = server.received
    assert mail.rcpt_tos == [FINANCE]
    assert mail.message["Subject"] == "Message de Brasserie Dupont sur la facture 2026-0001"
    assert mail.message["Reply-To"] == "jan@dupont.example"
    assert "> Le taux de TVA est erroné." in mail.part("plain")
    key = mail.message["Quittance-Idempotency-Key"]
    with database.transaction() as conn:
        assert conn.scalar(sa.select(deliveries.c.idempotency_key)) == key


def test_the_worker_retries_while_smtp_is_down_and_gives_up_on_a_refused_recipient(
        app: Any, tenant: Tenant, database: Any, clock: Any, server: SmtpServer) -> None:
    put = tenant.client.put("/api/v1/connectors/mail", json={"type": "email", "settings": {"receipts": True}})
    assert put.status_code == 201, put.text
    assert tenant.put_invoice().status_code == 201
    with database.transaction() as conn:
        invoice_id = conn.scalar(sa.select(invoices.c.id).where(invoices.c.external_id == "INV-1"))
    database.run(announce, tenant.org.id, "invoice.paid", PAID, clock.now(), invoice_id=invoice_id)

    down = SmtpSettings(host="127.0.0.1", port=free_port(), starttls=False, mail_from=MAIL_FROM, timeout=2)
    drain(database, clock, down)
    assert delivery_states(database) == [("pending", 1, None)]

    server.mailbox.refuse["compta@dupont.example"] = "550 5.1.1 No such user"
    clock.advance(hours=2)
    drain(database, clock, server.settings())
    assert delivery_states(database) == [("dead", 2, 550)]
    assert server.received == []
