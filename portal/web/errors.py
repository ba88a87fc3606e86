"""Domain errors mapped to HTTP once. The machine API answers RFC 9457 problem JSON; the HTML pages (later)
get their own handlers on the same error classes."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from portal.errors import Conflict, InvalidInput, NotFound, QuittanceError, Unauthenticated
from portal.web.api.problems import HttpProblem, problem_body, problem_response
from portal.web.portal.pages import chosen_language, invalid_link, render
from portal.web.portal.session import CsrfFailure, NoSession

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


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _html_error(request: Request, status: int) -> Response:
    template = "portal/not_found.html" if status == 404 else "portal/error.html"
    return render(request, template, chosen_language(request, None), {"status": status}, status=status)


async def quittance_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QuittanceError)
    if not _is_api(request):
        return await _html_error(request, problem_for(exc)["status"])
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
    return problem_response(problem_for(exc), headers)


async def http_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpProblem)
    if not _is_api(request):
        return await _html_error(request, exc.status)
    return problem_response(problem_body(exc.status, exc.slug, exc.title, exc.detail), exc.headers)


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if not _is_api(request):
        return await _html_error(request, exc.status_code)
    titles = {404: "Not found", 405: "Method not allowed"}
    body = problem_body(exc.status_code, "http", titles.get(exc.status_code, "HTTP error"), str(exc.detail))
    return problem_response(body, dict(exc.headers or {}))


async def no_session(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NoSession)
    return await invalid_link(request, exc.link_id, status=401)


async def csrf_failure(request: Request, _exc: Exception) -> Response:
    return await _html_error(request, 403)


async def client_disconnect(request: Request, _exc: Exception) -> Response:
    # Not our error, and nothing to debug: one line, and an answer that nobody will read.
    log.info("client hung up before sending the whole request: %s %s", request.method, request.url.path)
    return Response(status_code=400)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    if not _is_api(request):
        return await _html_error(request, 500)
    return problem_response(problem_body(500, "server-error", "Server error", "Something went wrong on our side."))


def handlers() -> dict[Any, Any]:
    return {
        QuittanceError: quittance_error,
        HttpProblem: http_problem,
        HTTPException: http_exception,
        NoSession: no_session,
        CsrfFailure: csrf_failure,
        ClientDisconnect: client_disconnect,
        Exception: server_error,
    }
