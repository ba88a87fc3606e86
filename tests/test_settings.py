"""Settings from PORTAL_* variables and `.env`: every documented name read, every bad value refused at
start-up with one line naming the variable and what it accepts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from portal.settings import Limits, Settings, SettingsError, SmtpSettings
from portal.worker import WorkerSettings


def test_defaults_and_every_variable() -> None:
    assert Settings.from_env({}) == Settings()
    settings = Settings.from_env({
        "PORTAL_DATABASE_URL": "postgresql+psycopg://q@db/quittance", "PORTAL_STORAGE_DIR": "/srv/docs",
        "PORTAL_BASE_URL": "https://pay.acme.example/", "PORTAL_LIMIT_JSON_BYTES": "1024",
        "PORTAL_LIMIT_PDF_BYTES": "2048", "PORTAL_LIMIT_ARCHIVE_BYTES": "4096", "PORTAL_LIMIT_ARCHIVE_ENTRIES": "7",
        "PORTAL_LIMIT_ARCHIVE_UNCOMPRESSED_BYTES": "8192", "PORTAL_LIMIT_ARCHIVE_RATIO": "50",
        "PORTAL_LIMIT_BATCH_ITEMS": "10", "PORTAL_SECRET_KEYS": "new-key, old-key,,",
        "PORTAL_MOLLIE_API_KEY": "test_m", "PORTAL_MOLLIE_API_URL": "http://127.0.0.1:9001/",
        "PORTAL_STRIPE_API_KEY": "sk_test_s", "PORTAL_STRIPE_API_URL": "http://127.0.0.1:9002",
        "PORTAL_STRIPE_WEBHOOK_SECRETS": "whsec_a,whsec_b", "PORTAL_SMTP_HOST": "smtp.acme.example",
        "PORTAL_SMTP_PORT": "2525", "PORTAL_SMTP_USERNAME": "u", "PORTAL_SMTP_PASSWORD": "p4ss",
        "PORTAL_SMTP_STARTTLS": "off", "PORTAL_MAIL_FROM": " billing@acme.example ",
        "PORTAL_CONNECTORS_ALLOW_PRIVATE_NETWORKS": "1", "PORTAL_ECHO_SQL": "1", "UNRELATED": "x"})
    assert settings == Settings(
        database_url="postgresql+psycopg://q@db/quittance", storage_dir=Path("/srv/docs"),
        base_url="https://pay.acme.example",
        limits=Limits(json_bytes=1024, pdf_bytes=2048, archive_bytes=4096, archive_entries=7,
                      archive_uncompressed_bytes=8192, archive_ratio=50, batch_items=10),
        secret_keys=("new-key", "old-key"), mollie_api_key="test_m", mollie_api_url="http://127.0.0.1:9001",
        stripe_api_key="sk_test_s", stripe_api_url="http://127.0.0.1:9002", stripe_webhook_secrets=("whsec_a", "whsec_b"),
        smtp=SmtpSettings(host="smtp.acme.example", port=2525, username="u", password="p4ss", starttls=False,
                          mail_from="billing@acme.example"),
        connectors_allow_private_networks=True, echo_sql=True)
    # An empty variable is an unset one.
    assert Settings.from_env({"PORTAL_DATABASE_URL": "", "PORTAL_SMTP_PORT": ""}) == Settings()


@pytest.mark.parametrize(("environ", "message"), [
    ({"PORTAL_SMTP_PORT": "abc"}, "PORTAL_SMTP_PORT: expected an integer 1-65535, got 'abc'"),
    ({"PORTAL_SMTP_PORT": "70000"}, "PORTAL_SMTP_PORT: expected an integer 1-65535, got '70000'"),
    ({"PORTAL_LIMIT_JSON_BYTES": "5MB"},
     "PORTAL_LIMIT_JSON_BYTES: expected a whole number of bytes, at least 1, got '5MB'"),
    ({"PORTAL_LIMIT_BATCH_ITEMS": "0"}, "PORTAL_LIMIT_BATCH_ITEMS: expected a whole number of at least 1, got '0'"),
    ({"PORTAL_ECHO_SQL": "maybe"}, "PORTAL_ECHO_SQL: expected 1 or 0 (also true/false, yes/no, on/off), got 'maybe'"),
    ({"PORTAL_CONNECTORS_ALLOW_PRIVATE_NETWORKS": "2"},
     "PORTAL_CONNECTORS_ALLOW_PRIVATE_NETWORKS: expected 1 or 0 (also true/false, yes/no, on/off), got '2'"),
    ({"PORTAL_BASE_URL": "pay.acme.example"},
     "PORTAL_BASE_URL: expected the portal's public http:// or https:// URL, got 'pay.acme.example'"),
    ({"PORTAL_STRIPE_API_URL": "localhost:9002"},
     "PORTAL_STRIPE_API_URL: expected an http:// or https:// URL, or nothing for the real service, "
     "got 'localhost:9002'"),
    ({"PORTAL_DATABASE_URL": "quittance.db"}, "PORTAL_DATABASE_URL: expected a database URL such as"),
    ({"PORTAL_MAIL_FROM": "billing"}, "PORTAL_MAIL_FROM: expected an email address such as"),
    ({"PORTAL_WORKER_CONCURRENCY": "many"}, "PORTAL_WORKER_CONCURRENCY: expected a whole number of at least 1, "
                                            "got 'many'"),
])
def test_a_bad_value_names_the_variable_and_what_it_accepts(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(environ)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_every_bad_value_at_once() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"PORTAL_SMTP_PORT": "abc", "PORTAL_ECHO_SQL": "maybe"})
    assert str(refused.value) == ("PORTAL_SMTP_PORT: expected an integer 1-65535, got 'abc'; "
                                  "PORTAL_ECHO_SQL: expected 1 or 0 (also true/false, yes/no, on/off), got 'maybe'")


def test_worker_settings_come_from_the_same_place() -> None:
    assert WorkerSettings.from_env({"PORTAL_WORKER_CONCURRENCY": "8", "PORTAL_WORKER_LEASE_SECONDS": "2.5"}) == \
        WorkerSettings(concurrency=8, lease_seconds=2.5)
    with pytest.raises(SettingsError, match="PORTAL_WORKER_LEASE_SECONDS: expected a number of seconds above 0"):
        WorkerSettings.from_env({"PORTAL_WORKER_LEASE_SECONDS": "-1"})


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PORTAL_"):
            monkeypatch.delenv(name)
    (tmp_path / ".env").write_text("PORTAL_SECRET_KEYS=k1,k2\nPORTAL_SMTP_PORT=2525\nPORTAL_MAIL_FROM=b@q.example\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORTAL_SMTP_PORT", "2626")

    settings = Settings.from_env()

    assert (settings.secret_keys, settings.smtp.port, settings.smtp.mail_from) == (("k1", "k2"), 2626, "b@q.example")


def test_the_command_stops_with_one_line_and_status_2(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    env.update(PORTAL_SMTP_PORT="abc", PORTAL_DATABASE_URL=f"sqlite:///{tmp_path / 'never.db'}")

    result = subprocess.run([sys.executable, "-m", "portal.cli", "db", "upgrade"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert result.stderr == "PORTAL_SMTP_PORT: expected an integer 1-65535, got 'abc'\n"
    assert result.stdout == ""
    assert not (tmp_path / "never.db").exists(), "nothing ran"


def test_a_secret_is_never_shown() -> None:
    assert "s3cret" not in repr(Settings.from_env({"PORTAL_SMTP_PASSWORD": "s3cret"}))
