"""PDF storage: a local content-addressed directory.

A file is written to a temporary name in the same directory, flushed to disk, then renamed into place under
its SHA-256; a rename is atomic, so a crash leaves the old or the new file, never half of one. The invoice
row points at the hash, and that pointer is swapped in the invoice's own transaction. Names never come from
the request: only from the hash of the bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_SHA256 = re.compile(r"[0-9a-f]{64}")
CHUNK = 64 * 1024


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int


class DocumentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"

    def path_of(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256

    def temporary_file(self) -> tuple[BinaryIO, Path]:
        """An open file in the incoming directory (same file system as the store, so rename is atomic)."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=self.incoming, prefix="doc-", suffix=".part")
        return os.fdopen(handle, "wb"), Path(name)

    def store_file(self, source: Path) -> StoredFile:
        """Move a finished temporary file into the store under its hash. The source is consumed."""
        digest = hashlib.sha256()
        size = 0
        with source.open("rb") as file:
            while chunk := file.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
            os.fsync(file.fileno())
        sha256 = digest.hexdigest()
        target = self.path_of(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            source.unlink()
        else:
            os.replace(source, target)
            # The rename itself must reach the disk before the database points at the file.
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return StoredFile(sha256, size)

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def iter_bytes(self, sha256: str) -> Iterator[bytes]:
        """The file in chunks, so a response never holds it whole in memory."""
        with self.path_of(sha256).open("rb") as file:
            while chunk := file.read(CHUNK):
                yield chunk
