"""Where `Database` runs its transactions (see portal/db/__init__.py): on SQLite, writes take turns in the order
they were asked for and a long write does not hold up reads; on PostgreSQL, while a server runs, at most
POSTGRESQL_POOL_SIZE writes run at a time, reads have connections of their own, and no connection outlives the
event loop that opened it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from portal.db import ASYNC_APPLICATION_NAME, POSTGRESQL_POOL_SIZE, Database
from portal.db.organizations import organizations
from portal.domain.organizations import create_organization
from tests.conftest import START


def slugs_in_id_order(conn: sa.Connection) -> list[str]:
    return list(conn.scalars(sa.select(organizations.c.slug).order_by(organizations.c.id)))


def test_writes_take_turns(database: Database) -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def create(conn: sa.Connection, slug: str) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.005)  # long enough for the others to pile up
            create_organization(conn, slug, slug, START)
        finally:
            with lock:
                running -= 1

    slugs = [f"org-{i:02d}" for i in range(24)]

    async def all_at_once() -> None:
        async with database.serving():
            await asyncio.gather(*(database.write(create, slug) for slug in slugs))

    asyncio.run(all_at_once())
    stored = database.run(slugs_in_id_order, write=False)
    assert sorted(stored) == slugs
    if database.is_postgresql:
        assert 1 < most <= POSTGRESQL_POOL_SIZE
    else:
        assert most == 1
        assert stored == slugs  # first come, first served


@pytest.mark.sqlite_only
def test_on_sqlite_a_bulk_write_holds_up_writes_but_not_reads(database: Database) -> None:
    started = threading.Event()

    def bulk(conn: sa.Connection) -> None:
        create_organization(conn, "bulk", "Bulk", START)
        started.set()
        time.sleep(0.5)

    def count(conn: sa.Connection) -> Any:
        return conn.scalar(sa.select(sa.func.count()).select_from(organizations))

    async def scenario() -> tuple[float, int, float]:
        began = time.monotonic()
        bulk_write = asyncio.create_task(database.write_bulk(bulk))
        while not started.is_set():
            await asyncio.sleep(0.01)
        short_write = asyncio.create_task(database.write(create_organization, "short", "Short", START))
        seen = await database.read(count)
        read_at = time.monotonic() - began
        await asyncio.gather(bulk_write, short_write)
        return read_at, seen, time.monotonic() - began

    read_at, seen, done_at = asyncio.run(scenario())
    assert read_at < 0.4 and seen == 0  # read at once, without the bulk write's uncommitted row
    assert done_at >= 0.5
    assert database.run(slugs_in_id_order, write=False) == ["bulk", "short"]  # the short write waited its turn


@pytest.mark.sqlite_only
def test_on_sqlite_a_write_waiting_for_another_process_leaves_the_loop_free(database: Database) -> None:
    """`portal worker` or a CLI command writing: the server's write waits in a thread, not on the loop."""
    holder = sqlite3.connect(database.engine.url.database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write transaction, as far as SQLite can tell

    async def scenario() -> tuple[int, int]:
        write = asyncio.create_task(database.write(create_organization, "after", "After", START))
        ticks = 0
        for _ in range(20):  # 0.4 s during which the loop must keep running
            await asyncio.sleep(0.02)
            ticks += 1
        assert not write.done()  # still waiting for the other writer
        asyncio.get_running_loop().call_later(0.05, holder.execute, "COMMIT")
        await write
        return ticks, len(database.run(slugs_in_id_order, write=False))

    try:
        began = time.monotonic()
        ticks, stored = asyncio.run(scenario())
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
        async with database.serving():
            writes = [asyncio.create_task(database.write(wait_for_the_row)) for _ in range(POSTGRESQL_POOL_SIZE + 2)]
            await asyncio.sleep(0.2)  # every write connection is taken, blocked on the lock
            began = time.monotonic()
            count = await database.read(
                lambda conn: conn.scalar(sa.select(sa.func.count()).select_from(organizations)))
            read_took = time.monotonic() - began
            release.set()
            await asyncio.gather(*writes)
            return read_took, count

    try:
        read_took, count = asyncio.run(scenario())
    finally:
        release.set()
        holder.join(10)
    assert count == 1 and read_took < 1.0


def _connections(database: Database) -> int:
    """The asyncpg connections open on this database."""
    return int(database.run(lambda conn: conn.scalar(sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = :name"),
        {"name": ASYNC_APPLICATION_NAME}), write=False))


@pytest.mark.postgresql_only
def test_on_postgresql_no_connection_outlives_its_event_loop(database: Database) -> None:
    def count(conn: sa.Connection) -> Any:
        return conn.scalar(sa.select(sa.func.count()).select_from(organizations))

    before = _connections(database)

    async def unpooled() -> None:  # a test client without its context manager: a new loop per request
        await database.write(create_organization, "unpooled", "Unpooled", START)
        assert await database.read(count) == 1

    async def served() -> int:
        async with database.serving():
            await asyncio.gather(*(database.read(count) for _ in range(3 * POSTGRESQL_POOL_SIZE)))
            await database.write(create_organization, "served", "Served", START)
            return _connections(database)

    asyncio.run(unpooled())
    assert _connections(database) == before
    during = asyncio.run(served())
    assert before < during <= before + 2 * POSTGRESQL_POOL_SIZE  # one pool for reads, one for writes
    assert _connections(database) == before
    assert database.run(slugs_in_id_order, write=False) == ["unpooled", "served"]


@pytest.mark.postgresql_only
def test_on_postgresql_pages_are_served_after_the_database_dropped_the_connections(database: Database) -> None:
    """A restart or failover closes the pools' connections, which are used unchecked: a read or a write that
    finds its connection dead runs once more on a new one."""
    def count(conn: sa.Connection) -> Any:
        return conn.scalar(sa.select(sa.func.count()).select_from(organizations))

    def drop_our_connections(conn: sa.Connection) -> int:
        return len(conn.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = :name"), {"name": ASYNC_APPLICATION_NAME}).all())

    async def scenario() -> tuple[int, int]:
        async with database.serving():
            await database.write(create_organization, "before", "Before", START)
            assert await database.read(count) == 1
            dropped = database.run(drop_our_connections)
            await asyncio.sleep(0.1)  # the terminations reach the connections
            await database.write(create_organization, "after", "After", START)
            return dropped, await database.read(count)

    dropped, seen = asyncio.run(scenario())
    assert dropped == 2 and seen == 2


@pytest.mark.postgresql_only
def test_on_postgresql_a_read_in_a_transaction_keeps_its_local_settings(database: Database) -> None:
    """`read_in_transaction` is for a statement that needs `SET LOCAL` (the batch push's resend lookup): the
    setting holds for the read, and the pooled connection goes back to autocommit reads afterwards."""
    def plan_mode_after_set_local(conn: sa.Connection) -> str:
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        return str(conn.exec_driver_sql("SHOW plan_cache_mode").scalar())

    async def scenario() -> list[str]:
        async with database.serving():
            return [await database.read_in_transaction(plan_mode_after_set_local),
                    await database.read(plan_mode_after_set_local)]

    assert asyncio.run(scenario()) == ["force_custom_plan", "auto"]
