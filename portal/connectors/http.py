"""One HTTP attempt and how to read its answer, shared by the connectors that call upstream over HTTP.

Delivered means a 2xx that looks like an API's answer. A 200 carrying an HTML page is what a proxy or a login
page returns when the real system was never reached: ambiguous, so it is retried, never counted.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

from portal.connectors.base import Result

# Statuses worth another try; any other 4xx will fail the same way every time.
RETRYABLE_4XX = {408, 409, 423, 425, 429}


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds or as an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    parsed = email.utils.parsedate_to_datetime(value) if value else None
    return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def read(response: httpx.Response) -> Result:
    status = response.status_code
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if 200 <= status < 300:
        if content_type == "text/html" or response.content.lstrip()[:1] == b"<":
            return Result("retry", f"{status} with an HTML page, not an API answer", status)
        if content_type.endswith("json") and response.content.strip():
            try:
                response.json()
            except ValueError:
                return Result("retry", f"{status} with a body that is not the JSON it claims", status)
        return Result.delivered(status)
    detail = f"{status}: {response.text[:300]}"
    if status in RETRYABLE_4XX or status >= 500:
        return Result("retry", detail, status, retry_after=retry_after_seconds(response.headers.get("retry-after")))
    return Result("failed", detail, status)


async def send(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> Result:
    try:
        return read(await client.request(method, url, **kwargs))
    except httpx.TimeoutException as exc:
        return Result("retry", f"timed out: {type(exc).__name__}")
    except httpx.TransportError as exc:
        return Result("retry", f"connection failed: {type(exc).__name__}: {exc}")
    except httpx.InvalidURL as exc:
        return Result("failed", f"not a usable URL: {exc}")
