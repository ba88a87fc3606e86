"""`portal worker`: drains the outbox through the organizations' connectors, runs reconciliation, and runs
the scheduled pull imports.

One loop: claim a batch of due deliveries (leased to this worker), deliver them concurrently, record each
outcome, and when nothing is due sleep until the next delivery is (polling briefly, so a payment reaches the
billing system within a second). Upstream trouble never escapes a delivery: it becomes a retry or a dead
letter, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from asgi_correlation_id import correlation_id
from starlette.concurrency import run_in_threadpool

from portal import logs, metrics
from portal.clock import Clock, SystemClock, as_utc
from portal.connectors import registry
from portal.connectors.network import connector_client
from portal.connectors.pull_import import PullImporter
from portal.connectors.base import Connector, Event, Result
from portal.db import Database
from portal.domain import connectors as domain_connectors
from portal.domain.debtor import remaining_minor
from portal.domain import deliveries as outbox
from portal.domain.operations_state import worker_succeeded
from portal.encryption import secret_box
from portal.money import format_minor
from portal.providers.registry import ProviderRegistry
from portal.reconcile import reconcile
from portal.settings import Environment, Settings

log = logging.getLogger(__name__)
# How often a worker records that its loop runs (portal.domain.operations_state, the metrics' heartbeat).
HEARTBEAT_SECONDS = 5.0

@dataclass(frozen=True)
class WorkerSettings:
    batch: int = 100
    concurrency: int = 32
    lease_seconds: float = 30.0
    max_attempts: int = 12
    timeout_seconds: float = 10.0
    idle_poll_seconds: float = 0.1
    reconcile_seconds: float = 300.0


    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerSettings:
        """PORTAL_WORKER_* as read and checked with the other settings (portal.settings.Environment)."""
        return cls(**Environment.read(environ).worker_options())


async def run_until_signalled(db: Database, settings: Settings) -> None:
    """The `portal worker` process: runs until SIGTERM or SIGINT, then finishes the deliveries in hand."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    worker = Worker(db, settings, options=WorkerSettings.from_env())

    def stopping(signum: int) -> None:
        log.info("worker %s: %s received; finishing the %d deliveries in hand, then stopping (nothing new is "
                 "claimed; an import under way finishes its page)", worker.owner, signal.Signals(signum).name,
                 worker.in_hand)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping, signum)
    try:
        await worker.run(stop)
    finally:
        await worker.aclose()


