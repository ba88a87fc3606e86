"""The outbox worker against a real HTTP upstream on loopback: delivered exactly once from the outbox's point
of view, whatever the upstream does, with the same idempotency key on every attempt."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from portal.connectors import registry
from portal.db.connectors import deliveries
from portal.domain import connectors as config
from portal.domain.outbox import announce
from portal.worker import Worker, WorkerSettings
from portal.encryption import SecretBox
from tests.conftest import ENCRYPTION_KEY, Tenant
from tests.support.upstream import Upstream, answer, serve

SECRET = "whsec_upstream_0123456789"


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    received = Upstream()
    for url in serve(received):
        yield received, url


def connect(database: Any, tenant: Tenant, clock: Any, name: str, kind: str, settings: dict[str, Any]) -> None:
    registry.validate(kind, settings, allow_private_networks=True)
    database.run(config.put, tenant.org.id, name, kind, settings, registry.event_types(kind, settings), clock.now(),
                 SecretBox((ENCRYPTION_KEY,)))


def invoice_ids(database: Any) -> dict[str, int]:
    from portal.db.invoices import invoices

    with database.transaction() as conn:
        return dict(conn.execute(sa.select(invoices.c.external_id, invoices.c.id)).all())


def announce_paid(database: Any, tenant: Tenant, clock: Any, external_id: str = "INV-1",
                  event_type: str = "invoice.paid") -> None:
    invoice_id = invoice_ids(database)[external_id]
    database.run(announce, tenant.org.id, event_type, {"invoice": external_id, "amount": "121.00"}, clock.now(),
                 invoice_id=invoice_id)


def worker(database: Any, clock: Any, **options: Any) -> Worker:
    from portal.settings import Settings

    return Worker(database, Settings(connectors_allow_private_networks=True, encryption_keys=(ENCRYPTION_KEY,)),
                  clock=clock,
                  options=WorkerSettings(**{"timeout_seconds": 0.5, "reconcile_seconds": 1e9, **options}))


def drain(w: Worker) -> int:
    async def go() -> int:
        try:
            return await w.drain()
        finally:
            await w.aclose()
    return asyncio.run(go())


def drain_over_time(database: Any, clock: Any, rounds: int = 12, **options: Any) -> None:
    """Deliver, then let our clock pass each backoff, round after round (no sleeping)."""
    for _ in range(rounds):
        drain(worker(database, clock, **options))
        clock.advance(hours=2)


def statuses(database: Any) -> list[tuple[str, int]]:
    with database.transaction() as conn:
        return [(r.status, r.attempts) for r in conn.execute(sa.select(deliveries).order_by(deliveries.c.id))]


def test_signed_webhook_delivered_once(upstream: Any, database: Any, tenant: Tenant, clock: Any) -> None:
    received, url = upstream
    tenant.put_invoice()
    connect(database, tenant, clock, "erp", "webhook", {"url": f"{url}/hooks", "secret": SECRET})
    announce_paid(database, tenant, clock)
    drain(worker(database, clock))
    drain(worker(database, clock))
    assert len(received.received) == 1
    request = received.received[0]
    timestamp, signature = (part.split("=", 1)[1] for part in request.headers["quittance-signature"].split(","))
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    body = orjson.loads(request.body)
    assert (body["type"], body["invoice"]["external_id"], body["data"]["amount"]) == ("invoice.paid", "INV-1", "121.00")
    assert request.headers["idempotency-key"].startswith("qtc_evt_")
    assert statuses(database) == [("delivered", 1)]


@pytest.mark.parametrize("failures", [
    [answer(500)] * 3,
    [answer(503, retry_after=2)],
    [answer(429, retry_after=1)],
    [answer(200, b"<html>Service Unavailable</html>", "text/html")],
    [answer(200, b"not json", "application/json")],
    [answer(200, delay=2.0)],  # past the client's 0.5 s timeout
], ids=["500x3", "503-retry-after", "429", "200-html", "200-bad-json", "hang"])
def test_faults_end_delivered_once_with_one_key(upstream: Any, database: Any, tenant: Tenant, clock: Any,
                                                failures: list[Any]) -> None:
    received, url = upstream
    received.script = list(failures)
    tenant.put_invoice()
    connect(database, tenant, clock, "erp", "webhook", {"url": url, "secret": SECRET})
    announce_paid(database, tenant, clock)
    drain_over_time(database, clock)
    assert len(set(received.keys())) == 1, "the same idempotency key on every attempt"
    assert len(received.received) == len(failures) + 1
    assert statuses(database) == [("delivered", len(failures) + 1)]


def test_retry_after_is_honoured(upstream: Any, database: Any, tenant: Tenant, clock: Any) -> None:
    received, url = upstream
    received.script = [answer(503, retry_after=120)]
    tenant.put_invoice()
    connect(database, tenant, clock, "erp", "webhook", {"url": url, "secret": SECRET})
    announce_paid(database, tenant, clock)
    drain(worker(database, clock))
    with database.transaction() as conn:
        due = conn.scalar(sa.select(deliveries.c.next_attempt_at))
    assert (due.replace(tzinfo=None) - clock.now().replace(tzinfo=None)).total_seconds() == 120


def test_a_reset_connection_is_retried(database: Any, tenant: Tenant, clock: Any) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def reset_everyone() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            client.close()

    threading.Thread(target=reset_everyone, daemon=True).start()
    tenant.put_invoice()
    connect(database, tenant, clock, "erp", "webhook",
            {"url": f"http://127.0.0.1:{listener.getsockname()[1]}/", "secret": SECRET})
    announce_paid(database, tenant, clock)
    drain(worker(database, clock))
    listener.close()
    with database.transaction() as conn:
        row = conn.execute(sa.select(deliveries)).one()
    assert (row.status, row.attempts) == ("pending", 1)
    assert "connection" in row.last_error


def test_poison_event_is_dead_lettered_while_others_flow(upstream: Any, database: Any, tenant: Tenant,
                                                         clock: Any) -> None:
    received, url = upstream
    tenant.put_invoice("INV-1")
    tenant.put_invoice("INV-2")
    connect(database, tenant, clock, "erp", "webhook", {"url": url, "secret": SECRET})
    announce_paid(database, tenant, clock, "INV-1")
    with database.transaction() as conn:
        poison_key = conn.scalar(sa.select(deliveries.c.idempotency_key))
    received.refuse[poison_key] = 400
    announce_paid(database, tenant, clock, "INV-2")
    drain_over_time(database, clock, rounds=2)
    assert statuses(database) == [("dead", 1), ("delivered", 1)]
    dead = tenant.client.get("/api/v1/deliveries", params={"status": "dead"}).json()["items"]
    assert dead[0]["last_status"] == 400 and "400" in dead[0]["last_error"]
    del received.refuse[poison_key]
    assert tenant.client.post(f"/api/v1/deliveries/{dead[0]['id']}/retry").status_code == 204
    drain(worker(database, clock))
    assert [s for s, _ in statuses(database)] == ["delivered", "delivered"]


def test_a_later_state_never_overtakes_an_earlier_one(upstream: Any, database: Any, tenant: Tenant,
                                                      clock: Any) -> None:
    received, url = upstream
    received.script = [answer(500)]
    tenant.put_invoice()
    connect(database, tenant, clock, "erp", "webhook", {"url": url, "secret": SECRET})
    announce_paid(database, tenant, clock, event_type="invoice.partially_paid")
    announce_paid(database, tenant, clock, event_type="invoice.paid")
    drain(worker(database, clock))
    assert [orjson.loads(r.body)["type"] for r in received.received] == ["invoice.partially_paid"]
    clock.advance(hours=1)
    drain(worker(database, clock))
    assert [orjson.loads(r.body)["type"] for r in received.received] == [
        "invoice.partially_paid", "invoice.partially_paid", "invoice.paid"]


def test_status_patch_marks_the_notice_billed(upstream: Any, database: Any, tenant: Tenant, clock: Any) -> None:
    received, url = upstream
    tenant.put_invoice("N-42", number="2026/42")
    connect(database, tenant, clock, "molink", "status_patch", {
        "base": url, "headers": {"Authorization": "Bearer upstream-token"},
        "requests": {"invoice.paid": {"method": "PATCH", "url": "{base}/v2/notices/{invoice.number}",
                                      "body": {"status": "billed", "amount": "{data.amount}"}}}})
    announce_paid(database, tenant, clock, "N-42")
    announce_paid(database, tenant, clock, "N-42", event_type="payment.refunded")  # not configured: not sent
    drain(worker(database, clock))
    assert len(received.received) == 1
    request = received.received[0]
    assert (request.method, request.path) == ("PATCH", "/v2/notices/2026%2F42"), "values cannot change the path"
    assert request.headers["authorization"] == "Bearer upstream-token"
    assert orjson.loads(request.body) == {"status": "billed", "amount": "121.00"}


def test_connector_api(tenant: Tenant, other_tenant: Tenant) -> None:
    created = tenant.client.put("/api/v1/connectors/erp", json={
        "type": "webhook", "settings": {"url": "https://erp.example/hook", "secret": SECRET,
                                        "events": ["invoice.paid"]}})
    assert created.status_code == 201, created.text
    assert created.json()["settings"]["secret"] == "…6789"
    assert created.json()["event_types"] == ["invoice.paid"]
    for internal in ("http://127.0.0.1:5432/", "http://169.254.169.254/latest/meta-data", "http://10.0.0.7/",
                     "http://[::1]/", "http://localhost/", "http://db.internal/"):
        refused = tenant.client.put("/api/v1/connectors/ssrf", json={
            "type": "webhook", "settings": {"url": internal, "secret": SECRET}})
        assert refused.status_code == 422, internal
        assert "private" in refused.json()["errors"][0]["message"]
    bad = tenant.client.put("/api/v1/connectors/erp", json={"type": "webhook", "settings": {"url": "ftp://x"}})
    assert bad.status_code == 422
    assert {e["path"] for e in bad.json()["errors"]} == {"/settings/url", "/settings/secret"}
    assert other_tenant.client.get("/api/v1/connectors/erp").status_code == 404
    assert [c["name"] for c in tenant.client.get("/api/v1/connectors").json()["items"]] == ["erp"]
    assert tenant.client.delete("/api/v1/connectors/erp").status_code == 204
    assert tenant.client.get("/api/v1/connectors/erp").status_code == 404


@pytest.mark.postgresql_only
def test_two_workers_never_send_one_delivery_twice(upstream: Any, database: Any, tenant: Tenant,
                                                   clock: Any) -> None:
    received, url = upstream
    items = [{"customer": "C1", "status": "open", "currency": "EUR", "total": "10.00", "external_id": f"I-{i}"}
             for i in range(250)]
    assert tenant.client.post("/api/v1/invoices/batch", json={"invoices": items}).json()["created"] == 250
    connect(database, tenant, clock, "erp", "webhook", {"url": url, "secret": SECRET})
    ids = invoice_ids(database)

    def write(conn: sa.Connection) -> None:
        for i in range(250):
            for kind in ("invoice.partially_paid", "invoice.paid"):
                announce(conn, tenant.org.id, kind, {"n": i}, clock.now(), invoice_id=ids[f"I-{i}"])

    database.run(write)
    with database.transaction() as conn:
        poison = conn.scalar(sa.select(deliveries.c.idempotency_key).order_by(deliveries.c.id).limit(1))
    received.refuse[poison] = 400

    async def both() -> None:
        # A generous timeout: a slow answer on a loaded machine would be retried (same key, correctly), and this
        # test is about two workers never claiming the same delivery, not about timeouts.
        workers = [worker(database, clock, batch=25, timeout_seconds=30),
                   worker(database, clock, batch=25, timeout_seconds=30)]
        try:
            for _ in range(60):
                done = await asyncio.gather(*(w.step() for w in workers))
                if not any(done):
                    break
        finally:
            for w in workers:
                await w.aclose()

    asyncio.run(both())
    keys = received.keys()
    assert len(keys) == 500
    assert len(set(keys)) == 500, "no delivery was sent twice"
    final = statuses(database)
    assert final.count(("dead", 1)) == 1 and sum(1 for s, _ in final if s == "delivered") == 499
    order: dict[str, list[str]] = {}
    for request in received.received:
        body = orjson.loads(request.body)
        order.setdefault(body["invoice"]["external_id"], []).append(body["type"])
    assert all(types == ["invoice.partially_paid", "invoice.paid"] for name, types in order.items() if name != "I-0")


def test_the_worker_runs_due_imports_and_keeps_their_cursor(database: Any, tenant: Tenant, clock: Any) -> None:
    from portal.db.connectors import connectors
    from tests.connectors.test_pull_import import TOKEN, at, five_orders, settings_for
    from tests.support.fake_upstream import FakeUpstream

    with FakeUpstream(token=TOKEN) as upstream:
        five_orders(upstream)
        settings = settings_for(upstream)
        connect(database, tenant, clock, "molink", "pull_import", settings)
        w = worker(database, clock)

        async def housekeeping_twice() -> None:
            try:
                await w._imports()
                await w._imports()  # not due again until its interval has passed
            finally:
                await w.aclose()

        asyncio.run(housekeeping_twice())
        assert len(upstream.requests_to("/v2/orders")) == 3, "three pages of two, read once: not due again"
    assert tenant.client.get("/api/v1/invoices/molink-1001").status_code == 200
    with database.transaction() as conn:
        row = conn.execute(sa.select(connectors).where(connectors.c.name == "molink")).one()
    assert row.cursor == at(5)
    assert row.last_run["created"] == 5
    assert row.next_run_at.replace(tzinfo=None) == (clock.now().replace(tzinfo=None) +
                                                    __import__("datetime").timedelta(seconds=300))


def test_the_request_id_goes_upstream_with_every_attempt(upstream: Any, database: Any, tenant: Tenant,
                                                          clock: Any) -> None:
    from asgi_correlation_id import correlation_id

    received, url = upstream
    tenant.put_invoice()
    connect(database, tenant, clock, "erp", "webhook", {"url": f"{url}/hooks", "secret": SECRET})
    token = correlation_id.set("edge-req-77")  # as the web request that recorded the payment had it
    try:
        announce_paid(database, tenant, clock)
    finally:
        correlation_id.reset(token)
    received.script = [answer(500)]  # then the default answer: the retry is delivered
    drain_over_time(database, clock, rounds=2)
    assert [r.headers.get("x-request-id") for r in received.received] == ["edge-req-77", "edge-req-77"]
    assert statuses(database) == [("delivered", 2)]


def test_a_running_worker_records_its_heartbeat(database: Any, clock: Any) -> None:
    from portal.domain.operations_state import outbox_state

    async def one_loop() -> None:
        w = worker(database, clock)
        stop = asyncio.Event()
        task = asyncio.create_task(w.run(stop))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if database.run(outbox_state, write=False).worker_last_success_at is not None:
                break
        stop.set()
        await task
        await w.aclose()

    assert database.run(outbox_state, write=False).worker_last_success_at is None
    asyncio.run(one_loop())
    assert database.run(outbox_state, write=False).worker_last_success_at == clock.now()
