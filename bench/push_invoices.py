"""Push invoices in batches over HTTP to a running server, and compare with the bare driver's insert.

    .venv/bin/python bench/push_invoices.py                  # 100,000 invoices, SQLite then PostgreSQL
    .venv/bin/python bench/push_invoices.py --invoices 5000 --backend sqlite

For each backend: a fresh database, `portal serve` as a subprocess, one batch pushed twice by another
tenant to warm the server up, a few hundred customers pushed with PUT /api/v1/customers/{id}, then every
invoice pushed with POST /api/v1/invoices/batch (all "created"),
then the same bodies pushed again (all "unchanged"). Last, the rows the server stored are copied with the
bare driver (sqlite3 / psycopg executemany) into twin tables with the same DDL and indexes, in batches of
the same size, one transaction each: that is the ceiling the HTTP push is measured against. See README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BACKENDS, Portal, Server, bench_database, driver_url, process_cpu_seconds, py_spy, rate,
)

BATCH_PATH = "/api/v1/invoices/batch"
TARGET_SQLITE_RATE = 5_000
TARGET_RATIO = 0.25
TARGET_REPUSH = 0.5

# ---------------------------------------------------------------------------------------------------------
# Realistic payloads: what a billing system would push (3 lines, VAT, a mix of statuses and payment terms).

PRODUCTS = (
    ("Consulting, senior (hours)", 9500), ("Consulting, junior (hours)", 6500), ("Support plan, monthly", 4900),
    ("Hosting, managed server", 12990), ("Licence seat, annual", 15000), ("On-site visit", 18000),
    ("Training day", 65000), ("Travel costs (km)", 42), ("Domain renewal", 1490), ("Backup storage, 100 GB", 990),
)
STATUSES = (("open", 80), ("paid", 14), ("draft", 4), ("cancelled", 2))
CITIES = ("Bruxelles", "Gent", "Antwerpen", "Liège", "Namur", "Leuven", "Mons", "Brugge")


def euros(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def make_customer(index: int) -> tuple[str, dict[str, Any]]:
    body = {"name": f"Client {index:04d} SRL", "email": f"compta{index}@client{index}.example",
            "locale": ("fr-BE", "nl-BE", "en")[index % 3], "vat_number": f"BE0{400000000 + index * 7919}",
            "address": {"line1": f"Rue du Commerce {index % 200 + 1}", "postal_code": f"{1000 + index % 9000}",
                        "city": CITIES[index % len(CITIES)], "country": "BE"}}
    return f"CUST-{index:04d}", body


def make_line(rng: random.Random) -> tuple[dict[str, str], int]:
    description, unit = PRODUCTS[rng.randrange(len(PRODUCTS))]
    quantity = rng.randint(1, 40)
    total = unit * quantity
    return {"description": description, "quantity": str(quantity), "unit_price": euros(unit), "vat_rate": "21",
            "total": euros(total)}, total


def make_invoice(index: int, rng: random.Random, customer_ids: Sequence[str]) -> dict[str, Any]:
    lines, net = [], 0
    for _ in range(3):
        line, total = make_line(rng)
        lines.append(line)
        net += total
    gross = net + round(net * 21 / 100)
    status = rng.choices([s for s, _ in STATUSES], weights=[w for _, w in STATUSES])[0]
    issue = dt.date(2026, 1, 1) + dt.timedelta(days=rng.randrange(330))
    body: dict[str, Any] = {
        "external_id": f"INV-2026-{index:06d}", "customer": customer_ids[rng.randrange(len(customer_ids))],
        "number": f"2026-{index:06d}", "status": status, "issue_date": issue.isoformat(), "currency": "EUR",
        "total": euros(gross), "lines": lines, "title": f"Invoice 2026-{index:06d}",
        "vat_mention": "VAT 21% — Belgian VAT Code art. 1", "version": 1,
    }
    if rng.random() < 0.7:
        body["payment_terms"] = {"type": "net_days", "days": 30}  # the due date is derived by the server
    else:
        body["payment_terms"] = {"type": "end_of_month", "days": 30}
        body["due_date"] = (issue + dt.timedelta(days=60)).isoformat()
    if status == "open" and rng.random() < 0.1:
        body["amount_due"] = euros(gross // 2)  # a partial payment the billing system already booked
    if status == "draft":
        del body["number"]
    return body


def make_payloads(invoice_count: int, customer_count: int, batch_size: int, seed: int,
                  ) -> tuple[list[tuple[str, dict[str, Any]]], list[bytes]]:
    """Customers, and the batch bodies already encoded: the client should spend its CPU on sending."""
    rng = random.Random(seed)
    customers = [make_customer(i) for i in range(customer_count)]
    customer_ids = [external_id for external_id, _ in customers]
    invoices = [make_invoice(i, rng, customer_ids) for i in range(invoice_count)]
    bodies = [orjson.dumps({"invoices": invoices[start:start + batch_size]})
              for start in range(0, invoice_count, batch_size)]
    return customers, bodies


# ---------------------------------------------------------------------------------------------------------
# The HTTP client side.

@dataclass(frozen=True)
class PushResult:
    seconds: float
    counts: dict[str, int]
    server_cpu: float
    client_cpu: float


def put_customers(client: httpx.Client, customers: Sequence[tuple[str, dict[str, Any]]]) -> None:
    for external_id, body in customers:
        response = client.put(f"/api/v1/customers/{external_id}", content=orjson.dumps(body),
                              headers={"content-type": "application/json"})
        if response.status_code not in (200, 201):
            raise RuntimeError(f"PUT customer {external_id}: {response.status_code} {response.text[:500]}")


def send_batch(client: httpx.Client, body: bytes) -> dict[str, int]:
    response = client.post(BATCH_PATH, content=body, headers={"content-type": "application/json"})
    if response.status_code != 200:
        raise RuntimeError(f"batch answered {response.status_code}: {response.text[:500]}")
    answer = orjson.loads(response.content)
    if answer["failed"]:
        first = next(r for r in answer["results"] if r["result"] == "error")
        raise RuntimeError(f"{answer['failed']} invoices failed, first: {first}")
    return {key: answer[key] for key in ("created", "updated", "unchanged", "failed")}


def push_all(client: httpx.Client, server: Server, bodies: Sequence[bytes], concurrency: int,
             profile: Path | None) -> PushResult:
    """Send every batch; with concurrency 2, two requests are in flight over two kept-alive connections."""
    totals = dict.fromkeys(("created", "updated", "unchanged", "failed"), 0)
    with py_spy(server.pid, profile):
        server_cpu, client_cpu, start = process_cpu_seconds(server.pid), time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            for counts in pool.map(lambda body: send_batch(client, body), bodies):
                for key, value in counts.items():
                    totals[key] += value
        seconds = time.perf_counter() - start
        server_cpu = process_cpu_seconds(server.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
    return PushResult(seconds, totals, server_cpu, client_cpu)


# ---------------------------------------------------------------------------------------------------------
# The bare-driver ceiling: the same rows, the same table shapes and indexes, the same batch size.

BARE = {"invoices": "bare_invoices", "invoice_timeline": "bare_invoice_timeline"}


@dataclass(frozen=True)
class BareRows:
    """Rows as the server stored them (every column but `id`), invoices in id order, with each invoice's
    timeline rows; the timeline's invoice_id is filled in with the twin table's new ids at insert time."""

    invoice_columns: list[str]
    invoices: list[tuple[Any, ...]]
    timeline_columns: list[str]
    timeline: list[list[tuple[Any, ...]]]


def _group_timeline(invoice_ids: Sequence[int], rows: Sequence[tuple[Any, ...]], invoice_id_at: int,
                    ) -> list[list[tuple[Any, ...]]]:
    by_invoice: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_invoice.setdefault(row[invoice_id_at], []).append(row)
    return [by_invoice.get(invoice_id, []) for invoice_id in invoice_ids]


def _timeline_params(rows: BareRows, start: int, new_ids: Sequence[int]) -> list[tuple[Any, ...]]:
    at = rows.timeline_columns.index("invoice_id")
    params = []
    for new_id, group in zip(new_ids, rows.timeline[start:start + len(new_ids)], strict=True):
        params.extend(row[:at] + (new_id,) + row[at + 1:] for row in group)
    return params


def _insert_sql(table: str, columns: Sequence[str], placeholder: str) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([placeholder] * len(columns))})"


def bare_sqlite(url: str, organization_slug: str, batch_size: int) -> BareResult:
    from portal.db import SQLITE_PRAGMAS

    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        for pragma in SQLITE_PRAGMAS:  # the app's own connection settings, so both sides pay the same
            conn.execute(pragma)
        _sqlite_twin_tables(conn)
        rows = _sqlite_rows(conn, organization_slug)
        # sqlite3 runs in this process: its CPU time is the whole bare insert's, comparable with the server's.
        result = _timed_batches(rows, batch_size, lambda start: _sqlite_batch(conn, rows, start, batch_size))
        _check_copied(conn.execute(f"SELECT count(*) FROM {BARE['invoices']}").fetchone()[0], len(rows.invoices))
        return result
    finally:
        conn.close()


def _sqlite_twin_tables(conn: sqlite3.Connection) -> None:
    """The same CREATE TABLE / CREATE INDEX text as the real tables, with the names changed."""
    ddl = conn.execute("SELECT sql FROM sqlite_master WHERE tbl_name IN ('invoices', 'invoice_timeline') "
                       "AND sql IS NOT NULL ORDER BY type DESC, tbl_name").fetchall()
    for table in reversed(BARE.values()):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    for (statement,) in ddl:
        statement = re.sub(r"CREATE (UNIQUE )?INDEX (\w+)", r"CREATE \1INDEX bare_\2", statement)
        for name, twin in BARE.items():
            statement = re.sub(rf"\b{name}\b", twin, statement)
        conn.execute(statement)


def _sqlite_rows(conn: sqlite3.Connection, organization_slug: str) -> BareRows:
    (org_id,) = conn.execute("SELECT id FROM organizations WHERE slug = ?", (organization_slug,)).fetchone()
    invoice_columns = [r[1] for r in conn.execute("PRAGMA table_info(invoices)") if r[1] != "id"]
    timeline_columns = [r[1] for r in conn.execute("PRAGMA table_info(invoice_timeline)") if r[1] != "id"]
    fetched = conn.execute(f"SELECT id, {', '.join(invoice_columns)} FROM invoices WHERE organization_id = ? "
                           "ORDER BY id", (org_id,)).fetchall()
    timeline = conn.execute(f"SELECT {', '.join(timeline_columns)} FROM invoice_timeline "
                            "WHERE organization_id = ? ORDER BY id", (org_id,)).fetchall()
    ids = [row[0] for row in fetched]
    return BareRows(invoice_columns, [row[1:] for row in fetched], timeline_columns,
                    _group_timeline(ids, timeline, timeline_columns.index("invoice_id")))


def _sqlite_batch(conn: sqlite3.Connection, rows: BareRows, start: int, batch_size: int) -> None:
    chunk = rows.invoices[start:start + batch_size]
    conn.execute("BEGIN IMMEDIATE")
    # Without AUTOINCREMENT a new rowid is max(rowid) + 1, and nobody else writes inside BEGIN IMMEDIATE:
    # the ids of this batch are known without RETURNING (which sqlite3's executemany cannot fetch).
    (last_id,) = conn.execute(f"SELECT coalesce(max(id), 0) FROM {BARE['invoices']}").fetchone()
    conn.executemany(_insert_sql(BARE["invoices"], rows.invoice_columns, "?"), chunk)
    new_ids = range(last_id + 1, last_id + 1 + len(chunk))
    conn.executemany(_insert_sql(BARE["invoice_timeline"], rows.timeline_columns, "?"),
                     _timeline_params(rows, start, new_ids))
    conn.execute("COMMIT")


def bare_postgresql(url: str, organization_slug: str, batch_size: int) -> BareResult:
    import psycopg

    with psycopg.connect(driver_url(url)) as conn:
        _postgresql_twin_tables(conn)
        rows = _postgresql_rows(conn, organization_slug)
        result = _timed_batches(rows, batch_size, lambda start: _postgresql_batch(conn, rows, start, batch_size))
        _check_copied(conn.execute(f"SELECT count(*) FROM {BARE['invoices']}").fetchone()[0], len(rows.invoices))
        # Most of this insert's work is the PostgreSQL server's, which this process's CPU time does not see.
        return BareResult(result.invoices, result.seconds, None)


def _postgresql_twin_tables(conn: Any) -> None:
    """LIKE ... INCLUDING ALL copies columns, defaults, checks and indexes; the foreign keys are added
    from the real tables' definitions, and each twin gets its own id sequence."""
    conn.execute(f"DROP TABLE IF EXISTS {BARE['invoice_timeline']}, {BARE['invoices']}")
    for name, twin in BARE.items():
        conn.execute(f"CREATE TABLE {twin} (LIKE {name} INCLUDING ALL)")
        conn.execute(f"CREATE SEQUENCE IF NOT EXISTS {twin}_id_seq OWNED BY {twin}.id")
        conn.execute(f"ALTER TABLE {twin} ALTER COLUMN id SET DEFAULT nextval('{twin}_id_seq')")
        foreign_keys = conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                    "WHERE conrelid = %s::regclass AND contype = 'f'", (name,)).fetchall()
        for constraint, definition in foreign_keys:
            definition = re.sub(r"REFERENCES invoices\(", f"REFERENCES {BARE['invoices']}(", definition)
            conn.execute(f"ALTER TABLE {twin} ADD CONSTRAINT bare_{constraint} {definition}")
    conn.commit()


