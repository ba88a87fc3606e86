"""Engine creation and transactions.

Domain services are plain synchronous functions that take a `Connection`; web handlers run them through
`Database.read`, `Database.write` and `Database.write_bulk`, which open one transaction each.

- PostgreSQL: in a worker thread, so the event loop never waits on the network, with at most
  `POSTGRESQL_THREADS` transactions at a time per process; the others wait their turn in the event loop, first
  come first served. A transaction is mostly Python (SQLAlchemy, psycopg) between short round trips, so more
  threads add no throughput to a core, only the GIL passing between them: 32 concurrent Stripe webhooks on two
  processes ran at about 320 a second with p99 220 ms through Starlette's pool of 40 threads, and at about 400
  with p99 110 ms through 4 (bench/stripe_webhooks.py). Bulk writes use Starlette's pool, so that a long import
  never holds up the short transactions.
- SQLite, reads and short writes (a webhook, a page's POST, one invoice): on the event loop itself. The database
  is a file in this process and such a transaction takes a fraction of a millisecond; handing it to a thread
  cost more than running it, and under load the GIL passing back and forth between the loop and the threads made
  requests wait for each other. Measured at 32 connections: the history page went from 240 to 420 pages a
  second on one process, Stripe webhooks from 326 to 626 a second (p99 114 -> 59 ms). WAL readers never wait
  for a writer, so a read does not block the loop on a lock. The longest reads are the API's pages, bounded at
  1,000 rows.
- SQLite, bulk writes (a batch of 1,000 invoices, an archive's documents: tens of milliseconds): in a worker
  thread, so that pages keep being served in between. Writes take turns, first come first served, in an
  asyncio queue: SQLite lets one connection write at a time, and a short write must not block the loop waiting
  for SQLite's lock while a bulk write holds it.

Several server processes on one SQLite file (`portal serve --workers N`) read in parallel, but their writes
wait for each other in SQLite's busy handler, which blocks the waiting process's loop: see docs/operations.md.
"""

from __future__ import annotations

import asyncio
import functools
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

# Every SQLite connection the app opens runs these; bench/ applies the same to its bare-driver baseline.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


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

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # pool_use_lifo: the connection used last is used next, with SQLite's page cache warm from the last
    # transaction (a batch's lookup, then its write).
    engine = sa.create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30},
                              json_serializer=_json_text, pool_use_lifo=True)

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
        immediate = connection.get_execution_options().get("write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """One engine and the two ways to run a unit of work on it."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.is_postgresql = engine.dialect.name == "postgresql"
        # SQLite's write queue, one per event loop: an asyncio.Lock belongs to the loop that first waits on it,
        # and the tests run several loops against one Database.
        self._write_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary())
        # PostgreSQL's turns, likewise one per event loop.
        self._thread_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
            weakref.WeakKeyDictionary())

    @classmethod
    def from_url(cls, url: str, *, echo: bool = False) -> Database:
        return cls(create_engine(url, echo=echo))

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[sa.Connection]:
        with self.engine.connect() as connection:
            connection.execution_options(write=write)
            with connection.begin():
                yield connection

    def run(self, fn: Callable[..., T], *args: Any, write: bool = True, **kwargs: Any) -> T:
        """Run `fn(connection, ...)` in one transaction. Two first writes of the same object can race on a
        unique constraint (PostgreSQL lets both pass their "does it exist?" read); the loser is run again,
        once, and then sees the winner's row."""
        for attempt in range(2):
            try:
                with self.transaction(write=write) as connection:
                    return fn(connection, *args, **kwargs)
            except sa.exc.IntegrityError:
                if not write or attempt == 1:
                    raise
        raise AssertionError("unreachable")

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, *args)` in one read-only transaction."""
        if self.is_postgresql:
            return await self._in_thread(functools.partial(self.run, fn, *args, write=False, **kwargs))
        return self.run(fn, *args, write=False, **kwargs)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, *args)` in one write transaction that takes a few milliseconds at most."""
        if self.is_postgresql:
            return await self._in_thread(functools.partial(self.run, fn, *args, write=True, **kwargs))
        async with self._write_queue():
            return self.run(fn, *args, write=True, **kwargs)

    async def write_bulk(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, *args)` in one write transaction that may take long: always off the loop."""
        work = functools.partial(self.run, fn, *args, write=True, **kwargs)
        if self.is_postgresql:
            return await run_in_threadpool(work)
        async with self._write_queue():
            return await run_in_threadpool(work)

    async def _in_thread(self, work: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        limiter = self._thread_limiters.get(loop)
        if limiter is None:
            limiter = self._thread_limiters[loop] = anyio.CapacityLimiter(POSTGRESQL_THREADS)
        return await anyio.to_thread.run_sync(work, limiter=limiter)

    def _write_queue(self) -> asyncio.Lock:
        return self._write_queues.setdefault(asyncio.get_running_loop(), asyncio.Lock())

    def dispose(self) -> None:
        self.engine.dispose()


__all__ = ["SQLITE_PRAGMAS", "Database", "create_engine", "metadata"]
