"""The outbox worker: how fast one `portal worker` drains a backlog, and how soon an idle one passes on a payment.

    .venv/bin/python bench/outbox_worker.py               # 5,000 deliveries and 50 payments, SQLite then PostgreSQL
    .venv/bin/python bench/outbox_worker.py --quick       # 1,000 deliveries and 15 payments
    .venv/bin/python bench/outbox_worker.py --backend postgresql --events 20000 --py-spy /tmp/profiles

For each backend: a fresh database, `portal serve`, an organization whose webhook connector (PUT
/api/v1/connectors/erp) points at a minimal upstream in its own process (raw asyncio on uvloop, HTTP/1.1
keep-alive, answers every POST with 200 {"ok":true} and notes when it arrived, on the system-wide monotonic
clock, its idempotency key, signature and body), and one open invoice per event pushed through the API.

1. Throughput. N invoice.paid events are announced through the domain (`outbox.announce`, 500 per
   transaction, each fanning out its delivery), then `portal worker` is started with its default settings
   (batch 100, concurrency 32) and timed from the first delivery reaching the upstream to the database
   holding all N as delivered. Every delivery must arrive exactly once (N distinct idempotency keys, the
   database's), with a valid Quittance-Signature and the event's body, and be recorded delivered after one
   attempt.
   The ceilings, in the same run against the same upstream: bare httpx in its own process (asyncio.run like
   `portal worker`, the same number of requests in flight) POSTs the events' bodies, each serialised with
   orjson and signed with HMAC-SHA256 at send time, with the connector's headers: everything a signed webhook
   needs, and no database, claims, leases or outcome records. Timed from its first request reaching the
   upstream to its last answer. A: one AsyncClient with all the connections (how the worker used to be
   built); B: several AsyncClients of portal.worker.CONNECTIONS_PER_CLIENT connections (how it is built now),
   run before and after the worker, the faster counting.
2. Latency. With `portal serve` and a freshly started `portal worker` both running and nothing else to do,
   one invoice at a time is paid through the real path: a Stripe-signed checkout.session.completed for a
   checkout opened through the domain (as the pay page leaves it) is POSTed to /webhooks/stripe/{org}, and
   the time from sending it to the upstream receiving that invoice's invoice.paid is measured; payments are
   spaced 0.2 to 0.6 s apart (seeded), so they land anywhere in the worker's idle poll.

See README.md for results.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import hmac
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    checkout_completed,
    open_checkouts,
    BACKENDS, Portal, Server, _stop, bench_database, free_port, portal_executable, process_cpu_seconds, py_spy,
    tail,
)

STRIPE_SECRET = "whsec_quittance_outbox_bench_0123456789"
CONNECTOR_SECRET = "qtc_outbox_bench_connector_secret_0123456789"
CUSTOMER = "CUST-OUTBOX-BENCH"
TARGET_RATE = 500.0
TARGET_P50_S = 1.0
ANNOUNCE_BATCH = 500
INVOICE_BATCH = 1_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# The upstream: a separate process, as little as an HTTP endpoint can be.

OK_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n"
               b'{"ok":true}')


class UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 with Content-Length bodies and keep-alive (what httpx sends), nothing more. POST anything:
    recorded, 200 {"ok":true}. GET /_log?since=n: what arrived from the n-th request on. GET /_ready."""

    def __init__(self, received: list[tuple[float, str, str, str, bytes]]) -> None:
        self.received = received
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            method, target = lines[0].split(" ")[:2]
            assert self.transport is not None
            if method == "POST":
                self.received.append((time.monotonic(), headers.get("idempotency-key", ""),
                                      headers.get("quittance-signature", ""), headers.get("quittance-event", ""), body))
                self.transport.write(OK_RESPONSE)
            else:
                self.transport.write(self.answer_get(target))
            if headers.get("connection", "").lower() == "close":
                self.transport.close()
                return

    def answer_get(self, target: str) -> bytes:
        url = urlsplit(target)
        if url.path == "/_log":
            since = int(parse_qs(url.query).get("since", ["0"])[0])
            content = orjson.dumps([[t, key, sig, kind, body.decode()] for t, key, sig, kind, body
                                    in self.received[since:]])
        else:
            content = orjson.dumps({"count": len(self.received)})
        return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(content)
                + content)


