"""One frozen Settings object, read from PORTAL_* environment variables (and a `.env` file if present).

Settings are an argument: `create_app(settings)` and the services take what they need, so tests build an
app from a Settings object and nothing reads the environment behind their back.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from dotenv import dotenv_values

MB = 1024 * 1024
# Used only when PORTAL_SECRET_KEYS is empty, so that the demo runs with no setup. `portal serve` warns.
DEVELOPMENT_KEY = "quittance-development-key-not-secret"


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on what one request may make us read or store. Defaults follow the machine API's contract."""

    json_bytes: int = 5 * MB
    pdf_bytes: int = 20 * MB
    archive_bytes: int = 200 * MB
    archive_entries: int = 5_000
    archive_uncompressed_bytes: int = 2_000 * MB
    # A PDF rarely compresses better than 20:1; 100:1 leaves room and still stops a bomb on its first megabytes.
    archive_ratio: int = 100
    batch_items: int = 1_000
    # A debtor's zip of PDFs (GET /portal/download): at most this many files and bytes of them in one archive.
    download_files: int = 100
    download_bytes: int = 200 * MB


@dataclasses.dataclass(frozen=True)
class SmtpSettings:
    """Where outgoing mail goes (portal.mail). Mail is configured when both the host and the sender are set;
    until then sending answers 503 and the email connector retries. With `starttls` (the default) the session
    must be upgraded to TLS, with the server's certificate verified, before any login or message."""

    host: str = ""
    port: int = 587
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    starttls: bool = True
    # The envelope sender and the address of From:, e.g. "billing@quittance.example"; organizations' names
    # are put in front of it as the display name.
    mail_from: str = ""
    # Seconds for connecting and for each reply of the server.
    timeout: float = 10.0

    @property
    def configured(self) -> bool:
        return bool(self.host and self.mail_from)


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///var/quittance.db"
    storage_dir: Path = Path("var/documents")
    base_url: str = "http://127.0.0.1:8000"
    limits: Limits = dataclasses.field(default_factory=Limits)
    # Keys that sign debtor links and sessions, newest first: the first signs, all verify, so a key can be
    # rotated in front without breaking live links. Empty means a development key (never in production).
    secret_keys: tuple[str, ...] = ()
    link_days_default: int = 90
    link_days_max: int = 365
    # A debtor session lasts this long after the link was opened; opening the link again starts a new one.
    session_minutes: int = 60
    # Payment providers: the defaults of every organization without settings of its own. The URLs point the
    # real SDKs elsewhere (the local emulators); empty means the real services.
    mollie_api_key: str = ""
    mollie_api_url: str = ""
    stripe_api_key: str = ""
    stripe_api_url: str = ""
    stripe_webhook_secrets: tuple[str, ...] = ()
    smtp: SmtpSettings = dataclasses.field(default_factory=SmtpSettings)
    # Connectors may call loopback and private addresses (a billing system on the same network). Off by default:
    # an API key must not be able to aim our worker at internal services.
    connectors_allow_private_networks: bool = False
    # Debug logging of SQL; never on in production.
    echo_sql: bool = False

    @property
    def signing_keys(self) -> tuple[str, ...]:
        return self.secret_keys or (DEVELOPMENT_KEY,)

    @property
    def is_https(self) -> bool:
        return self.base_url.startswith("https://")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = {**dotenv_values(".env"), **(os.environ if environ is None else environ)}
        limits = Limits(
            **{
                field.name: int(env[f"PORTAL_LIMIT_{field.name.upper()}"])
                for field in dataclasses.fields(Limits)
                if f"PORTAL_LIMIT_{field.name.upper()}" in env
            }
        )
        return cls(
            database_url=env.get("PORTAL_DATABASE_URL") or cls.database_url,
            storage_dir=Path(env.get("PORTAL_STORAGE_DIR") or cls.storage_dir),
            base_url=(env.get("PORTAL_BASE_URL") or cls.base_url).rstrip("/"),
            limits=limits,
            secret_keys=_list(env.get("PORTAL_SECRET_KEYS", "")),
            mollie_api_key=env.get("PORTAL_MOLLIE_API_KEY", ""),
            mollie_api_url=env.get("PORTAL_MOLLIE_API_URL", "").rstrip("/"),
            stripe_api_key=env.get("PORTAL_STRIPE_API_KEY", ""),
            stripe_api_url=env.get("PORTAL_STRIPE_API_URL", "").rstrip("/"),
            stripe_webhook_secrets=_list(env.get("PORTAL_STRIPE_WEBHOOK_SECRETS", "")),
            smtp=SmtpSettings(
                host=env.get("PORTAL_SMTP_HOST", ""), port=int(env.get("PORTAL_SMTP_PORT") or SmtpSettings.port),
                username=env.get("PORTAL_SMTP_USERNAME", ""), password=env.get("PORTAL_SMTP_PASSWORD", ""),
                starttls=env.get("PORTAL_SMTP_STARTTLS", "1").strip().lower() not in ("0", "false", "no", "off"),
                mail_from=env.get("PORTAL_MAIL_FROM", "").strip()),
            connectors_allow_private_networks=env.get("PORTAL_CONNECTORS_ALLOW_PRIVATE_NETWORKS", "") == "1",
            echo_sql=env.get("PORTAL_ECHO_SQL", "") == "1",
        )


def _list(value: str) -> tuple[str, ...]:
    """A comma-separated setting, blanks dropped."""
    return tuple(part.strip() for part in value.split(",") if part.strip())
