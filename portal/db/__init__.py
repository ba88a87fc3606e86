"""Engine creation and transactions.

Domain services are plain synchronous functions that take a `Connection`; web handlers run them through
`Database.read`, `Database.write` and `Database.write_bulk`, which open one transaction each.

- PostgreSQL: in a worker thread, so the event loop never waits on the network, with at most
  `POSTGRESQL_THREADS` reads and as many writes at a time per process; the others wait their turn in the event
  loop, first come first served. A transaction is mostly Python (SQLAlchemy, psycopg) between short round
  trips, so more threads add no throughput to a core, only the GIL passing between them: 32 concurrent Stripe
  webhooks on two processes ran at about 320 a second with p99 220 ms through Starlette's pool of 40 threads,
  and at about 400 with p99 110 ms through 4 (bench/stripe_webhooks.py). Reads have their own turns, because
  writes can wait on row locks (payments for invoices that a batch push holds) and reads never do: pages and API
  keys are still served meanwhile. Bulk writes use Starlette's pool, so that a long import never holds up the
  short transactions.
- SQLite, reads and short writes (a webhook, a page's POST, one invoice): on the event loop itself. The database
  is a file in this process and such a transaction takes a fraction of a millisecond; handing it to a thread
  cost more than running it, and under load the GIL passing back and forth between the loop and the threads made
  requests wait for each other. Measured at 32 connections: the history page went from 240 to 420 pages a
  second on one process, Stripe webhooks from 326 to 626 a second (p99 114 -> 59 ms). WAL readers never wait
  for a writer, so a read does not block the loop on a lock. The longest reads are the API's pages, bounded at
  1,000 rows.
- SQLite, bulk writes (a batch of 1,000 invoices, an archive's documents: tens of milliseconds): in a worker
  thread, so that pages keep being served in between.
- SQLite writes take turns, first come first served, on an asyncio.Lock per event loop: SQLite lets one
  connection write at a time, and a short write must not wait for SQLite's lock while a bulk write of the same
  process holds it. A short write that finds the lock held by another process (`portal worker`, a CLI command,
  another server process) does not wait for it on the loop: it is run again in a thread, which waits in
  SQLite's busy handler (see `WriteLockTaken`).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from portal.db.metadata import metadata

# Importing the table modules registers their tables on `metadata`.
from portal.db import connectors, customers, invoices, organizations, payments, portal  # noqa: F401,E402

P = ParamSpec("P")
T = TypeVar("T")

BUSY_TIMEOUT_MS = 30000
# Every SQLite connection the app opens runs these; bench/ applies the same to its bare-driver baseline.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
)


class WriteLockTaken(Exception):
    """SQLite's write lock is held by another connection, and this transaction was not to wait for it."""


POSTGRESQL_THREADS = 4


def _json_text(value: Any) -> str:
    # JSON columns are written by orjson: the json module's encoder was a tenth of a batch push's CPU
    # (invoice lines, timeline details). The text is plain JSON either way, and reads are unchanged. Keys are
    # nearly always strings, and orjson checks for others at twice the cost: only then is it asked to.
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def create_engine(url: str, *, echo: bool = False) -> sa.Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, echo=echo, pool_size=20, max_overflow=10, pool_pre_ping=True,
                                json_serializer=_json_text)

    options: dict[str, Any] = {}
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # The connection used last is used next, with SQLite's page cache warm from the last transaction (a
        # batch's lookup, then its write). An in-memory database has a pool of its own, without this choice.
        options["pool_use_lifo"] = True
    engine = sa.create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30},
                              json_serializer=_json_text, **options)

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that we can say BEGIN IMMEDIATE for writes: a
        # deferred transaction that later upgrades to a write fails with "database is locked" under load.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        options = connection.get_execution_options()
        if not options.get("write", False):
            connection.exec_driver_sql("BEGIN")
        elif options.get("wait", True):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            # On the event loop: take the write lock only if it is free now. Waiting for another process's
            # write (the worker's, a CLI command's) in SQLite's busy handler would stop every request.
            driver = connection.connection.driver_connection
            driver.execute("PRAGMA busy_timeout=0")
            try:
                driver.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise WriteLockTaken(str(exc)) from exc
            finally:
                driver.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    return engine