def upstream_main(args: argparse.Namespace) -> int:
    import uvloop

    received: list[tuple[float, str, str, str, bytes]] = []

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: UpstreamProtocol(received), "127.0.0.1", args.port, backlog=1024)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with server:
            await stop.wait()

    uvloop.run(serve())
    return 0


@dataclass(frozen=True)
class Arrival:
    at: float           # time.monotonic() in the upstream process (CLOCK_MONOTONIC is system-wide on Linux)
    key: str
    signature: str
    event_type: str
    body: bytes


class UpstreamClient:
    def __init__(self, base_url: str, pid: int) -> None:
        self.base_url, self.pid = base_url, pid
        self.client = httpx.Client(base_url=base_url, timeout=30)

    def count(self) -> int:
        return int(self.client.get("/_count").json()["count"])

    def since(self, index: int) -> list[Arrival]:
        return [Arrival(t, key, sig, kind, body.encode())
                for t, key, sig, kind, body in orjson.loads(self.client.get("/_log", params={"since": index}).content)]


@contextmanager
def upstream_process(workdir: Path) -> Iterator[UpstreamClient]:
    port = free_port()
    log_path = workdir / f"upstream-{port}.log"
    with open(log_path, "wb") as out:
        process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_upstream", "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            client = UpstreamClient(f"http://127.0.0.1:{port}", process.pid)
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.count()
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"upstream did not start:\n{tail(log_path)}") from None
                    time.sleep(0.05)
            yield client
            client.client.close()
        finally:
            _stop(process)  # type: ignore[arg-type]


def valid_signature(arrival: Arrival, secret: str) -> bool:
    try:
        parts = dict(part.split("=", 1) for part in arrival.signature.split(","))
        expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + arrival.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(parts["v1"], expected) and abs(int(parts["t"]) - time.time()) < 600
    except (KeyError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------------------
# The ceiling: signed POSTs from a bare httpx.AsyncClient, in its own process.

def ceiling_main(args: argparse.Namespace) -> int:
    events = [orjson.loads(line) for line in Path(args.bodies).read_bytes().splitlines() if line]
    secret = args.secret
    statuses: dict[str, int] = {}
    widths = [int(width) for width in args.widths.split(",")]

    async def run() -> tuple[float, float]:
        clients = [httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False,
                                     limits=httpx.Limits(max_connections=width)) for width in widths]
        try:
            queue = iter(range(len(events)))

            async def sender(client: httpx.AsyncClient) -> None:
                for index in queue:
                    event = events[index]
                    body = orjson.dumps(event)
                    mac = hmac.new(secret.encode(), f"{int(time.time())}.".encode() + body, hashlib.sha256).hexdigest()
                    headers = {"Content-Type": "application/json", "Idempotency-Key": f"ceiling_{index}",
                               "Quittance-Signature": f"t={int(time.time())},v1={mac}",
                               "Quittance-Event": event["type"], "User-Agent": "Quittance-Webhooks/1"}
                    try:
                        response = await client.post(args.url, content=body, headers=headers)
                        key = str(response.status_code)
                    except httpx.HTTPError as exc:
                        key = type(exc).__name__
                    statuses[key] = statuses.get(key, 0) + 1

            start = time.monotonic()
            await asyncio.gather(*(sender(client) for client, width in zip(clients, widths, strict=True)
                                   for _ in range(width)))
            return start, time.monotonic()
        finally:
            for client in clients:
                await client.aclose()

    cpu = time.process_time()
    start, end = asyncio.run(run())
    Path(args.out).write_bytes(orjson.dumps({"start": start, "end": end, "statuses": statuses,
                                             "cpu": time.process_time() - cpu}))
    return 0


