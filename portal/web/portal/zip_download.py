"""The debtor's zip of several invoices' PDFs (GET /portal/download): bounded, streamed, built off the loop.

- The ids are de-duplicated before anything is read: one PDF's id repeated 100 times once made a 2 GB answer.
- One archive holds at most `Limits.download_files` PDFs and `Limits.download_bytes` bytes of them; beyond
  either the debtor gets a page saying so (422) instead of an archive.
- zipfile writes the archive to a stream that cannot seek (sizes and checksums then follow each entry in a data
  descriptor), one chunk at a time. Each chunk is made in a thread taken from a limiter of the downloads' own
  (ZIP_THREADS per event loop), so a download never holds the event loop, nor the threads that pages, imports
  and provider calls need, and a download holds about one chunk in memory whatever its size: the next chunk is
  made only when the client has taken the last one.
- PDFs are stored, not deflated: they are compressed already, and deflating them again costs CPU for nothing.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import AsyncIterator, Generator, Sequence
from dataclasses import dataclass

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar

from portal.storage import DocumentStore
from portal.threads import per_loop_limiter

CHUNK = 256 * 1024
ZIP_THREADS = 4
_LIMITER: RunVar[CapacityLimiter] = RunVar("quittance_zip_threads")


def distinct_ids(values: Sequence[str]) -> list[int]:
    """The invoice ids of the query, each once, in the order first given; anything not an id is left out."""
    return list(dict.fromkeys(int(v) for v in values if v.isdigit() and len(v) < 18))


@dataclass(frozen=True)
class Refusal:
    """Why the selection does not fit in one download: "count" or "size", with the limit that was passed."""

    reason: str
    limit: int


def check(count: int, total_bytes: int, *, max_files: int, max_bytes: int) -> Refusal | None:
    if count > max_files:
        return Refusal("count", max_files)
    if total_bytes > max_bytes:
        return Refusal("size", max_bytes)
    return None


class _Sink:
    """Where zipfile writes: a buffer emptied chunk by chunk. No seek nor tell, so zipfile streams (sizes in a
    data descriptor after each entry)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def zip_chunks(store: DocumentStore, files: Sequence[tuple[str, str]],
               chunk: int = CHUNK) -> Generator[bytes, None, None]:
    """A ZIP archive of `files` (entry name, document SHA-256) from `store`, as chunks of about `chunk` bytes,
    read as they are asked for."""
    sink = _Sink()
    stamp = time.localtime()[:6]
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as archive:
        for entry, sha256 in files:
            info = zipfile.ZipInfo(entry, date_time=stamp)
            info.compress_type = zipfile.ZIP_STORED
            with archive.open(info, "w") as target:
                for block in store.iter_bytes(sha256):
                    view = memoryview(block)
                    while view:  # only what fills the chunk: a chunk is `chunk` bytes and an entry's headers
                        room = max(chunk - len(sink.buffer), 1)
                        target.write(view[:room])
                        view = view[room:]
                        if len(sink.buffer) >= chunk:
                            yield sink.take()
    yield sink.take()  # the rest, and the central directory written on closing


async def in_threads(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """Each chunk made in a zip thread, the next only when the response has sent the last one."""
    limiter = per_loop_limiter(_LIMITER, ZIP_THREADS)
    try:
        while (block := await to_thread.run_sync(next, chunks, None, limiter=limiter)) is not None:
            if block:
                yield block
    finally:
        # A client that left mid-way: close the files now (the generator is never running at this point).
        chunks.close()
