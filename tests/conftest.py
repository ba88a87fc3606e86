"""Fixtures shared by the suite. Every database test runs twice: on SQLite and on PostgreSQL.

The `backend` parameter, the `--db` option and the run's PostgreSQL (`postgresql_url`) are in the conftest.py at
the top of the repository, which e2e/ shares.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from portal.app import create_app
from portal.clock import FrozenClock
from portal.db import Database, metadata
from portal.db.migrate import upgrade
from portal.domain import organizations as orgs
from portal.settings import Settings
from tests.support.s3 import S3Server
from tests.support.s3 import s3_server as serve_s3

# The Fernet key that encrypts stored provider and connector secrets in tests (PORTAL_ENCRYPTION_KEYS).
ENCRYPTION_KEY = "q0AnUOhwsJRxY3gMw0rWjSUm1H1sEXwx0h2oc0jBrUw="
START = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def _databases() -> Iterator[dict[str, Database]]:
    """One migrated database per backend for the whole run, opened on first use (by `database`)."""
    opened: dict[str, Database] = {}
    yield opened
    for database in opened.values():
        database.dispose()


@pytest.fixture
def database(backend: str, _databases: dict[str, Database], request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A clean database: every table emptied before the test."""
    if backend not in _databases:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
        else:
            url = request.getfixturevalue("postgresql_url")
        upgrade(url)
        _databases[backend] = Database.from_url(url)
    db = _databases[backend]
    with db.transaction() as conn:
        tables = [t.name for t in reversed(metadata.sorted_tables)]
        if db.is_postgresql:
            conn.exec_driver_sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        else:
            for table in tables:
                conn.exec_driver_sql(f"DELETE FROM {table}")
    yield db


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url="unused://", storage_dir=tmp_path / "documents", base_url="http://testserver",
                    encryption_keys=(ENCRYPTION_KEY,))


@pytest.fixture
def app(settings: Settings, database: Database, clock: FrozenClock) -> Any:
    return create_app(settings, clock=clock, database=database)


@pytest.fixture
def clients() -> Iterator[ExitStack]:
    """The test clients a test opens here run the app as `portal serve` does: its lifespan started, every
    request served on the one event loop, and the lifespan ended after the test."""
    with ExitStack() as stack:
        yield stack


class Tenant:
    """An organization with an API key, and an HTTP client that uses it."""

    def __init__(self, app: Any, database: Database, slug: str, now: dt.datetime, clients: ExitStack) -> None:
        def setup(conn: sa.Connection) -> tuple[orgs.Organization, str]:
            org = orgs.create_organization(conn, slug, slug.title(), now)
            return org, orgs.create_api_key(conn, org, "tests", now)[1]

        self.org, self.key = database.run(setup)
        self.client = clients.enter_context(TestClient(app, headers={"Authorization": f"Bearer {self.key}"},
                                                       raise_server_exceptions=False))

    def put_customer(self, external_id: str = "C1", **fields: Any) -> Any:
        body = {"name": "Brasserie Dupont", "email": "compta@dupont.example", "locale": "fr-BE", **fields}
        response = self.client.put(f"/api/v1/customers/{external_id}", json=body)
        assert response.status_code in (200, 201), response.text
        return response

    def put_invoice(self, external_id: str = "INV-1", **fields: Any) -> Any:
        return self.client.put(f"/api/v1/invoices/{external_id}", json=invoice_body(**fields))


def invoice_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer": "C1", "number": "2026-0001", "status": "open", "issue_date": "2026-11-01",
        "due_date": "2026-12-01", "currency": "EUR", "total": "121.00",
        "lines": [{"description": "Consulting", "quantity": "2", "unit_price": "50.00", "vat_rate": "21",
                   "total": "100.00"}],
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.fixture
def tenant(app: Any, database: Database, clock: FrozenClock, clients: ExitStack) -> Tenant:
    t = Tenant(app, database, "acme", clock.now(), clients)
    t.put_customer()
    return t


@pytest.fixture
def other_tenant(app: Any, database: Database, clock: FrozenClock, clients: ExitStack) -> Tenant:
    return Tenant(app, database, "globex", clock.now(), clients)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One real S3-compatible server on loopback for the run (tests/support/s3.py)."""
    with serve_s3(tmp_path_factory.mktemp("s3") / "buckets") as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the loopback S3 server, and the standard AWS_* variables pointing boto3 at it; its
    s3:// URL with a prefix, as an operator would write PORTAL_STORAGE_URL."""
    for name, value in s3_server.environment.items():
        monkeypatch.setenv(name, value)
    bucket = "b" + secrets.token_hex(6)
    return f"{s3_server.bucket(bucket)}/documents"
