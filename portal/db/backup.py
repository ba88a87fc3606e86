"""`portal db backup PATH`: a consistent copy of a live SQLite database, through SQLite's online backup API.

The copy is taken in one step of the backup API, which reads one consistent snapshot: in WAL mode the server's
writers go on meanwhile and their later commits are simply not in the copy. It is written to a temporary file
beside PATH, checked (`PRAGMA integrity_check`), and only then renamed to PATH, so an interrupted backup leaves
nothing at PATH. PostgreSQL has its own tools (pg_dump, base backups): docs/operations.md gives the commands.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url


class BackupError(Exception):
    """The backup cannot be taken; the message says why and what to do instead."""


def sqlite_path(database_url: str) -> Path:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise BackupError(f"`portal db backup` copies SQLite databases; for {url.get_backend_name()} use "
                          "pg_dump (docs/operations.md, Backups)")
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory database has nothing to back up")
    path = Path(url.database)
    if not path.is_file():
        raise BackupError(f"no database at {path}")
    return path


def backup_sqlite(database_url: str, target: Path) -> int:
    """Copy the database to `target`, which must not exist; the copy's size in bytes."""
    source_path = sqlite_path(database_url)
    if target.exists():
        raise BackupError(f"{target} exists already: choose a new path (a backup never overwrites)")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    try:
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        copy = sqlite3.connect(temporary)
        try:
            source.backup(copy)  # pages=-1: the whole database in one step, one consistent snapshot
            (verdict,) = copy.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                raise BackupError(f"the copy failed its integrity check: {verdict}")
            # A self-contained file: no -wal beside it to forget when it is moved.
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
            source.close()
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        if target.exists():  # appeared meanwhile: still never overwrite
            raise BackupError(f"{target} exists already: choose a new path (a backup never overwrites)")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target.stat().st_size
