"""The email connector: receipts to debtors, and debtors' remarks to the organization's finance address.

Built by the connector registry from a connector's settings and the server's SMTP settings:

    EmailConnector({"finance_address": "finance@acme.example", "receipts": True}, settings.smtp)
    EmailConnector.from_settings(connector_settings, app_settings)      # the same, from the app's Settings

Settings (a JSON object; unknown keys are refused):
    finance_address  where `remark.created` is sent; absent or null: remarks are not emailed
    receipts         true: `invoice.paid` and `invoice.partially_paid` send the debtor a receipt (default false)
    language         language of the finance notifications: en (default), fr, nl, de, sv
    sender_name      display name of From: on every message, e.g. the organization's name (default none)

Receipts go to the customer's email in the customer's language, with Reply-To the finance address when there
is one; a customer without a usable email gets nothing (the delivery is done, with a note). The remark goes to
the finance address with Reply-To the debtor's contact (the address they left with the remark, else the
customer's email) and says how to answer in the portal thread.

Each attempt of one delivery carries the same idempotency key, in the `Quittance-Idempotency-Key` header and
in the Message-ID, so a message sent twice (the server took it, its reply was lost) is recognisable.
Outcomes: taken by the server -> delivered; temporary trouble (unreachable, timeout, 4xx, our SMTP setup)
-> retry; a 5xx for the message or recipient -> failed. `status_code` is the SMTP reply code, if any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, StringConstraints

from portal.clock import Clock, SystemClock
from portal.connectors.base import Event, Result
from portal.i18n import LANGUAGES, Formatter, language_of, translations
from portal.mail import MailError, build_message, message_id, render, send, valid_address
from portal.money import MoneyError, parse_minor
from portal.schemas.models import Strict
from portal.schemas.validation import refusal, validate
from portal.settings import Settings, SmtpSettings

RECEIPT_EVENTS = ("invoice.paid", "invoice.partially_paid")
REMARK_EVENT = "remark.created"


def _finance_address(value: str) -> str:
    if valid_address(value) is None:
        raise refusal("an email address such as finance@example.com")
    return value


@dataclass(frozen=True)
class EmailSettings:
    finance_address: str | None = None
    receipts: bool = False
    language: str = "en"
    sender_name: str | None = None


@dataclass(frozen=True)
class Outgoing:
    to: str
    to_name: str | None
    reply_to: str | None
    language: str
    subject: str
    text: str
    html: str


class EmailConnectorSettings(Strict):
    finance_address: Annotated[str, AfterValidator(_finance_address)] | None = None
    receipts: bool = False
    language: Literal[LANGUAGES] = "en"  # type: ignore[valid-type]  # a Literal built from a tuple, valid at run time
    sender_name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


def parse_settings(settings: dict[str, Any]) -> EmailSettings:
    """Raises InvalidInput (field errors under /settings) for settings EmailConnectorSettings refuses."""
    values = validate(EmailConnectorSettings, settings, "/settings")
    return EmailSettings(finance_address=values.finance_address, receipts=values.receipts,
                         language=values.language, sender_name=values.sender_name)


class EmailConnector:
    type = "email"

    def __init__(self, settings: dict[str, Any], smtp: SmtpSettings, *, clock: Clock | None = None) -> None:
        """InvalidInput for settings that EmailConnectorSettings refuses."""
        self.settings = parse_settings(settings)
        self.smtp = smtp
        self.clock = clock or SystemClock()

    @classmethod
    def from_settings(cls, settings: dict[str, Any], app_settings: Settings) -> EmailConnector:
        return cls(settings, app_settings.smtp)

    @staticmethod
    def wants_type(settings: dict[str, Any], event_type: str) -> bool:
        """`wants` of a connector with these (valid) settings, without building one."""
        return _wants(parse_settings(settings), event_type)

    def wants(self, event_type: str) -> bool:
        return _wants(self.settings, event_type)

    async def deliver(self, event: Event, idempotency_key: str) -> Result:
        if not self.wants(event.type):
            return Result("failed", detail=f"the email connector does not deliver {event.type} events")
        try:
            outgoing = self._receipt(event) if event.type in RECEIPT_EVENTS else self._remark(event)
        except (KeyError, TypeError, ValueError) as exc:
            return Result("failed", detail=f"event {event.id} cannot be made into an email: {exc!r}")
        if isinstance(outgoing, str):
            return Result("delivered", detail=outgoing)
        if not self.smtp.configured or valid_address(self.smtp.mail_from) is None:
            return Result("retry", detail="sending mail is not configured (PORTAL_SMTP_HOST and PORTAL_MAIL_FROM)")
        mid = message_id(self.smtp.mail_from, event.organization_slug, idempotency_key)
        message = build_message(
            mail_from=self.smtp.mail_from, sender_name=self.settings.sender_name, to=outgoing.to,
            to_name=outgoing.to_name, subject=outgoing.subject, text=outgoing.text, html=outgoing.html,
            language=outgoing.language, idempotency_key=idempotency_key, message_id=mid, now=self.clock.now(),
            reply_to=outgoing.reply_to)
        try:
            await send(self.smtp, message)
        except MailError as exc:
            return Result("retry" if exc.temporary else "failed", detail=exc.detail, status_code=exc.code)
        return Result("delivered", detail=f"sent to {outgoing.to}", status_code=250,
                      extra={"message_id": mid, "to": outgoing.to})

    def _receipt(self, event: Event) -> Outgoing | str:
        """The debtor's receipt; a note instead when there is nobody to send it to."""
        customer = event.customer or {}
        to = valid_address(customer.get("email"))
        if to is None:
            return "nothing to send: the customer has no usable email address"
        invoice, data = event.invoice or {}, event.data
        language = language_of(customer.get("locale"))
        fmt = Formatter.for_language(language, customer.get("locale"))
        currency = str(data.get("currency") or invoice.get("currency") or "")
        number = str(invoice.get("number") or data.get("number") or invoice.get("external_id") or data["invoice"])
        remaining = _remaining(invoice, data, currency) if event.type == "invoice.partially_paid" else None
        subject = translations(language).gettext("Payment received for invoice %(number)s") % {"number": number}
        text, html = render("receipt", language, {
            "subject": subject, "customer_name": customer.get("name") or "", "number": number,
            "amount": _money(fmt, data.get("amount"), currency), "paid_on": fmt.date(event.created_at, "long"),
            "remaining": fmt.money(remaining, currency) if remaining else None,
            "overpaid": _money(fmt, data.get("overpaid"), currency) if data.get("overpaid") else None,
            "reference": data.get("payment_id"), "sender_name": self.settings.sender_name,
        })
        return Outgoing(to=to, to_name=customer.get("name"), reply_to=self.settings.finance_address,
                        language=language, subject=subject, text=text, html=html)

    def _remark(self, event: Event) -> Outgoing:
        """The debtor's remark for the finance address, in the connector's language."""
        assert self.settings.finance_address is not None
        customer, invoice, data = event.customer or {}, event.invoice or {}, event.data
        language = self.settings.language
        catalog = translations(language)
        external_id = str(data.get("invoice") or invoice["external_id"])
        number = str(data.get("number") or invoice.get("number") or external_id)
        name = customer.get("name") or catalog.gettext("A customer")
        contact = data.get("reply_to")
        # Replies go to the address the debtor left for the answer, else to the customer's email.
        reply_to = valid_address(contact) or valid_address(customer.get("email"))
        subject = catalog.gettext("Remark from %(customer)s on invoice %(number)s") % {"customer": name,
                                                                                        "number": number}
        text, html = render("remark", language, {
            "subject": subject, "customer_name": name, "number": number, "invoice": external_id,
            "body": str(data["body"]), "contact": contact, "reply_to": reply_to})
        return Outgoing(to=self.settings.finance_address, to_name=None, reply_to=reply_to, language=language,
                        subject=subject, text=text, html=html)


