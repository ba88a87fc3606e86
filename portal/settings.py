"""One frozen Settings object, read from PORTAL_* environment variables (and a `.env` file if present) by
pydantic-settings, which checks every value at start-up (docs/operations.md lists the variables).

Settings are an argument: `create_app(settings)` and the services take what they need, so tests build an
app from a Settings object and nothing reads the environment behind their back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.fernet import Fernet
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    # Where documents live when not in `storage_dir`: `s3://bucket/prefix` (portal.storage). Empty: the directory.
    storage_url: str = ""
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
    # Log lines as readable text or one JSON object per line (portal.logs), and from which level.
    log_format: str = "text"
    log_level: str = "INFO"
    # Fernet keys that encrypt provider and connector secrets in the database, newest first (portal.encryption).
    encryption_keys: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    # Bearer token that GET /metrics demands; empty: no /metrics at all (404).
    metrics_token: str = dataclasses.field(default="", repr=False)

    @property
    def signing_keys(self) -> tuple[str, ...]:
        return self.secret_keys or (DEVELOPMENT_KEY,)

    @property
    def document_store_url(self) -> str:
        return self.storage_url or str(self.storage_dir)

    @property
    def is_https(self) -> bool:
        return self.base_url.startswith("https://")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings from PORTAL_* variables (`environ`, or the process's environment and `.env`).
        Raises SettingsError naming each bad variable and what it accepts."""
        return Environment.read(environ).settings()


class SettingsError(ValueError):
    """A PORTAL_* variable with a value we cannot use; the message is one line an operator can act on."""


