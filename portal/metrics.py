"""Prometheus metrics (prometheus-client), for `GET /metrics` and `portal worker --metrics-port`.

Counters and histograms live in the process that counts them. With several server processes, prometheus-client's
multiprocess mode adds them up: `portal serve` points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before the
processes start (each writes its own file there) and tells the library when one exits. What describes the whole
install rather than one process (the outbox's backlog, the workers' last successful loop) is read from the
database at each scrape, so every process and host reports the same values.

Labels are bounded: a route is its template, never a path; a status is a number; no organization, customer or
invoice ever becomes a label.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from portal.domain.operations_state import OutboxState

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

requests = Counter("quittance_http_requests_total", "HTTP requests answered, by route template, method and status",
                   ["route", "method", "status"])
request_seconds = Histogram("quittance_http_request_duration_seconds", "Time to answer an HTTP request",
                            ["route", "method"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
webhooks = Counter("quittance_webhooks_total", "Provider webhooks received, by provider and outcome",
                   ["provider", "outcome"])
payments = Counter("quittance_payments_total",
                   "Provider payments and bank credits recorded: applied to invoices, or sent to a person's review",
                   ["result"])
rate_limited = Counter("quittance_rate_limit_refusals_total", "Requests refused by a rate limit, by limit",
                       ["limit"])
deliveries = Counter("quittance_worker_deliveries_total", "Outbox deliveries attempted by this worker, by result",
                     ["result"])


def count_payment(outcome: Any) -> str:
    """Count what applying a provider's report did (a payments.Outcome); the webhook outcome it makes."""
    if outcome.review_reason:
        payments.labels("review").inc()
        return "review"
    if outcome.recorded_payment:
        payments.labels("applied").inc()
        return "applied"
    return "no_change"


class OutboxCollector(Collector):
    """The install-wide state read from the database for one scrape."""

    def __init__(self, state: OutboxState, now: dt.datetime) -> None:
        self.state = state
        self.now = now

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily("quittance_outbox_deliveries", "Outbox deliveries by status", labels=["status"])
        for status, count in self.state.by_status.items():
            backlog.add_metric([status], count)
        yield backlog
        oldest = self.state.oldest_pending_at
        yield GaugeMetricFamily("quittance_outbox_oldest_pending_age_seconds",
                                "Age of the oldest delivery not yet made (0 when none waits)",
                                value=(self.now - oldest).total_seconds() if oldest else 0.0)
        beat = self.state.worker_last_success_at
        yield GaugeMetricFamily("quittance_worker_last_success_timestamp_seconds",
                                "When a worker last finished a loop without an error (Unix time; 0: never)",
                                value=beat.timestamp() if beat else 0.0)


class ThisProcess(Collector):
    """The default registry's metrics (this process's counters, and its CPU and memory) for one scrape."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(state: OutboxState, now: dt.datetime) -> bytes:
    """The text format: the counters of every server process (or of this one), plus the database's state."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROCESS_DIR):
        MultiProcessCollector(registry)
    else:
        registry.register(ThisProcess())
    registry.register(OutboxCollector(state, now))
    return generate_latest(registry)


class DatabaseState(Collector):
    """For the worker's own endpoint: the install-wide state, read from the database at each scrape (in the
    HTTP server's thread, through the worker's engine)."""

    def __init__(self, database: Any) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        from portal.domain.operations_state import outbox_state

        now = dt.datetime.now(dt.UTC)
        yield from OutboxCollector(self.database.run(outbox_state, write=False), now).collect()


def serve_worker_metrics(database: Any, host: str, port: int) -> None:
    """`portal worker --metrics-port`: the worker's counters and the database's state over HTTP, from a thread
    of prometheus-client's own. Bound to loopback by default: it has no token, unlike the server's /metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ThisProcess())
    registry.register(DatabaseState(database))
    start_http_server(port, addr=host, registry=registry)