def _postgresql_rows(conn: Any, organization_slug: str) -> BareRows:
    (org_id,) = conn.execute("SELECT id FROM organizations WHERE slug = %s", (organization_slug,)).fetchone()

    def columns(table: str) -> list[tuple[str, str]]:
        return conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
                            "AND column_name <> 'id' ORDER BY ordinal_position", (table,)).fetchall()

    def select_list(cols: list[tuple[str, str]]) -> str:
        # JSON comes back as the text that was stored, so the twin gets the same bytes without re-encoding.
        return ", ".join(f"{name}::text" if kind in ("json", "jsonb") else name for name, kind in cols)

    invoice_cols, timeline_cols = columns("invoices"), columns("invoice_timeline")
    fetched = conn.execute(f"SELECT id, {select_list(invoice_cols)} FROM invoices WHERE organization_id = %s "
                           "ORDER BY id", (org_id,)).fetchall()
    timeline = conn.execute(f"SELECT {select_list(timeline_cols)} FROM invoice_timeline "
                            "WHERE organization_id = %s ORDER BY id", (org_id,)).fetchall()
    timeline_names = [name for name, _ in timeline_cols]
    ids = [row[0] for row in fetched]
    conn.commit()
    return BareRows([name for name, _ in invoice_cols], [tuple(row[1:]) for row in fetched], timeline_names,
                    _group_timeline(ids, [tuple(r) for r in timeline], timeline_names.index("invoice_id")))


