"""`portal worker` as a process: killed with SIGKILL in the middle of its deliveries, then restarted."""

from __future__ import annotations

import os
import re
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
from tests.conftest import ENCRYPTION_KEY, Tenant
from tests.support.upstream import Upstream, answer, serve
from tests.test_worker import SECRET, connect, invoice_ids

EVENTS = 200


@pytest.fixture
def slow_upstream() -> Iterator[tuple[Upstream, str]]:
    received = Upstream(default=answer(200, b'{"ok":true}', delay=0.01))
    for url in serve(received):
        yield received, url


def start_worker(database: Any, *args: str, stderr: Any = subprocess.DEVNULL,
                 environment: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`portal worker` on `database` (leases of 2 s, batches of 20); `environment` adds or overrides variables."""
    env = {**os.environ, "PORTAL_DATABASE_URL": database.engine.url.render_as_string(hide_password=False),
           "PORTAL_WORKER_LEASE_SECONDS": "2", "PORTAL_WORKER_BATCH": "20", "PORTAL_WORKER_CONCURRENCY": "8",
           "PORTAL_WORKER_RECONCILE_SECONDS": "100000", "NO_PROXY": "127.0.0.1,localhost",
           "PORTAL_CONNECTORS_ALLOW_PRIVATE_NETWORKS": "1", "PORTAL_ENCRYPTION_KEYS": ENCRYPTION_KEY,
           **(environment or {})}
    return subprocess.Popen([sys.executable, "-m", "portal.cli", "worker", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=stderr)


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


def test_sigterm_finishes_the_deliveries_in_hand_and_says_so(slow_upstream: Any, database: Any, tenant: Tenant,
                                                             clock: Any, tmp_path: Any) -> None:
    received, url = slow_upstream
    items = [{"customer": "C1", "status": "open", "currency": "EUR", "total": "10.00", "external_id": f"T-{i}"}
             for i in range(EVENTS)]
    assert tenant.client.post("/api/v1/invoices/batch", json={"invoices": items}).json()["created"] == EVENTS
    connect(database, tenant, clock, "erp", "webhook", {"url": url, "secret": SECRET})
    ids = invoice_ids(database)
    database.run(lambda conn: [announce(conn, tenant.org.id, "invoice.paid", {"n": i}, clock.now(),
                                        invoice_id=ids[f"T-{i}"]) for i in range(EVENTS)])
    log = tmp_path / "worker.log"
    with open(log, "wb") as stderr:  # at DEBUG: the deliveries' own lines, which must carry no secret
        process = start_worker(database, stderr=stderr, environment={"PORTAL_LOG_LEVEL": "DEBUG"})
    try:
        wait_for(lambda: len(received.received) >= 30, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    text = log.read_text()
    assert " DEBUG " in text
    signatures = {r.headers["quittance-signature"] for r in received.received}
    assert not [secret for secret in (SECRET, ENCRYPTION_KEY, *signatures) if secret in text], \
        "no connector secret, key or signature in the worker's log"
    assert "SIGTERM received; finishing the" in text and "deliveries in hand, then stopping" in text, text
    assert re.search(r"INFO portal\.worker .* worker \S+ stopped$", text[text.index("SIGTERM received"):], re.M), text
    with database.transaction() as conn:
        assert conn.scalar(sa.select(sa.func.count()).where(deliveries.c.status == "in_flight")) == 0, \
            "nothing left leased: what it held was delivered and recorded before it stopped"
        delivered = conn.scalar(sa.select(sa.func.count()).where(deliveries.c.status == "delivered"))
    assert delivered == len(set(received.keys())) < EVENTS


def test_the_worker_serves_its_metrics_when_asked(database: Any, tenant: Tenant, clock: Any) -> None:
    import socket

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = start_worker(database, "--metrics-port", str(port))
    try:
        def scraped() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.TransportError:
                return ""

        wait_for(lambda: "quittance_worker_last_success_timestamp_seconds" in scraped() and not
                 re.search(r"^quittance_worker_last_success_timestamp_seconds 0\.0$", scraped(), re.M), timeout=30)
        text = scraped()
        assert re.search(r'^quittance_outbox_deliveries\{status="pending"\} 0\.0$', text, re.M)
        assert "process_cpu_seconds_total" in text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
