"""How `Database` runs its transactions (see portal/db/__init__.py): in worker threads bounded per kind, so
reads go on while writes wait (for a bulk write, a row lock or another process's writer); concurrent writers
on SQLite take turns instead of failing; the pool replaces connections the database dropped; concurrent first
writes of the same object are settled at the insert; and the app opens its database in its lifespan."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from portal.app import create_app
from portal.db import READ_THREADS, WRITE_THREADS, Database
from portal.db.organizations import organizations
from portal.db.invoices import invoices
from portal.domain.customers import CustomerInput, upsert_customer
from portal.domain.invoices import InvoiceInput, upsert_invoices
from portal.domain.lifecycle import next_number
from portal.domain.organizations import create_organization
from tests.conftest import START


def slugs_in_id_order(conn: sa.Connection) -> list[str]:
    return list(conn.scalars(sa.select(organizations.c.slug).order_by(organizations.c.id)))


def count(conn: sa.Connection) -> Any:
    return conn.scalar(sa.select(sa.func.count()).select_from(organizations))


class Most:
    """How many of the transactions it wraps ran at the same time, at most."""

    def __init__(self) -> None:
        self.running = self.most = 0
        self.lock = threading.Lock()

    def around(self, fn: Any) -> Any:
        def wrapped(conn: sa.Connection, *args: Any) -> Any:
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                time.sleep(0.01)  # long enough for the others to pile up
                return fn(conn, *args)
            finally:
                with self.lock:
                    self.running -= 1
        return wrapped


def test_concurrent_writes_all_succeed(database: Database) -> None:
    most = Most()
    create = most.around(create_organization)
    slugs = [f"org-{i:02d}" for i in range(24)]

    async def all_at_once() -> None:
        async with anyio.create_task_group() as tasks:
            for slug in slugs:
                tasks.start_soon(database.write, create, slug, slug, START)

    anyio.run(all_at_once)
    assert sorted(database.run(slugs_in_id_order, write=False)) == slugs
    if database.is_postgresql:
        assert 1 < most.most <= WRITE_THREADS
    else:
        assert most.most == 1  # SQLite has one writer at a time: the process's writers take turns


def test_reads_run_on_a_bounded_number_of_threads(database: Database) -> None:
    most = Most()

    async def many() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(3 * READ_THREADS):
                tasks.start_soon(database.read, most.around(count))

    anyio.run(many)
    assert 1 < most.most <= READ_THREADS


def test_a_bulk_write_does_not_hold_up_reads(database: Database) -> None:
    started = threading.Event()

    def bulk(conn: sa.Connection) -> None:
        create_organization(conn, "bulk", "Bulk", START)
        started.set()
        time.sleep(0.5)

    async def scenario() -> tuple[float, int]:
        began = time.monotonic()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(database.write_bulk, bulk)
            while not started.is_set():
                await anyio.sleep(0.01)
            tasks.start_soon(database.write, create_organization, "short", "Short", START)
            seen = await database.read(count)
            read_at = time.monotonic() - began
        return read_at, seen

    read_at, seen = anyio.run(scenario)
    assert read_at < 0.4 and seen == 0  # read at once, without the bulk write's uncommitted row
    assert sorted(database.run(slugs_in_id_order, write=False)) == ["bulk", "short"]


@pytest.mark.sqlite_only
def test_on_sqlite_a_write_waiting_for_another_process_leaves_the_loop_free(database: Database) -> None:
    """`portal worker` or a CLI command writing: the server's write waits in its thread, not on the loop."""
    holder = sqlite3.connect(database.engine.url.database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write transaction, as far as SQLite can tell

    async def scenario() -> tuple[int, int]:
        done = threading.Event()

        async def write() -> None:
            await database.write(create_organization, "after", "After", START)
            done.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(write)
            ticks = 0
            for _ in range(20):  # 0.4 s during which the loop must keep running
                await anyio.sleep(0.02)
                ticks += 1
            assert not done.is_set()  # still waiting for the other writer
            holder.execute("COMMIT")
        return ticks, len(database.run(slugs_in_id_order, write=False))

    try:
        began = time.monotonic()
        ticks, stored = anyio.run(scenario)
    finally:
        holder.close()
    assert ticks == 20 and time.monotonic() - began < 5
    assert stored == 1


@pytest.mark.postgresql_only
def test_on_postgresql_reads_go_on_while_writes_wait_for_a_row_lock(database: Database) -> None:
    database.run(create_organization, "locked", "Locked", START)
    row_locked, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:  # a batch push holding invoice rows, say
        with database.transaction() as conn:
            conn.execute(sa.select(organizations.c.id).where(organizations.c.slug == "locked").with_for_update())
            row_locked.set()
            release.wait(10)

    def wait_for_the_row(conn: sa.Connection) -> None:
        conn.execute(sa.select(organizations.c.id).where(organizations.c.slug == "locked").with_for_update())

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    row_locked.wait(10)

    async def scenario() -> tuple[float, int]:
        async with anyio.create_task_group() as tasks:
            for _ in range(WRITE_THREADS + 2):
                tasks.start_soon(database.write, wait_for_the_row)
            await anyio.sleep(0.2)  # every write thread is taken, blocked on the lock
            began = time.monotonic()
            seen = await database.read(count)
            read_took = time.monotonic() - began
            release.set()
        return read_took, seen

    try:
        read_took, seen = anyio.run(scenario)
    finally:
        release.set()
        holder.join(10)
    assert seen == 1 and read_took < 1.0


@pytest.mark.postgresql_only
def test_on_postgresql_connections_the_database_dropped_are_replaced(database: Database) -> None:
    """A restart or a failover closes the pool's connections: the next transactions get new ones."""
    def drop_the_others(conn: sa.Connection) -> int:
        return len(conn.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")).all())

    async def scenario() -> tuple[int, int]:
        async with anyio.create_task_group() as tasks:  # several connections in the pool
            for slug in ("a", "b", "c", "d"):
                tasks.start_soon(database.write, create_organization, slug, slug, START)
        dropped = database.run(drop_the_others)
        await anyio.sleep(0.1)  # the terminations reach the connections
        await database.write(create_organization, "after", "After", START)
        return dropped, await database.read(count)

    dropped, seen = anyio.run(scenario)
    assert dropped >= 1 and seen == 5


@pytest.mark.postgresql_only
def test_a_read_keeps_its_local_settings_to_itself(database: Database) -> None:
    """Every read is a transaction: `SET LOCAL` (the batch push's resend lookup) holds for it and no further."""
    def plan_mode_after_set_local(conn: sa.Connection) -> str:
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        return str(conn.exec_driver_sql("SHOW plan_cache_mode").scalar())

    def plan_mode(conn: sa.Connection) -> str:
        return str(conn.exec_driver_sql("SHOW plan_cache_mode").scalar())

    async def scenario() -> list[str]:
        return [await database.read(plan_mode_after_set_local), await database.read(plan_mode)]

    assert anyio.run(scenario) == ["force_custom_plan", "auto"]


# --- Concurrent first writes of one object: settled at the insert, one row, nobody fails ----------------------

def at_once(database: Database, fn: Any, *args: Any, times: int = 8) -> list[Any]:
    """`fn` in `times` transactions started together. On PostgreSQL each has begun before any goes on, so all
    look for the object before any inserts it; SQLite's writers take turns from their BEGIN."""
    barrier = threading.Barrier(times)

    def together(conn: sa.Connection, *args: Any) -> Any:
        conn.exec_driver_sql("SELECT 1")
        barrier.wait(10)
        return fn(conn, *args)

    def one(_: int) -> Any:
        if database.is_postgresql:
            return database.run(together, *args)
        barrier.wait(10)
        return database.run(fn, *args)

    with ThreadPoolExecutor(times) as pool:
        return list(pool.map(one, range(times)))


def test_concurrent_first_pushes_of_a_customer_make_one(database: Database) -> None:
    org = database.run(create_organization, "acme", "Acme", START)
    item = CustomerInput("C1", "Brasserie Dupont", None, "fr-BE", None, None)
    results = at_once(database, upsert_customer, org.id, item, START)
    assert sorted(results) == ["created"] + ["unchanged"] * 7


def test_concurrent_first_pushes_of_invoices_make_one_each(database: Database) -> None:
    org = database.run(create_organization, "acme", "Acme", START)
    database.run(upsert_customer, org.id, CustomerInput("C1", "Brasserie Dupont", None, "fr-BE", None, None), START)
    items = [InvoiceInput(external_id=external_id, customer="C1", number=external_id, kind="invoice", status="open",
                          issue_date=START.date(), due_date=START.date(), payment_terms=None, payment_terms_days=None,
                          currency="EUR", total_minor=12100, amount_due_minor=12100, lines=[])
             for external_id in ("F-1", "F-2")]
    pushes = at_once(database, upsert_invoices, org.id, items, START)
    for external_id in ("F-1", "F-2"):
        results = [o.result for outcomes in pushes for o in outcomes if o.external_id == external_id]
        assert sorted(results) == ["created"] + ["unchanged"] * 7
    stored = database.run(lambda conn: conn.scalar(sa.select(sa.func.count()).select_from(invoices)), write=False)
    assert stored == 2


def test_concurrent_first_numbers_of_an_organization_are_all_different(database: Database) -> None:
    org = database.run(create_organization, "acme", "Acme", START)
    numbers = at_once(database, next_number, org.id)
    assert sorted(numbers) == [f"Q-{n:06d}" for n in range(1, 9)]


# --- The app's lifespan -----------------------------------------------------------------------------------

def test_the_app_opens_its_database_in_its_lifespan(database: Database, settings: Any) -> None:
    unreachable = replace(settings, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    app = create_app(unreachable)  # builds without a database
    with pytest.raises(Exception, match="127.0.0.1"), TestClient(app):
        pass  # an unreachable database stops the start

    app = create_app(replace(settings, database_url=database.engine.url.render_as_string(hide_password=False)))
    with TestClient(app) as client:
        assert client.get("/api/v1/invoices", headers={"Authorization": "Bearer nope"}).status_code == 401
        engine = app.state.services.db.engine
        pool = engine.pool
        assert engine is not database.engine and pool.checkedin() >= 1
    assert pool.checkedin() == 0  # its connections closed at the end