def _postgresql_batch(conn: Any, rows: BareRows, start: int, batch_size: int) -> None:
    chunk = rows.invoices[start:start + batch_size]
    with conn.cursor() as cursor:
        cursor.executemany(_insert_sql(BARE["invoices"], rows.invoice_columns, "%s") + " RETURNING id", chunk,
                           returning=True)
        new_ids = []
        for _ in cursor.results():
            new_ids.append(cursor.fetchone()[0])
        cursor.executemany(_insert_sql(BARE["invoice_timeline"], rows.timeline_columns, "%s"),
                           _timeline_params(rows, start, new_ids))
    conn.commit()


@dataclass(frozen=True)
class BareResult:
    invoices: int
    seconds: float
    cpu: float | None


def _timed_batches(rows: BareRows, batch_size: int, insert_batch: Callable[[int], None]) -> BareResult:
    cpu, start = time.process_time(), time.perf_counter()
    for offset in range(0, len(rows.invoices), batch_size):
        insert_batch(offset)
    return BareResult(len(rows.invoices), time.perf_counter() - start, time.process_time() - cpu)


def _check_copied(copied: int, expected: int) -> None:
    if copied != expected:
        raise RuntimeError(f"bare insert copied {copied} invoices, expected {expected}")


# ---------------------------------------------------------------------------------------------------------
# One backend, start to end.

