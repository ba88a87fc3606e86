"""Two hosts and two workers on one PostgreSQL and one S3-compatible store, as a deployment behind a load
balancer runs them: two `portal serve` processes (one uvicorn worker each, on their own loopback ports), and
`portal worker` processes, all on one database of their own on the run's PostgreSQL server and one bucket of
the loopback `rclone serve s3`. What is checked is what a user of either host notices: a PDF uploaded through
one is downloaded through the other, a debtor session opened on one works (and ends) on the other, a client
address's failed link tokens count across both, and the workers together deliver every event once, even when
one of them is killed mid-batch."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from portal.db import Database
from portal.db.connectors import deliveries
from portal.db.invoices import invoices
from portal.db.migrate import upgrade
from portal.domain import organizations as orgs
from portal.domain.outbox import announce
from portal.domain.rate_limits import LINK_TOKEN_FAILURES
from tests.conftest import ENCRYPTION_KEY, invoice_body
from tests.support.documents import make_pdf
from tests.support.postgres import database_of_its_own
from tests.support.s3 import S3Server
from tests.support.upstream import Upstream, answer, serve
from tests.test_server import Server, start
from tests.test_worker import SECRET
from tests.test_worker_process import start_worker, wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

EVENTS = 500
BATCH = 20  # PORTAL_WORKER_BATCH of start_worker: what one worker holds at a time


class Deployment:
    """The shared database and store, and what every process of the deployment is started with."""

    def __init__(self, url: str, storage_url: str, s3: S3Server) -> None:
        self.url = url
        self.database = Database.from_url(url)
        self.environment = {"PORTAL_STORAGE_URL": storage_url, **s3.environment,
                            "PORTAL_ENCRYPTION_KEYS": ENCRYPTION_KEY, "PORTAL_SECRET_KEYS": "shared-host-key",
                            "PORTAL_CONNECTORS_ALLOW_PRIVATE_NETWORKS": "1"}
        self.hosts: list[Server] = []
        self.workers: list[subprocess.Popen[bytes]] = []

    def worker(self) -> subprocess.Popen[bytes]:
        process = start_worker(self.database, environment=self.environment)
        self.workers.append(process)
        return process

    def tenant(self, slug: str) -> tuple[int, dict[str, str]]:
        """A new organization and the API key header of it."""
        now = dt.datetime.now(dt.UTC)

        def setup(conn: sa.Connection) -> tuple[int, str]:
            org = orgs.create_organization(conn, slug, slug.title(), now)
            return org.id, orgs.create_api_key(conn, org, "tests", now)[1]

        org_id, key = self.database.run(setup)
        return org_id, {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def deployment(postgresql_url: str, s3_server: S3Server,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with database_of_its_own(postgresql_url, "hosts") as url:
        upgrade(url)
        shared = Deployment(url, f"{s3_server.bucket('h' + secrets.token_hex(6))}/documents", s3_server)
        try:
            key = None
            for name in ("a", "b"):  # the second host finds the organization and key the first one's setup made
                host = start(tmp_path_factory.mktemp(f"host-{name}"), workers=1, database_url=url, key=key,
                             environment=shared.environment)
                shared.hosts.append(host)
                key = host.key
            yield shared
        finally:
            for process in shared.workers:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=15)
            for host in shared.hosts:
                host.stop()
            shared.database.dispose()


def api(host: Server) -> httpx.Client:
    return httpx.Client(base_url=host.base_url, headers={"Authorization": f"Bearer {host.key}"}, timeout=30)


def test_a_pdf_uploaded_through_one_host_is_downloaded_through_the_other(deployment: Deployment) -> None:
    a, b = deployment.hosts
    pdf = make_pdf("Invoice 2026-0042 " + "x" * 300_000)  # larger than one read of a stream
    with api(a) as on_a, api(b) as on_b:
        assert on_a.put("/api/v1/customers/C1", json={"name": "Brasserie Dupont", "email": "compta@dupont.example",
                                                      "locale": "fr-BE"}).status_code in (200, 201)
        assert on_a.put("/api/v1/invoices/PDF-1", json=invoice_body(number="2026-0042")).status_code == 201
        stored = on_a.put("/api/v1/invoices/PDF-1/document", content=pdf, headers={"content-type": "application/pdf"})
        assert stored.status_code == 201, stored.text + a.log_text()[-3000:]
        downloaded = on_b.get("/api/v1/invoices/PDF-1/document")
        assert downloaded.status_code == 200, downloaded.text
        assert downloaded.content == pdf
        link = on_b.post("/api/v1/customers/C1/portal-links", json={})
        assert link.status_code == 201, link.text
    for host in (a, b):  # in the shared store, not on either host's disk
        assert not any(p.is_file() for p in (host.log.parent / "files").rglob("*")), "a PDF on a local disk"
    with deployment.database.transaction() as conn:
        invoice = conn.scalar(sa.select(invoices.c.id).where(invoices.c.external_id == "PDF-1"))
    token = link.json()["url"].rsplit("/", 1)[1]
    with httpx.Client(base_url=a.base_url, timeout=30) as debtor_on_a:
        assert debtor_on_a.get(f"/l/{token}").status_code == 303
        cookies = dict(debtor_on_a.cookies)
    with httpx.Client(base_url=b.base_url, cookies=cookies, timeout=30) as debtor_on_b:
        page = debtor_on_b.get(f"/portal/invoices/{invoice}/pdf")
        assert page.status_code == 200, page.text
        assert hashlib.sha256(page.content).digest() == hashlib.sha256(pdf).digest()


def test_a_debtor_session_opened_on_one_host_works_and_ends_on_the_other(deployment: Deployment) -> None:
    a, b = deployment.hosts
    with api(a) as on_a:
        assert on_a.put("/api/v1/customers/C2", json={"name": "Café Martin", "email": "compta@martin.example",
                                                      "locale": "fr-BE"}).status_code in (200, 201)
        assert on_a.put("/api/v1/invoices/SES-1", json=invoice_body(customer="C2", number="2026-0777")
                        ).status_code == 201
        url = on_a.post("/api/v1/customers/C2/portal-links", json={}).json()["url"]
    token = url.rsplit("/", 1)[1]
    with httpx.Client(base_url=a.base_url, timeout=30) as on_a, httpx.Client(base_url=b.base_url, timeout=30) as on_b:
        landing = on_a.get(f"/l/{token}")
        assert landing.status_code == 303 and landing.headers["location"] == "/portal"
        session = dict(on_a.cookies)
        on_b.cookies.update(session)  # the one browser, sent to the other host by the load balancer
        history = on_b.get("/portal")
        assert history.status_code == 200, history.text
        assert "2026-0777" in history.text and "Café Martin" in history.text
        assert on_a.get("/portal").status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', history.text)
        assert csrf, "no CSRF token on the page"
        assert on_b.post("/portal/sign-out", data={"csrf": csrf.group(1)}).status_code == 200
    for host in (a, b):  # the session itself is ended, not only the browser's cookie: replaying it fails on both
        with httpx.Client(base_url=host.base_url, cookies=session, timeout=30) as replay:
            assert replay.get("/portal").status_code == 401, "signed out on B is signed out everywhere"


def test_failed_link_tokens_count_across_both_hosts(deployment: Deployment) -> None:
    """The load balancer passes the client's address in X-Forwarded-For, which both hosts trust from loopback."""
    a, b = deployment.hosts
    client = {"X-Forwarded-For": "203.0.113.77"}
    answers = []
    for attempt in range(LINK_TOKEN_FAILURES.hits):
        host = (a, b)[attempt % 2]
        answers.append(httpx.get(f"{host.base_url}/l/forged-{attempt}", headers=client, timeout=30).status_code)
    assert answers == [404] * LINK_TOKEN_FAILURES.hits, "each host saw only half the limit: none refused yet"
    for host in (a, b):
        refused = httpx.get(f"{host.base_url}/l/forged-more", headers=client, timeout=30)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
    other = httpx.get(f"{b.base_url}/l/forged-other", headers={"X-Forwarded-For": "203.0.113.78"}, timeout=30)
    assert other.status_code == 404, "another client address is not refused"


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    received = Upstream(default=answer(200, b'{"ok":true}', delay=0.01))
    for url in serve(received):
        yield received, url


