"""What `synchronous=FULL` costs a SQLite commit on this disk, against the app's usual `synchronous=NORMAL`.

Single-row write transactions as the app runs them (WAL, the app's pragmas, BEGIN IMMEDIATE ... COMMIT), one after
another on one connection, in a scratch database next to the repository's `var/` (the same disk as a default
install's). With NORMAL a commit in WAL mode is written but not flushed; with FULL each commit waits for fsync,
which is what makes a webhook answered 200 survive an OS crash. See README.md.

    .venv/bin/python bench/sqlite_sync_cost.py [--commits 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portal.db import SQLITE_PRAGMAS  # noqa: E402


def microseconds_per_commit(directory: Path, level: str, commits: int) -> float:
    conn = sqlite3.connect(directory / f"{level.lower()}.db", isolation_level=None)
    try:
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)
        conn.execute(f"PRAGMA synchronous={level}")
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, event_id TEXT UNIQUE, received_at TEXT)")
        began = time.perf_counter()
        for n in range(commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO events (event_id, received_at) VALUES (?, ?)", (f"evt_{n}", "2026-12-08"))
            conn.execute("COMMIT")
        return (time.perf_counter() - began) / commits * 1e6
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    var = Path(__file__).resolve().parent.parent / "var"
    var.mkdir(exist_ok=True)
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(dir=var) as scratch:
            normal = microseconds_per_commit(Path(scratch), "NORMAL", args.commits)
            full = microseconds_per_commit(Path(scratch), "FULL", args.commits)
        print(f"round {round_}: {args.commits} commits, NORMAL {normal:,.0f} us, FULL {full:,.0f} us a commit "
              f"(+{full - normal:,.0f} us)")


if __name__ == "__main__":
    main()
