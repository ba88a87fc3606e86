"""`portal serve` and `portal worker` check what they depend on before taking any work: a wrong storage URL, a
store that cannot be reached, a missing or wrong encryption key, an unmigrated database each stop the start with
one line naming the variable, and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from portal.cli import main
from portal.encryption import generate_key


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PORTAL_DATABASE_URL", f"sqlite:///{tmp_path / 'start.db'}")
    monkeypatch.setenv("PORTAL_STORAGE_DIR", str(tmp_path / "documents"))
    monkeypatch.delenv("PORTAL_STORAGE_URL", raising=False)
    monkeypatch.delenv("PORTAL_ENCRYPTION_KEYS", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("command", [["serve"], ["worker"]])
def test_an_unknown_storage_scheme_is_refused_before_anything(env: Path, command: list[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTAL_STORAGE_URL", "ftp://files.example/quittance")
    assert refused(*command).startswith("PORTAL_STORAGE_URL: expected s3://bucket/prefix or file:///path")


@pytest.mark.parametrize("command", [["serve"], ["worker"]])
def test_an_unreachable_store_is_refused_at_start(env: Path, command: list[str], s3_bucket: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    monkeypatch.setenv("PORTAL_STORAGE_URL", "s3://no-such-bucket/documents")
    assert "error: PORTAL_STORAGE_URL: the document store refused a test write" in refused(*command)
    monkeypatch.setenv("PORTAL_STORAGE_URL", s3_bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    assert "error: PORTAL_STORAGE_URL: the document store refused a test write" in refused(*command)


@pytest.mark.parametrize("command", [["serve"], ["worker"]])
def test_a_missing_or_wrong_key_is_refused_when_secrets_are_stored(env: Path, command: list[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("PORTAL_ENCRYPTION_KEYS", key)
    for args in (["db", "upgrade"], ["org", "create", "acme", "--name", "Acme"],
                 ["payments", "configure", "acme", "--stripe-key", "sk_test_0123456789abcdef"]):
        assert CliRunner().invoke(main, args).exit_code == 0
    monkeypatch.delenv("PORTAL_ENCRYPTION_KEYS")
    assert "error: PORTAL_ENCRYPTION_KEYS is not set" in refused(*command)
    monkeypatch.setenv("PORTAL_ENCRYPTION_KEYS", generate_key())
    assert "error: PORTAL_ENCRYPTION_KEYS holds none of the keys" in refused(*command)
    monkeypatch.setenv("PORTAL_ENCRYPTION_KEYS", "not-a-key")
    assert refused(*command).startswith("PORTAL_ENCRYPTION_KEYS: expected comma-separated Fernet keys")


def test_an_unmigrated_database_is_refused_at_start(env: Path) -> None:
    output = refused("worker")
    assert output.startswith("error: PORTAL_DATABASE_URL: the database cannot be used")
    assert "portal db upgrade" in output