def announced(deployment: Deployment, upstream_url: str, slug: str) -> int:
    """A tenant with a webhook connector (set up through host A's API) and EVENTS announced events; its id."""
    org_id, headers = deployment.tenant(slug)
    with httpx.Client(base_url=deployment.hosts[0].base_url, headers=headers, timeout=60) as on_a:
        assert on_a.put("/api/v1/customers/C1", json={"name": "Brasserie Dupont", "email": "compta@dupont.example",
                                                      "locale": "fr-BE"}).status_code in (200, 201)
        items = [{"customer": "C1", "status": "open", "currency": "EUR", "total": "10.00", "external_id": f"E-{i}"}
                 for i in range(EVENTS)]
        assert on_a.post("/api/v1/invoices/batch", json={"invoices": items}).json()["created"] == EVENTS
        created = on_a.put("/api/v1/connectors/erp", json={"type": "webhook", "settings": {
            "url": upstream_url, "secret": SECRET, "events": ["invoice.paid"]}})
        assert created.status_code == 201, created.text
    with deployment.database.transaction() as conn:
        ids = dict(conn.execute(sa.select(invoices.c.external_id, invoices.c.id)
                                .where(invoices.c.organization_id == org_id)).all())
    now = dt.datetime.now(dt.UTC)
    deployment.database.run(lambda conn: [announce(conn, org_id, "invoice.paid", {"n": i}, now,
                                                   invoice_id=ids[f"E-{i}"]) for i in range(EVENTS)])
    return org_id