@dataclass(frozen=True)
class BackendResult:
    backend: str
    invoices: int
    first: PushResult
    repush: PushResult
    bare: BareResult

    @property
    def push_rate(self) -> float:
        return rate(self.invoices, self.first.seconds)

    @property
    def bare_rate(self) -> float:
        return rate(self.invoices, self.bare.seconds)

    @property
    def ratio(self) -> float:
        return self.push_rate / self.bare_rate

    @property
    def repush_ratio(self) -> float:
        return self.repush.seconds / self.first.seconds


@contextmanager
def http_client(server: Server, api_key: str, concurrency: int) -> Iterator[httpx.Client]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {api_key}"}, limits=limits,
                      timeout=httpx.Timeout(300.0)) as client:
        yield client


def warm_up(server: Server, api_key: str, customers: Sequence[tuple[str, dict[str, Any]]], body: bytes) -> None:
    """Push one batch twice (created, then unchanged) as another tenant, so that what a server does once
    (compiling statements, building validators, filling the connection pool) is not timed. The tenant's
    rows are not the benchmark's: the bare insert copies only the benchmark tenant's."""
    with http_client(server, api_key, 1) as client:
        put_customers(client, customers)
        size = len(orjson.loads(body)["invoices"])
        for expected in ("created", "unchanged"):
            counts = send_batch(client, body)
            if counts[expected] != size:
                raise RuntimeError(f"warm-up: expected every invoice {expected}, got {counts}")


