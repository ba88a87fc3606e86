"""Engine creation and transactions.

Domain services are plain synchronous functions that take a `Connection`; web handlers run them through
`Database.read`, `Database.write` and `Database.write_bulk` (one transaction each, except PostgreSQL's reads,
see below). Commands, the worker and tests call `Database.run` in a thread of their own.

- PostgreSQL, reads and short writes: on the event loop, through asyncpg. SQLAlchemy's asyncio extension runs the
  synchronous service in a greenlet (`AsyncConnection.run_sync`), so each statement's round trip is awaited and the
  loop serves other requests meanwhile. Measured in one process with 32 requests at a time, against psycopg in 4
  threads: a Stripe webhook took about 2.5 ms of server and database CPU instead of 4.1, the history page 2.1
  instead of 3.3 (no GIL passing between threads, and asyncpg's protocol is cheaper for both sides; bench/README.md
  has the served figures). The Python between the round trips runs on the loop, as it does on SQLite: a service does
  no file or network I/O inside its transaction. Reads run without BEGIN and COMMIT (autocommit): under READ
  COMMITTED, PostgreSQL's default, every statement sees its own snapshot anyway, so a read transaction only cost two
  round trips; `read_in_transaction` is for the read that needs one (`SET LOCAL`). Connections are used without a
  ping first; a transaction that finds its connection dead is run again on a new one (a write only if it died before
  COMMIT). Reads and writes have separate pools of `POSTGRESQL_POOL_SIZE` connections per process, which also bound
  how many run at a time: writes can wait on row locks (payments for invoices that a batch push holds) and reads
  never do, so pages and API keys are still served meanwhile. The pools belong to the event loop of the server that
  opened them (`Database.serving`, in the app's lifespan); elsewhere (a test client without its context manager,
  which runs each request on a new loop) each transaction opens its own connection.
- PostgreSQL, bulk writes (a batch of 1,000 invoices, an archive's documents, the pull importer): psycopg in
  Starlette's thread pool, so a long import never holds up the loop.
- SQLite, reads and short writes (a webhook, a page's POST, one invoice): on the event loop itself. The database
  is a file in this process and such a transaction takes a fraction of a millisecond; handing it to a thread
  cost more than running it, and under load the GIL passing back and forth between the loop and the threads made
  requests wait for each other. Measured at 32 connections: the history page went from 240 to 420 pages a
  second on one process, Stripe webhooks from 326 to 626 a second (p99 114 -> 59 ms). WAL readers never wait
  for a writer, so a read does not block the loop on a lock. The longest reads are the API's pages, bounded at
  1,000 rows.
- SQLite, bulk writes: in a worker thread, so that pages keep being served in between.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from starlette.concurrency import run_in_threadpool

from portal.db.metadata import metadata

# Importing the table modules registers their tables on `metadata`.
from portal.db import access, connectors, customers, invoices, organizations, payments, portal  # noqa: F401,E402

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


# Connections per pool (reads, writes) and server process. A transaction is mostly Python between short round
# trips, so a few connections keep a core busy; beyond that they only add PostgreSQL backends competing with the
# server processes for the same cores.
POSTGRESQL_POOL_SIZE = 8
ASYNC_APPLICATION_NAME = "quittance web"


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


def _asyncpg_connector(url: sa.URL) -> Callable[[], Awaitable[Any]]:
    """Opens an asyncpg connection to the database of the engine's URL. asyncpg reads the URL as libpq does,
    options included (`sslmode`, `sslrootcert`, ...); other options are sent to the server as settings."""
    import asyncpg

    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)

    def connect() -> Awaitable[Any]:
        # Named in pg_stat_activity, apart from the commands' and the worker's psycopg connections.
        return asyncpg.connect(dsn, server_settings={"application_name": ASYNC_APPLICATION_NAME})

    return connect


@dataclass(frozen=True)
class _LoopEngines:
    """One event loop's asyncpg engines: reads in autocommit, writes in transactions, each with its own pool.

    Transactions wait for their turn on a semaphore as large as the pool, first come first served, rather than
    in the pool itself: a connection handed back to the pool goes to whoever asks first, often a newcomer, and a
    request that kept losing that race waited many turns (32 webhooks on a pool of 8: p50 60 ms, p99 104 ms).
    """

    reads: AsyncEngine
    writes: AsyncEngine
    read_turns: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(POSTGRESQL_POOL_SIZE))
    write_turns: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(POSTGRESQL_POOL_SIZE))

    @classmethod
    def create(cls, engine: sa.Engine, *, pooled: bool) -> _LoopEngines:
        options: dict[str, Any] = {"pool_size": POSTGRESQL_POOL_SIZE, "max_overflow": 0} if pooled else {
            "poolclass": NullPool}
        options.update(async_creator=_asyncpg_connector(engine.url), echo=engine.echo, json_serializer=_json_text)
        # No ping before use (a round trip each): a transaction that finds its connection dead is run again
        # (see `Database._read_on_loop` and `_write_on_loop`).
        return cls(create_async_engine("postgresql+asyncpg://", isolation_level="AUTOCOMMIT", **options),
                   create_async_engine("postgresql+asyncpg://", **options))

    async def dispose(self) -> None:
        await self.reads.dispose()
        await self.writes.dispose()


V = TypeVar("V")


def _of_this_loop(table: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, V], make: Callable[[], V]) -> V:
    """The running event loop's own `make()`, made on first use (locks and connections belong to one loop)."""
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
        # PostgreSQL's asyncpg engines, likewise per event loop: a connection belongs to the loop that opened it.
        self._loop_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopEngines] = (
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

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """While a server runs on the current event loop: PostgreSQL pools of its own, closed at the end."""
        if not self.is_postgresql:
            yield
            return
        loop = asyncio.get_running_loop()
        engines = self._loop_engines[loop] = _LoopEngines.create(self.engine, pooled=True)
        try:
            async with engines.reads.connect():
                pass  # a database that cannot be reached, or a URL asyncpg refuses, stops the start
            yield
        finally:
            if self._loop_engines.get(loop) is engines:  # not another app's, served on the same loop
                del self._loop_engines[loop]
            await engines.dispose()

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, *args)`, which only reads."""
        if self.is_postgresql:
            return await self._read_on_loop(fn, args, kwargs)
        return self.run(fn, *args, write=False, **kwargs)

    async def read_in_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, *args)`, which only reads, in a transaction of its own: for statements that only
        hold within one (`SET LOCAL`). PostgreSQL's other reads run in autocommit."""
        if self.is_postgresql:
            return await self._read_on_loop(fn, args, kwargs, transaction=True)
        return self.run(fn, *args, write=False, **kwargs)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, *args)` in one write transaction that takes a few milliseconds at most."""
        if self.is_postgresql:
            return await self._write_on_loop(fn, args, kwargs)
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

    def _engines(self) -> _LoopEngines:
        """This event loop's asyncpg engines. Outside `serving` (no pool for this loop) every transaction has a
        connection of its own, closed at its end."""
        return _of_this_loop(self._loop_engines, lambda: _LoopEngines.create(self.engine, pooled=False))

    async def _read_on_loop(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], *,
                            transaction: bool = False) -> T:
        """PostgreSQL: `fn` in a greenlet on the event loop, its statements awaited through asyncpg."""
        engines = self._engines()
        for attempt in range(2):
            try:
                async with engines.read_turns, engines.reads.connect() as connection:
                    if not transaction:
                        return await connection.run_sync(fn, *args, **kwargs)
                    # The pool puts the connection back in autocommit when it is returned.
                    await connection.execution_options(isolation_level="READ COMMITTED")
                    async with connection.begin():
                        return await connection.run_sync(fn, *args, **kwargs)
            except sa.exc.DBAPIError as exc:
                # Connections are used unchecked (a check is a round trip, 5% of a history page's throughput):
                # a read that finds its connection dead (the database restarted) is run again on a new one.
                if not exc.connection_invalidated or attempt == 1:
                    raise
        raise AssertionError("unreachable")

    async def _write_on_loop(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        """As `_read_on_loop`, in a transaction. It is run once more when it lost a race on a unique constraint
        (as in `run`), or when its connection turned out dead before COMMIT: then nothing was written. A
        connection lost during COMMIT leaves unknown whether it happened, and that error is raised."""
        engines = self._engines()
        for attempt in range(2):
            committing = False
            try:
                async with engines.write_turns, engines.writes.connect() as connection:
                    async with connection.begin():
                        result = await connection.run_sync(fn, *args, **kwargs)
                        committing = True
                    return result
            except sa.exc.DBAPIError as exc:
                again = isinstance(exc, sa.exc.IntegrityError) or (exc.connection_invalidated and not committing)
                if not again or attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def _write_queue(self) -> asyncio.Lock:
        return _of_this_loop(self._write_queues, asyncio.Lock)

    def dispose(self) -> None:
        self.engine.dispose()


__all__ = ["ASYNC_APPLICATION_NAME", "POSTGRESQL_POOL_SIZE", "SQLITE_PRAGMAS", "Database", "WriteLockTaken",
           "create_engine", "metadata"]
