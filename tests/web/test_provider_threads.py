"""A slow payment provider must not starve pages, downloads or imports: provider SDK calls run in threads of
their own, at most PROVIDER_THREADS at a time (portal/providers/calls.py), not in the thread pool that PDF
downloads and bulk writes share. The real Mollie SDK talks to a loopback server that holds every request
until the test lets it go."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from portal.app import create_app
from portal.providers.calls import PROVIDER_THREADS
from tests.conftest import Tenant, invoice_body
from tests.support.documents import make_pdf
from tests.support.providers import MOLLIE_KEY
from tests.web.test_portal import Debtor, invoice_id, link_for

# More calls than Starlette's shared thread pool has threads (40): without threads of their own, the provider
# calls alone would hold every one of them.
WEBHOOKS = 45
HOLD_SECONDS = 4.0  # below the Mollie adapter's 5 s read timeout


class StalledProvider:
    """A loopback HTTP server that answers every request with Mollie's 404, but only once released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.arrived = self.waiting = self.most_waiting = 0
        stalled = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                with stalled.lock:
                    stalled.arrived += 1
                    stalled.waiting += 1
                    stalled.most_waiting = max(stalled.most_waiting, stalled.waiting)
                stalled.release.wait(HOLD_SECONDS)
                with stalled.lock:
                    stalled.waiting -= 1
                body = json.dumps({"status": 404, "title": "Not Found",
                                   "detail": "No payment exists with token tr_x."}).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/hal+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StalledProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.arrived < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.arrived >= count, f"{self.arrived} of {count} provider calls arrived"


@pytest.fixture
def stalled() -> Iterator[StalledProvider]:
    with StalledProvider() as provider:
        yield provider


@pytest.fixture
def app(settings: Any, database: Any, clock: Any, stalled: StalledProvider) -> Any:
    slow = replace(settings, mollie_api_key=MOLLIE_KEY, mollie_api_url=stalled.url)
    return create_app(slow, clock=clock, database=database)


def test_pages_downloads_and_imports_go_on_while_the_provider_stalls(app: Any, tenant: Tenant, database: Any,
                                                                      stalled: StalledProvider) -> None:
    pdf = make_pdf("Invoice 1")
    assert tenant.put_invoice("A", number="F-A").status_code == 201
    assert tenant.client.put("/api/v1/invoices/A/document", content=pdf,
                             headers={"content-type": "application/pdf"}).status_code == 201
    debtor = Debtor(app)
    # One client for everything: one event loop (and the app's lifespan), as one server process has.
    with debtor.client as client:
        debtor.open(link_for(tenant))
        pool = ThreadPoolExecutor(WEBHOOKS)
        hooks = [pool.submit(client.post, "/webhooks/mollie/acme", data={"id": f"tr_slow{n}"})
                 for n in range(WEBHOOKS)]
        try:
            stalled.wait_for(PROVIDER_THREADS)
            time.sleep(0.3)  # the other webhooks are queued by now
            assert stalled.most_waiting == PROVIDER_THREADS, "provider calls are bounded"

            timings = {}
            started = time.monotonic()
            page = client.get("/portal")
            timings["page"] = time.monotonic() - started
            started = time.monotonic()
            download = client.get(f"/portal/invoices/{invoice_id(database, 'A')}/pdf")
            timings["pdf"] = time.monotonic() - started
            started = time.monotonic()
            batch = client.post("/api/v1/invoices/batch", headers={"Authorization": f"Bearer {tenant.key}"},
                                json={"invoices": [invoice_body(external_id=f"B{n}", number=f"F-B{n}")
                                                   for n in range(3)]})
            timings["import"] = time.monotonic() - started
            stalled_still = stalled.waiting
        finally:
            stalled.release.set()
            answers = [hook.result(timeout=30) for hook in hooks]
            pool.shutdown()
    assert page.status_code == 200 and "F-A" in page.text
    assert download.status_code == 200 and download.content == pdf
    assert batch.status_code == 200, batch.text
    assert stalled_still == PROVIDER_THREADS, "the provider was still holding its calls meanwhile"
    assert max(timings.values()) < 1.5, timings
    assert [a.status_code for a in answers] == [200] * WEBHOOKS  # unknown to Mollie: acknowledged
    assert stalled.arrived == WEBHOOKS and stalled.most_waiting == PROVIDER_THREADS
