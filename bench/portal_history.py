"""The debtor's history page under load, against a raw ceiling measured in the same run.

    .venv/bin/python bench/portal_history.py                     # SQLite then PostgreSQL, 10k / 200k / 1M invoices
    .venv/bin/python bench/portal_history.py --quick --backend sqlite
    .venv/bin/python bench/portal_history.py --sizes 200000 --profile bench/results/history   # + py-spy

For each backend and dataset size: a fresh database brought up with `portal db upgrade`, then 10,000 customers
(with locales), the invoices (three lines of JSON each, every column filled as the API would fill it) and one
portal link per customer, all inserted with the bare driver (executemany on SQLite, COPY on PostgreSQL). One
customer, the debtor, has exactly 20 invoices spread evenly through the table; everybody else shares the rest.
A link for the debtor is issued through the domain (links.issue_url), GET /l/{token} on the real server gives
the session cookie, and `wrk` (32 connections, one thread, on loopback) hammers GET /portal with it: a
warm-up, then a bounded measurement.

The ceiling is served the same way (uvicorn, one worker, the settings of `portal serve`) by a bare Starlette
route that runs the very statements the app ran for that page (captured from the app's engine, replayed
through sqlite3 / psycopg in one transaction, as the app does) and renders templates/portal/history.html with
the same context, through the portal's own Jinja environment and formatter. Before measuring, both pages are
fetched and compared: they must be the same HTML but for the CSRF token, so both sides do the same work. What
the ceiling leaves out is what the app adds: the signed-cookie check, the CSRF token, SQLAlchemy, the thread
pool hop, the security-headers middleware.

Needs `wrk` (Debian: apt-get install -y wrk). See README.md for the figures and how to read them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import os
import pickle
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BACKENDS, Portal, Server, _stop, bench_database, driver_url, free_port, process_cpu_seconds, tail,
)

TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
# The p99 target's setting in the issue: 10,000 customers and 200,000 invoices (other sizes are for the scaling).
TARGET_P99_INVOICES = 200_000
TARGET_SCALING = 1.2
DEBTOR_INVOICES = 20
SECRET = "bench-portal-history-signing-key"
CEILING_CONFIG_ENV = "QUITTANCE_BENCH_CEILING_CONFIG"
CSRF_FIELD = re.compile(r'name="csrf" value="[^"]*"')

# ---------------------------------------------------------------------------------------------------------
# The data: customers, invoices and links as the API and the domain would have written them.

LOCALES = ("fr-BE", "nl-BE", "en", "de-BE", "fr-FR", "nl-NL")
PRODUCTS = (
    ("Consulting, senior (hours)", 9500), ("Consulting, junior (hours)", 6500), ("Support plan, monthly", 4900),
    ("Hosting, managed server", 12990), ("Licence seat, annual", 15000), ("On-site visit", 18000),
    ("Training day", 65000), ("Travel costs (km)", 42), ("Domain renewal", 1490), ("Backup storage, 100 GB", 990),
)
STATUSES = (("open", 80), ("paid", 14), ("draft", 4), ("cancelled", 2))
# The debtor's 20: open ones (some overdue, one partially paid, one due soon), paid, cancelled, a credit note.
DEBTOR_PLAN = (("open", "overdue"), ("open", "overdue"), ("open", "overdue"), ("open", "partial"),
               ("open", "soon"), ("open", "later"), ("open", "later"), ("open", "later"),
               *[("paid", "")] * 9, ("cancelled", ""), ("cancelled", ""), ("credit_note", ""))
EPOCH = dt.datetime(2026, 1, 2, 9, 30, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Dataset:
    customers: int
    invoices: int

    @property
    def debtor_index(self) -> int:
        return self.customers // 2

    @property
    def label(self) -> str:
        return f"{self.invoices:,}"


def customer_rows(dataset: Dataset, organization_id: int) -> Iterator[dict[str, Any]]:
    for i in range(dataset.customers):
        yield {"organization_id": organization_id, "external_id": f"CUST-{i:05d}",
               "name": "Brasserie du Parc SRL" if i == dataset.debtor_index else f"Client {i:05d} SRL",
               "email": f"compta{i}@client{i}.example",
               "locale": "fr-BE" if i == dataset.debtor_index else LOCALES[i % len(LOCALES)],
               "address": {"line1": f"Rue du Commerce {i % 200 + 1}", "postal_code": f"{1000 + i % 9000}",
                           "city": "Bruxelles", "country": "BE"},
               "vat_number": f"BE0{400000000 + i * 7919}", "created_at": EPOCH, "updated_at": EPOCH}


def _lines(rng: random.Random) -> tuple[list[dict[str, Any]], int]:
    lines, net = [], 0
    for _ in range(3):
        description, unit = PRODUCTS[rng.randrange(len(PRODUCTS))]
        quantity = rng.randint(1, 40)
        lines.append({"description": description, "quantity": str(quantity), "vat_rate": "21",
                      "unit_price_minor": unit, "total_minor": unit * quantity})
        net += unit * quantity
    return lines, net + round(net * 21 / 100)


def invoice_rows(dataset: Dataset, organization_id: int, customer_ids: Sequence[int], today: dt.date,
                 seed: int = 7) -> Iterator[dict[str, Any]]:
    """Every column of `invoices` but id, in insertion order; the debtor's 20 evenly spread among the rest."""
    rng = random.Random(seed)
    n = dataset.invoices
    debtor_at = {min(n - 1, (2 * k + 1) * n // (2 * DEBTOR_INVOICES)): k for k in range(DEBTOR_INVOICES)}
    debtor_id = customer_ids[dataset.debtor_index]
    statuses, weights = [s for s, _ in STATUSES], [w for _, w in STATUSES]
    for i in range(n):
        lines, total = _lines(rng)
        kind, due_minor = "invoice", total
        if i in debtor_at:
            k = debtor_at[i]
            status, plan = DEBTOR_PLAN[k]
            customer_id = debtor_id
            if status == "credit_note":
                kind, status = "credit_note", "paid"
            issue = today - dt.timedelta(days=20 + 25 * k)
            due = {"overdue": today - dt.timedelta(days=5 + k), "soon": today + dt.timedelta(days=3),
                   "later": today + dt.timedelta(days=20 + k)}.get(plan, issue + dt.timedelta(days=30))
            if plan == "partial":
                due_minor = total // 2
        else:
            customer_id = customer_ids[rng.randrange(len(customer_ids))]
            if customer_id == debtor_id:
                customer_id = customer_ids[(dataset.debtor_index + 1) % len(customer_ids)]
            status = rng.choices(statuses, weights)[0]
            if rng.random() < 0.02:
                kind = "credit_note"
            issue = today - dt.timedelta(days=rng.randrange(700))
            due = issue + dt.timedelta(days=30)
        if status in ("paid", "cancelled"):
            due_minor = 0
        created = EPOCH + dt.timedelta(seconds=i)
        has_pdf = status != "draft" and rng.random() < 0.6
        yield {
            "organization_id": organization_id, "external_id": f"INV-{i:07d}", "customer_id": customer_id,
            "number": None if status == "draft" else f"{issue.year}-{i:07d}", "kind": kind, "status": status,
            "issue_date": issue, "due_date": due, "payment_terms": "net_days", "payment_terms_days": 30,
            "currency": "EUR", "total_minor": total, "amount_due_minor": due_minor, "paid_minor": 0, "lines": lines,
            "title": f"Invoice {i:07d}", "header_note": None, "footer_note": None,
            "vat_mention": "VAT 21% — Belgian VAT Code art. 1", "delivery_date": None, "store": None,
            "may_have_documents": True,
            "document_sha256": hashlib.sha256(b"pdf%d" % i).hexdigest() if has_pdf else None,
            "document_size": 48_213 if has_pdf else None, "document_updated_at": created if has_pdf else None,
            "version": 1, "revision": 1, "content_hash": hashlib.sha256(b"body%d" % i).hexdigest(),
            "created_at": created, "updated_at": created,
            "activated_at": None if status == "draft" else created,
            "cancelled_at": created if status == "cancelled" else None,
        }


def link_rows(organization_id: int, customer_ids: Sequence[int]) -> Iterator[dict[str, Any]]:
    """One older link per customer: most live, some revoked, some expired, a few scoped to invoices."""
    now = dt.datetime.now(dt.UTC)
    for i, customer_id in enumerate(customer_ids):
        yield {"organization_id": organization_id, "customer_id": customer_id, "created_at": now - dt.timedelta(days=10),
               "expires_at": now + dt.timedelta(days=80 if i % 7 else -1),
               "revoked_at": now - dt.timedelta(days=2) if i % 11 == 0 else None, "scoped": False}


def load(url: str, dataset: Dataset, slug: str) -> int:
    """Fill the real tables (already migrated) with the bare driver; returns the organization id."""
    today = dt.datetime.now(dt.UTC).date()
    if url.startswith("sqlite"):
        return _load_sqlite(url, dataset, slug, today)
    return _load_postgresql(url, dataset, slug, today)


def _load_sqlite(url: str, dataset: Dataset, slug: str, today: dt.date) -> int:
    # portal.db.bulk.insert_many is one DBAPI executemany per chunk, every value through its column type's
    # bind processor: the rows are stored in exactly the format the app writes and reads.
    from portal.db import create_engine
    from portal.db.bulk import insert_many
    from portal.db.customers import customers
    from portal.db.invoices import invoices
    from portal.db.portal import portal_links

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                conn.exec_driver_sql("PRAGMA cache_size=-200000")
                org_id = conn.exec_driver_sql("SELECT id FROM organizations WHERE slug = ?", (slug,)).scalar_one()
                conn.exec_driver_sql("UPDATE organizations SET contact_email = ?, contact_phone = ? WHERE id = ?",
                                     ("billing@bench.example", "+32 2 555 01 23", org_id))
                insert_many(conn, customers, list(customer_rows(dataset, org_id)))
                customer_ids = [r[0] for r in conn.exec_driver_sql(
                    "SELECT id FROM customers WHERE organization_id = ? ORDER BY id", (org_id,))]
                for chunk in _chunks(invoice_rows(dataset, org_id, customer_ids, today), 20_000):
                    insert_many(conn, invoices, chunk)
                insert_many(conn, portal_links, list(link_rows(org_id, customer_ids)))
    finally:
        engine.dispose()
    checkpoint = sqlite3.connect(url.removeprefix("sqlite:///"))
    checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoint.close()
    return int(org_id)


def _load_postgresql(url: str, dataset: Dataset, slug: str, today: dt.date) -> int:
    import psycopg

    def copy(conn: Any, table: str, rows: Iterator[dict[str, Any]]) -> None:
        first = next(rows)
        with conn.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(first)}) FROM STDIN") as copier:
            for row in itertools.chain([first], rows):
                # JSON columns get the text the app's serializer (orjson) would have written.
                copier.write_row([orjson.dumps(v).decode() if isinstance(v, (dict, list)) else v
                                  for v in row.values()])

    with psycopg.connect(driver_url(url)) as conn:
        (org_id,) = conn.execute("SELECT id FROM organizations WHERE slug = %s", (slug,)).fetchone()
        conn.execute("UPDATE organizations SET contact_email = %s, contact_phone = %s WHERE id = %s",
                     ("billing@bench.example", "+32 2 555 01 23", org_id))
        copy(conn, "customers", customer_rows(dataset, org_id))
        customer_ids = [r[0] for r in conn.execute(
            "SELECT id FROM customers WHERE organization_id = %s ORDER BY id", (org_id,))]
        copy(conn, "invoices", invoice_rows(dataset, org_id, customer_ids, today))
        copy(conn, "portal_links", link_rows(org_id, customer_ids))
        conn.commit()
        # What autovacuum does after a bulk load: statistics for the planner and a visibility map.
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return int(org_id)


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---------------------------------------------------------------------------------------------------------
# A session for the debtor, and the statements the app runs for its page.

