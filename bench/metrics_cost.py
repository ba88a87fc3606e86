"""What the request metrics cost: CPU per request of the same app with and without its `RequestMetrics`
middleware, in the same run, rounds alternated so that the machine's load falls on both alike.

    .venv/bin/python bench/metrics_cost.py [--requests 5000] [--rounds 5]

The app is called in this process through httpx's ASGI transport (no sockets), so the figures are the
server-side CPU of each request: /healthz (the smallest answer: there the middleware's share is largest) and
an API read (`GET /api/v1/invoices/{id}` on SQLite), as a billing system makes them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from portal.app import create_app  # noqa: E402
from portal.db import Database  # noqa: E402
from portal.db.migrate import upgrade  # noqa: E402
from portal.domain import organizations as orgs  # noqa: E402
from portal.settings import Settings  # noqa: E402
from portal.web.metrics import RequestMetrics  # noqa: E402


def build(settings: Settings, database: Database, with_metrics: bool):  # type: ignore[no-untyped-def]
    app = create_app(settings, database=database)
    if not with_metrics:
        # Starlette builds its middleware stack from this public list on the first request.
        app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestMetrics]
    return app


async def cpu_per_request(app, path: str, key: str, count: int) -> float:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        for _ in range(50):  # warm up
            await client.get(path)
        started = time.process_time()
        for _ in range(count):
            response = await client.get(path)
            assert response.status_code == 200, response.text
        return (time.process_time() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="quittance-bench-metrics-") as work:
        url = f"sqlite:///{work}/bench.db"
        upgrade(url)
        database = Database.from_url(url)
        key = database.run(lambda conn: orgs.create_api_key(
            conn, orgs.create_organization(conn, "bench", "Bench", dt.datetime.now(dt.UTC)), "bench", dt.datetime.now(dt.UTC))[1])
        settings = Settings(database_url=url, storage_dir=Path(work) / "documents", base_url="http://bench")
        seed = build(settings, database, True)
        body = {"name": "Bench", "locale": "en"}
        asyncio.run(_put(seed, key, "/api/v1/customers/C1", body))
        asyncio.run(_put(seed, key, "/api/v1/invoices/INV-1", {
            "customer": "C1", "number": "B-1", "status": "open", "issue_date": "2026-11-01",
            "due_date": "2026-12-01", "currency": "EUR", "total": "121.00",
            "lines": [{"description": "x", "quantity": "1", "unit_price": "100.00", "vat_rate": "21",
                       "total": "100.00"}]}))
        figures: dict[tuple[str, bool], list[float]] = {}
        for _ in range(args.rounds):
            for path in ("/healthz", "/api/v1/invoices/INV-1"):
                for with_metrics in (True, False):
                    app = build(settings, database, with_metrics)
                    seconds = asyncio.run(cpu_per_request(app, path, key, args.requests))
                    figures.setdefault((path, with_metrics), []).append(seconds)
        database.dispose()
    print(f"{args.requests} requests x {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    for path in ("/healthz", "/api/v1/invoices/INV-1"):
        on = statistics.median(figures[(path, True)]) * 1e6
        off = statistics.median(figures[(path, False)]) * 1e6
        print(f"{path:28} CPU/request with metrics {on:7.1f} us, without {off:7.1f} us: "
              f"+{on - off:5.1f} us ({(on - off) / off:+.1%})")


async def _put(app, key: str, path: str, body: dict) -> None:  # type: ignore[no-untyped-def,type-arg]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        response = await client.put(path, json=body)
        assert response.status_code in (200, 201), response.text


if __name__ == "__main__":
    main()