def run_ceiling(upstream: UpstreamClient, bodies: Sequence[bytes], widths: Sequence[int],
                workdir: Path) -> dict[str, Any]:
    """`widths`: one AsyncClient per entry, with that many connections and requests in flight."""
    job = workdir / f"ceiling-{time.monotonic_ns()}"
    job.with_suffix(".in").write_bytes(b"\n".join(bodies) + b"\n")
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_ceiling", "--url",
                           f"{upstream.base_url}/hooks/ceiling", "--bodies", str(job.with_suffix(".in")), "--out",
                           str(job.with_suffix(".out")), "--widths", ",".join(map(str, widths)), "--secret",
                           CONNECTOR_SECRET], env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"})
    if done.returncode != 0:
        raise RuntimeError(f"ceiling process failed ({done.returncode})")
    return dict(orjson.loads(job.with_suffix(".out").read_bytes()))


# ---------------------------------------------------------------------------------------------------------
# Setup: invoices through the API, events and checkouts through the domain.

def invoice_body(index: int, prefix: str) -> dict[str, Any]:
    net = 5_000 + (index * 7_919) % 95_000
    vat = round(net * 21 / 100)
    euros = lambda minor: f"{minor // 100}.{minor % 100:02d}"  # noqa: E731
    return {"external_id": f"{prefix}-{index:06d}", "customer": CUSTOMER, "number": f"2026-{prefix}{index:06d}",
            "status": "open", "issue_date": "2026-10-01", "currency": "EUR", "total": euros(net + vat),
            "title": f"Invoice 2026-{prefix}{index:06d}", "version": 1,
            "payment_terms": {"type": "net_days", "days": 30},
            "lines": [{"description": "Support plan, monthly", "quantity": "1", "unit_price": euros(net),
                       "vat_rate": "21", "total": euros(net)}]}


def prepare_tenant(server: Server, api_key: str, upstream: UpstreamClient, events: int, payments: int) -> None:
    headers = {"Authorization": f"Bearer {api_key}", "content-type": "application/json"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=300) as client:
        answer = client.put("/api/v1/connectors/erp", content=orjson.dumps({"type": "webhook", "settings": {
            "url": f"{upstream.base_url}/hooks/quittance", "secret": CONNECTOR_SECRET}}))
        if answer.status_code != 201:
            raise RuntimeError(f"PUT connector: {answer.status_code} {answer.text[:500]}")
        customer = {"name": "Outbox Bench SRL", "email": "compta@outbox-bench.example", "locale": "fr-BE"}
        answer = client.put(f"/api/v1/customers/{CUSTOMER}", content=orjson.dumps(customer))
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"PUT customer: {answer.status_code} {answer.text[:500]}")
        wanted = [invoice_body(i, "OB") for i in range(events)] + [invoice_body(i, "LAT") for i in range(payments)]
        for start in range(0, len(wanted), INVOICE_BATCH):
            body = {"invoices": wanted[start:start + INVOICE_BATCH]}
            answer = client.post("/api/v1/invoices/batch", content=orjson.dumps(body))
            if answer.status_code != 200 or orjson.loads(answer.content)["created"] != len(body["invoices"]):
                raise RuntimeError(f"invoice batch: {answer.status_code} {answer.text[:500]}")


