"""Secrets at rest: provider keys and webhook secrets are stored encrypted with PORTAL_ENCRYPTION_KEYS, keys
rotate without downtime, and a missing or wrong key is a clear error naming the variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.fernet import Fernet

from portal.cli import main
from portal.db import Database
from portal.db.payments import payment_settings
from portal.domain import stored_secrets
from portal.domain.payment_settings import config_for
from portal.encryption import EncryptionKeyError, SecretBox, generate_key
from portal.settings import Settings

OLD, NEW = generate_key(), generate_key()
# As long as real ones: a sealed Stripe key (107 characters) is about 250.
SECRETS = ("test_mollie_0123456789abcdef", "sk_test_" + "5" * 99, "whsec_hook_0123456789")


def test_long_keys_fit_once_sealed(database: Database, clock: Any) -> None:
    from portal.domain import organizations as orgs
    from portal.domain.payment_settings import configure

    org = database.run(orgs.create_organization, "acme", "Acme", clock.now())
    database.run(configure, org.id, clock.now(), SecretBox([OLD]), stripe_api_key=SECRETS[1],
                 mollie_api_key=SECRETS[0])
    config = database.run(config_for, org.id, Settings(encryption_keys=(OLD,)))
    assert (config.mollie_api_key, config.stripe_api_key) == SECRETS[:2]


def test_a_sealed_secret_opens_with_any_listed_key_and_reseals_with_the_first() -> None:
    sealed = SecretBox([OLD]).seal("sk_live_abc")
    assert sealed.startswith("fernet:") and "sk_live_abc" not in sealed
    both = SecretBox([NEW, OLD])
    assert both.open(sealed) == "sk_live_abc"
    resealed = both.reseal(sealed)
    assert SecretBox([NEW]).open(resealed) == "sk_live_abc"
    with pytest.raises(EncryptionKeyError, match="PORTAL_ENCRYPTION_KEYS holds none of the keys"):
        SecretBox([OLD]).open(resealed)


def test_keys_that_are_not_keys_or_no_keys_are_named_errors() -> None:
    with pytest.raises(EncryptionKeyError, match="PORTAL_ENCRYPTION_KEYS: key 2 is not a Fernet key"):
        SecretBox([OLD, "not-a-key"])
    with pytest.raises(EncryptionKeyError, match="PORTAL_ENCRYPTION_KEYS is not set"):
        SecretBox([]).seal("x")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'secrets.db'}"
    monkeypatch.setenv("PORTAL_DATABASE_URL", url)
    monkeypatch.setenv("PORTAL_ENCRYPTION_KEYS", OLD)
    monkeypatch.chdir(tmp_path)
    return url


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def configured(url: str) -> None:
    cli("db", "upgrade")
    cli("org", "create", "acme", "--name", "Acme")
    cli("payments", "configure", "acme", "--mollie-key", SECRETS[0], "--stripe-key", SECRETS[1],
        "--stripe-webhook-secret", SECRETS[2])


def test_the_database_file_holds_no_usable_secret(env: str, tmp_path: Path) -> None:
    configured(env)
    database = Database.from_url(env)
    try:
        # The database and its write-ahead log, wherever the rows are now.
        raw = b"".join(path.read_bytes() for path in tmp_path.glob("secrets.db*"))
        assert b"fernet:" in raw
        for secret in SECRETS:
            assert secret.encode() not in raw
        config = database.run(config_for, 1, Settings(encryption_keys=(OLD,)))
    finally:
        database.dispose()
    assert (config.mollie_api_key, config.stripe_api_key, config.stripe_webhook_secrets) == (
        SECRETS[0], SECRETS[1], (SECRETS[2],))


def test_rotation_from_the_command_line(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    configured(env)
    key = cli("secrets", "generate-key").strip()
    Fernet(key.encode())  # a real key
    monkeypatch.setenv("PORTAL_ENCRYPTION_KEYS", f"{key},{OLD}")
    assert "re-encrypted the secrets of 1 row(s)" in cli("secrets", "rotate")

    database = Database.from_url(env)
    try:
        database.run(stored_secrets.check_all, SecretBox([key]))  # the old key is no longer needed
        with pytest.raises(EncryptionKeyError, match="PORTAL_ENCRYPTION_KEYS"):
            database.run(stored_secrets.check_all, SecretBox([OLD]))
        with pytest.raises(EncryptionKeyError, match="PORTAL_ENCRYPTION_KEYS is not set"):
            database.run(stored_secrets.check_all, SecretBox([]))
        assert database.run(config_for, 1, Settings(encryption_keys=(key,))).stripe_api_key == SECRETS[1]
    finally:
        database.dispose()


def test_secrets_stored_before_encryption_are_sealed_by_rotate(env: str) -> None:
    cli("db", "upgrade")
    cli("org", "create", "acme", "--name", "Acme")
    database = Database.from_url(env)
    try:
        with database.transaction() as conn:
            conn.execute(payment_settings.insert().values(organization_id=1, mollie_api_key=SECRETS[0],
                                                          stripe_webhook_secrets=[SECRETS[2]],
                                                          updated_at=sa.func.now()))
        assert "1 row(s)" in cli("secrets", "rotate")
        with database.transaction(write=False) as conn:
            row = conn.execute(sa.select(payment_settings)).one()
        assert row.mollie_api_key.startswith("fernet:") and row.stripe_webhook_secrets[0].startswith("fernet:")
        assert database.run(config_for, 1, Settings(encryption_keys=(OLD,))).mollie_api_key == SECRETS[0]
    finally:
        database.dispose()


def test_storing_a_secret_without_a_key_or_with_a_bad_key_is_refused(env: str, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    cli("db", "upgrade")
    cli("org", "create", "acme", "--name", "Acme")
    monkeypatch.setenv("PORTAL_ENCRYPTION_KEYS", "")
    refused = CliRunner().invoke(main, ["payments", "configure", "acme", "--mollie-key", SECRETS[0]])
    assert refused.exit_code == 2
    assert "PORTAL_ENCRYPTION_KEYS is not set" in refused.output
    monkeypatch.setenv("PORTAL_ENCRYPTION_KEYS", "short")
    refused = CliRunner().invoke(main, ["payments", "configure", "acme", "--mollie-key", SECRETS[0]])
    assert refused.exit_code == 2
    # Checked with every other setting before any command runs; the value itself is never echoed.
    assert refused.output.startswith("PORTAL_ENCRYPTION_KEYS: expected comma-separated Fernet keys")
    assert "short" not in refused.output


def test_connector_credentials_are_sealed_and_rotate_with_the_rest(env: str, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    configured(env)
    hook_secret, token = "whsec_connector_0123456789", "Bearer upstream-token-0123456789"
    cli("connector", "put", "acme", "erp", "--type", "status_patch", "--settings",
        '{"base": "https://erp.example/api", "headers": {"Authorization": "%s"}, "requests": {"invoice.paid": '
        '{"method": "PATCH", "url": "{base}/invoices/{invoice.external_id}", "body": {"paid": true}}}}' % token)
    cli("connector", "put", "acme", "hook", "--type", "webhook", "--settings",
        '{"url": "https://erp.example/hooks", "secret": "%s"}' % hook_secret)
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("secrets.db*"))
    assert hook_secret.encode() not in raw and b"upstream-token" not in raw
    assert "erp\tstatus_patch" in cli("connector", "list", "acme")

    key = generate_key()
    monkeypatch.setenv("PORTAL_ENCRYPTION_KEYS", f"{key},{OLD}")
    assert "re-encrypted the secrets of 3 row(s)" in cli("secrets", "rotate")  # payment settings + 2 connectors
    database = Database.from_url(env)
    try:
        database.run(stored_secrets.check_all, SecretBox([key]))
        with pytest.raises(EncryptionKeyError):
            database.run(stored_secrets.check_all, SecretBox([OLD]))
    finally:
        database.dispose()
