"""RFC 9457 problem responses for the machine API, and the HTTP-level errors that only the web layer knows
(the domain knows nothing of body sizes or content types)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from portal.errors import FieldError

PROBLEM_TYPE_BASE = "https://quittance.dev/problems/"


class HttpProblem(Exception):
    """A request refused before it reaches the domain: too large, wrong content type, malformed JSON."""

    def __init__(self, status: int, slug: str, title: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers or {}


def problem_body(status: int, slug: str, title: str, detail: str, *, errors: list[FieldError] | None = None,
                 code: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = [{"path": error.path, "message": error.message} for error in errors]
    if code:
        body["code"] = code
    return body


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=body["status"], media_type="application/problem+json",
                    headers=headers)


def too_large(limit: int) -> HttpProblem:
    return HttpProblem(413, "too-large", "Request body too large", f"The body may be at most {limit} bytes.")


def unsupported_media_type(expected: str) -> HttpProblem:
    return HttpProblem(415, "unsupported-media-type", "Unsupported media type",
                       f"Send the body as {expected}.")


def malformed(detail: str) -> HttpProblem:
    return HttpProblem(400, "malformed", "Malformed request", detail)
