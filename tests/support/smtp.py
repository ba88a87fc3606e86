"""A real SMTP server on loopback for the mail tests: aiosmtpd's Controller, which runs the server's event
loop in a thread of its own, keeping every message it accepts. It can refuse chosen recipients at RCPT (550
for good, 450 for now), hang up after taking a message, and require a login. Also: a port where nothing listens, and one that accepts the
connection and never says a word (a server that hangs)."""

from __future__ import annotations

import email
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from portal.settings import SmtpSettings

MAIL_FROM = "billing@quittance.example"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]

    def part(self, subtype: str) -> str:
        """The text/`subtype` part, decoded, with the wire's CRLF line ends made \\n."""
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None and body.get_content_subtype() == subtype, f"no text/{subtype} part"
        return str(body.get_content()).replace("\r\n", "\n")


@dataclass
class Mailbox:
    """The aiosmtpd handler: what arrived, what to refuse, who may log in."""

    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    logins: list[tuple[str, str]] = field(default_factory=list)
    accounts: dict[str, str] = field(default_factory=dict)
    # Take the message, then hang up instead of answering: the client cannot know it was taken.
    hang_up_after_data: bool = False

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        if self.hang_up_after_data:
            server.transport.close()
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            login, password = data.login.decode(), data.password.decode()
            self.logins.append((login, password))
            return AuthResult(success=self.accounts.get(login) == password, handled=False)
        return AuthResult(success=False, handled=False)


@dataclass
class SmtpServer:
    mailbox: Mailbox
    port: int

    @property
    def received(self) -> list[Received]:
        return self.mailbox.received

    def settings(self, **changes: Any) -> SmtpSettings:
        return SmtpSettings(**{"host": "127.0.0.1", "port": self.port, "starttls": False, "mail_from": MAIL_FROM,
                               "timeout": 5.0, **changes})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_server(*, login_required: bool = False) -> Iterator[SmtpServer]:
    mailbox = Mailbox()
    options: dict[str, Any] = {}
    if login_required:
        # Plain-text AUTH on loopback only: the real thing goes over STARTTLS (PORTAL_SMTP_STARTTLS).
        options = {"authenticator": mailbox.authenticate, "auth_required": True, "auth_require_tls": False}
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, ready_timeout=10, **options)
    controller.start()
    try:
        yield SmtpServer(mailbox, port)
    finally:
        controller.stop()


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel does, from the backlog) and never greets."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])
