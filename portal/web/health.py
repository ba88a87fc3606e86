"""Health and readiness, for load balancers and orchestrators. Neither needs a key, and neither says more than
which check failed: no versions, no error texts (those go to the log).

- `GET /healthz`: 200 while the process serves requests. No database call, so a slow database never gets a
  healthy process restarted.
- `GET /readyz`: 200 only when the database answers, its schema is at the newest migration this code ships,
  and document storage accepts a write; otherwise 503 naming the checks that failed. A load balancer sends
  no traffic to a process that is not ready.
"""

from __future__ import annotations

import logging

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from portal.db.migrate import current_revision, latest_revision
from portal.services import Services

logger = logging.getLogger(__name__)
# Each check gets this long; a store or database that hangs is as unready as one that refuses.
CHECK_SECONDS = 5.0
NO_CACHE = {"Cache-Control": "no-store"}


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers=NO_CACHE)


async def readyz(request: Request) -> Response:
    services: Services = request.app.state.services
    failed = [name for name, ok in [("database", await _database_ready(services)),
                                    ("storage", await _storage_ready(services))] if not ok]
    if failed:
        return JSONResponse({"status": "unavailable", "failed": failed}, status_code=503, headers=NO_CACHE)
    return JSONResponse({"status": "ready"}, headers=NO_CACHE)


async def _database_ready(services: Services) -> bool:
    try:
        with anyio.fail_after(CHECK_SECONDS):
            revision = await services.db.read(current_revision)
    except Exception:
        logger.warning("readiness: the database did not answer", exc_info=True)
        return False
    if revision != latest_revision():
        logger.warning("readiness: the database schema is at %s, the code needs %s (run `portal db upgrade`)",
                       revision, latest_revision())
        return False
    return True


async def _storage_ready(services: Services) -> bool:
    try:
        with anyio.fail_after(CHECK_SECONDS):
            await anyio.to_thread.run_sync(services.documents.check_writable, abandon_on_cancel=True)
    except Exception:
        logger.warning("readiness: document storage refused a write", exc_info=True)
        return False
    return True


routes = [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
