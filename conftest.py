"""What tests/ and e2e/ share: the choice of database backends, and the one PostgreSQL server of a run.

Every test that uses the `backend` fixture (the database tests, and the browser tests through their server) runs
on SQLite and on PostgreSQL; `--db sqlite` or `--db postgresql` runs one backend only. PostgreSQL is a throwaway
cluster started on first use and stopped at the end of the run (tests/support/postgres.py), or the server named
by PORTAL_TEST_DATABASE_URL. The backend is a session-scoped parameter, so pytest runs all the tests of one
backend before those of the other, and whatever is built per backend (a migrated database, a server) is built once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.postgres import throwaway_cluster

BACKENDS = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--db", choices=[*BACKENDS, "both"], default="both", help="database backends to test")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--db")
        backends = BACKENDS if chosen == "both" else (chosen,)
        for only in ("postgresql", "sqlite"):
            if metafunc.definition.get_closest_marker(f"{only}_only"):
                backends = tuple(b for b in backends if b == only)
        metafunc.parametrize("backend", backends, scope="session")


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """The run's PostgreSQL database: PORTAL_TEST_DATABASE_URL, or a throwaway cluster's. Requested only by
    tests on PostgreSQL, so a `--db sqlite` run starts no cluster. Other databases (a browser test server's)
    are created next to it on the same server."""
    configured = os.environ.get("PORTAL_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    with throwaway_cluster() as url:
        yield url


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests after every other test, each backend's still together (a stable sort after pytest's
    own grouping by backend): Playwright's sync API keeps an event loop running in the main thread while its
    browser is open, and the tests that run their own `asyncio.run` must not come after it has started."""
    items.sort(key=lambda item: item.nodeid.startswith("e2e/"))