def announce_events(url: str, slug: str) -> tuple[int, float]:
    """invoice.paid for every OB- invoice, through `outbox.announce`, ANNOUNCE_BATCH per transaction."""
    import sqlalchemy as sa

    from portal.db import Database
    from portal.db.invoices import invoices
    from portal.db.organizations import organizations
    from portal.domain.outbox import announce
    from portal.money import format_minor

    database = Database.from_url(url)
    try:
        with database.transaction() as conn:
            org_id = conn.scalar(sa.select(organizations.c.id).where(organizations.c.slug == slug))
            rows = conn.execute(sa.select(invoices.c.id, invoices.c.external_id, invoices.c.number,
                                          invoices.c.total_minor, invoices.c.currency)
                                .where(invoices.c.organization_id == org_id, invoices.c.external_id.like("OB-%"))
                                .order_by(invoices.c.id)).all()
        start = time.perf_counter()
        for first in range(0, len(rows), ANNOUNCE_BATCH):
            with database.transaction() as conn:
                now = dt.datetime.now(dt.UTC)
                for row in rows[first:first + ANNOUNCE_BATCH]:
                    amount = format_minor(row.total_minor, row.currency)
                    announce(conn, org_id, "invoice.paid", {
                        "invoice": row.external_id, "number": row.number, "provider": "stripe",
                        "payment_id": "pi_" + secrets.token_hex(12), "amount": amount, "currency": row.currency,
                        "amount_paid": amount, "overpaid": None}, now, invoice_id=row.id)
        return len(rows), time.perf_counter() - start
    finally:
        database.dispose()




def stripe_signature(body: bytes) -> str:
    timestamp = int(time.time())
    return f"t={timestamp},v1={hmac.new(STRIPE_SECRET.encode(), b'%d.' % timestamp + body, hashlib.sha256).hexdigest()}"


# ---------------------------------------------------------------------------------------------------------
# `portal worker`, and reading the database.

@contextmanager
def worker_process(portal: Portal, name: str) -> Iterator[subprocess.Popen[bytes]]:
    log_path = portal.workdir / f"{name}.log"
    with open(log_path, "wb") as out:
        process = subprocess.Popen([str(portal_executable()), "worker"], env=portal.env, cwd=portal.workdir,
                                   stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    text = log_path.read_text(errors="replace")
    if "Traceback" in text or "failed" in text:
        raise RuntimeError(f"{name} logged trouble:\n{tail(log_path)}")


class Deliveries:
    def __init__(self, url: str) -> None:
        from portal.db import create_engine

        self.engine = create_engine(url)

    def counts(self) -> dict[str, int]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT status, count(*) FROM deliveries GROUP BY status")).all())

    def delivered(self) -> int:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM deliveries WHERE status = 'delivered'")).scalar_one())

    def summary(self) -> tuple[set[str], dict[tuple[str, int], int]]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            keys = set(conn.execute(sa.text("SELECT idempotency_key FROM deliveries")).scalars())
            states = {(s, a): n for s, a, n in conn.execute(sa.text(
                "SELECT status, attempts, count(*) FROM deliveries GROUP BY status, attempts"))}
        return keys, states

    def close(self) -> None:
        self.engine.dispose()


# ---------------------------------------------------------------------------------------------------------
# One backend, start to end.

@dataclass
class Ceiling:
    widths: list[int]            # connections (and requests in flight) of each AsyncClient
    seconds: float               # first request at the upstream -> last answer
    cpu: float                   # the client process's CPU seconds


@dataclass
class Throughput:
    count: int
    seconds: float               # first delivery at the upstream -> all recorded delivered
    upstream_seconds: float      # first -> last delivery at the upstream
    startup_seconds: float       # worker launched -> first delivery at the upstream
    worker_cpu: float
    announce_rate: float
    one_client: Ceiling          # one AsyncClient with all the connections
    layout: Ceiling              # the worker's layout: several AsyncClients of CONNECTIONS_PER_CLIENT

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def ceiling_rate(self, ceiling: Ceiling) -> float:
        return self.count / ceiling.seconds


@dataclass
class Latency:
    seconds: list[float]         # webhook sent -> invoice.paid at the upstream, sorted
    webhook_seconds: list[float]  # webhook sent -> answered, sorted
    missing: int
    worker_idle_cpu_share: float

    def percentile(self, p: float, values: list[float] | None = None) -> float:
        values = self.seconds if values is None else values
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(p / 100 * len(values)))]


