"""`portal documents migrate --to URL`: every document copied and verified by its hash; running it twice is
harmless; the API then serves the same PDFs from the new store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from portal.cli import main
from portal.storage import LocalStore, open_store


def put(store: LocalStore, data: bytes) -> str:
    file, path = store.temporary_file()
    with file:
        file.write(data)
    return store.store_file(path).sha256


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStore:
    monkeypatch.setenv("PORTAL_STORAGE_DIR", str(tmp_path / "documents"))
    monkeypatch.delenv("PORTAL_STORAGE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return LocalStore(tmp_path / "documents")


def test_migrate_to_s3_copies_each_document_once_and_verifies_it(local: LocalStore, s3_bucket: str) -> None:
    blobs = [f"%PDF-1.7 document {n}".encode() * (n + 1) for n in range(5)]
    keys = {put(local, blob) for blob in blobs}

    first = CliRunner().invoke(main, ["documents", "migrate", "--to", s3_bucket])
    assert first.exit_code == 0, first.output
    assert "5 copied, 0 already there, 5 verified by SHA-256" in first.output

    target = open_store(s3_bucket)
    assert set(target.keys()) == keys
    for blob in blobs:
        key = hashlib.sha256(blob).hexdigest()
        assert b"".join(target.iter_bytes(key)) == blob

    put(local, b"%PDF-1.7 one more")
    again = CliRunner().invoke(main, ["documents", "migrate", "--to", s3_bucket])
    assert again.exit_code == 0, again.output
    assert "1 copied, 5 already there, 6 verified by SHA-256" in again.output


def test_a_document_whose_copy_is_corrupt_is_reported(local: LocalStore, tmp_path: Path) -> None:
    key = put(local, b"%PDF-1.7 original")
    target = LocalStore(tmp_path / "elsewhere")
    corrupt = target.root / key[:2] / key
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not the original")

    result = CliRunner().invoke(main, ["documents", "migrate", "--to", str(target.root)])
    assert result.exit_code == 1
    assert f"do not match their hash: {key}" in result.output
    assert corrupt.read_bytes() == b"not the original"  # never overwritten blindly


def test_an_unknown_target_scheme_is_refused(local: LocalStore) -> None:
    put(local, b"%PDF-1.7 x")
    result = CliRunner().invoke(main, ["documents", "migrate", "--to", "ftp://host/docs"])
    assert result.exit_code == 1
    assert "unknown storage scheme 'ftp'" in result.output
