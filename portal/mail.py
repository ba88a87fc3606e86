"""Outgoing email: messages rendered from templates/email/ in the reader's language, sent over SMTP.

A message has a plain-text and an HTML part (multipart/alternative), followed by its attachments
(multipart/mixed). Both parts come from the same Jinja templates as the pages (`name.txt`, `name.html`); the
HTML one is autoescaped, so a value from the API (a customer's name, an invoice's title, a debtor's remark)
reaches the mail client as text, never as markup. The HTML has inline styles only: no image, font or
stylesheet is loaded from anywhere, ours or anyone else's.

Every message carries `Quittance-Idempotency-Key` and a Message-ID derived from that key and its scope: a
delivery tried again after a lost reply has the same Message-ID, so mail systems and people can recognise
the duplicate. Header values are single lines: no control character from a name or title can start a header
of its own.

Sending uses the standard library's smtplib in a worker thread. What can go wrong is sorted into two kinds:
temporary (unreachable, timed out, disconnected, a 4xx reply, and everything about our own SMTP setup: not
configured, no STARTTLS, bad certificate, login or sender refused; fixed by waiting or by the operator, so
worth trying again) and permanent (a 5xx reply about this message: recipient unknown, content refused, too
large; sending the same again would fail the same way).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from portal.i18n import environment
from portal.settings import SmtpSettings

__all__ = ["IDEMPOTENCY_HEADER", "Attachment", "MailError", "SmtpSettings", "build_message", "message_id",
           "one_line", "render", "send", "send_blocking", "valid_address"]

IDEMPOTENCY_HEADER = "Quittance-Idempotency-Key"
# Mail servers commonly take 25 MB per message; base64 makes an attachment a third larger.
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
# The pages' own colours (static/portal.css), for messages of an organization without a brand colour.
BRAND_COLOR, BRAND_TEXT = "#1f4e79", "#ffffff"

_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class MailError(Exception):
    """Sending failed. `temporary`: worth trying again later; otherwise this message will never go through.
    `code` is the SMTP reply code when the server gave one. `uncertain`: the connection broke while the
    message was being handed over, so the server may have taken it after all."""

    def __init__(self, detail: str, *, temporary: bool, code: int | None = None, uncertain: bool = False) -> None:
        super().__init__(detail)
        self.detail, self.temporary, self.code, self.uncertain = detail, temporary, code, uncertain


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    maintype: str = "application"
    subtype: str = "pdf"


def one_line(text: str) -> str:
    """A header value: control characters and line breaks become spaces, runs of spaces one."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def valid_address(text: str | None) -> str | None:
    """The address itself when `text` is exactly one plain address (local@domain.tld), else None. What the
    API accepts is broader (any non-space characters around one @); a comma or a quote would make the To:
    header say something other than the envelope, so such an address is not used."""
    if not text or text != text.strip() or _CONTROL.search(text):
        return None
    try:
        address = Address(addr_spec=text)
    except (HeaderParseError, ValueError, IndexError):
        return None
    if address.addr_spec != text or not address.username or "." not in address.domain:
        return None
    return text


def message_id(mail_from: str, *scope: str) -> str:
    """A Message-ID that is the same whenever `scope` (organization, key...) is: a repeat is recognisable."""
    digest = hashlib.sha256("\x1f".join(scope).encode()).hexdigest()[:40]
    return f"<{digest}@{mail_from.rpartition('@')[2]}>"


def render(name: str, language: str, context: dict[str, Any]) -> tuple[str, str]:
    """The plain-text and HTML bodies of templates/email/`name`.txt and .html in `language`."""
    env = environment(language)
    context = {"brand_color": BRAND_COLOR, "brand_text": BRAND_TEXT, **context, "language": language}
    text = env.get_template(f"email/{name}.txt").render(context)
    html = env.get_template(f"email/{name}.html").render(context)
    lines = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return _BLANK_LINES.sub("\n\n", lines) + "\n", html


def build_message(*, mail_from: str, sender_name: str | None, to: str, to_name: str | None, subject: str,
                  text: str, html: str, language: str, idempotency_key: str, message_id: str, now: dt.datetime,
                  reply_to: str | None = None, attachments: Sequence[Attachment] = ()) -> EmailMessage:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = Address(display_name=one_line(sender_name or ""), addr_spec=mail_from)
    message["To"] = Address(display_name=one_line(to_name or ""), addr_spec=to)
    if reply_to:
        message["Reply-To"] = Address(addr_spec=reply_to)
    message["Subject"] = one_line(subject)
    message["Date"] = format_datetime(now.astimezone(dt.UTC))
    message["Message-ID"] = message_id
    # RFC 3834: no vacation replies or other automatic answers to these.
    message["Auto-Submitted"] = "auto-generated"
    message[IDEMPOTENCY_HEADER] = one_line(idempotency_key)
    message.set_content(text, subtype="plain", charset="utf-8")
    message.add_alternative(html, subtype="html", charset="utf-8")
    for attachment in attachments:
        message.add_attachment(attachment.content, maintype=attachment.maintype, subtype=attachment.subtype,
                               filename=attachment.filename)
    # Last: setting the content moves the Content-* headers already there into the first part.
    message["Content-Language"] = language
    return message


