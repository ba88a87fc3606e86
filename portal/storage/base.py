"""What every document store shares: the value it returns, the shape of a key, hashing a staged file."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

SHA256 = re.compile(r"[0-9a-f]{64}")
CHUNK = 64 * 1024


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int


class StorageError(Exception):
    """The store cannot be reached or refused an operation (a bucket that does not exist, bad credentials)."""


def check_sha256(sha256: str) -> None:
    """Keys are only ever SHA-256 digests of the bytes: no name from input becomes a path or a key."""
    if not SHA256.fullmatch(sha256):
        raise ValueError("not a SHA-256 hex digest")


def hash_file(path: Path, *, fsync: bool = False) -> StoredFile:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
        if fsync:
            os.fsync(file.fileno())
    return StoredFile(digest.hexdigest(), size)


class DocumentStore(Protocol):
    """Content-addressed storage of PDFs and logos. Bytes are staged in a local temporary file first (uploads
    are screened there), then `store_file` files them under their SHA-256; storing the same bytes twice is
    harmless, and a key's content never changes, so a resend that points an invoice at new bytes replaces it
    atomically in the invoice's own transaction."""

    # The directory uploads are spooled into before `store_file` (portal/web/api/bodies.py spool_to_file).
    incoming: Path

    def temporary_file(self) -> tuple[BinaryIO, Path]: ...

    def store_file(self, source: Path) -> StoredFile: ...

    def exists(self, sha256: str) -> bool: ...

    def iter_bytes(self, sha256: str) -> Iterator[bytes]: ...

    def keys(self) -> Iterator[str]: ...

    def check_writable(self) -> None: ...


def read_bytes(store: DocumentStore, sha256: str) -> bytes:
    """A small document whole (a logo, a mail attachment): callers bound its size by what they accepted."""
    return b"".join(store.iter_bytes(sha256))