def _wants(settings: EmailSettings, event_type: str) -> bool:
    if event_type in RECEIPT_EVENTS:
        return settings.receipts
    if event_type == REMARK_EVENT:
        return settings.finance_address is not None
    return False


def _amount(value: Any, currency: str) -> int | None:
    """A decimal string of the events ("12.30") in minor units; None when absent or not an amount."""
    if not isinstance(value, str):
        return None
    try:
        return parse_minor(value, currency, allow_negative=True)
    except MoneyError:
        return None


def _money(fmt: Formatter, value: Any, currency: str) -> str:
    """A decimal string of the events as the reader writes amounts; as it came when it is not an amount."""
    minor = _amount(value, currency)
    if minor is None:
        return f"{value} {currency}".strip() if value is not None else ""
    return fmt.money(minor, currency)


def _remaining(invoice: dict[str, Any], data: dict[str, Any], currency: str) -> int | None:
    """What is still to pay after this payment, by the portal's rule (portal.domain.debtor.outstanding_minor):
    what the billing system says is due, less what was paid here, never below zero."""
    total, due, paid = (_amount(invoice.get("total"), currency), _amount(invoice.get("amount_due"), currency),
                        _amount(data.get("amount_paid"), currency))
    if total is None or paid is None:
        return due
    left = total - paid if due is None else min(due, total - paid)
    return max(0, left)