def statuses(deployment: Deployment, org_id: int) -> Counter[str]:
    with deployment.database.transaction() as conn:
        return Counter(dict(conn.execute(sa.select(deliveries.c.status, sa.func.count())
                                         .where(deliveries.c.organization_id == org_id)
                                         .group_by(deliveries.c.status)).all()))


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


def test_two_workers_send_each_of_500_deliveries_once(deployment: Deployment, upstream: Any) -> None:
    received, url = upstream
    org_id = announced(deployment, url, "deliveries")
    holders: set[str] = set()

    def all_received() -> bool:
        """Also notes which workers hold leases meanwhile (a delivered row keeps no owner)."""
        with deployment.database.transaction() as conn:
            holders.update(conn.scalars(sa.select(deliveries.c.lease_owner).distinct().where(
                deliveries.c.organization_id == org_id, deliveries.c.status == "in_flight")))
        return len(received.received) >= EVENTS

    workers = [deployment.worker(), deployment.worker()]
    try:
        wait_for(all_received, timeout=120)
        wait_for(lambda: statuses(deployment, org_id) == Counter({"delivered": EVENTS}), timeout=30)
    finally:
        codes = [stop(process) for process in workers]
    keys = Counter(received.keys())
    assert len(keys) == EVENTS and set(keys.values()) == {1}, "each delivery received exactly once"
    assert "" not in keys
    assert len(holders) == 2, "both workers took part"
    assert codes == [0, 0], "SIGTERM ends both workers cleanly"


def test_a_worker_killed_mid_batch_loses_nothing(deployment: Deployment, upstream: Any) -> None:
    received, url = upstream
    org_id = announced(deployment, url, "killed")
    doomed, survivor = deployment.worker(), deployment.worker()
    try:
        wait_for(lambda: len(received.received) >= EVENTS // 3, timeout=120)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        at_kill = len(received.received)
        assert at_kill < EVENTS, "killed in the middle"
        wait_for(lambda: len(set(received.keys())) == EVENTS, timeout=120)
        wait_for(lambda: statuses(deployment, org_id) == Counter({"delivered": EVENTS}), timeout=30)
    finally:
        code = stop(survivor)
    counts = Counter(received.keys())
    duplicates = {key: n for key, n in counts.items() if n > 1}
    assert len(counts) == EVENTS, "every event arrived"
    assert all(n == 2 for n in duplicates.values())
    assert len(duplicates) <= BATCH, "only deliveries the killed worker held (one claimed batch) came twice"
    assert statuses(deployment, org_id)["in_flight"] == 0
    assert code == 0, "the survivor finished the killed worker's deliveries and stopped cleanly"