def expect(result: PushResult, key: str, count: int, what: str) -> None:
    if result.counts[key] != count:
        raise RuntimeError(f"{what}: expected {count} {key}, got {result.counts}")


def run_backend(backend: str, args: argparse.Namespace, customers: list[tuple[str, dict[str, Any]]],
                bodies: list[bytes]) -> BackendResult:
    slug = f"bench-{int(time.time())}"
    profiles = args.py_spy
    with tempfile.TemporaryDirectory(prefix=f"quittance-bench-{backend}-") as tmp, \
            bench_database(backend, Path(tmp)) as url:
        portal = Portal(url, Path(tmp))
        portal.upgrade()
        api_key = portal.create_tenant(slug, "Benchmark")
        warmup_key = portal.create_tenant(f"{slug}-warmup", "Warm-up") if args.warmup else None
        with portal.serve() as server, http_client(server, api_key, args.concurrency) as client:
            if warmup_key:
                warm_up(server, warmup_key, customers, bodies[0])
            put_customers(client, customers)
            log(f"{backend}: {len(customers)} customers pushed, pushing {args.invoices} invoices")
            first = push_all(client, server, bodies, args.concurrency,
                             profiles / f"{backend}-first.{args.py_spy_format}" if profiles else None)
            expect(first, "created", args.invoices, "first push")
            log(f"{backend}: first push {first.seconds:.1f}s, pushing the same invoices again")
            repush = push_all(client, server, bodies, args.concurrency,
                              profiles / f"{backend}-repush.{args.py_spy_format}" if profiles else None)
            expect(repush, "unchanged", args.invoices, "second push")
        log(f"{backend}: re-push {repush.seconds:.1f}s, bare-driver insert of the same rows")
        bare = bare_sqlite if backend == "sqlite" else bare_postgresql
        bare_result = bare(url, slug, args.batch_size)
        _check_copied(bare_result.invoices, args.invoices)
    return BackendResult(backend, args.invoices, first, repush, bare_result)


