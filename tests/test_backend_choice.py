"""`--db` chooses the backends of the whole suite: the database tests in tests/ and the browser tests in e2e/."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def collected(*args: str) -> list[str]:
    """The ids pytest would run, without running them (and without starting a server or a cluster)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if "::" in line]


# The backend is one of the test's parameters: between "[" or "-" and "-" or "]".
BACKEND = re.compile(r"(?<=[\[-])(sqlite|postgresql)(?=[\]-])")


def backend_of(test_id: str) -> str:
    found = BACKEND.search(test_id)
    assert found, f"{test_id} runs on no database backend"
    return found.group(1)


def test_every_browser_test_runs_once_on_each_backend() -> None:
    ids = collected("e2e")
    assert ids
    runs = Counter(BACKEND.sub("", test_id) for test_id in ids)
    assert set(runs.values()) == {2}
    assert Counter(backend_of(test_id) for test_id in ids) == {"sqlite": len(runs), "postgresql": len(runs)}
    # All the tests of one backend run before those of the other, so each backend's server starts once.
    order = [backend_of(test_id) for test_id in ids]
    assert order == sorted(order, key=order.index)


@pytest.mark.parametrize("backend_chosen", ["sqlite", "postgresql"])
def test_db_option_chooses_the_backend_of_tests_and_e2e(backend_chosen: str) -> None:
    ids = collected("e2e", "tests/test_migrations.py", "--db", backend_chosen)
    for folder in ("e2e/", "tests/"):
        mine = [test_id for test_id in ids if test_id.startswith(folder)]
        assert mine and {backend_of(test_id) for test_id in mine} == {backend_chosen}


def test_the_browser_tests_run_after_every_other_test() -> None:
    ids = collected("e2e", "tests/test_migrations.py")
    first_browser = next(index for index, test_id in enumerate(ids) if test_id.startswith("e2e/"))
    assert all(test_id.startswith("e2e/") for test_id in ids[first_browser:])
    assert any(test_id.startswith("tests/") for test_id in ids[:first_browser])
