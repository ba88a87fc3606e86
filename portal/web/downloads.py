"""File responses that are safe to hand to a browser: always an attachment, never sniffed, never cached,
never rendered in our origin, and streamed without holding the file in memory."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from urllib.parse import quote

from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import StreamingResponse

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, extension: str) -> str:
    """An ASCII file name made of the given name: "Facture 2026/001" -> "Facture_2026_001.pdf"."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    stem = _UNSAFE.sub("_", ascii_name).strip("._")[:100] or "document"
    return f"{stem}.{extension}"


def content_disposition(name: str, extension: str) -> str:
    """RFC 6266: an ASCII fallback plus the UTF-8 name for browsers that read `filename*`."""
    fallback = safe_filename(name, extension)
    readable = re.sub(r"[\x00-\x1f\x7f/\\\"]", "_", name)[:100] or "document"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(readable + '.' + extension)}"


def attachment(chunks: Iterable[bytes] | Iterator[bytes] | AsyncIterable[bytes], *, name: str, extension: str,
               media_type: str, size: int | None = None,
               background: BackgroundTask | None = None) -> StreamingResponse:
    """`chunks` read in Starlette's thread pool, or an async iterable that keeps off the loop by itself."""
    headers = {
        "Content-Disposition": content_disposition(name, extension),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
        "Content-Security-Policy": "sandbox",
    }
    if size is not None:
        headers["Content-Length"] = str(size)
    body: AsyncIterable[bytes] | AsyncIterator[bytes] = (
        chunks if isinstance(chunks, AsyncIterable) else iterate_in_threadpool(iter(chunks)))
    return StreamingResponse(body, media_type=media_type, headers=headers, background=background)
