"""Document storage, chosen by `PORTAL_STORAGE_URL`: a local directory (the default) or an S3-compatible
object store (`s3://bucket/prefix`). Both are content-addressed: a document's key is the SHA-256 of its bytes.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from portal.storage.base import DocumentStore, StorageError, StoredFile, read_bytes
from portal.storage.local import LocalStore


class UnknownStorageUrl(ValueError):
    """A storage URL whose scheme is neither a local path (or file://) nor s3://."""


def open_store(url: str | Path) -> DocumentStore:
    """The store a URL names: a path or `file:///path` (local directory), or `s3://bucket[/prefix]`."""
    text = str(url)
    parts = urlsplit(text)
    if parts.scheme == "s3":
        from portal.storage.s3 import S3Store  # boto3 is imported only by installs that use it

        return S3Store.from_url(text)
    if parts.scheme == "file":
        return LocalStore(Path(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # "C:" on Windows is a drive, not a scheme
        raise UnknownStorageUrl(f"unknown storage scheme {parts.scheme!r}: use a directory, file:///path or "
                                "s3://bucket/prefix")
    return LocalStore(Path(text))


__all__ = ["DocumentStore", "LocalStore", "StorageError", "StoredFile", "UnknownStorageUrl", "open_store",
           "read_bytes"]
