"""The engine and the one way to run a transaction.

Domain services are plain synchronous functions that take a `Connection`. `Database.run(fn, ...)` runs one of
them in one transaction on the calling thread; commands, the worker and tests call it directly. Web handlers
await `Database.read`, `Database.write` and `Database.write_bulk`, which do the same `run` in a worker thread
(`anyio.to_thread.run_sync`), so the event loop never waits for the database.

Each process has one SQLAlchemy engine (psycopg 3 for PostgreSQL, the standard sqlite3 module for SQLite),
built by the app's lifespan and disposed at its end. Worker threads come from three bounded
`anyio.CapacityLimiter`s, one per kind of work, so that one kind cannot take the threads the others need:
reads (pages, API reads, key checks), which never wait for a lock; short writes (an API change, a webhook, a
debtor's POST), which may wait for a row lock or for SQLite's single writer; and bulk writes (a batch push, an
archive's documents, the pull importer), which may hold the database for seconds. The PostgreSQL pool has a
connection for every thread of the three (so does SQLite's), so a transaction never waits for the pool, and a few
more for `run` called outside the limiters. The pool checks a connection before handing it out (`pool_pre_ping`): one
that died with a restart or a failover is replaced, and nothing is run twice.

Two first writes of the same object (a customer, an invoice, a payment) can both find nothing and both insert;
the insert settles it (`insert_or_ignore`: `ON CONFLICT DO NOTHING`, then the caller reads the winner's row), so
no transaction is ever run again.

SQLite: WAL, so readers never wait for the writer. A write begins with `BEGIN IMMEDIATE`, taking the write lock
before reading (a deferred transaction that upgrades later fails with "database is locked" under load), and the
writes of one process take turns on a lock of their own rather than polling in SQLite's busy handler; another
process's writer (the worker, a command) is waited for in the busy handler, up to BUSY_TIMEOUT_MS. Commits are
`synchronous=NORMAL` (durable across a crash of the process, not of the OS) except in a transaction run with
`durable=True`, which commits with `synchronous=FULL`: every transaction that records money (a checkout, a
payment, a webhook) is one, so what a provider was told is recorded survives power loss (bench/README.md has the
cost of the fsync per commit).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from portal.db.metadata import metadata

# Importing the table modules registers their tables on `metadata`.
from portal.db import access, connectors, customers, invoices, organizations, payments, portal, staff  # noqa: F401,E402

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30000
# Every SQLite connection the app opens runs these; bench/ applies the same to its bare-driver baseline.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
)

# Worker threads per process for each kind of transaction. A transaction is mostly Python between short round
# trips, and Python runs one thread at a time: a few threads keep a core busy, more only add waiting (and
# PostgreSQL backends competing with the server for the same cores).
READ_THREADS = 8
WRITE_THREADS = 8
BULK_THREADS = 2
# One connection for each of those threads, plus a few for `run` outside them (a command, a test's thread).
POOL_SIZE = READ_THREADS + WRITE_THREADS + BULK_THREADS
POOL_OVERFLOW = 4


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
        return sa.create_engine(url, echo=echo, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_pre_ping=True,
                                json_serializer=_json_text)

    options: dict[str, Any] = {}
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # The connection used last is used next, with SQLite's page cache warm from the last transaction (a
        # batch's lookup, then its write). An in-memory database has a pool of its own, without this choice.
        options.update(pool_use_lifo=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
    engine = sa.create_engine(url, echo=echo, connect_args={"check_same_thread": False,
                                                            "timeout": BUSY_TIMEOUT_MS / 1000},
                              json_serializer=_json_text, **options)

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that we can say BEGIN IMMEDIATE for writes.
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
            return
        # SQLite refuses to change the synchronous level inside a transaction: it is set before BEGIN, and
        # only when it changes (each connection remembers its level).
        level = "FULL" if options.get("durable", False) else "NORMAL"
        info = connection.connection.info
        if info.get("synchronous", "NORMAL") != level:
            connection.exec_driver_sql(f"PRAGMA synchronous={level}")
            info["synchronous"] = level
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


_INSERTS: dict[str, Callable[[sa.Table], postgresql.Insert | sqlite.Insert]] = {"postgresql": postgresql.insert,
                                                                           "sqlite": sqlite.insert}


def insert_or_ignore(conn: sa.Connection, table: sa.Table, values: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                     index_elements: Sequence[str], *, returning: Sequence[sa.ColumnElement[Any]] = ()) -> Any:
    """INSERT `values` into `table` unless a row with the same `index_elements` (a unique constraint's columns)
    is there: `INSERT ... ON CONFLICT (...) DO NOTHING`, as the connection's database writes it. Two transactions
    inserting the same key at once both succeed: the second waits for the first and then inserts nothing.
    Returns the result: ask for `returning` columns to learn whether a row was inserted (no row: it was there
    already); the result's rowcount does not tell on every driver."""
    statement = _INSERTS[conn.dialect.name](table).on_conflict_do_nothing(index_elements=list(index_elements))
    if returning:
        return conn.execute(statement.returning(*returning), values)
    return conn.execute(statement, values)


class Database:
    """One engine per process, and the one way to run a unit of work on it: `run` (or `transaction`), in the
    caller's thread; `read`, `write` and `write_bulk` run it in a worker thread from the event loop."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.is_postgresql = engine.dialect.name == "postgresql"
        self._reads = anyio.CapacityLimiter(READ_THREADS)
        self._writes = anyio.CapacityLimiter(WRITE_THREADS)
        self._bulk_writes = anyio.CapacityLimiter(BULK_THREADS)
        # SQLite lets one connection write at a time: this process's writers queue here, handed the turn at
        # once, instead of sleeping and retrying in SQLite's busy handler.
        self._sqlite_writer = threading.Lock()

    @classmethod
    def from_url(cls, url: str, *, echo: bool = False) -> Database:
        return cls(create_engine(url, echo=echo))

    @contextmanager
    def transaction(self, *, write: bool = True, durable: bool = False) -> Iterator[sa.Connection]:
        """One transaction, committed at the end of the block (rolled back if it raises). `durable`: on SQLite,
        the commit is flushed to the disk (`synchronous=FULL`); PostgreSQL commits that way always."""
        turn = self._sqlite_writer if write and not self.is_postgresql else nullcontext()
        with turn, self.engine.connect() as connection:
            connection.execution_options(write=write, durable=durable)
            with connection.begin():
                yield connection

    def run(self, fn: Callable[..., T], *args: Any, write: bool = True, durable: bool = False, **kwargs: Any) -> T:
        """Run `fn(connection, *args, **kwargs)` in one transaction, on this thread."""
        with self.transaction(write=write, durable=durable) as connection:
            return fn(connection, *args, **kwargs)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, *args)`, which only reads, in a worker thread."""
        work = functools.partial(self.run, fn, *args, write=False, **kwargs)
        return await anyio.to_thread.run_sync(work, limiter=self._reads)

    async def write(self, fn: Callable[..., T], *args: Any, durable: bool = False, **kwargs: Any) -> T:
        """Run `fn(connection, *args)` in one write transaction that takes a few milliseconds at most, in a
        worker thread. `durable=True` for a transaction that records money (see the module's docstring)."""
        work = functools.partial(self.run, fn, *args, write=True, durable=durable, **kwargs)
        return await anyio.to_thread.run_sync(work, limiter=self._writes)

    async def write_bulk(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, *args)` in one write transaction that may take long, in a worker thread of its
        own kind: a long import holds up other writes on SQLite (one writer), never reads or other threads."""
        work = functools.partial(self.run, fn, *args, write=True, **kwargs)
        return await anyio.to_thread.run_sync(work, limiter=self._bulk_writes)

    def dispose(self) -> None:
        self.engine.dispose()


__all__ = ["SQLITE_PRAGMAS", "Database", "create_engine", "insert_or_ignore", "metadata"]