@dataclass
class BackendResult:
    backend: str
    throughput: Throughput
    latency: Latency
    load: tuple[float, float]    # 1-minute load average before and after the backend's run
    problems: list[str] = field(default_factory=list)


def expected_bodies(url: str) -> list[bytes]:
    """The body of every pending delivery, in delivery order, as the worker will build it (its own `_contexts`
    and `Event.as_json`, serialised as the webhook connector does): the ceiling sends these, and the worker
    must send exactly these."""
    import sqlalchemy as sa

    from portal.db import Database
    from portal.db.connectors import deliveries
    from portal.worker import _contexts

    database = Database.from_url(url)
    try:
        with database.transaction(write=False) as conn:
            ids = list(conn.scalars(sa.select(deliveries.c.id).where(deliveries.c.status == "pending")
                                    .order_by(deliveries.c.id)))
            bodies = []
            for start in range(0, len(ids), 500):
                contexts = _contexts(conn, ids[start:start + 500])
                bodies += [orjson.dumps(contexts[i]["event"].as_json()) for i in ids[start:start + 500]]
        return bodies
    finally:
        database.dispose()


def canonical(body: bytes) -> bytes:
    return orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)


def ceiling_run(upstream: UpstreamClient, bodies: Sequence[bytes], widths: list[int], workdir: Path,
                problems: list[str]) -> Ceiling:
    before = upstream.count()
    ceiling = run_ceiling(upstream, bodies, widths, workdir)
    arrivals = upstream.since(before)
    if ceiling["statuses"] != {"200": len(bodies)} or len(arrivals) != len(bodies):
        problems.append(f"ceiling {widths}: {ceiling['statuses']}, {len(arrivals)} at the upstream")
    return Ceiling(widths, ceiling["end"] - arrivals[0].at, ceiling["cpu"])


def measure_throughput(portal: Portal, url: str, slug: str, upstream: UpstreamClient, deliveries: Deliveries,
                       args: argparse.Namespace, problems: list[str]) -> Throughput:
    count, announce_seconds = announce_events(url, slug)
    bodies = expected_bodies(url)
    layout = worker_layout(args.ceiling_concurrency)
    log(f"announced {count:,} events in {announce_seconds:.1f} s; ceiling B (bare httpx, {len(layout)} clients "
        f"of {max(layout)} connections), then portal worker, then ceiling B again, then ceiling A (one client)")
    # B before and after the worker, the faster counting: a burst of someone else's load during one of them
    # would otherwise move the ratio.
    layout_before = ceiling_run(upstream, bodies, layout, portal.workdir, problems)
    before = upstream.count()
    profile = args.py_spy / f"worker-{args.current_backend}.{args.py_spy_format}" if args.py_spy else None
    launched = time.monotonic()
    with worker_process(portal, "worker-throughput") as worker:
        deadline = time.monotonic() + max(120.0, count / 50)
        while upstream.count() == before:  # the worker's start-up (imports, first claim) is not counted
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker exited or delivered nothing:\n"
                                   f"{tail(portal.workdir / 'worker-throughput.log')}")
            time.sleep(0.002)
        cpu_before = process_cpu_seconds(worker.pid)
        with py_spy(worker.pid, profile):
            while deliveries.delivered() < count:
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker stopped or stalled at {deliveries.counts()}")
                time.sleep(0.02)
            done = time.monotonic()
        worker_cpu = process_cpu_seconds(worker.pid) - cpu_before
    arrivals = upstream.since(before)
    keys, states = deliveries.summary()
    if len(arrivals) != count or {a.key for a in arrivals} != keys:
        problems.append(f"upstream got {len(arrivals)} requests with {len({a.key for a in arrivals})} distinct keys "
                        f"for {len(keys)} deliveries")
    if states != {("delivered", 1): count}:
        problems.append(f"deliveries by (status, attempts): {states}")
    bad = sum(1 for a in arrivals if not valid_signature(a, CONNECTOR_SECRET))
    if bad:
        problems.append(f"{bad} deliveries with a bad signature")
    if sorted(canonical(a.body) for a in arrivals) != sorted(canonical(body) for body in bodies):
        problems.append("the worker's bodies are not the events' bodies")
    if any(orjson.loads(a.body)["type"] != a.event_type for a in arrivals):
        problems.append("a Quittance-Event header does not match its body")

    rate = count / (done - arrivals[0].at)
    layout_after = ceiling_run(upstream, bodies, layout, portal.workdir, problems)
    log(f"worker: {rate:,.0f}/s; ceiling B {count / layout_before.seconds:,.0f}/s before, "
        f"{count / layout_after.seconds:,.0f}/s after; ceiling A")
    one_client = ceiling_run(upstream, bodies, [args.ceiling_concurrency], portal.workdir, problems)
    return Throughput(count=count, seconds=done - arrivals[0].at, upstream_seconds=arrivals[-1].at - arrivals[0].at,
                      startup_seconds=arrivals[0].at - launched, worker_cpu=worker_cpu,
                      announce_rate=count / announce_seconds, one_client=one_client,
                      layout=min(layout_before, layout_after, key=lambda ceiling: ceiling.seconds))


