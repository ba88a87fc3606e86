"""A scriptable fake upstream API, served for real on loopback (Starlette app in a ThreadedServer).

By default it answers like an order-to-billing API (seed 000): `GET /v2/orders` with `includes=prices,
notice.operator`, `filter[status]`, `filter[updated_at][gte]`, `page` and `per_page`, sorted by `updated_at`
then `id`, with `links.next`; and `PATCH /v2/notices/{id}` to mark a notice billed. Every request is recorded.
Scripted replies (`on`) take precedence: a status code, a body, a delay, or a connection reset.

    with FakeUpstream(token="t0k") as upstream:
        upstream.add(order(1001, updated_at="2026-10-01T10:00:00+00:00"))
        upstream.on("GET", "/v2/orders", Reply(500), when=lambda r: r.query.get("page") == "2")
        ... httpx.AsyncClient().get(upstream.url("/v2/orders")) ...
        assert upstream.requests_to("/v2/orders")[0].query["includes"] == "prices,notice.operator"
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from quittance_emulators.server import ThreadedServer

_UNSET: Any = object()


@dataclass(frozen=True)
class Reply:
    """A scripted answer. `reset` drops the connection without answering (the client sees a reset)."""

    status: int = 200
    json: Any = _UNSET
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False

    def response(self) -> Response:
        if self.json is not _UNSET:
            return Response(json.dumps(self.json), self.status, headers=self.headers, media_type="application/json")
        return Response(self.body, self.status, headers=self.headers)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]             # the last value of each parameter
    query_pairs: list[tuple[str, str]]
    headers: dict[str, str]           # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Script:
    method: str
    path: str
    reply: Reply
    when: Callable[[Recorded], bool] | None
    times: int | None


class FakeUpstream:
    """The fake API. `token`: when set, requests need `Authorization: Bearer <token>` (401 otherwise)."""

    def __init__(self, *, token: str | None = None, per_page: int = 2) -> None:
        self.token = token
        self.per_page = per_page
        self.orders: list[dict[str, Any]] = []
        self.requests: list[Recorded] = []
        self._scripts: list[_Script] = []
        self._lock = threading.Lock()
        self._app = Starlette(routes=[
            Route("/v2/orders", self._list_orders, methods=["GET"]),
            Route("/v2/notices/{notice_id}", self._patch_notice, methods=["PATCH"]),
        ])
        self._server: ThreadedServer | None = None

    # Running -------------------------------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        self._server = ThreadedServer(self).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake upstream is not started")
        return self._server.base_url

    def url(self, path: str) -> str:
        return self.base_url + path

    # Scripting and inspection --------------------------------------------------------------------------------

    def on(self, method: str, path: str, reply: Reply, *, when: Callable[[Recorded], bool] | None = None,
           times: int | None = 1) -> None:
        """Answer requests to `method path` (that `when` accepts) with `reply`, `times` times (None: always).
        Scripts are tried in the order they were added; without a match the default API answers."""
        with self._lock:
            self._scripts.append(_Script(method.upper(), path, reply, when, times))

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def requests_to(self, path: str, method: str = "GET") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path and r.method == method.upper()]

    def add(self, *orders: dict[str, Any]) -> None:
        with self._lock:
            self.orders.extend(copy.deepcopy(orders))

    def update(self, order_id: int, **changes: Any) -> dict[str, Any]:
        """Change top-level fields of an order (nested ones: pass the whole new object)."""
        with self._lock:
            for stored in self.orders:
                if stored["id"] == order_id:
                    stored.update(copy.deepcopy(changes))
                    return copy.deepcopy(stored)
        raise KeyError(order_id)

    # ASGI ----------------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        recorded = Recorded(method=request.method, path=request.url.path, query=dict(pairs), query_pairs=pairs,
                            headers={k.lower(): v for k, v in request.headers.items()}, body=body)
        with self._lock:
            self.requests.append(recorded)
            reply = self._scripted(recorded)
        if reply is not None:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.reset:
                await _reset(receive)
                return
            await reply.response()(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self._app(scope, replay, send)

    def _scripted(self, recorded: Recorded) -> Reply | None:
        for script in self._scripts:
            if script.method != recorded.method or script.path != recorded.path:
                continue
            if script.when is not None and not script.when(recorded):
                continue
            if script.times is not None:
                script.times -= 1
                if script.times == 0:
                    self._scripts.remove(script)
            return script.reply
        return None

    # The default API -----------------------------------------------------------------------------------------

    def _unauthorized(self, request: Request) -> Response | None:
        if self.token is None or request.headers.get("authorization") == f"Bearer {self.token}":
            return None
        return JSONResponse({"error": "unauthenticated"}, 401)

    async def _list_orders(self, request: Request) -> Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        query = request.query_params
        includes = {name for name in query.get("includes", "").split(",") if name}
        statuses = {name for name in query.get("filter[status]", "").split(",") if name}
        since = query.get("filter[updated_at][gte]")
        try:
            page = int(query.get("page", "1"))
            per_page = int(query.get("per_page", str(self.per_page)))
        except ValueError:
            return JSONResponse({"error": "page and per_page are numbers"}, 400)
        with self._lock:
            chosen = [o for o in self.orders
                      if (not statuses or o["state"] in statuses) and (since is None or o["updated_at"] >= since)]
            chosen = [_with_includes(o, includes) for o in sorted(chosen, key=lambda o: (o["updated_at"], o["id"]))]
        start = (page - 1) * per_page
        data = chosen[start:start + per_page]
        last_page = max(1, -(-len(chosen) // per_page))
        next_url = str(request.url.include_query_params(page=page + 1)) if page < last_page else None
        return JSONResponse({"data": data, "links": {"self": str(request.url), "next": next_url},
                             "meta": {"current_page": page, "last_page": last_page, "total": len(chosen)}})

    async def _patch_notice(self, request: Request) -> Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        notice_id = request.path_params["notice_id"]
        status = (await request.json()).get("status")
        with self._lock:
            notices = [o["notice"] for o in self.orders if str(o["notice"]["id"]) == notice_id]
            for notice in notices:
                notice["status"] = status
        if not notices:
            return JSONResponse({"error": "not found"}, 404)
        return JSONResponse({"data": {k: v for k, v in notices[0].items() if k != "operator"}})


def _with_includes(stored: dict[str, Any], includes: set[str]) -> dict[str, Any]:
    item = copy.deepcopy(stored)
    if "prices" not in includes:
        item.pop("prices", None)
    if not includes & {"notice", "notice.operator"}:
        item.pop("notice", None)
    elif "notice.operator" not in includes:
        item["notice"].pop("operator", None)
    return item


async def _reset(receive: Receive) -> None:
    """Drop the connection with a TCP reset. uvicorn's request cycle (the owner of `receive`) holds the
    transport; with SO_LINGER 0 the close is a RST, which the client sees as a reset connection."""
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("cannot reach the connection to reset it (not served by uvicorn?)")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await asyncio.sleep(0.05)  # let uvicorn see the connection lost, so it does not try to answer


def cents(amount: int) -> str:
    """12000 -> "120.00"."""
    return f"{amount // 100}.{amount % 100:02d}"


def order(order_id: int, *, updated_at: str, state: str = "validated", total_ht_cents: int = 10_000,
          vat_rate: str = "20", operator_id: int = 77, operator_name: str = "Pompes Funèbres Martin",
          operator_email: str | None = "compta@pf-martin.example", notice_id: int | None = None,
          title: str | None = None, currency: str = "EUR", created_at: str = "2026-10-01T08:00:00+02:00",
          total_ttc: str | None = None) -> dict[str, Any]:
    """An order as the upstream stores it: its prices (HT, TVA, TTC as decimal strings and in cents) and its
    notice with the notice's operator (the customer to bill)."""
    vat_cents = total_ht_cents * int(vat_rate) // 100
    ttc_cents = total_ht_cents + vat_cents
    notice = notice_id if notice_id is not None else order_id + 5000
    return {
        "id": order_id, "reference": f"CMD-{order_id}", "state": state, "created_at": created_at,
        "updated_at": updated_at,
        "prices": {"currency": currency, "vat_rate": vat_rate,
                   "total_ht": cents(total_ht_cents), "total_tva": cents(vat_cents),
                   "total_ttc": total_ttc if total_ttc is not None else cents(ttc_cents),
                   "total_ht_cents": total_ht_cents, "total_ttc_cents": ttc_cents},
        "notice": {"id": notice, "status": "validated",
                   "title": title or f"Avis de décès n° {notice}",
                   "operator": {"id": operator_id, "name": operator_name, "email": operator_email,
                                "locale": "fr"}},
    }
