"""Document storage, local and S3 (a real S3-compatible server on loopback): the same guarantees on both."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import psutil
import pytest

from portal.storage import DocumentStore, LocalStore, StorageError, UnknownStorageUrl, open_store, read_bytes
from portal.storage.s3 import S3Store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> DocumentStore:
    if request.param == "local":
        return open_store(tmp_path / "documents")
    return open_store(request.getfixturevalue("s3_bucket"))


def put(store: DocumentStore, data: bytes) -> str:
    file, path = store.temporary_file()
    with file:
        file.write(data)
    return store.store_file(path).sha256


def test_open_store_picks_the_backend_by_url(tmp_path: Path, s3_bucket: str) -> None:
    assert isinstance(open_store(tmp_path / "docs"), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}/docs"), LocalStore)
    assert isinstance(open_store(s3_bucket), S3Store)
    with pytest.raises(UnknownStorageUrl, match="'ftp'"):
        open_store("ftp://example.com/docs")
    with pytest.raises(ValueError, match="names a bucket"):
        open_store("s3:///prefix")


def test_a_document_is_stored_under_its_hash_and_read_back(store: DocumentStore) -> None:
    data = b"%PDF-1.7\n" + os.urandom(200_000)
    sha256 = put(store, data)

    assert sha256 == hashlib.sha256(data).hexdigest()
    assert store.exists(sha256)
    assert b"".join(store.iter_bytes(sha256)) == data
    assert all(len(chunk) <= 64 * 1024 for chunk in store.iter_bytes(sha256))
    assert read_bytes(store, sha256) == data
    assert list(store.keys()) == [sha256]


def test_storing_the_same_bytes_twice_keeps_one_document(store: DocumentStore) -> None:
    first = put(store, b"same bytes")
    second = put(store, b"same bytes")
    other = put(store, b"other bytes")

    assert first == second
    assert sorted(store.keys()) == sorted([first, other])


def test_the_staged_file_is_consumed(store: DocumentStore) -> None:
    file, path = store.temporary_file()
    with file:
        file.write(b"staged")
    store.store_file(path)
    assert not path.exists()


def test_an_upload_spooled_into_the_incoming_directory_is_stored(store: DocumentStore) -> None:
    # The document API streams request bodies into `store.incoming` before filing them (the S3 store had none).
    store.incoming.mkdir(parents=True, exist_ok=True)
    path = store.incoming / "upload-test.part"
    path.write_bytes(b"spooled upload")
    stored = store.store_file(path)
    assert read_bytes(store, stored.sha256) == b"spooled upload"
    assert not path.exists()


def test_keys_are_only_hashes(store: DocumentStore) -> None:
    for name in ("../etc/passwd", "ab", "A" * 64, "invoice.pdf"):
        with pytest.raises(ValueError):
            store.exists(name)
    assert not store.exists("0" * 64)


def test_a_writable_store_passes_the_readiness_write(store: DocumentStore) -> None:
    store.check_writable()
    assert list(store.keys()) == []  # the probe leaves nothing behind


def test_an_s3_bucket_that_does_not_exist_is_a_storage_error(s3_bucket: str) -> None:
    missing = open_store("s3://no-such-bucket/docs")
    with pytest.raises(StorageError):
        missing.check_writable()
    with pytest.raises(StorageError):
        put(missing, b"lost?")


def test_an_unreachable_s3_endpoint_is_a_storage_error(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(StorageError):
        open_store(s3_bucket).check_writable()


def test_an_s3_download_streams_in_bounded_memory(s3_bucket: str) -> None:
    store = open_store(s3_bucket)
    file, path = store.temporary_file()
    with file:
        for _ in range(64):
            file.write(os.urandom(1024 * 1024))
    sha256 = store.store_file(path).sha256
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    total = 0
    for chunk in store.iter_bytes(sha256):
        total += len(chunk)
        peak = max(peak, process.memory_info().rss)
    assert total == 64 * 1024 * 1024
    assert peak - before < 32 * 1024 * 1024, "a 64 MB download must not sit in memory"
