"""GET /metrics: guarded by PORTAL_METRICS_TOKEN, bounded labels, install-wide state from the database, and the
counters of several server processes added up (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from portal.app import create_app
from portal.clock import FrozenClock
from portal.db import Database
from portal.domain import connectors as config
from portal.domain.operations_state import worker_succeeded
from portal.domain.outbox import announce
from portal.settings import Settings
from portal.encryption import SecretBox
from tests.conftest import ENCRYPTION_KEY, Tenant

TOKEN = "metrics-token-for-tests"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url="unused://", storage_dir=tmp_path / "documents", base_url="http://testserver",
                    metrics_token=TOKEN)


def scrape(app: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = TestClient(app).get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def test_no_token_configured_means_no_endpoint(tmp_path: Path, database: Database, clock: FrozenClock) -> None:
    app = create_app(Settings(database_url="unused://", storage_dir=tmp_path), clock=clock, database=database)
    assert TestClient(app).get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 404


def test_a_wrong_or_missing_token_is_refused(app: Any) -> None:
    client = TestClient(app)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


def test_requests_are_counted_by_route_template(tenant: Tenant, app: Any) -> None:
    tenant.put_invoice("INV-77")
    assert tenant.client.get("/api/v1/invoices/INV-77").status_code == 200
    assert tenant.client.get("/api/v1/invoices/NOPE").status_code == 404
    TestClient(app).get("/no/such/page")

    samples = scrape(app)
    route = "/api/v1/invoices/{external_id}"
    assert samples[("quittance_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] >= 1
    assert samples[("quittance_http_requests_total", (("method", "GET"), ("route", route), ("status", "404")))] >= 1
    assert samples[("quittance_http_request_duration_seconds_count", (("method", "GET"), ("route", route)))] >= 2
    assert any(labels == (("method", "GET"), ("route", "unmatched"), ("status", "404"))
               for name, labels in samples if name == "quittance_http_requests_total")
    assert not any("INV-77" in value or "NOPE" in value for _, labels in samples for _, value in labels)


def test_the_outbox_backlog_and_the_workers_heartbeat_come_from_the_database(
        tenant: Tenant, app: Any, database: Database, clock: FrozenClock) -> None:
    empty = scrape(app)
    assert empty[("quittance_outbox_deliveries", (("status", "pending"),))] == 0
    assert empty[("quittance_outbox_oldest_pending_age_seconds", ())] == 0
    assert empty[("quittance_worker_last_success_timestamp_seconds", ())] == 0

    database.run(config.put, tenant.org.id, "erp", "webhook", {"url": "https://erp.example/hook", "secret": "s" * 24},
                 ["invoice.paid"], clock.now(), SecretBox((ENCRYPTION_KEY,)))
    database.run(announce, tenant.org.id, "invoice.paid", {"invoice": "X"}, clock.now())
    database.run(worker_succeeded, "host-1:42", clock.now() - dt.timedelta(seconds=30))
    clock.advance(minutes=5)

    samples = scrape(app)
    assert samples[("quittance_outbox_deliveries", (("status", "pending"),))] == 1
    assert samples[("quittance_outbox_oldest_pending_age_seconds", ())] == 300
    assert samples[("quittance_worker_last_success_timestamp_seconds", ())] == (
        clock.now() - dt.timedelta(minutes=5, seconds=30)).timestamp()


COUNT_IN_A_PROCESS = """
import sys
from portal import metrics
for _ in range(int(sys.argv[1])):
    metrics.webhooks.labels("stripe", "applied").inc()
"""

EXPOSE = """
import datetime as dt
from portal import metrics
from portal.domain.operations_state import OutboxState
now = dt.datetime.now(dt.UTC)
print(metrics.exposition(OutboxState({"pending": 0}, None, None), now).decode())
"""


def test_several_processes_counts_are_added_up(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for count in ("3", "4"):
        subprocess.run([sys.executable, "-c", COUNT_IN_A_PROCESS, count], env=env, check=True)
    text = subprocess.run([sys.executable, "-c", EXPOSE], env=env, check=True, capture_output=True,
                          text=True).stdout
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("quittance_webhooks_total", (("outcome", "applied"), ("provider", "stripe")))] == 7