# ---------------------------------------------------------------------------------------------------------
# Report.

def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def report(results: Sequence[BackendResult], args: argparse.Namespace, load: tuple[str, str]) -> str:
    header = ("backend", "invoices", "push s", "push inv/s", "bare inv/s", "push/bare", "re-push s",
              "re-push/push", "server CPU us/inv", "bare CPU us/inv", "CPU bare/push", "client CPU s")
    rows = [header]
    for r in results:
        bare_cpu = r.bare.cpu
        rows.append((r.backend, f"{r.invoices:,}", f"{r.first.seconds:.2f}", f"{r.push_rate:,.0f}",
                     f"{r.bare_rate:,.0f}", f"{r.ratio:.0%}", f"{r.repush.seconds:.2f}", f"{r.repush_ratio:.2f}",
                     f"{micros(r.first.server_cpu, r.invoices)} / {micros(r.repush.server_cpu, r.invoices)}",
                     "-" if bare_cpu is None else micros(bare_cpu, r.invoices),
                     "-" if bare_cpu is None else f"{bare_cpu / r.first.server_cpu:.0%}",
                     f"{r.first.client_cpu:.1f} / {r.repush.client_cpu:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append("")
    lines.append(f"batches of {args.batch_size}, {args.concurrency} in flight, {args.customers} customers; "
                 "bare = the same rows (invoice + its timeline row) by executemany, one transaction per batch")
    lines.append("CPU = first push / re-push; CPU times are steadier than wall time on a shared machine. "
                 "CPU bare/push (SQLite only, where the bare insert's work is all in this process): the "
                 "push/bare ratio, which the machine's load moves much less")
    lines.append(f"load average (1 min) before / after: {load[0]} / {load[1]} on {os.cpu_count()} cores")
    lines.extend(targets(results))
    return "\n".join(lines)


def micros(seconds: float, count: int) -> str:
    return f"{seconds / count * 1e6:.0f}"


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def targets(results: Sequence[BackendResult]) -> list[str]:
    lines = []
    for r in results:
        checks = [(f"push/bare >= {TARGET_RATIO:.0%}", r.ratio >= TARGET_RATIO),
                  (f"re-push/push <= {TARGET_REPUSH}", r.repush_ratio <= TARGET_REPUSH)]
        if r.backend == "sqlite":
            checks.insert(0, (f">= {TARGET_SQLITE_RATE:,} invoices/s", r.push_rate >= TARGET_SQLITE_RATE))
        lines.append(f"{r.backend}: " + ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in checks))
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=100_000, help="how many invoices to push (default 100000)")
    parser.add_argument("--batch-size", type=int, default=1_000, help="invoices per request (default 1000)")
    parser.add_argument("--customers", type=int, default=300, help="customers pushed first (default 300)")
    parser.add_argument("--concurrency", type=int, choices=(1, 2), default=1,
                        help="batches in flight at once (default 1)")
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="time the server's first requests too (by default one batch is pushed twice "
                             "by another tenant first)")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="write a py-spy profile of the server for each push into DIR")
    parser.add_argument("--py-spy-format", choices=("svg", "json", "txt"), default="svg",
                        help="flame graph (svg), speedscope (json) or collapsed stacks (txt)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    customers, bodies = make_payloads(args.invoices, args.customers, args.batch_size, args.seed)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    load_before = load_average()
    results = [run_backend(backend, args, customers, bodies) for backend in backends]
    print(report(results, args, (load_before, load_average())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
