"""A billing system's endpoint on loopback that records what it receives and answers as scripted: status
codes, Retry-After, HTML pages, delays past the client's timeout."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quittance_emulators.server import ThreadedServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Upstream:
    """`script` is consumed one answer per request: (status, headers, body, delay_seconds); then `default`."""

    script: list[tuple[int, dict[str, str], bytes, float]] = field(default_factory=list)
    default: tuple[int, dict[str, str], bytes, float] = (200, {"content-type": "application/json"}, b'{"ok":true}', 0.0)
    refuse: dict[str, int] = field(default_factory=dict)   # idempotency key -> status, always
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.received.append(Received(request.method, request.scope["raw_path"].decode(), dict(request.headers), body,
                                              time.monotonic()))
                key = request.headers.get("idempotency-key", "")
                if key in self.refuse:
                    answer = (self.refuse[key], {"content-type": "application/json"}, b'{"error":"no"}', 0.0)
                else:
                    answer = self.script.pop(0) if self.script else self.default
            status, headers, content, delay = answer
            if delay:
                await asyncio.sleep(delay)
            return Response(content, status_code=status, headers=headers)

        return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "PUT", "PATCH"])])

    def keys(self) -> list[str]:
        with self.lock:
            return [r.headers.get("idempotency-key", "") for r in self.received]


def serve(upstream: Upstream) -> Iterator[str]:
    with ThreadedServer(upstream.app()) as server:
        yield server.base_url


def json_ok() -> tuple[int, dict[str, str], bytes, float]:
    return (200, {"content-type": "application/json"}, b'{"ok":true}', 0.0)


def answer(status: int, body: bytes = b"{}", content_type: str = "application/json", delay: float = 0.0,
           **headers: Any) -> tuple[int, dict[str, str], bytes, float]:
    return (status, {"content-type": content_type, **{k.replace("_", "-"): str(v) for k, v in headers.items()}},
            body, delay)