def _comma_list(value: Any) -> Any:
    """PORTAL_SECRET_KEYS and PORTAL_STRIPE_WEBHOOK_SECRETS: comma-separated, blanks dropped."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _fernet_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    for key in keys:
        Fernet(key.encode())  # ValueError: not 32 url-safe base64-encoded bytes
    return keys


CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]
_WHOLE = "a whole number of at least 1"
_SECONDS = "a number of seconds above 0"
Count = Annotated[int, Field(ge=1, description=_WHOLE)]
Bytes = Annotated[int, Field(ge=1, description="a whole number of bytes, at least 1")]
Seconds = Annotated[float, Field(gt=0, description=_SECONDS)]
Flag = Annotated[bool, Field(description="1 or 0 (also true/false, yes/no, on/off)")]
HttpUrl = Annotated[str, Field(pattern=r"^https?://[^\s/]+\S*$", description="an http:// or https:// URL")]
OptionalUrl = Annotated[str, Field(pattern=r"^(https?://[^\s/]+\S*)?$",
                                   description="an http:// or https:// URL, or nothing for the real service")]


class Environment(BaseSettings):
    """Every PORTAL_* variable, by its name without the prefix, checked once at start-up: the one place that
    reads the environment and `.env` (variables set in the environment win over the file). An empty
    variable counts as unset. `settings()` gives the frozen Settings the rest of the code takes."""

    model_config = SettingsConfigDict(env_prefix="PORTAL_", env_file=".env", env_ignore_empty=True,
                                      extra="ignore", frozen=True)

    database_url: Annotated[str, Field(pattern=r"^[a-z][a-z0-9+]*://", description="a database URL such as "
                                       "postgresql+psycopg://user:password@host/quittance or sqlite:///path")] \
        = Settings.database_url
    storage_dir: Annotated[Path, Field(description="a directory path")] = Settings.storage_dir
    base_url: Annotated[HttpUrl, Field(description="the portal's public http:// or https:// URL")] = Settings.base_url
    limit_json_bytes: Bytes = Limits.json_bytes
    limit_pdf_bytes: Bytes = Limits.pdf_bytes
    limit_archive_bytes: Bytes = Limits.archive_bytes
    limit_archive_entries: Count = Limits.archive_entries
    limit_archive_uncompressed_bytes: Bytes = Limits.archive_uncompressed_bytes
    limit_archive_ratio: Count = Limits.archive_ratio
    limit_batch_items: Count = Limits.batch_items
    limit_download_files: Count = Limits.download_files
    limit_download_bytes: Bytes = Limits.download_bytes
    secret_keys: Annotated[CommaList, Field(description="comma-separated keys")] = ()
    mollie_api_key: str = ""
    mollie_api_url: OptionalUrl = ""
    stripe_api_key: str = ""
    stripe_api_url: OptionalUrl = ""
    stripe_webhook_secrets: Annotated[CommaList, Field(description="comma-separated secrets")] = ()
    smtp_host: str = ""
    smtp_port: Annotated[int, Field(ge=1, le=65535, description="an integer 1-65535")] = SmtpSettings.port
    smtp_username: str = ""
    smtp_password: Annotated[str, Field(repr=False)] = ""
    smtp_starttls: Flag = SmtpSettings.starttls
    mail_from: Annotated[str, Field(pattern=r"^\s*([^@\s]+@[^@\s]+)?\s*$",
                                    description="an email address such as billing@quittance.example")] = ""
    connectors_allow_private_networks: Flag = False
    echo_sql: Flag = False
    storage_url: Annotated[str, Field(pattern=r"^((s3://[A-Za-z0-9][A-Za-z0-9.\-]{1,62}(/\S*)?)|(file:///\S+))?$",
                                      description="s3://bucket/prefix or file:///path")] = ""
    log_format: Annotated[Literal["text", "json"], Field(description="text or json")] = "text"
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"],
                         BeforeValidator(lambda value: value.upper() if isinstance(value, str) else value),
                         Field(description="DEBUG, INFO, WARNING or ERROR")] = "INFO"
    metrics_token: Annotated[str, Field(repr=False)] = ""
    encryption_keys: Annotated[CommaList, AfterValidator(_fernet_keys),
                               Field(description="comma-separated Fernet keys, newest first (make one with "
                                                 "`portal secrets generate-key`)")] = ()
    # The outbox worker's tuning (portal.worker.WorkerSettings); unset means the worker's own default.
    worker_batch: Count | None = Field(default=None, description=_WHOLE)
    worker_concurrency: Count | None = Field(default=None, description=_WHOLE)
    worker_lease_seconds: Seconds | None = Field(default=None, description=_SECONDS)
    worker_max_attempts: Count | None = Field(default=None, description=_WHOLE)
    worker_timeout_seconds: Seconds | None = Field(default=None, description=_SECONDS)
    worker_idle_poll_seconds: Seconds | None = Field(default=None, description=_SECONDS)
    worker_reconcile_seconds: Seconds | None = Field(default=None, description=_SECONDS)

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """From `environ` alone when given (tests), else from the process's environment and `.env`."""
        try:
            if environ is None:
                return cls()
            values = {key.removeprefix("PORTAL_").lower(): value for key, value in environ.items()
                      if key.startswith("PORTAL_") and value != ""}
            return cls.model_validate({k: v for k, v in values.items() if k in cls.model_fields})
        except ValidationError as exc:
            raise SettingsError("; ".join(_describe(cls, error) for error in exc.errors())) from None

    def settings(self) -> Settings:
        limits = Limits(**{field.name: getattr(self, f"limit_{field.name}") for field in dataclasses.fields(Limits)})
        smtp = SmtpSettings(host=self.smtp_host.strip(), port=self.smtp_port, username=self.smtp_username,
                            password=self.smtp_password, starttls=self.smtp_starttls, mail_from=self.mail_from.strip())
        return Settings(
            database_url=self.database_url, storage_dir=self.storage_dir, base_url=self.base_url.rstrip("/"),
            limits=limits, secret_keys=self.secret_keys, mollie_api_key=self.mollie_api_key,
            mollie_api_url=self.mollie_api_url.rstrip("/"), stripe_api_key=self.stripe_api_key,
            stripe_api_url=self.stripe_api_url.rstrip("/"), stripe_webhook_secrets=self.stripe_webhook_secrets,
            smtp=smtp, connectors_allow_private_networks=self.connectors_allow_private_networks,
            echo_sql=self.echo_sql, storage_url=self.storage_url, log_format=self.log_format,
            log_level=self.log_level, metrics_token=self.metrics_token, encryption_keys=self.encryption_keys)


    def worker_options(self) -> dict[str, Any]:
        """The PORTAL_WORKER_* variables that are set, by WorkerSettings' field names."""
        return {name.removeprefix("worker_"): value for name, value in self if name.startswith("worker_")
                and value is not None}


def _describe(model: type[BaseSettings], error: Any) -> str:
    """`PORTAL_SMTP_PORT: expected an integer 1-65535, got 'abc'` (a secret's value is never shown)."""
    name = str(error["loc"][0]) if error["loc"] else ""
    field = model.model_fields.get(name)
    accepts = field.description if field is not None and field.description else error["msg"]
    shown = "a value not shown here (a secret)" if name in _SECRET_FIELDS else repr(error.get("input"))
    return f"PORTAL_{name.upper()}: expected {accepts}, got {shown}"


_SECRET_FIELDS = {"smtp_password", "mollie_api_key", "stripe_api_key", "secret_keys", "stripe_webhook_secrets",
                  "metrics_token", "encryption_keys"}
