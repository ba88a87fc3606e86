"""Send an invoice to its debtor by email: `POST /api/v1/invoices/{external_id}/send`.

The email, in the customer's language, holds the amount due and the due date, a fresh portal link, and the
PDF when the invoice has one of at most 10 MB (larger ones are left for the debtor to download from the
portal, and the answer says so).

The link is scoped to this one invoice: an invoice email is commonly forwarded (to accounts payable, a
colleague, an accountant), and whoever gets it should see that invoice, not every invoice of the customer.
It lasts the default link lifetime (90 days).

The mail server must take the message before anything is recorded: if it cannot be reached (or answers
"try later"), the answer is 503 with Retry-After and nothing remains (the link made for the message is
deleted again); if it refuses the recipient or the message for good, 422. There is no queue: the caller,
which decided to send now, decides when to try again. Once the server has taken it, "sent" goes on the
invoice's timeline (recipient, subject, Message-ID and idempotency key) and the answer is 202: the message is
on its way, not yet in the debtor's mailbox. One case in between: the connection breaks while the message is
being handed over. The server may have taken it, so its link is kept (and the 503 says the message may
still arrive); nothing goes on the timeline.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from portal.domain import links
from portal.domain.debtor import outstanding_minor
from portal.domain.customers import get_customer
from portal.domain.invoices import get_invoice
from portal.domain.organizations import contact_of, is_color
from portal.domain.timeline import record_timeline
from portal.errors import Conflict
from portal.mail import (
    MAX_ATTACHMENT_BYTES, Attachment, MailError, build_message, message_id, render, send, valid_address,
)
from portal.i18n import Formatter, language_of, translations
from portal.storage import DocumentStore, read_bytes
from portal.tokens import PORTAL_LINK
from portal.web.api.context import ApiContext, json_response
from portal.schemas.convert import iso
from portal.web.api.operations import Api
from portal.web.api.problems import HttpProblem
from portal.schemas.models import Problem
from portal.web.brand import text_color_on
from portal.web.downloads import safe_filename

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 60
PROBLEM = "application/problem+json"


class SentLink(BaseModel):
    url: str
    expires_at: dt.datetime
    scope: Literal["invoice"] = Field(description="The link shows only this invoice.")


class SentAttachment(BaseModel):
    filename: str
    size: int
    sha256: str


class SendOut(BaseModel):
    invoice: str
    to: str
    language: str
    subject: str
    message_id: str
    idempotency_key: str = Field(description="Also in the message's Quittance-Idempotency-Key header.")
    sent_at: dt.datetime
    link: SentLink
    attachment: SentAttachment | None
    attachment_omitted: Literal["too_large", "missing"] | None = Field(
        description="Why the invoice's PDF is not attached although it has one: larger than 10 MB, or "
                    "missing from storage. The debtor can still download it from the portal.")


@dataclass(frozen=True)
class InvoiceMail:
    """Everything the message needs, read in one transaction."""

    invoice_id: int
    external_id: str
    customer_external_id: str
    number: str
    kind: str
    title: str | None
    currency: str
    total_minor: int
    due_minor: int
    due_date: dt.date | None
    document_sha256: str | None
    document_size: int | None
    customer_name: str
    customer_email: str | None
    customer_locale: str
    organization: str
    contact_email: str | None
    contact_phone: str | None
    brand_color: str | None


def _read(conn: sa.Connection, organization_id: int, external_id: str) -> InvoiceMail:
    invoice = get_invoice(conn, organization_id, external_id)
    if invoice.status in ("draft", "cancelled"):
        raise Conflict(f"invoice {external_id!r} is {invoice.status}: only issued invoices are sent",
                       code="not_sendable")
    customer = get_customer(conn, organization_id, invoice.customer_external_id)
    org = contact_of(conn, organization_id)
    return InvoiceMail(
        invoice_id=invoice.id, external_id=invoice.external_id, customer_external_id=invoice.customer_external_id,
        number=invoice.number or invoice.external_id, kind=invoice.kind, title=invoice.title,
        currency=invoice.currency, total_minor=invoice.total_minor, due_minor=outstanding_minor(invoice),
        due_date=invoice.due_date, document_sha256=invoice.document_sha256, document_size=invoice.document_size,
        customer_name=customer.name, customer_email=customer.email, customer_locale=customer.locale,
        organization=org.name, contact_email=org.contact_email, contact_phone=org.contact_phone,
        brand_color=org.brand_color)


def _attachment(store: DocumentStore, invoice: InvoiceMail) -> tuple[Attachment | None, str | None]:
    """The PDF to attach, or why not: (None, None) when the invoice has no PDF."""
    if invoice.document_sha256 is None:
        return None, None
    if (invoice.document_size or 0) > MAX_ATTACHMENT_BYTES:
        return None, "too_large"
    if not store.exists(invoice.document_sha256):
        return None, "missing"
    content = read_bytes(store, invoice.document_sha256)
    if len(content) > MAX_ATTACHMENT_BYTES:
        return None, "too_large"
    return Attachment(safe_filename(invoice.number, "pdf"), content), None


def unavailable(reason: str) -> HttpProblem:
    """503. The mail server's own words stay in our log: the server's setup is not the caller's business."""
    return HttpProblem(503, "mail-unavailable", "Mail server unavailable",
                       f"The email was not sent and nothing was recorded: {reason}. Try again later.",
                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def register(api: Api) -> None:
    @api.operation(
        "POST", "/invoices/{external_id}/send", operation_id="sendInvoice", tags=("lifecycle",),
        summary="Email the invoice to the debtor, with a portal link and the PDF",
        responses={
            202: ("The mail server took the message: what was sent", SendOut),
            409: ("The invoice is a draft or cancelled (`not_sendable`)", Problem, PROBLEM),
            422: ("The customer has no usable email address, or the mail server refused it for good",
                  Problem, PROBLEM),
            503: ("The mail server is unreachable, busy or not configured: nothing was sent or recorded; "
                  "try again after Retry-After seconds", Problem, PROBLEM),
        })
    async def send_invoice(ctx: ApiContext) -> Response:
        """The email goes to the customer's email address, in the customer's language, with the amount still
        due, the due date, a new portal link that shows only this invoice (so the email can be forwarded
        safely) and the PDF when there is one of at most 10 MB. Every call sends a new email: "sent" is
        recorded on the invoice's timeline once the mail server has taken it, never before."""
        external_id, services = ctx.external_id(), ctx.services
        smtp = services.settings.smtp
        invoice = await services.db.read(_read, ctx.org_id, external_id)
        to = valid_address(invoice.customer_email)
        if to is None:
            problem = "has no email address" if not invoice.customer_email else "has an email address we cannot use"
            raise HttpProblem(422, "no-recipient", "No email address",
                              f"Customer {invoice.customer_external_id!r} {problem}: set one with "
                              f"PUT /api/v1/customers/{invoice.customer_external_id}.")
        if not smtp.configured:
            raise unavailable("sending mail is not configured on this server")
        attachment, omitted = await run_in_threadpool(_attachment, services.documents, invoice)
        now = ctx.now()
        url, expires_at = await services.db.write(
            links.issue_url, services.tokens, services.settings, ctx.org_id, invoice.customer_external_id, now,
            invoice_external_ids=[invoice.external_id])

        language = language_of(invoice.customer_locale)
        fmt = Formatter.for_language(language, invoice.customer_locale)
        subject = (translations(language).gettext("Credit note %(number)s from %(organization)s")
                   if invoice.kind == "credit_note"
                   else translations(language).gettext("Invoice %(number)s from %(organization)s")) % {
            "number": invoice.number, "organization": invoice.organization}
        color = invoice.brand_color if invoice.brand_color and is_color(invoice.brand_color) else None
        context: dict[str, Any] = {
            "subject": subject, "organization": invoice.organization, "customer_name": invoice.customer_name,
            "kind": invoice.kind, "number": invoice.number, "title": invoice.title,
            "total": fmt.money(invoice.total_minor, invoice.currency),
            "amount_due": fmt.money(invoice.due_minor, invoice.currency) if invoice.due_minor > 0 else None,
            "due_date": fmt.date(invoice.due_date, "long") if invoice.due_date else None,
            "url": url, "link_expires": fmt.date(expires_at, "long"),
            "attached": attachment is not None, "attachment_omitted": omitted,
            "contact_email": invoice.contact_email, "contact_phone": invoice.contact_phone,
            **({"brand_color": color, "brand_text": text_color_on(color)} if color else {}),
        }
        text, html = render("invoice", language, context)
        key = f"send-{uuid.uuid4().hex}"
        mid = message_id(smtp.mail_from, str(ctx.org_id), invoice.external_id, key)
        message = build_message(
            mail_from=smtp.mail_from, sender_name=invoice.organization, to=to, to_name=invoice.customer_name,
            subject=subject, text=text, html=html, language=language, idempotency_key=key, message_id=mid,
            now=now, reply_to=valid_address(invoice.contact_email),
            attachments=[attachment] if attachment else [])
        try:
            await send(smtp, message)
        except MailError as exc:
            if exc.uncertain:
                # The server may have taken the message before the connection broke: its link must work.
                log.warning("invoice email may not have been sent (organization %s, invoice %s, %s): %s",
                            ctx.org_id, invoice.external_id, mid, exc.detail)
                raise unavailable("the connection to the mail server broke while handing the message over, "
                                  "so it may still arrive") from exc
            link_id = services.tokens.verify(PORTAL_LINK, url.rpartition("/l/")[2],
                                             services.settings.link_days_max * 86400)["l"]
            await services.db.write(links.forget_link, ctx.org_id, link_id)
            if exc.temporary:
                log.warning("invoice email not sent (organization %s, invoice %s): %s", ctx.org_id,
                            invoice.external_id, exc.detail)
                raise unavailable("the mail server could not be reached or asked us to try later") from exc
            raise HttpProblem(422, "mail-refused", "Refused by the mail server",
                              f"The mail server refused the message for good; nothing was recorded "
                              f"({exc.detail}).") from exc

        detail = {"to": to, "language": language, "subject": subject, "message_id": mid, "idempotency_key": key,
                  "link_expires_at": iso(expires_at),
                  "attachment": attachment.filename if attachment else None, "attachment_omitted": omitted}
        await services.db.write(record_timeline, ctx.org_id, invoice.invoice_id, now, "sent", detail)
        return json_response({
            "invoice": invoice.external_id, "to": to, "language": language, "subject": subject, "message_id": mid,
            "idempotency_key": key, "sent_at": iso(now),
            "link": {"url": url, "expires_at": iso(expires_at), "scope": "invoice"},
            "attachment": {"filename": attachment.filename, "size": len(attachment.content),
                           "sha256": invoice.document_sha256} if attachment else None,
            "attachment_omitted": omitted,
        }, 202)
