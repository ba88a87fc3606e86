"""Domain errors mapped to HTTP once. The machine API answers RFC 9457 problem JSON; the HTML pages (later)
get their own handlers on the same error classes."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from portal.errors import Conflict, InvalidInput, NotFound, QuittanceError, Unauthenticated
from portal.web.api.problems import HttpProblem, problem_body, problem_response

log = logging.getLogger(__name__)


def problem_for(error: QuittanceError) -> dict[str, Any]:
    if isinstance(error, InvalidInput):
        return problem_body(422, "invalid", "Invalid request", error.detail, errors=error.errors)
    if isinstance(error, NotFound):
        # The same words whether the object is missing or belongs to someone else.
        return problem_body(404, "not-found", "Not found", "No such object.")
    if isinstance(error, Conflict):
        return problem_body(409, "conflict", "Conflict", error.detail, code=error.code)
    if isinstance(error, Unauthenticated):
        return problem_body(401, "unauthenticated", "Unauthenticated", error.detail)
    return problem_body(400, "bad-request", "Bad request", error.detail)


async def quittance_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QuittanceError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
    return problem_response(problem_for(exc), headers)


async def http_problem(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpProblem)
    return problem_response(problem_body(exc.status, exc.slug, exc.title, exc.detail), exc.headers)


async def http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    titles = {404: "Not found", 405: "Method not allowed"}
    body = problem_body(exc.status_code, "http", titles.get(exc.status_code, "HTTP error"), str(exc.detail))
    return problem_response(body, dict(exc.headers or {}))


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(problem_body(500, "server-error", "Server error", "Something went wrong on our side."))


HANDLERS: dict[Any, Any] = {
    QuittanceError: quittance_error,
    HttpProblem: http_problem,
    HTTPException: http_exception,
    Exception: server_error,
}