def issue_link(url: str, slug: str, dataset: Dataset) -> str:
    """A new link for the debtor, through the domain; returns the token's path, /l/..."""
    from portal.clock import SystemClock
    from portal.db import Database
    from portal.domain.links import issue_url
    from portal.domain.organizations import get_organization
    from portal.settings import Settings
    from portal.tokens import TokenService

    settings = Settings(database_url=url, secret_keys=(SECRET,))
    database = Database.from_url(url)
    try:
        link_url, _ = database.run(lambda conn: issue_url(
            conn, TokenService(settings.signing_keys, SystemClock()), settings,
            get_organization(conn, slug).id, f"CUST-{dataset.debtor_index:05d}", SystemClock().now()))
    finally:
        database.dispose()
    return "/l/" + link_url.rsplit("/l/", 1)[1]


def open_session(server: Server, link_path: str) -> str:
    response = httpx.get(server.base_url + link_path, follow_redirects=False, timeout=30)
    if response.status_code != 303 or "quittance_session" not in response.cookies:
        raise RuntimeError(f"GET {link_path} answered {response.status_code}, no session: {response.text[:300]}")
    return f"quittance_session={response.cookies['quittance_session']}"


def capture_statements(url: str, cookie: str) -> list[tuple[str, Any]]:
    """The SQL (and parameters) the app executes for one GET /portal with this session, in order: the app
    built in this process from the same settings, its engine listened to, the second of two requests through
    TestClient (the first connects, and the dialect's own first statements are not the page's)."""
    import sqlalchemy as sa
    from starlette.testclient import TestClient

    from portal.app import create_app
    from portal.settings import Settings

    app = create_app(Settings(database_url=url, secret_keys=(SECRET,)))
    statements: list[tuple[str, Any]] = []

    def listen(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        statements.append((statement, parameters))

    sa.event.listen(sa.Engine, "before_cursor_execute", listen)
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            for _ in range(2):
                statements.clear()
                response = client.get("/portal", headers={"cookie": cookie})
                if response.status_code != 200:
                    raise RuntimeError(f"in-process GET /portal answered {response.status_code}")
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", listen)
        app.state.services.db.dispose()
    return statements


def query_plans(url: str, statements: list[tuple[str, Any]]) -> list[str]:
    """The plan of each SELECT the page runs, one line per step: that it stays on the (organization,
    customer) index is why the page costs the same among a million invoices as among ten thousand."""
    plans = []
    selects = [(sql, params) for sql, params in statements if sql.lstrip().upper().startswith(("SELECT", "WITH"))]
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            for sql, params in selects:
                plans.append("; ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)))
        finally:
            conn.close()
        return plans
    import psycopg

    with psycopg.connect(driver_url(url)) as conn:
        for sql, params in selects:
            lines = [row[0].strip() for row in conn.execute("EXPLAIN " + sql, params)]
            plans.append("; ".join(line for line in lines if "Scan" in line or "Sort" in line or "Aggregate" in line))
    return plans


# ---------------------------------------------------------------------------------------------------------
# The ceiling: bare driver, the same template and formatter, a bare Starlette route.

@dataclass(frozen=True)
class CeilingConfig:
    backend: str
    dsn: str
    statements: list[tuple[str, Any]]
    connections: int


def _ceiling_app(config: CeilingConfig) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse
    from starlette.routing import Route

    from portal.domain import links
    from portal.domain.debtor import history_page
    from portal.i18n import LANGUAGE_NAMES, Formatter, environment, language_of
    from portal.web.portal.view import history_row_view, summary_view

    sqlite = config.backend == "sqlite"
    csrf = "x" * 86  # as long as a real token; the app signs one per page, the ceiling does not

    def build(results: list[tuple[list[str], list[tuple[Any, ...]]]]) -> str:
        # The page is five queries: the debtor's session (by its secret's hash; the ceiling only runs it, as
        # the app must), the link (links.resolve), the totals, the count, and the page of invoices.
        today = dt.datetime.now(dt.UTC).date()
        _session, (link_names, link_rows), (_, totals), (_, counted), (names, rows) = results
        link = dict(zip(link_names, link_rows[0], strict=True))
        if isinstance(link["expires_at"], str):  # sqlite3 gives text
            link["expires_at"] = dt.datetime.fromisoformat(link["expires_at"])
        scope = links.scope_of(SimpleNamespace(**link), dt.datetime.now(dt.UTC))
        items = []
        for row in rows:
            item = dict(zip(names, row, strict=True))
            for key in ("issue_date", "due_date"):
                if isinstance(item[key], str):
                    item[key] = dt.date.fromisoformat(item[key])
            items.append(SimpleNamespace(**item))
        result = history_page(totals, counted[0][0], items, 1)
        language = language_of(scope.customer_locale)
        fmt = Formatter.for_language(language, scope.customer_locale)
        return environment(language).get_template("portal/history.html").render(
            request_path="/portal", query="", language=language, languages=LANGUAGE_NAMES,
            fmt=fmt, scope=scope, csrf=csrf,
            summary=summary_view(result.summary), rows=[history_row_view(r, today, fmt) for r in result.items],
            page=1, pages=result.pages, total=result.total, status=None, year=None, years=result.summary.years)

    if sqlite:
        from portal.db import SQLITE_PRAGMAS

        conn = sqlite3.connect(config.dsn, isolation_level=None, check_same_thread=False)
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)

        async def page(_request: Request) -> HTMLResponse:
            # sqlite3 is in-process and each statement is microseconds: run on the loop, no thread hop.
            results = []
            for sql, params in config.statements:
                cursor = conn.execute(sql, params)
                if cursor.description:
                    results.append(([d[0] for d in cursor.description], cursor.fetchall()))
            conn.commit()
            return HTMLResponse(build(results))

        startup = None
    else:
        # As the app reads on PostgreSQL: psycopg in worker threads (--pg-connections of them), each with a
        # connection of its own, one read transaction per page (psycopg prepares a statement from its fifth
        # run, as in the app).
        import queue

        import anyio
        import anyio.to_thread
        import psycopg

        idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threads = anyio.CapacityLimiter(config.connections)

        def read() -> list[tuple[list[str], list[tuple[Any, ...]]]]:
            conn = idle.get()
            try:
                results = []
                with conn.transaction():
                    for sql, params in config.statements:
                        if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                            cursor = conn.execute(sql, params)
                            results.append(([d.name for d in cursor.description or ()], cursor.fetchall()))
                return results
            finally:
                idle.put(conn)

        async def page(_request: Request) -> HTMLResponse:
            return HTMLResponse(build(await anyio.to_thread.run_sync(read, limiter=threads)))

        async def startup() -> None:
            for _ in range(config.connections):
                idle.put(psycopg.connect(config.dsn))

    async def ready(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        if startup is not None:
            await startup()
        yield

    return Starlette(routes=[Route("/portal", page), Route("/ready", ready)], lifespan=lifespan)


def ceiling_app_from_environment() -> Any:
    """The ceiling app in each uvicorn worker process (they import this module afresh)."""
    return _ceiling_app(pickle.loads(Path(os.environ[CEILING_CONFIG_ENV]).read_bytes()))


def serve_ceiling(config_path: str, port: int, workers: int) -> None:
    from portal.web.server import serve

    os.environ[CEILING_CONFIG_ENV] = config_path
    serve("127.0.0.1", port, workers, f"{Path(__file__).stem}:ceiling_app_from_environment", factory=True)


@contextmanager
def ceiling_server(config: CeilingConfig, workdir: Path, workers: int) -> Iterator[Server]:
    config_path = workdir / "ceiling.pickle"
    config_path.write_bytes(pickle.dumps(config))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = workdir / f"ceiling-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, __file__, "--serve-ceiling", str(config_path), "--port", str(port),
                                    "--workers", str(workers)],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ceiling server did not start:\n{tail(log_path)}")
                try:
                    if httpx.get(f"{base_url}/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            yield Server(base_url, process.pid, log_path)
        finally:
            _stop(process)


# ---------------------------------------------------------------------------------------------------------
# The load: wrk on loopback, one thread, N connections, a warm-up and then a bounded run.

WRK_REPORT = """
done = function(summary, latency, requests)
  io.write(string.format("WRK {\\"requests\\": %d, \\"seconds\\": %f, \\"p50\\": %d, \\"p90\\": %d, \\"p99\\": %d, "
    .. "\\"max\\": %d, \\"errors\\": %d, \\"status_errors\\": %d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, summary.errors.status))
end
"""


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    server_cpu: float  # share of one core the server process used
    cpu_ms: float  # server CPU per request: less sensitive than rps to whatever else the machine is doing
    load_average: float  # the machine's 1-minute load average at the end of the run


def wrk(url: str, cookie: str, connections: int, seconds: float, workdir: Path, pid: int | None = None) -> Load:
    script = workdir / "report.lua"
    script.write_text(WRK_REPORT)
    before = process_cpu_seconds(pid) if pid else 0.0
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script),
                           "-H", f"Cookie: {cookie}", url], capture_output=True, text=True, check=True)
    cpu = process_cpu_seconds(pid) - before if pid else 0.0
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk said:\n{done.stdout}\n{done.stderr}")
    report = json.loads(line[4:])
    if report["errors"] or report["status_errors"]:
        raise RuntimeError(f"wrk saw errors against {url}: {report}")
    return Load(report["requests"] / report["seconds"], report["p50"] / 1000, report["p90"] / 1000,
                report["p99"] / 1000, report["max"] / 1000, report["requests"], cpu / report["seconds"],
                cpu * 1000 / max(1, report["requests"]), os.getloadavg()[0])