def worker_layout(concurrency: int) -> list[int]:
    """The connections of each of the worker's HTTP clients (portal/worker.py)."""
    from portal.worker import WorkerSettings, _clients

    clients = _clients(WorkerSettings(concurrency=concurrency), allow_private_networks=True)
    widths = [width for _, width in clients]
    asyncio.run(_close_all([client for client, _ in clients]))
    return widths


async def _close_all(clients: Sequence[httpx.AsyncClient]) -> None:
    for client in clients:
        await client.aclose()


def measure_latency(portal: Portal, url: str, slug: str, server: Server, upstream: UpstreamClient,
                    args: argparse.Namespace, problems: list[str]) -> Latency:
    checkouts = open_checkouts(url, slug, CUSTOMER, external_id_prefix="LAT-")
    rng = random.Random(20261001)
    latencies: list[float] = []
    webhook: list[float] = []
    missing = 0
    with worker_process(portal, "worker-latency") as worker, \
            httpx.Client(base_url=server.base_url, timeout=30) as client:
        time.sleep(1.0)  # let the worker start and settle into its idle poll
        if worker.poll() is not None:
            raise RuntimeError("the worker exited")
        cpu_before, wall_before = process_cpu_seconds(worker.pid), time.monotonic()
        for checkout in checkouts:
            time.sleep(rng.uniform(0.2, 0.6))
            body = checkout_completed(checkout, email="compta@outbox-bench.example", name="Outbox Bench SRL")[2]
            index = upstream.count()
            headers = {"content-type": "application/json; charset=utf-8", "user-agent": "Stripe/1.0",
                       "stripe-signature": stripe_signature(body)}
            sent = time.monotonic()
            answer = client.post(f"/webhooks/stripe/{slug}", content=body, headers=headers)
            answered = time.monotonic()
            if answer.status_code != 200:
                problems.append(f"webhook for {checkout.invoice}: {answer.status_code}")
                continue
            webhook.append(answered - sent)
            arrived = None
            deadline = sent + 10.0
            while arrived is None and time.monotonic() < deadline:
                for arrival in upstream.since(index):
                    event = orjson.loads(arrival.body)
                    invoice = (event["invoice"] or {}).get("external_id")
                    if event["type"] == "invoice.paid" and invoice == checkout.invoice:
                        if not valid_signature(arrival, CONNECTOR_SECRET):
                            problems.append(f"bad signature on {checkout.invoice}")
                        arrived = arrival.at
                        break
                else:
                    time.sleep(0.002)
            if arrived is None:
                missing += 1
                problems.append(f"invoice.paid for {checkout.invoice} not at the upstream within 10 s")
            else:
                latencies.append(arrived - sent)
        idle_share = (process_cpu_seconds(worker.pid) - cpu_before) / (time.monotonic() - wall_before)
    return Latency(sorted(latencies), sorted(webhook), missing, idle_share)


