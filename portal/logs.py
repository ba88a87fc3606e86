"""One logging configuration for `portal serve`, `portal worker` and the other commands.

`PORTAL_LOG_FORMAT=text` (the default) writes readable lines; `json` writes one JSON object per line (time,
level, logger, message, request_id, organization, route), through python-json-logger, for a log shipper.
Every record carries the request id of the request (or of the delivery) it happened in:
asgi-correlation-id takes it from `X-Request-ID` when a proxy sends one, else makes one, and returns it in the
response; outbox events keep it, so the worker's deliveries log the id of the request that caused them.

Secrets never reach a log line. Nothing logs request headers, bodies or query strings, and the access log is
off (a debtor link's token is in its path). As a second line of defence, `RedactSecrets` masks what looks like
one of our secrets, or a provider's, in any message that still carries one.
"""

from __future__ import annotations

import logging
import logging.config
import re
from contextvars import ContextVar
from typing import Any

from asgi_correlation_id import correlation_id

# Set where a request or a delivery learns whom it serves (API key, debtor session, webhook, outbox row).
organization: ContextVar[str | None] = ContextVar("organization", default=None)
route: ContextVar[str | None] = ContextVar("route", default=None)

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# What a secret of ours or a provider's looks like, wherever it lands in a message: API keys (qtc_…), debtor
# link paths (/l/<token>), Stripe and Mollie keys and webhook secrets, bearer credentials, signature headers.
SECRET_PATTERNS = re.compile(
    r"(qtc_[A-Za-z0-9_\-]{8,}"
    r"|/l/[A-Za-z0-9_\-.]{16,}"
    r"|\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9_]{8,}"
    r"|\bwhsec_[A-Za-z0-9_]{8,}"
    r"|\b(?:live|test|access)_[A-Za-z0-9]{20,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"
    r"|(?i:stripe-signature|authorization|cookie|x-api-key)[\"']?\s*[:=]\s*[\"']?(?i:bearer\s+|basic\s+)?"
    r"[^\s\"',}]+)")


class RequestContext(logging.Filter):
    """Adds request_id, organization and route to every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = correlation_id.get() or "-"
        record.organization = organization.get()
        record.route = route.get()
        return True


class RedactSecrets(logging.Filter):
    """Masks anything secret-looking in the formatted message (and drops the args it came from)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = SECRET_PATTERNS.sub("[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def logging_config(log_format: str = "text", level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` dictionary; uvicorn and gunicorn take the same one, so that their own
    loggers write through our handler and filters."""
    if log_format not in FORMATS:
        raise ValueError(f"log format is one of {', '.join(FORMATS)}")
    formatters: dict[str, Any] = {
        "text": {"format": "%(asctime)s [%(process)d] %(levelname)s %(name)s [%(request_id)s] %(message)s",
                 "datefmt": "%Y-%m-%dT%H:%M:%S%z"},
        "json": {"()": "pythonjsonlogger.json.JsonFormatter",
                 "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(organization)s "
                           "%(route)s %(process)d",
                 "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
                 "datefmt": "%Y-%m-%dT%H:%M:%S%z"},
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": RequestContext}, "redact": {"()": RedactSecrets}},
        "formatters": {"portal": formatters[log_format]},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "portal", "filters": ["context", "redact"]}},
        # Other libraries at warning (httpx, say, logs each request's URL at info), unless debugging.
        "root": {"handlers": ["stderr"], "level": level if level == "DEBUG" else "WARNING"},
        "loggers": {
            # The servers' own loggers write through our handler (and its filters), once: gunicorn's uvicorn
            # worker hands gunicorn.error's handlers to uvicorn.error, so that one must have ours.
            **{name: {"handlers": ["stderr"], "propagate": False, "level": level} for name in (
                "gunicorn.error", "uvicorn.error")},
            "portal": {"level": level},
            # Off: the path of a debtor link is its secret token.
            **{name: {"handlers": [], "propagate": False, "level": "CRITICAL"} for name in (
                "uvicorn.access", "gunicorn.access")},
        },
    }


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(log_format, level))