V = TypeVar("V")


def _of_this_loop(table: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, V], make: Callable[[], V]) -> V:
    """The running event loop's own `make()`, made on first use (locks and limiters belong to one loop)."""
    loop = asyncio.get_running_loop()
    value = table.get(loop)
    if value is None:
        value = table[loop] = make()
    return value


class Database:
    """One engine and the two ways to run a unit of work on it."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.is_postgresql = engine.dialect.name == "postgresql"
        # SQLite's write queue, one per event loop: an asyncio.Lock belongs to the loop that first waits on it,
        # and the tests run several loops against one Database.
        self._write_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary())
        # PostgreSQL's turns (reads, writes), likewise one pair per event loop.
        self._thread_limiters: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[anyio.CapacityLimiter, anyio.CapacityLimiter]] = (
            weakref.WeakKeyDictionary())

    @classmethod
    def from_url(cls, url: str, *, echo: bool = False) -> Database:
        return cls(create_engine(url, echo=echo))

    @contextmanager
    def transaction(self, *, write: bool = True, wait: bool = True) -> Iterator[sa.Connection]:
        """One transaction. `wait=False` (SQLite writes on the event loop): raise WriteLockTaken at once
        instead of waiting for another connection's write to end."""
        with self.engine.connect() as connection:
            connection.execution_options(write=write, wait=wait)
            with connection.begin():
                yield connection

    def run(self, fn: Callable[..., T], *args: Any, write: bool = True, **kwargs: Any) -> T:
        """Run `fn(connection, ...)` in one transaction. Two first writes of the same object can race on a
        unique constraint (PostgreSQL lets both pass their "does it exist?" read); the loser is run again,
        once, and then sees the winner's row."""
        return self._run(fn, args, kwargs, write=write, wait=True)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], *, write: bool,
             wait: bool) -> T:
        for attempt in range(2):
            try:
                with self.transaction(write=write, wait=wait) as connection:
                    return fn(connection, *args, **kwargs)
            except sa.exc.IntegrityError:
                if not write or attempt == 1:
                    raise
        raise AssertionError("unreachable")

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, *args)` in one read-only transaction."""
        if self.is_postgresql:
            return await self._in_thread(functools.partial(self.run, fn, *args, write=False, **kwargs), write=False)
        return self.run(fn, *args, write=False, **kwargs)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, *args)` in one write transaction that takes a few milliseconds at most."""
        if self.is_postgresql:
            return await self._in_thread(functools.partial(self.run, fn, *args, write=True, **kwargs), write=True)
        async with self._write_queue():
            try:
                return self._run(fn, args, kwargs, write=True, wait=False)
            except WriteLockTaken:
                # Another process is writing (the worker, a CLI command): wait for it in a thread.
                return await run_in_threadpool(functools.partial(self.run, fn, *args, write=True, **kwargs))

    async def write_bulk(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, *args)` in one write transaction that may take long: always off the loop."""
        work = functools.partial(self.run, fn, *args, write=True, **kwargs)
        if self.is_postgresql:
            return await run_in_threadpool(work)
        async with self._write_queue():
            return await run_in_threadpool(work)

    async def _in_thread(self, work: Callable[[], T], *, write: bool) -> T:
        limiters = _of_this_loop(self._thread_limiters, lambda: (
            anyio.CapacityLimiter(POSTGRESQL_THREADS), anyio.CapacityLimiter(POSTGRESQL_THREADS)))
        return await anyio.to_thread.run_sync(work, limiter=limiters[write])

    def _write_queue(self) -> asyncio.Lock:
        return _of_this_loop(self._write_queues, asyncio.Lock)

    def dispose(self) -> None:
        self.engine.dispose()


__all__ = ["SQLITE_PRAGMAS", "Database", "WriteLockTaken", "create_engine", "metadata"]
