"""`portal worker` as a process: killed with SIGKILL in the middle of its deliveries, then restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from portal.db.connectors import deliveries
from portal.domain.outbox import announce
from tests.conftest import Tenant
from tests.support.upstream import Upstream, answer, serve
from tests.test_worker import SECRET, connect, invoice_ids

EVENTS = 200


@pytest.fixture
def slow_upstream() -> Iterator[tuple[Upstream, str]]:
    received = Upstream(default=answer(200, b'{"ok":true}', delay=0.01))
    for url in serve(received):
        yield received, url


def start_worker(database: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PORTAL_DATABASE_URL": database.engine.url.render_as_string(hide_password=False),
           "PORTAL_WORKER_LEASE_SECONDS": "2", "PORTAL_WORKER_BATCH": "20", "PORTAL_WORKER_CONCURRENCY": "8",
           "PORTAL_WORKER_RECONCILE_SECONDS": "100000", "NO_PROXY": "127.0.0.1,localhost",
           "PORTAL_CONNECTORS_ALLOW_PRIVATE_NETWORKS": "1"}
    return subprocess.Popen([sys.executable, "-m", "portal.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


def test_sigkill_mid_run_loses_nothing(slow_upstream: Any, database: Any, tenant: Tenant, clock: Any) -> None:
    received, url = slow_upstream
    items = [{"customer": "C1", "status": "open", "currency": "EUR", "total": "10.00", "external_id": f"K-{i}"}
             for i in range(EVENTS)]
    assert tenant.client.post("/api/v1/invoices/batch", json={"invoices": items}).json()["created"] == EVENTS
    connect(database, tenant, clock, "erp", "webhook", {"url": url, "secret": SECRET})
    ids = invoice_ids(database)
    database.run(lambda conn: [announce(conn, tenant.org.id, "invoice.paid", {"n": i}, clock.now(),
                                        invoice_id=ids[f"K-{i}"]) for i in range(EVENTS)])

    first = start_worker(database)
    try:
        wait_for(lambda: len(received.received) >= EVENTS // 2, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    at_kill = len(received.received)
    assert at_kill < EVENTS, "killed in the middle"

    second = start_worker(database)
    try:
        wait_for(lambda: len(set(received.keys())) == EVENTS, timeout=60)

        def settled() -> bool:
            with database.transaction() as conn:
                return conn.scalar(sa.select(sa.func.count()).where(deliveries.c.status != "delivered")) == 0
        wait_for(settled, timeout=30)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=15)

    counts = Counter(received.keys())
    duplicates = {key: n for key, n in counts.items() if n > 1}
    assert len(counts) == EVENTS, "all 200 arrived"
    assert all(n == 2 for n in duplicates.values())
    assert len(duplicates) <= 20, "only deliveries in flight at the kill (one claimed batch) came twice"
    with database.transaction() as conn:
        assert conn.scalar(sa.select(sa.func.count()).where(deliveries.c.status == "in_flight")) == 0
    assert second.returncode == 0, "SIGTERM ends the worker cleanly"
