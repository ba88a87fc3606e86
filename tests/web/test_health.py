"""/healthz and /readyz as a load balancer reads them: no key, nothing revealed but which check failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from portal.app import create_app
from portal.clock import FrozenClock
from portal.db import Database
from portal.db.migrate import upgrade
from portal.settings import Settings


def test_healthz_answers_without_a_key(app: Any) -> None:
    response = TestClient(app).get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_readyz_is_ready_on_a_migrated_database_with_writable_storage(app: Any) -> None:
    response = TestClient(app).get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready"}


def test_readyz_names_an_unmigrated_database(tmp_path: Path, clock: FrozenClock) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0004")
    database = Database.from_url(url)
    try:
        app = create_app(Settings(database_url=url, storage_dir=tmp_path / "docs"), clock=clock, database=database)
        response = TestClient(app).get("/readyz")
    finally:
        database.dispose()
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failed": ["database"]}


def test_readyz_names_storage_that_refuses_a_write(tmp_path: Path, database: Database, clock: FrozenClock) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's directory should be")
    settings = Settings(database_url="unused://", storage_dir=blocker / "documents")
    response = TestClient(create_app(settings, clock=clock, database=database)).get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failed": ["storage"]}


def test_readyz_with_s3_storage(database: Database, clock: FrozenClock, s3_bucket: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    ready = create_app(Settings(database_url="unused://", storage_url=s3_bucket), clock=clock, database=database)
    assert TestClient(ready).get("/readyz").status_code == 200

    missing = create_app(Settings(database_url="unused://", storage_url="s3://no-such-bucket/x"), clock=clock,
                         database=database)
    response = TestClient(missing).get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["storage"]
