"""Stripe-signed webhooks against a running server, each paying a different invoice, from 32 connections.

    .venv/bin/python bench/stripe_webhooks.py              # 300 warm-up + 3,000 events, 3,000 paced; both backends
    .venv/bin/python bench/stripe_webhooks.py --quick      # 100 + 600, 600 paced
    .venv/bin/python bench/stripe_webhooks.py --backend sqlite --events 10000 --py-spy /tmp/profiles

For each backend: a fresh database, `portal serve` (--workers, default one process on SQLite and one per core
on PostgreSQL) with PORTAL_STRIPE_WEBHOOK_SECRETS set,
one customer and one open invoice per event pushed through POST /api/v1/invoices/batch, and for each invoice a
checkout made by the domain itself (a debtor link, `links.resolve` for its scope, `checkouts.start` with
provider "stripe", `checkouts.opened_at_provider`: state "open", as the pay page leaves it). Then one
`checkout.session.completed` event per checkout (paid, the checkout's amount and currency, its public id in
client_reference_id and metadata.checkout, a new pi_ id), pretty-printed like Stripe's, signed at send time
with t=now and v1 = HMAC-SHA256 of "{t}.{body}".

A separate load process (asyncio and a minimal HTTP/1.1 client of its own) sends them: the warm-up events, then the measured ones in a closed
loop (each of the 32 connections sends its next event as soon as it has the answer), then more events paced
at --paced per second (open loop: latency counted from each event's scheduled time). Afterwards the database
must hold exactly one payment per event and every invoice paid; then every 10th event is sent again, and
nothing in the database may change.

The ceiling is a bare Starlette route served exactly as `portal serve` serves the app (portal.web.server: the
same uvicorn settings and number of processes) that verifies the same signature with the same stripe call, reads
the event id from the body and INSERTs it into a plain table with a unique index through the bare driver, one
transaction per event: on SQLite, sqlite3 with the app's pragmas and BEGIN IMMEDIATE in a worker thread, writers
queued on a lock; on PostgreSQL, psycopg in as many worker threads as the app gives short writes. What any webhook
must do, and nothing of what Quittance does with it. It gets the same warm-up and measured events, closed loop.
See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import hmac
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BACKENDS, Checkout, Portal, Server, bench_database, checkout_completed, driver_url, free_port, open_checkouts,
    process_cpu_seconds, py_spy, tail,
)

SECRET = "whsec_quittance_bench_0123456789abcdef"
CUSTOMER = "CUST-WEBHOOK-BENCH"
TARGET_RATE = 300
TARGET_P99_MS = 100.0
REDELIVER_EVERY = 10  # every 10th event is sent a second time
BATCH = 1_000


# ---------------------------------------------------------------------------------------------------------
# Setup: invoices through the API, checkouts through the domain.

def invoice_body(index: int) -> dict[str, Any]:
    net = 5_000 + (index * 7_919) % 95_000  # cents, varied
    vat = round(net * 21 / 100)
    euros = lambda minor: f"{minor // 100}.{minor % 100:02d}"  # noqa: E731
    return {"external_id": f"WH-{index:06d}", "customer": CUSTOMER, "number": f"2026-W{index:06d}",
            "status": "open", "issue_date": "2026-10-01", "currency": "EUR", "total": euros(net + vat),
            "title": f"Invoice 2026-W{index:06d}", "version": 1,
            "payment_terms": {"type": "net_days", "days": 30},
            "lines": [{"description": "Support plan, monthly", "quantity": "1", "unit_price": euros(net),
                       "vat_rate": "21", "total": euros(net)}]}


def push_invoices(server: Server, api_key: str, count: int) -> None:
    headers = {"Authorization": f"Bearer {api_key}", "content-type": "application/json"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=300) as client:
        customer = {"name": "Webhook Bench SRL", "email": "compta@webhook-bench.example", "locale": "fr-BE"}
        answer = client.put(f"/api/v1/customers/{CUSTOMER}", content=orjson.dumps(customer))
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"PUT customer: {answer.status_code} {answer.text[:500]}")
        for start in range(0, count, BATCH):
            body = {"invoices": [invoice_body(i) for i in range(start, min(count, start + BATCH))]}
            answer = client.post("/api/v1/invoices/batch", content=orjson.dumps(body))
            if answer.status_code != 200 or orjson.loads(answer.content)["created"] != len(body["invoices"]):
                raise RuntimeError(f"invoice batch: {answer.status_code} {answer.text[:500]}")


def make_events(checkouts: Sequence[Checkout]) -> list[tuple[str, str, bytes]]:
    """(event id, payment intent id, body) per checkout: the body Stripe would send, pretty-printed as it does."""
    return [checkout_completed(checkout, email="compta@webhook-bench.example", name="Webhook Bench SRL")
            for checkout in checkouts]


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


# ---------------------------------------------------------------------------------------------------------
# The load process: a separate interpreter, so the OS counts its CPU apart from the bench and the server.

@dataclass(frozen=True)
class Load:
    count: int
    seconds: float
    latencies_ms: list[float]  # sorted
    errors: int
    statuses: dict[str, int]
    client_cpu: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else float("inf")

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        return self.latencies_ms[min(len(self.latencies_ms) - 1, int(p / 100 * len(self.latencies_ms)))]


def run_load(url: str, bodies: Sequence[bytes], warmup: int, concurrency: int, server_pid: int,
             workdir: Path, profile: Path | None = None, rate: float = 0.0) -> Load:
    """Send bodies[:warmup] (not measured), then the rest (measured), from a load process: as fast as the
    connections allow (closed loop), or paced at `rate` per second (open loop)."""
    job = workdir / f"load-{time.monotonic_ns()}"
    (job.with_suffix(".in")).write_bytes(orjson.dumps([body.decode() for body in bodies]))
    command = [sys.executable, str(Path(__file__).resolve()), "_load", "--url", url, "--bodies",
               str(job.with_suffix(".in")), "--out", str(job.with_suffix(".out")), "--warmup", str(warmup),
               "--concurrency", str(concurrency), "--server-pid", str(server_pid), "--rate", str(rate)]
    with subprocess.Popen(command, env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"}) as process:
        if profile is not None:
            # Start sampling once the warm-up is over: the load process touches this file then.
            marker = job.with_suffix(".measuring")
            while not marker.exists() and process.poll() is None:
                time.sleep(0.01)
            with py_spy(server_pid, profile):
                process.wait()
        process.wait()
        if process.returncode != 0:
            raise RuntimeError(f"load process failed ({process.returncode})")
    out = orjson.loads(job.with_suffix(".out").read_bytes())
    return Load(**out)


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends a request and waits for its whole answer. The load client
    is this small on purpose: it shares the two cores with the server, and httpx spent about 0.9 ms of CPU a
    request (its pool, its models), a third of what the server spends on a webhook."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answer: asyncio.Future[int] | None = None
        self.expected = 0
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.expected:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = _CONTENT_LENGTH.search(head)
            if length is None:  # every answer of the app and of the ceiling has a Content-Length
                self._fail(ConnectionError(f"no content-length in {head[:200]!r}"))
                return
            self.status, self.expected = int(head[9:12]), end + 4 + int(length.group(1))
        if len(self.buffer) >= self.expected and self.answer is not None and not self.answer.done():
            del self.buffer[:self.expected]
            self.expected = 0
            self.answer.set_result(self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed"))

    def _fail(self, exc: Exception) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.answer


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)")


async def _send_all(url: str, bodies: Sequence[bytes], concurrency: int, latencies: list[float],
                    statuses: dict[str, int], rate: float = 0.0) -> None:
    """Each of `concurrency` connections sends the next event as soon as it has its answer; with a `rate`,
    event i is due at i / rate seconds and its latency counts from then, so time spent waiting for a free
    connection is counted too (no coordinated omission). Every event is signed when it is sent."""
    target = httpx.URL(url)
    head = (f"POST {target.raw_path.decode()} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
            "Content-Type: application/json; charset=utf-8\r\nUser-Agent: Stripe/1.0\r\n").encode()
    queue = iter(range(len(bodies)))
    began = time.perf_counter()
    loop = asyncio.get_running_loop()

    async def connection() -> None:
        connection_: _HttpConnection | None = None
        try:
            for index in queue:
                body = bodies[index]
                start = time.perf_counter()
                if rate:
                    start = began + index / rate
                    if start > time.perf_counter():
                        await asyncio.sleep(start - time.perf_counter())
                raw = b"%sStripe-Signature: %s\r\nContent-Length: %d\r\n\r\n%s" % (
                    head, signature_header(body, SECRET, int(time.time())).encode(), len(body), body)
                try:
                    if connection_ is None:
                        _, connection_ = await loop.create_connection(_HttpConnection, target.host, target.port)
                    key = str(await connection_.request(raw))
                except OSError as exc:
                    key, connection_ = type(exc).__name__, None
                latencies.append((time.perf_counter() - start) * 1000)
                statuses[key] = statuses.get(key, 0) + 1
        finally:
            if connection_ is not None and connection_.transport is not None:
                connection_.transport.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))


def load_main(args: argparse.Namespace) -> int:
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    bodies = [body.encode() for body in orjson.loads(Path(args.bodies).read_bytes())]
    warm, measured = bodies[:args.warmup], bodies[args.warmup:]
    if warm:
        runner(_send_all(args.url, warm, args.concurrency, [], {}))
    Path(args.out).with_suffix(".measuring").touch()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    server_cpu, client_cpu, start = process_cpu_seconds(args.server_pid), time.process_time(), time.perf_counter()
    runner(_send_all(args.url, measured, args.concurrency, latencies, statuses, args.rate))
    seconds = time.perf_counter() - start
    result = Load(count=len(measured), seconds=seconds, latencies_ms=sorted(latencies),
                  errors=sum(n for key, n in statuses.items() if key != "200"), statuses=statuses,
                  client_cpu=time.process_time() - client_cpu,
                  server_cpu=process_cpu_seconds(args.server_pid) - server_cpu)
    Path(args.out).write_bytes(orjson.dumps(result.__dict__))
    return 0


# ---------------------------------------------------------------------------------------------------------
# The ceiling: a bare Starlette route, bare driver, one INSERT per event.

CEILING_TABLE = "bare_stripe_events"


def ceiling_app(database_url: str) -> Any:
    import threading

    import stripe
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    local = threading.local()
    if database_url.startswith("sqlite"):
        import sqlite3

        from portal.db import SQLITE_PRAGMAS

        path = database_url.removeprefix("sqlite:///")
        # SQLite has one writer at a time. Threads that meet a locked database in BEGIN IMMEDIATE sleep in
        # SQLite's busy handler (1, 2, 5 ... 100 ms) and miss the moments it is free; queueing the writers of
        # the process on a lock instead hands the database from one to the next at once. The best a bare
        # implementation can do, so that is the ceiling.
        write_lock = threading.Lock()

        def insert(event_id: str, now: dt.datetime) -> None:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
                for pragma in SQLITE_PRAGMAS:
                    conn.execute(pragma)
            with write_lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(f"INSERT INTO {CEILING_TABLE} (event_id, received_at) VALUES (?, ?)",
                                 (event_id, now.isoformat()))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

        async def store(event_id: str, now: dt.datetime) -> None:
            await run_in_threadpool(insert, event_id, now)

        lifespan = None
    else:
        # As the app does on PostgreSQL: psycopg in as many worker threads as the app's short writes get, each
        # thread with a connection of its own.
        import anyio
        import anyio.to_thread
        import psycopg

        from portal.db import WRITE_THREADS

        threads = anyio.CapacityLimiter(WRITE_THREADS)
        opened: list[Any] = []

        def insert_pg(event_id: str, now: dt.datetime) -> None:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = psycopg.connect(driver_url(database_url))
                opened.append(conn)
            with conn.transaction():
                conn.execute(f"INSERT INTO {CEILING_TABLE} (event_id, received_at) VALUES (%s, %s)", (event_id, now))

        async def store(event_id: str, now: dt.datetime) -> None:
            await anyio.to_thread.run_sync(insert_pg, event_id, now, limiter=threads)

        @asynccontextmanager
        async def lifespan(_app: Any) -> AsyncIterator[None]:
            yield
            for conn in opened:
                conn.close()

    async def hook(request: Request) -> Response:
        body = await request.body()
        try:
            stripe.WebhookSignature.verify_header(body, request.headers.get("stripe-signature"), SECRET, 300)
        except stripe.SignatureVerificationError:
            return Response(status_code=400)
        await store(str(orjson.loads(body)["id"]), dt.datetime.now(dt.UTC))
        return Response(status_code=200)

    async def ready(_request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    return Starlette(routes=[Route("/webhooks/stripe/{org}", hook, methods=["POST"]),
                             Route("/api/v1/openapi.json", ready)], lifespan=lifespan)


CEILING_DATABASE_ENV = "QUITTANCE_BENCH_CEILING_DATABASE_URL"


def ceiling_app_from_environment() -> Any:
    """The ceiling app in each server process (they import this module afresh)."""
    return ceiling_app(os.environ[CEILING_DATABASE_ENV])


def ceiling_main(args: argparse.Namespace) -> int:
    from portal.web.server import serve

    # Served by what serves `portal serve`, with the same settings and number of processes.
    os.environ[CEILING_DATABASE_ENV] = args.database_url
    return serve("127.0.0.1", args.port, args.workers, f"{Path(__file__).stem}:ceiling_app_from_environment",
                 factory=True)


def create_ceiling_table(url: str) -> None:
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(f"CREATE TABLE {CEILING_TABLE} (id INTEGER PRIMARY KEY, event_id VARCHAR(100) NOT NULL "
                         "UNIQUE, received_at VARCHAR(40) NOT NULL)")
        return
    import psycopg

    with psycopg.connect(driver_url(url)) as conn:
        conn.execute(f"CREATE TABLE {CEILING_TABLE} (id BIGSERIAL PRIMARY KEY, event_id VARCHAR(100) NOT NULL "
                     "UNIQUE, received_at TIMESTAMPTZ NOT NULL)")


@contextmanager
def serve_ceiling(url: str, workdir: Path, workers: int) -> Iterator[Server]:
    from common import _stop, _wait_until_ready

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = workdir / f"ceiling-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_ceiling", "--port", str(port),
                                    "--database-url", url, "--workers", str(workers)], stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                                   env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"})
        try:
            _wait_until_ready(base_url, process, log_path, 30.0)
            yield Server(base_url, process.pid, log_path)
        finally:
            _stop(process)


def ceiling_rows(url: str) -> int:
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {CEILING_TABLE}").fetchone()[0])
    import psycopg

    with psycopg.connect(driver_url(url)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {CEILING_TABLE}").fetchone()[0])


# ---------------------------------------------------------------------------------------------------------
# What the database must hold afterwards.

def snapshot(url: str, slug: str) -> dict[str, Any]:
    """Counts and sums of everything a webhook may write, for this organization."""
    import sqlalchemy as sa

    from portal.db import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            org_id = conn.execute(sa.text("SELECT id FROM organizations WHERE slug = :s"), {"s": slug}).scalar_one()

            def one(sql: str) -> Any:
                return conn.execute(sa.text(sql), {"o": org_id}).one()

            return {
                "payments": one("SELECT count(*), count(DISTINCT checkout_id), count(DISTINCT provider_payment_id), "
                                "coalesce(sum(amount_minor), 0) FROM payments WHERE organization_id = :o"),
                "allocations": one("SELECT count(*), coalesce(sum(amount_minor), 0) FROM allocations "
                                   "WHERE organization_id = :o"),
                "provider_events": one("SELECT count(*) FROM provider_events WHERE organization_id = :o"),
                "invoices": one("SELECT count(*), sum(CASE WHEN status = 'paid' AND paid_minor = total_minor "
                                "THEN 1 ELSE 0 END), coalesce(sum(paid_minor), 0) FROM invoices "
                                "WHERE organization_id = :o"),
                "checkouts": one("SELECT count(*), sum(CASE WHEN status = 'paid' THEN 1 ELSE 0 END) FROM checkouts "
                                 "WHERE organization_id = :o"),
                "timeline_payments": one("SELECT count(*) FROM invoice_timeline WHERE organization_id = :o "
                                         "AND kind = 'payment'"),
                "outbox": one("SELECT count(*), sum(CASE WHEN event_type = 'invoice.paid' THEN 1 ELSE 0 END) "
                              "FROM outbox_events WHERE organization_id = :o"),
                "review_items": one("SELECT count(*) FROM review_items WHERE organization_id = :o"),
                "event_ids": set(conn.execute(sa.text("SELECT event_id FROM provider_events "
                                                      "WHERE organization_id = :o"), {"o": org_id}).scalars()),
                "intent_ids": set(conn.execute(sa.text("SELECT provider_payment_id FROM payments "
                                                       "WHERE organization_id = :o"), {"o": org_id}).scalars()),
            }
    finally:
        engine.dispose()


def check_applied(state: dict[str, Any], events: Sequence[tuple[str, str, bytes]]) -> list[str]:
    """Exactly one payment per event, every invoice paid in full, no event lost; [] when all hold."""
    n = len(events)
    problems = []
    expect = {
        "payments": (n, n, n), "provider_events": (n,), "invoices": (n, n), "checkouts": (n, n),
        "allocations": (n,), "timeline_payments": (n,), "outbox": (n, n), "review_items": (0,),
    }
    for key, wanted in expect.items():
        got = tuple(state[key])[:len(wanted)]
        if got != wanted:
            problems.append(f"{key}: expected {wanted}, got {got}")
    if state["payments"][3] != state["invoices"][2] or state["allocations"][1] != state["invoices"][2]:
        problems.append(f"amounts disagree: payments {state['payments'][3]}, allocations {state['allocations'][1]}, "
                        f"paid on invoices {state['invoices'][2]}")
    if state["event_ids"] != {e for e, _, _ in events}:
        problems.append(f"event ids: {len({e for e, _, _ in events} - state['event_ids'])} missing")
    if state["intent_ids"] != {i for _, i, _ in events}:
        problems.append(f"payment ids: {len({i for _, i, _ in events} - state['intent_ids'])} missing")
    return problems


# ---------------------------------------------------------------------------------------------------------
# One backend, start to end.

@dataclass(frozen=True)
class BackendResult:
    backend: str
    portal: Load          # closed loop, the measured events
    paced: Load | None    # open loop at --paced events/s, more events
    redelivery: Load
    ceiling: Load         # closed loop, the same events as `portal`
    problems: list[str]

    @property
    def ratio(self) -> float:
        return self.portal.rate / self.ceiling.rate


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_backend(backend: str, args: argparse.Namespace) -> BackendResult:
    slug = f"whbench-{int(time.time())}"
    closed = args.warmup + args.events
    paced_events = args.paced_events if args.paced else 0
    with tempfile.TemporaryDirectory(prefix=f"quittance-webhooks-{backend}-") as tmp, \
            bench_database(backend, Path(tmp)) as url:
        workdir = Path(tmp)
        portal = Portal(url, workdir, {"PORTAL_STRIPE_WEBHOOK_SECRETS": SECRET})
        portal.upgrade()
        api_key = portal.create_tenant(slug, "Webhook benchmark")
        problems: list[str] = []
        workers = args.workers or (1 if backend == "sqlite" else os.cpu_count() or 1)
        with portal.serve(workers=workers) as server:
            push_invoices(server, api_key, closed + paced_events)
            checkouts = open_checkouts(url, slug, CUSTOMER)
            events = make_events(checkouts)
            bodies = [body for _, _, body in events]
            log(f"{backend}: {len(checkouts)} open checkouts; {args.warmup} warm-up + {args.events} events, "
                f"{args.concurrency} connections")
            hook_url = f"{server.base_url}/webhooks/stripe/{slug}"
            profile = args.py_spy / f"webhooks-{backend}.{args.py_spy_format}" if args.py_spy else None
            main = run_load(hook_url, bodies[:closed], args.warmup, args.concurrency, server.pid, workdir, profile)
            log(f"{backend}: {main.rate:,.0f}/s, p99 {main.percentile(99):.1f} ms")
            paced = None
            if paced_events:
                log(f"{backend}: {paced_events} more events paced at {args.paced:g}/s")
                paced = run_load(hook_url, bodies[closed:], 0, args.concurrency, server.pid, workdir,
                                 rate=args.paced)
            before = snapshot(url, slug)
            problems += check_applied(before, events)
            log(f"{backend}: redelivering every {REDELIVER_EVERY}th event")
            again = bodies[::REDELIVER_EVERY]
            redelivery = run_load(hook_url, again, 0, args.concurrency, server.pid, workdir)
            after = snapshot(url, slug)
            if after != before:
                changed = [key for key in before if before[key] != after[key]]
                problems.append(f"redelivery changed {', '.join(changed)}")
            for name, load in (("first delivery", main), ("paced", paced), ("redelivery", redelivery)):
                if load is not None and load.errors:
                    problems.append(f"{name}: {load.statuses}")
            if problems:
                log(tail(server.log_path))
        create_ceiling_table(url)
        with serve_ceiling(url, workdir, workers) as ceiling_server:
            log(f"{backend}: ceiling (bare route, bare driver) with the same events")
            ceiling = run_load(f"{ceiling_server.base_url}/webhooks/stripe/{slug}", bodies[:closed], args.warmup,
                               args.concurrency, ceiling_server.pid, workdir)
        if ceiling_rows(url) != closed or ceiling.errors:
            problems.append(f"ceiling stored {ceiling_rows(url)} of {closed} events, answers {ceiling.statuses}")
    return BackendResult(backend, main, paced, redelivery, ceiling, problems)


# ---------------------------------------------------------------------------------------------------------
# Report.

def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def _per_event_ms(load: Load) -> str:
    return f"{load.server_cpu / load.count * 1000:.2f}" if load.count else "-"


def report(results: Sequence[BackendResult], args: argparse.Namespace, load: tuple[str, str]) -> str:
    paced_label = f"at {args.paced:g}/s p50 / p99" if args.paced else "paced"
    header = ("backend", "events", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "ceiling req/s",
              "ceiling p99", "ratio", paced_label, "redelivered/s", "server CPU ms/event", "client CPU ms/event")
    rows = [header]
    for r in results:
        p = r.portal
        paced = (f"{r.paced.percentile(50):.1f} / {r.paced.percentile(99):.1f} ms" if r.paced else "-")
        rows.append((r.backend, f"{p.count:,}", f"{p.rate:,.0f}", f"{p.percentile(50):.1f}",
                     f"{p.percentile(99):.1f}", f"{p.latencies_ms[-1]:.1f}" if p.latencies_ms else "-",
                     str(p.errors + (r.paced.errors if r.paced else 0) + r.redelivery.errors),
                     f"{r.ceiling.rate:,.0f}", f"{r.ceiling.percentile(99):.1f}", f"{r.ratio:.0%}", paced,
                     f"{r.redelivery.rate:,.0f}", f"{_per_event_ms(p)} / {_per_event_ms(r.ceiling)}",
                     f"{p.client_cpu / p.count * 1000:.2f}" if p.count else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append("")
    lines.append(f"{args.concurrency} connections, closed loop (each sends its next event when answered), after "
                 f"{args.warmup} warm-up events; every event pays its own invoice. ceiling = a bare Starlette route "
                 "on the same uvicorn settings: the same signature check, one INSERT per event with the bare "
                 "driver. paced = more events sent on a schedule, latency counted from the scheduled time. "
                 "server CPU = Quittance / ceiling.")
    lines.append(f"load average (1 min) before / after: {load[0]} / {load[1]} on {os.cpu_count()} cores")
    for r in results:
        checks = [(f">= {TARGET_RATE}/s", r.portal.rate >= TARGET_RATE),
                  (f"p99 < {TARGET_P99_MS:.0f} ms", r.portal.percentile(99) < TARGET_P99_MS),
                  ("one payment per event, none lost, redelivery changes nothing", not r.problems)]
        lines.append(f"{r.backend}: " + ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in checks))
        lines.extend(f"  {problem}" for problem in r.problems)
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_load"]:
        parser = argparse.ArgumentParser()
        for name in ("--url", "--bodies", "--out"):
            parser.add_argument(name, required=True)
        parser.add_argument("--warmup", type=int, required=True)
        parser.add_argument("--concurrency", type=int, required=True)
        parser.add_argument("--server-pid", type=int, required=True)
        parser.add_argument("--rate", type=float, default=0.0)
        return parser.parse_args(argv[1:], argparse.Namespace(command="_load"))
    if argv[:1] == ["_ceiling"]:
        parser = argparse.ArgumentParser()
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--database-url", required=True)
        parser.add_argument("--workers", type=int, required=True)
        return parser.parse_args(argv[1:], argparse.Namespace(command="_ceiling"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3_000, help="measured events (default 3000)")
    parser.add_argument("--warmup", type=int, default=300, help="events sent first, not measured (default 300)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections (default 32)")
    parser.add_argument("--paced", type=float, default=TARGET_RATE, metavar="RATE",
                        help=f"then send more events at RATE per second (default {TARGET_RATE}; 0: skip)")
    parser.add_argument("--paced-events", type=int, default=3_000, help="how many paced events (default 3000)")
    parser.add_argument("--workers", type=int, help="server processes, for Quittance and the ceiling alike "
                        "(default: 1 on SQLite, whose writes take turns anyway, one per core on PostgreSQL; "
                        "as docs/operations.md recommends)")
    parser.add_argument("--quick", action="store_true", help="600 events after 100 of warm-up, 600 paced")
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="write a py-spy profile of the server during the measured events into DIR")
    parser.add_argument("--py-spy-format", choices=("svg", "json", "txt"), default="svg",
                        help="flame graph (svg), speedscope (json) or collapsed stacks (txt)")
    args = parser.parse_args(argv, argparse.Namespace(command="bench"))
    if args.quick:
        args.events, args.warmup, args.paced_events = 600, 100, 600
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "_load":
        return load_main(args)
    if args.command == "_ceiling":
        return ceiling_main(args)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    load_before = load_average()
    results = [run_backend(backend, args) for backend in backends]
    print(report(results, args, (load_before, load_average())))
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