class Worker:
    def __init__(self, db: Database, settings: Settings, *, options: WorkerSettings | None = None,
                 clock: Clock | None = None, client: httpx.AsyncClient | None = None) -> None:
        self.db, self.settings = db, settings
        self.options = options or WorkerSettings()
        self.clock = clock or SystemClock()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        # (client, how many deliveries it carries at once); together as many as `concurrency`.
        self._clients = ([(client, self.options.concurrency)] if client
                         else _clients(self.options, settings.connectors_allow_private_networks))
        self._client = self._clients[0][0]
        self._connectors: dict[tuple[int, dt.datetime, int], Connector] = {}
        self._next_reconcile = 0.0
        # Deliveries claimed and not yet recorded (what a SIGTERM waits for).
        self.in_hand = 0
        # Built once: it keeps one SDK client per provider configuration across reconciliations.
        self._providers = ProviderRegistry(settings)
        # Opens the connectors' sealed settings (portal.domain.connectors).
        self._box = secret_box(settings.encryption_keys)

    async def aclose(self) -> None:
        for client, _ in self._clients:
            await client.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker %s started", self.owner)
        loop = asyncio.get_running_loop()
        next_beat = 0.0
        while not stop.is_set():
            try:
                busy = await self.step()
                await self._housekeeping()
                if loop.time() >= next_beat:  # a row write every few seconds, not every loop
                    next_beat = loop.time() + HEARTBEAT_SECONDS
                    await run_in_threadpool(self.db.run, worker_succeeded, self.owner, self.clock.now())
            except Exception:  # the loop must survive a database hiccup; the claims' leases protect the rest
                log.exception("worker step failed")
                busy = 0
            if not busy:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.options.idle_poll_seconds)
                except TimeoutError:
                    pass
        log.info("worker %s stopped", self.owner)

    async def drain(self, max_steps: int = 1000) -> int:
        """Deliver until nothing is due now (tests and `portal outbox drain`)."""
        total = 0
        for _ in range(max_steps):
            done = await self.step()
            if not done:
                break
            total += done
        return total

    async def step(self) -> int:
        now = self.clock.now()
        claimed, contexts = await run_in_threadpool(self.db.run, self._claim, now)
        if not claimed:
            return 0
        # One slot per delivery in flight, each tied to a client: at most `concurrency` in all, and never more
        # on a client than its connections. Last in, first out, so that a trickle keeps to one connection.
        slots: asyncio.LifoQueue[int] = asyncio.LifoQueue()
        for index, (_, width) in enumerate(self._clients):
            for _ in range(width):
                slots.put_nowait(index)

        async def one(item: outbox.Claimed) -> tuple[outbox.Claimed, Result]:
            slot = await slots.get()
            try:
                return item, await self._deliver(item, contexts.get(item.id), slot)
            finally:
                slots.put_nowait(slot)

        self.in_hand = len(claimed)
        try:
            results = await asyncio.gather(*(one(item) for item in claimed))
            await run_in_threadpool(self.db.run, self._record, results)
        finally:
            self.in_hand = 0
        return len(claimed)

    def _claim(self, conn: sa.Connection,
               now: dt.datetime) -> tuple[list[outbox.Claimed], dict[int, dict[str, Any]]]:
        """A batch and what its connectors need, read in the claim's own transaction (one round of the
        thread pool and of the database's connection pool, not two)."""
        claimed = outbox.claim(conn, self.owner, now, limit=self.options.batch,
                               lease=dt.timedelta(seconds=self.options.lease_seconds))
        return claimed, _contexts(conn, [c.id for c in claimed]) if claimed else {}

    async def _deliver(self, item: outbox.Claimed, context: dict[str, Any] | None, slot: int = 0) -> Result:
        if context is None:
            return Result("failed", "the delivery's event or connector is gone")
        # This delivery's log lines carry the id of the request that caused its event (each delivery runs in
        # a task of its own, so these are its own).
        correlation_id.set(context["event"].request_id or f"delivery-{item.id}")
        logs.organization.set(context["event"].organization_slug)
        try:
            connector = self._connector(context, slot)
            return await connector.deliver(context["event"], item.idempotency_key)
        except Exception as exc:  # a connector bug must not take the worker down: it becomes a retry
            log.exception("connector %s failed on delivery %s", context["connector_type"], item.id)
            return Result("retry", f"connector error: {type(exc).__name__}: {exc}")

    def _connector(self, context: dict[str, Any], slot: int = 0) -> Connector:
        key = (context["connector_id"], context["connector_updated_at"], slot)
        if key not in self._connectors:
            self._connectors[key] = registry.build(
                context["connector_type"], domain_connectors.settings_of(context["connector_settings"], self._box),
                self._clients[slot][0], self.settings)
        return self._connectors[key]

    def _record(self, conn: sa.Connection, results: list[tuple[outbox.Claimed, Result]]) -> None:
        now = self.clock.now()
        delivered: dict[int | None, list[int]] = {}
        for item, result in results:
            metrics.deliveries.labels(result.outcome).inc()
            if result.outcome == "delivered":
                delivered.setdefault(result.status_code, []).append(item.id)
        for status_code, ids in delivered.items():
            outbox.delivered(conn, ids, self.owner, status_code, now)
        for item, result in results:
            if result.outcome == "delivered":
                continue
            status = outbox.failed_attempt(
                conn, item.id, self.owner, now, error=result.detail, status=result.status_code,
                retry_after=result.retry_after, permanent=result.outcome == "failed",
                max_attempts=self.options.max_attempts)
            if status == "dead":
                log.warning("delivery %s is dead after %s attempt(s): %s", item.id, item.attempts, result.detail)

    async def _housekeeping(self) -> None:
        """Reconciliation now and then, and the pull imports that are due."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_reconcile:
            self._next_reconcile = loop.time() + self.options.reconcile_seconds
            report = await reconcile(self.db, self._providers, self.settings, self.clock.now())
            if report.asked:
                log.info("reconciliation: %s", report)
        await self._imports()

    async def _imports(self) -> None:
        now = self.clock.now()
        due = await run_in_threadpool(self.db.run, domain_connectors.due_imports, now, write=False)
        for row in due:
            settings = domain_connectors.settings_of(row.settings, self._box)
            try:
                importer = PullImporter(settings, self._client)
                report = await importer.run(self.db, row.organization_id, row.cursor, now)
                summary: dict[str, Any] = {"at": now.isoformat(), **report.__dict__}
                cursor = report.cursor
            except Exception as exc:
                log.exception("import %s failed", row.name)
                summary, cursor = {"at": now.isoformat(), "error": f"{type(exc).__name__}: {exc}"}, row.cursor
            interval = dt.timedelta(seconds=int(settings.get("interval_seconds", 300)))
            await run_in_threadpool(self.db.run, domain_connectors.import_ran, row.id, cursor, summary, now + interval)


# Connections per HTTP client. httpcore's pool looks at every connection it holds (a poll() on each idle one)
# whenever a request starts or ends, so one pool of 32 connections cost about three times the CPU per
# request of pools of 4 (bench/outbox_worker.py); the worker spreads its concurrency over several small ones.
CONNECTIONS_PER_CLIENT = 4


def _clients(options: WorkerSettings, allow_private_networks: bool) -> list[tuple[httpx.AsyncClient, int]]:
    """Connectors' clients: each connection checked against internal addresses (portal.connectors.network)."""
    ssl_context = httpx.create_ssl_context()  # the clients' default, made once rather than per client
    widths = [min(CONNECTIONS_PER_CLIENT, options.concurrency - start)
              for start in range(0, max(1, options.concurrency), CONNECTIONS_PER_CLIENT)]
    return [(connector_client(allow_private_networks=allow_private_networks, timeout=options.timeout_seconds,
                              max_connections=width, ssl_context=ssl_context), width)
            for width in widths]


def _contexts(conn: sa.Connection, delivery_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Everything the claimed deliveries' connectors need, built from one query (outbox.delivery_contexts)."""
    contexts = {}
    for row in outbox.delivery_contexts(conn, delivery_ids):
        invoice = customer = None
        if row.external_id is not None:
            invoice = {"external_id": row.external_id, "number": row.number, "currency": row.currency,
                       "total": format_minor(row.total_minor, row.currency),
                       "amount_due": format_minor(row.amount_due_minor, row.currency),
                       "amount_paid": format_minor(row.paid_minor, row.currency),
                       "amount_remaining": format_minor(remaining_minor(row), row.currency), "status": row.status,
                       "customer": row.customer_external_id}
            customer = {"external_id": row.customer_external_id, "name": row.customer_name, "email": row.email,
                        "locale": row.locale}
        event = Event(id=row.event_id, type=row.event_type, organization_slug=row.slug,
                      created_at=as_utc(row.created_at), data=row.payload, invoice=invoice,
                      customer=customer, request_id=row.request_id)
        contexts[row.id] = {"event": event, "connector_id": row.connector_id, "connector_type": row.connector_type,
                            "connector_settings": row.connector_settings,
                            "connector_updated_at": row.connector_updated_at}
    return contexts
