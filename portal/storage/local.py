"""Documents in a local content-addressed directory: the embedded default.

A file is written to a temporary name in the store's `incoming/` directory, flushed to disk, then renamed into
place under its SHA-256; a rename is atomic, so a crash leaves the old or the new file, never half of one. The
invoice row points at the hash, and that pointer is swapped in the invoice's own transaction. Names never come
from the request: only from the hash of the bytes.

The directory belongs to one machine. A platform whose disk is wiped at every restart (Heroku, Scalingo) or
several hosts need the S3 backend (`portal.storage.s3`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from portal.storage.base import CHUNK, StoredFile, check_sha256, hash_file


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path_of(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256

    def temporary_file(self) -> tuple[BinaryIO, Path]:
        """An open file in the incoming directory (same file system as the store, so rename is atomic)."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=self.incoming, prefix="doc-", suffix=".part")
        return os.fdopen(handle, "wb"), Path(name)

    def store_file(self, source: Path) -> StoredFile:
        """Move a finished temporary file into the store under its hash. The source is consumed."""
        stored = hash_file(source, fsync=True)
        target = self._path_of(stored.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            source.unlink()
            return stored
        if source.parent != self.incoming:
            # From elsewhere (another store's download, `portal documents migrate`): copied into incoming/
            # first, so that the rename below stays on one file system.
            file, staged = self.temporary_file()
            with file, source.open("rb") as original:
                while chunk := original.read(CHUNK):
                    file.write(chunk)
                file.flush()
                os.fsync(file.fileno())
            source.unlink()
            source = staged
        os.replace(source, target)
        # The rename itself must reach the disk before the database points at the file.
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return stored

    def exists(self, sha256: str) -> bool:
        return self._path_of(sha256).is_file()

    def iter_bytes(self, sha256: str) -> Iterator[bytes]:
        """The file in chunks, so a response never holds it whole in memory."""
        with self._path_of(sha256).open("rb") as file:
            while chunk := file.read(CHUNK):
                yield chunk

    def keys(self) -> Iterator[str]:
        """Every stored document's SHA-256 (`portal documents migrate`)."""
        if not self.root.is_dir():
            return
        for prefix in sorted(self.root.iterdir()):
            if prefix.is_dir() and prefix.name != "incoming":
                for path in sorted(prefix.iterdir()):
                    if path.is_file() and path.name.startswith(prefix.name):
                        yield path.name

    def check_writable(self) -> None:
        """Raise OSError unless a file can be written and removed (readiness)."""
        file, path = self.temporary_file()
        try:
            with file:
                file.write(b"ready")
        finally:
            path.unlink(missing_ok=True)