def run_backend(backend: str, args: argparse.Namespace) -> BackendResult:
    slug = f"obbench-{int(time.time())}"
    args.current_backend = backend
    load_before = os.getloadavg()[0]
    problems: list[str] = []
    # The upstream is on loopback, which connectors refuse unless the install allows private networks.
    extra_env = {"PORTAL_STRIPE_WEBHOOK_SECRETS": STRIPE_SECRET, "PORTAL_CONNECTORS_ALLOW_PRIVATE_NETWORKS": "1",
                 # The connectors' settings are stored encrypted (a key for this run only).
                 "PORTAL_ENCRYPTION_KEYS": Fernet.generate_key().decode()}
    if args.concurrency is not None:
        extra_env["PORTAL_WORKER_CONCURRENCY"] = str(args.concurrency)
    with tempfile.TemporaryDirectory(prefix=f"quittance-outbox-{backend}-") as tmp, \
            bench_database(backend, Path(tmp)) as url:
        workdir = Path(tmp)
        portal = Portal(url, workdir, extra_env)
        portal.upgrade()
        api_key = portal.create_tenant(slug, "Outbox benchmark")
        deliveries = Deliveries(url)
        try:
            with upstream_process(workdir) as upstream, portal.serve() as server:
                log(f"{backend}: pushing {args.events + args.payments:,} invoices, configuring the connector")
                prepare_tenant(server, api_key, upstream, args.events, args.payments)
                throughput = measure_throughput(portal, url, slug, upstream, deliveries, args, problems)
                log(f"{backend}: worker {throughput.rate:,.0f}/s, ceilings "
                    f"{throughput.ceiling_rate(throughput.one_client):,.0f}/s (one client), "
                    f"{throughput.ceiling_rate(throughput.layout):,.0f}/s (the worker's layout); "
                    f"now {args.payments} payments by webhook, one at a time")
                latency = measure_latency(portal, url, slug, server, upstream, args, problems)
                if "Traceback" in server.log_path.read_text(errors="replace"):
                    problems.append(f"server logged an error:\n{tail(server.log_path)}")
            counts = deliveries.counts()
            if counts != {"delivered": args.events + args.payments}:
                problems.append(f"deliveries at the end: {counts}")
        finally:
            deliveries.close()
    return BackendResult(backend, throughput, latency, (load_before, os.getloadavg()[0]), problems)


# ---------------------------------------------------------------------------------------------------------
# Report.

