"""`portal documents migrate --to URL`: copy every stored document to another store, each verified by its hash.

Documents are content-addressed, so a copy is correct exactly when the target's bytes hash to the key, and
copying again is harmless: a document already in the target (and verified) is left as it is. The database does
not change: it refers to documents by hash, whatever store holds them, so switching PORTAL_STORAGE_URL after a
migration is the whole move.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from portal.storage.base import DocumentStore


@dataclass
class MigrationSummary:
    copied: int = 0
    already_there: int = 0
    # Keys whose bytes in the target do not hash to the key: left for a person (never overwritten blindly).
    mismatched: list[str] = field(default_factory=list)


def _hash_of(store: DocumentStore, sha256: str) -> str:
    digest = hashlib.sha256()
    for chunk in store.iter_bytes(sha256):
        digest.update(chunk)
    return digest.hexdigest()


def migrate_documents(source: DocumentStore, target: DocumentStore,
                      progress: Callable[[str, str], None] = lambda _key, _what: None) -> MigrationSummary:
    """Copy what `target` lacks, streaming each document through a local temporary file; verify each copy
    (and each document already there) by reading it back and hashing it."""
    summary = MigrationSummary()
    for sha256 in source.keys():
        if target.exists(sha256):
            outcome = "already there"
        else:
            file, path = target.temporary_file()
            with file:
                for chunk in source.iter_bytes(sha256):
                    file.write(chunk)
            target.store_file(path)
            outcome = "copied"
        if _hash_of(target, sha256) != sha256:
            summary.mismatched.append(sha256)
            progress(sha256, "MISMATCH")
            continue
        if outcome == "copied":
            summary.copied += 1
        else:
            summary.already_there += 1
        progress(sha256, outcome)
    return summary