async def send(smtp: SmtpSettings, message: EmailMessage) -> None:
    """Hand the message to the SMTP server; MailError if it did not take it."""
    await asyncio.to_thread(send_blocking, smtp, message)


def send_blocking(smtp: SmtpSettings, message: EmailMessage) -> None:
    sender = valid_address(smtp.mail_from)
    if not smtp.host or sender is None:
        raise MailError("sending mail is not configured (PORTAL_SMTP_HOST and PORTAL_MAIL_FROM)", temporary=True)
    recipients = [address.addr_spec for address in message["To"].addresses]
    # The EHLO name: our sender's domain (socket.getfqdn() may wait on DNS for seconds).
    client = smtplib.SMTP(timeout=smtp.timeout, local_hostname=sender.rpartition("@")[2])
    try:
        _session(client, smtp)
        refused = _transaction(client, message, sender, recipients)
    finally:
        _close(client)
    if refused:  # some recipients refused, the others took it: only ever one recipient here, kept for safety
        raise _refusal(refused)


def _session(client: smtplib.SMTP, smtp: SmtpSettings) -> None:
    """Connect, greet, STARTTLS and log in: every failure here is temporary (unreachable, or our setup)."""
    try:
        code, reply = client.connect(smtp.host, smtp.port)
        if code != 220:
            raise MailError(f"the server greeted with {code} {_text(reply)}", temporary=True, code=code)
        client.ehlo_or_helo_if_needed()
        if smtp.starttls:
            if not client.has_extn("starttls"):
                raise MailError("the server does not offer STARTTLS (PORTAL_SMTP_STARTTLS is on)", temporary=True)
            client.starttls(context=ssl.create_default_context())
            client.ehlo()
        if smtp.username:
            client.login(smtp.username, smtp.password)
    except MailError:
        raise
    except smtplib.SMTPResponseException as exc:
        raise MailError(f"SMTP session refused: {exc.smtp_code} {_text(exc.smtp_error)}", temporary=True,
                        code=exc.smtp_code) from exc
    except (smtplib.SMTPException, OSError) as exc:  # refused, unreachable, timeout, TLS (OSErrors), no AUTH
        raise MailError(f"SMTP session failed: {_describe(exc)}", temporary=True) from exc


def _transaction(client: smtplib.SMTP, message: EmailMessage, sender: str,
                 recipients: list[str]) -> dict[str, tuple[int, bytes]]:
    """MAIL, RCPT, DATA: here the server judges this message, and its reply code says for how long."""
    try:
        return client.send_message(message, from_addr=sender, to_addrs=recipients)
    except smtplib.SMTPRecipientsRefused as exc:
        raise _refusal(exc.recipients) from exc
    except smtplib.SMTPSenderRefused as exc:
        # MAIL FROM refused: about our sender or login (530, 550, 553: the operator's setup, so retried until
        # fixed), except 552, this message's size.
        raise MailError(f"the server refused the sender: {exc.smtp_code} {_text(exc.smtp_error)}",
                        temporary=exc.smtp_code != 552, code=exc.smtp_code) from exc
    except smtplib.SMTPResponseException as exc:  # the message itself refused after DATA
        raise MailError(f"the server refused the message: {exc.smtp_code} {_text(exc.smtp_error)}",
                        temporary=exc.smtp_code < 500, code=exc.smtp_code) from exc
    except smtplib.SMTPNotSupportedError as exc:  # an international address the server cannot take
        raise MailError(f"the server cannot take this message: {exc}", temporary=False) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"connection lost while sending: {_describe(exc)}", temporary=True,
                        uncertain=True) from exc


def _refusal(refused: dict[str, tuple[int, bytes]]) -> MailError:
    codes = [code for code, _ in refused.values()]
    detail = "; ".join(f"{address}: {code} {_text(reply)}" for address, (code, reply) in refused.items())
    return MailError(f"recipient refused: {detail}", temporary=all(code < 500 for code in codes),
                     code=max(codes))


def _close(client: smtplib.SMTP) -> None:
    """QUIT politely; once the message was taken, whatever QUIT answers changes nothing."""
    try:
        if client.sock is not None:
            client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def _text(reply: bytes | str) -> str:
    return one_line(reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply))[:300]


def _describe(exc: BaseException) -> str:
    return one_line(f"{type(exc).__name__}: {exc}")[:300]
