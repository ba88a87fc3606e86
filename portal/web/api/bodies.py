"""Reading request bodies with a bound, and turning them into validated models.

The bound is enforced twice: a declared Content-Length above it is refused before reading a byte, and a
chunked or lying body is cut off as soon as the bytes read pass it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pydantic
from starlette.requests import Request

from portal.schemas.validation import validate
from portal.storage.base import DocumentStore
from portal.web.api.problems import malformed, too_large, unsupported_media_type

M = TypeVar("M", bound=pydantic.BaseModel)


def require_content_type(request: Request, *accepted: str) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in accepted:
        raise unsupported_media_type(" or ".join(accepted))


def _declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise malformed("Content-Length must be a non-negative integer.")
    if int(declared) > limit:
        raise too_large(limit)


async def bounded_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    _declared_length(request, limit)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        yield chunk


async def read_bounded(request: Request, limit: int) -> bytes:
    return b"".join([chunk async for chunk in bounded_stream(request, limit)])


async def spool_to_file(request: Request, limit: int, store: DocumentStore) -> Path:
    """Stream the body into the store's temporary file (never all in memory); the caller removes it. The store
    chooses where: next to its files for a local directory (so storing is a rename), the system's temporary
    directory for an object store, which has no directory to spool into."""
    file, path = store.temporary_file()
    try:
        with file:
            async for chunk in bounded_stream(request, limit):
                file.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def parse_json(body: bytes) -> Any:
    if not body:
        raise malformed("The body is empty; send a JSON document.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise malformed(f"The body is not valid JSON: {exc}") from exc


async def read_model(request: Request, model: type[M], limit: int,
                     content_types: tuple[str, ...] = ("application/json",)) -> M:
    require_content_type(request, *content_types)
    return validate(model, parse_json(await read_bounded(request, limit)))
