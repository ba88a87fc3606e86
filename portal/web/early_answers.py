"""A refusal given before the request's body was read (401, 413, 415, 404...) reaches a client that sends its
whole body before it reads the answer (Python's urllib, many ERP HTTP stacks).

Such a client often sends `Connection: close` (urllib always does), so the server closes the connection right after
the answer. Closing a socket that still holds unread bytes makes the kernel send a reset, which destroys the answer
on its way and fails the client's write: it sees "connection reset" or "broken pipe" instead of the 401. So before
a refusal goes out, what is left of the body is read and dropped, up to DRAIN_BYTES and DRAIN_SECONDS. A body
declared larger than DRAIN_BYTES is not read at all: that client would get the reset either way. A client that
sent `Expect: 100-continue` and was never told to continue has sent no body, and gets the answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Above every body limit's default (portal.settings.Limits: JSON 5 MB, PDF 20 MB), so that a client that sends a
# little too much still reads why; the time bound keeps a slow sender from holding the refusal.
DRAIN_BYTES = 32 * 1024 * 1024
DRAIN_SECONDS = 10.0


@dataclass
class _Body:
    """What the app (or the drain) has taken of the request's body so far."""

    asked: bool = False
    size: int = 0
    done: bool = False

    def took(self, message: Message) -> None:
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self.done = True


class DrainBeforeRefusal:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"]) if scope["type"] == "http" else {}
        declared = headers.get(b"content-length", b"")
        if not (b"transfer-encoding" in headers or (declared.isdigit() and 0 < int(declared) <= DRAIN_BYTES)):
            await self.app(scope, receive, send)  # no body, or one too large to be worth reading
            return
        waits_for_continue = headers.get(b"expect", b"").lower() == b"100-continue"
        body = _Body()

        async def tracked_receive() -> Message:
            body.asked = True
            message = await receive()
            body.took(message)
            return message

        async def send_after_drain(message: Message) -> None:
            if (message["type"] == "http.response.start" and message["status"] >= 400 and not body.done
                    and not (waits_for_continue and not body.asked)):
                with anyio.move_on_after(DRAIN_SECONDS):
                    while not body.done and body.size <= DRAIN_BYTES:
                        body.took(await receive())
            await send(message)

        await self.app(scope, tracked_receive, send_after_drain)