def table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def report(results: Sequence[BackendResult], args: argparse.Namespace) -> str:
    rows: list[tuple[str, ...]] = [("backend", "deliveries", "worker/s", "ceiling A/s", "ratio A", "ceiling B/s",
                                    "ratio B", "CPU ms/dlv worker, A, B", "worker/CPU-s", "startup s",
                                    "announce/s")]
    for r in results:
        t = r.throughput
        a, b = t.ceiling_rate(t.one_client), t.ceiling_rate(t.layout)
        rows.append((r.backend, f"{t.count:,}", f"{t.rate:,.0f}", f"{a:,.0f}", f"{t.rate / a:.0%}", f"{b:,.0f}",
                     f"{t.rate / b:.0%}", " / ".join(f"{cpu / t.count * 1000:.2f}" for cpu in
                                                     (t.worker_cpu, t.one_client.cpu, t.layout.cpu)),
                     f"{t.count / t.worker_cpu:,.0f}", f"{t.startup_seconds:.2f}", f"{t.announce_rate:,.0f}"))
    lines = table(rows)
    concurrency = args.ceiling_concurrency
    layout = results[0].throughput.layout.widths if results else []
    lines += ["", f"worker/s: N / (first delivery at the upstream -> all N recorded delivered), `portal worker` with "
                  f"its defaults (batch 100, concurrency {concurrency}: {len(layout)} HTTP clients of "
                  f"{max(layout, default=0)} connections). Ceilings: the same N bodies, each signed at send time, "
                  f"{concurrency} in flight, first at the upstream -> last answer; A from one bare "
                  f"httpx.AsyncClient with {concurrency} connections, B from {len(layout)} of "
                  f"{max(layout, default=0)} (the worker's layout), the faster of a run before and one after the "
                  "worker. CPU: the worker's and the ceiling clients' processes; worker/CPU-s: deliveries per "
                  "second of the worker's CPU, what it would do with a core to itself.", ""]
    rows = [("backend", "payments", "p50 ms", "p90 ms", "max ms", "webhook p50 ms", "missing", "idle worker CPU")]
    for r in results:
        lat = r.latency
        rows.append((r.backend, str(len(lat.seconds) + lat.missing), f"{lat.percentile(50) * 1000:.0f}",
                     f"{lat.percentile(90) * 1000:.0f}", f"{lat.seconds[-1] * 1000:.0f}" if lat.seconds else "-",
                     f"{lat.percentile(50, lat.webhook_seconds) * 1000:.0f}", str(lat.missing),
                     f"{lat.worker_idle_cpu_share:.1%}"))
    lines += table(rows)
    lines += ["", "latency: Stripe webhook sent -> the invoice's invoice.paid at the upstream, `portal serve` and an "
                  "idle `portal worker` running, payments 0.2-0.6 s apart.", ""]
    for r in results:
        checks = [(f">= {TARGET_RATE:.0f} deliveries/s", r.throughput.rate >= TARGET_RATE),
                  (f"p50 < {TARGET_P50_S:.0f} s", r.latency.percentile(50) < TARGET_P50_S),
                  ("each delivered once, signed, recorded", not r.problems)]
        lines.append(f"{r.backend}: " + ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in checks)
                     + f" (load average {r.load[0]:.1f} before, {r.load[1]:.1f} after; {os.cpu_count()} CPUs)")
        lines.extend(f"  {problem}" for problem in r.problems)
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_upstream"]:
        parser = argparse.ArgumentParser()
        parser.add_argument("--port", type=int, required=True)
        return parser.parse_args(argv[1:], argparse.Namespace(command="_upstream"))
    if argv[:1] == ["_ceiling"]:
        parser = argparse.ArgumentParser()
        for name in ("--url", "--bodies", "--out", "--secret", "--widths"):
            parser.add_argument(name, required=True)
        return parser.parse_args(argv[1:], argparse.Namespace(command="_ceiling"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000, help="deliveries in the backlog (default 5000)")
    parser.add_argument("--payments", type=int, default=50, help="payments timed one by one (default 50)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="PORTAL_WORKER_CONCURRENCY and the ceiling's requests in flight (default: the "
                             "worker's, 32)")
    parser.add_argument("--quick", action="store_true", help="1000 deliveries, 15 payments")
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--py-spy", type=Path, metavar="DIR", help="profile the worker while it drains into DIR")
    parser.add_argument("--py-spy-format", choices=("svg", "json", "txt"), default="svg")
    args = parser.parse_args(argv, argparse.Namespace(command="bench"))
    if args.quick:
        args.events, args.payments = 1_000, 15
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "_upstream":
        return upstream_main(args)
    if args.command == "_ceiling":
        return ceiling_main(args)
    if args.concurrency is None:
        from portal.worker import WorkerSettings

        concurrency = WorkerSettings().concurrency
    else:
        concurrency = args.concurrency
    args.ceiling_concurrency = concurrency
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    results = [run_backend(backend, args) for backend in backends]
    print(report(results, args))
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