@contextmanager
def gil_profile(pid: int, output: Path | None) -> Iterator[None]:
    """py-spy of the thread holding the GIL only: with a thread pool, the other threads' samples are mostly
    waits for the GIL, which a plain profile (common.py_spy samples idle threads too) shows as work."""
    if output is None:
        yield
        return
    executable = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if executable is None:
        raise RuntimeError("py-spy not found; pip install py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    kind = {".json": "speedscope", ".txt": "raw"}.get(output.suffix, "flamegraph")
    process = subprocess.Popen([executable, "record", "--pid", str(pid), "--subprocesses", "--rate", "250", "--gil", "--nonblocking",
                                "--format", kind, "--output", str(output)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        yield
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def measure(server: Server, cookie: str, args: argparse.Namespace, workdir: Path,
            profile: Path | None = None) -> Load:
    url = f"{server.base_url}/portal"
    wrk(url, cookie, args.connections, args.warmup, workdir)
    with gil_profile(server.pid, profile):
        return wrk(url, cookie, args.connections, args.duration, workdir, server.pid)


# ---------------------------------------------------------------------------------------------------------
# One backend and dataset size, start to end.

@dataclass(frozen=True)
class Result:
    backend: str
    dataset: Dataset
    app: Load
    ceiling: Load
    load_seconds: float
    statements: int

    @property
    def ratio(self) -> float:
        return self.app.rps / self.ceiling.rps

    @property
    def cpu_ratio(self) -> float:
        """The ceiling's server CPU per request over the app's: what the ratio would be if each side had a core
        to itself, which a shared machine does not give (see README.md)."""
        return self.ceiling.cpu_ms / self.app.cpu_ms


def same_page(app_html: str, ceiling_html: str) -> bool:
    return CSRF_FIELD.sub("csrf", app_html) == CSRF_FIELD.sub("csrf", ceiling_html)


def median_load(loads: list[Load]) -> Load:
    """The round with the median throughput (its own latencies with it): other work on a shared machine
    makes single rounds swing, and the median round is the most representative one."""
    return sorted(loads, key=lambda load: load.rps)[len(loads) // 2]


def run_one(backend: str, dataset: Dataset, args: argparse.Namespace) -> Result:
    slug = "bench"
    with tempfile.TemporaryDirectory(prefix=f"quittance-history-{backend}-") as tmp, \
            bench_database(backend, Path(tmp)) as url:
        workdir = Path(tmp)
        portal = Portal(url, workdir, {"PORTAL_SECRET_KEYS": SECRET})
        portal.upgrade()
        portal.run("org", "create", slug, "--name", "Imprimerie Lambert & Fils")
        started = time.perf_counter()
        load(url, dataset, slug)
        load_seconds = time.perf_counter() - started
        log(f"{backend} {dataset.label}: loaded in {load_seconds:.1f}s")
        link_path = issue_link(url, slug, dataset)
        profile = args.profile / f"{backend}-{dataset.invoices}.{args.profile_format}" if args.profile else None
        with portal.serve(workers=args.workers) as app_server:
            cookie = open_session(app_server, link_path)
            app_html = httpx.get(f"{app_server.base_url}/portal", headers={"cookie": cookie}).text
            statements = capture_statements(url, cookie)
            for plan in query_plans(url, statements):
                log(f"{backend} {dataset.label}: plan: {plan}")
            dsn = url.removeprefix("sqlite:///") if backend == "sqlite" else driver_url(url)
            config = CeilingConfig(backend, dsn, statements, args.pg_connections)
            with ceiling_server(config, workdir, args.workers) as ceiling_server_:
                ceiling_html = httpx.get(f"{ceiling_server_.base_url}/portal").text
                if not same_page(app_html, ceiling_html):
                    (workdir.parent / "history-app.html").write_text(app_html)
                    (workdir.parent / "history-ceiling.html").write_text(ceiling_html)
                    raise RuntimeError(f"the ceiling's page differs from the app's (see {workdir.parent}/history-*.html)")
                # Both servers are up (the idle one costs nothing); rounds alternate so that whatever else the
                # machine does weighs on both sides alike.
                apps, ceilings = [], []
                for round_ in range(args.rounds):
                    last = round_ == args.rounds - 1
                    apps.append(measure(app_server, cookie, args, workdir, profile if last else None))
                    ceilings.append(measure(ceiling_server_, cookie, args, workdir,
                                            profile.with_stem(profile.stem + "-ceiling") if profile and last else None))
                    log(f"{backend} {dataset.label}: round {round_ + 1}: app {apps[-1].rps:.0f} rps "
                        f"(p99 {apps[-1].p99_ms:.1f} ms), ceiling {ceilings[-1].rps:.0f} rps "
                        f"(p99 {ceilings[-1].p99_ms:.1f} ms), load average {os.getloadavg()[0]:.1f}")
        statement_count = sum(1 for sql, _ in statements if sql.lstrip().upper().startswith(("SELECT", "WITH")))
    return Result(backend, dataset, median_load(apps), median_load(ceilings), load_seconds, statement_count)


# ---------------------------------------------------------------------------------------------------------
# Report.

def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def report(results: list[Result], args: argparse.Namespace) -> bool:
    print()
    print(f"GET /portal, a debtor with {DEBTOR_INVOICES} invoices among {args.customers:,} customers; "
          f"wrk, {args.connections} connections, {args.duration:g} s after {args.warmup:g} s warm-up, median of "
          f"{args.rounds} alternated rounds; uvicorn, {args.workers} worker(s), {os.cpu_count()} cores")
    header = (f"{'backend':<11} {'invoices':>10} {'rps':>6} {'p50 ms':>7} {'p99 ms':>7} {'cpu/req':>8} "
              f"{'ceiling rps':>11} {'c. p50':>7} {'c. p99':>7} {'c. cpu/req':>10} {'ratio':>6} {'cpu ratio':>9} "
              f"{'load':>5}")
    print(header)
    print("-" * len(header))
    ok = True
    p99_checked = [r for r in results if r.dataset.invoices == TARGET_P99_INVOICES] or results
    for r in results:
        print(f"{r.backend:<11} {r.dataset.invoices:>10,} {r.app.rps:>6.0f} {r.app.p50_ms:>7.1f} {r.app.p99_ms:>7.1f} "
              f"{r.app.cpu_ms:>6.2f}ms {r.ceiling.rps:>11.0f} {r.ceiling.p50_ms:>7.1f} {r.ceiling.p99_ms:>7.1f} "
              f"{r.ceiling.cpu_ms:>8.2f}ms {r.ratio:>6.0%} {r.cpu_ratio:>9.0%} "
              f"{(r.app.load_average + r.ceiling.load_average) / 2:>5.1f}")
        ok &= r.ratio >= TARGET_RATIO and (r not in p99_checked or r.app.p99_ms < TARGET_P99_MS)
    print()
    print(f"{results[0].statements} SELECT{'s' if results[0].statements != 1 else ''} a page. ratio: app rps / ceiling rps; cpu ratio: ceiling CPU per request / "
          f"app CPU per request (the server processes); load: the machine's load average during the rounds")
    sizes = ", ".join(dict.fromkeys(f"{r.dataset.invoices:,}" for r in p99_checked))
    print(f"targets: app >= {TARGET_RATIO:.0%} of the ceiling; p99 < {TARGET_P99_MS:.0f} ms with {sizes} invoices")
    for backend in dict.fromkeys(r.backend for r in results):
        mine = sorted((r for r in results if r.backend == backend), key=lambda r: r.dataset.invoices)
        if len(mine) < 2:
            continue
        small, large = mine[0], mine[-1]
        slower = small.app.rps / large.app.rps
        ok &= slower <= TARGET_SCALING
        print(f"{backend}: {large.dataset.label} invoices vs {small.dataset.label}: {slower:.2f}x the time per "
              f"request by rps, p50 {large.app.p50_ms / small.app.p50_ms:.2f}x, CPU per request "
              f"{large.app.cpu_ms / small.app.cpu_ms:.2f}x (target <= {TARGET_SCALING}x)")
    print("all targets met" if ok else "SOME TARGETS MISSED")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--sizes", help="invoice counts, one dataset each (default 10000,200000,1000000)")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measurement")
    parser.add_argument("--rounds", type=int, help="app/ceiling measurements, alternated; medians kept (default 3)")
    parser.add_argument("--pg-connections", type=int, help="the ceiling's PostgreSQL connections (default: as many "
                        "as the load's)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="uvicorn worker processes, for the app and the ceiling alike (default: one per core)")
    parser.add_argument("--quick", action="store_true", help="10k and 50k invoices (unless --sizes), 4 s runs")
    parser.add_argument("--profile", type=Path, help="py-spy the app and ceiling servers into this directory")
    parser.add_argument("--profile-format", choices=("svg", "txt", "json"), default="svg")
    parser.add_argument("--serve-ceiling", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ceiling:
        serve_ceiling(args.serve_ceiling, args.port, args.workers)
        return 0
    if shutil.which("wrk") is None:
        parser.error("wrk not found: apt-get install -y wrk")
    if args.quick:
        args.sizes, args.duration, args.warmup = args.sizes or "10000,50000", 4.0, 1.0
        args.rounds = args.rounds or 1
    args.sizes = args.sizes or "10000,200000,1000000"
    args.rounds = args.rounds or 3
    args.pg_connections = args.pg_connections or args.connections
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    results = [run_one(backend, Dataset(args.customers, size), args) for backend in backends for size in sizes]
    return 0 if report(results, args) else 1


if __name__ == "__main__":
    sys.exit(main())
