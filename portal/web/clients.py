"""Who is calling, as far as rate limits are concerned."""

from __future__ import annotations

from starlette.requests import Request

from portal import metrics
from portal.domain.rate_limits import Limit, Verdict


def client_address(request: Request) -> str:
    """The client's address as the ASGI server reports it. Behind a reverse proxy the server's own
    proxy-headers handling (uvicorn's --forwarded-allow-ips) puts the X-Forwarded-For address here, and only
    for proxies it trusts; the header is never read here, so a client cannot choose its own address."""
    return request.client.host if request.client and request.client.host else "unknown"


def refusal_headers(limit: Limit, verdict: Verdict) -> dict[str, str]:
    """The headers of a 429 for `limit`, which is counted for the operators (quittance_rate_limit_refusals)."""
    metrics.rate_limited.labels(limit.bucket).inc()
    return {"Retry-After": str(max(1, verdict.retry_after))}
