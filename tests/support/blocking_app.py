"""A test-only ASGI app for tests/test_server.py, served through portal.web.server.serve: `/block` blocks its
process's event loop (as blocking work on the loop would), `/` answers with the process id."""

from __future__ import annotations

import os
import time
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/block":
        time.sleep(60)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
