"""Screening that a stored file is a PDF we are willing to hand to a debtor, without trusting the client.

The client's Content-Type and file name say nothing; the bytes decide. What is checked, and why:

- `%PDF-x.y` within the first 1024 bytes (where readers look for it), with no markup before it: an HTML or
  SVG file, or a polyglot that starts as one, would be sniffed as markup by a browser.
- `%%EOF` within the last 1024 bytes: a file cut off in transit is refused rather than shown half.
- No `/Encrypt`: we could not inspect an encrypted file, and a debtor could not open it without a password.
- No active content: `/JavaScript` (the action type and the document-level name tree), a `/JS` key holding
  a script, or a `/Launch` action (starts a program). `/OpenAction` alone is allowed: generators use it to
  set the first view, and what it could run is one of the above.

Names are matched as PDF reads them: `#xx` escapes (`/J#61vaScript`) and any letter case. Objects hidden in
Flate-compressed streams (PDF 1.5 object streams) are inflated and scanned too. Inflating costs CPU, so a
file has a budget that grows with its size; a file whose compressed content would inflate past it is
refused rather than accepted half inspected.

Everything reads the file in chunks: memory stays bounded whatever the file's size. This is a byte-level
screen, not a parser; downloads are also served as attachments under `Content-Security-Policy: sandbox`.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import BinaryIO

CHUNK = 64 * 1024
HEADER_WINDOW = 1024
TRAILER_WINDOW = 1024
# A match must end within this many bytes of where it starts; the scanner keeps that much between chunks.
_TAIL = 256
# Inflating compressed streams costs CPU, so a file gets a budget: a fixed allowance plus a multiple of its
# size (an archive of small files cannot buy much). Content that would inflate past it cannot be inspected,
# so the file is refused: a logo of flat colour compresses 50:1, but a whole invoice does not average 32:1.
INFLATE_ALLOWANCE = 4 * 1024 * 1024
INFLATE_FACTOR = 32
# A crafted file can hold a "stream" keyword every few bytes; a real one has a few thousand at most.
MAX_STREAMS = 100_000

_HEADER = re.compile(rb"%PDF-\d\.\d")
_DELIMITER_AHEAD = rb"(?![^\x00\t\n\x0c\r ()<>\[\]{}/%])"


def _name(text: str) -> bytes:
    """A regex for the characters of the PDF name /text (after its slash), matching any mix of plain and
    #-escaped characters, in any case."""
    parts = []
    for char in text:
        codes = {ord(char.lower()), ord(char.upper())}
        escapes = "|".join(f"#{code:02x}" for code in sorted(codes))
        parts.append(f"(?:{re.escape(char)}|{escapes})")
    return "".join(parts).encode()


# The /JS key alone is also a common resource name in content; it counts only when a script follows it
# (a string, a hex string or a reference to a stream). Every JavaScript action also names /JavaScript.
# The slash comes first and outside the alternatives, so the regex engine skips quickly to each slash.
_FORBIDDEN = re.compile(
    b"/(?:(?P<Encrypt>" + _name("Encrypt") + _DELIMITER_AHEAD + b")"
    b"|(?P<JavaScript>" + _name("JavaScript") + _DELIMITER_AHEAD + b")"
    b"|(?P<JS>" + _name("JS") + rb"[\x00\t\n\x0c\r ]{0,32}(?:\(|<(?!<)|\d+[\x00\t\n\x0c\r ]+\d+[\x00\t\n\x0c\r ]+R)"
    b")"
    b"|(?P<Launch>" + _name("Launch") + _DELIMITER_AHEAD + b"))",
    re.IGNORECASE,
)
# "stream" first (a literal, which the engine finds fast); "endstream" is told apart by the byte before.
_STREAM = re.compile(rb"stream(?:\r\n|\n|\r)")

_REASONS = {
    "Encrypt": "the PDF is encrypted (/Encrypt); send it without a password or restrictions",
    "JavaScript": "the PDF carries JavaScript (/JavaScript); an invoice needs no scripts",
    "JS": "the PDF carries JavaScript (/JS); an invoice needs no scripts",
    "Launch": "the PDF can start a program (/Launch action)",
}


class PdfRejected(ValueError):
    """The file is not a PDF we accept; `reason` says why in words a billing system's operator can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _OverBudget(Exception):
    pass


class _Scanner:
    """Finds forbidden names in bytes fed piece by piece, keeping only a short tail between pieces."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes, *, final: bool = False) -> None:
        buffer = self._carry + data
        limit = len(buffer) if final else max(0, len(buffer) - _TAIL)
        for match in _FORBIDDEN.finditer(buffer):
            if match.start() >= limit:
                break
            raise PdfRejected(_REASONS[match.lastgroup or "JavaScript"])
        self._carry = buffer[limit:]


def screen_pdf(path: Path) -> None:
    """Raise PdfRejected unless the file at `path` passes the checks in the module docstring."""
    with path.open("rb") as file, path.open("rb") as streams:
        size = file.seek(0, 2)
        if size == 0:
            raise PdfRejected("the file is empty")
        file.seek(0)
        head = file.read(HEADER_WINDOW)
        _check_header(head)
        file.seek(max(0, size - TRAILER_WINDOW))
        if b"%%EOF" not in file.read(TRAILER_WINDOW):
            raise PdfRejected("the PDF is truncated: no %%EOF marker at its end")
        file.seek(0)
        budget = INFLATE_ALLOWANCE + INFLATE_FACTOR * size
        try:
            _scan(file, streams, budget)
        except _OverBudget:
            raise PdfRejected("the PDF's compressed content inflates to too much to inspect (more than "
                              f"{budget // (1024 * 1024)} MB for a file of this size)") from None


def _check_header(head: bytes) -> None:
    match = _HEADER.search(head)
    if match is None:
        raise PdfRejected(f"not a PDF: no %PDF- header in the first {HEADER_WINDOW} bytes")
    if b"<" in head[:match.start()]:
        raise PdfRejected("not a PDF: markup (HTML, SVG or XML) comes before the %PDF- header")


def _scan(file: BinaryIO, streams: BinaryIO, budget: int) -> None:
    """One pass over the raw bytes; each stream that holds zlib data is inflated and scanned as well."""
    names = _Scanner()
    carry = b""
    base = 0  # file offset of carry[0]
    done = 0  # file offset before which every keyword was handled
    seen = 0
    while True:
        chunk = file.read(CHUNK)
        final = not chunk
        names.feed(chunk, final=final)
        buffer = carry + chunk
        limit = len(buffer) if final else max(0, len(buffer) - _TAIL)
        for match in _STREAM.finditer(buffer):
            if match.start() >= limit:
                break
            if base + match.start() < done or buffer[match.start() - 1:match.start()].isalpha():
                continue
            seen += 1
            if seen > MAX_STREAMS:
                raise PdfRejected(f"the PDF has more than {MAX_STREAMS} streams")
            budget -= _scan_inflated(streams, base + match.end(), budget)
        if final:
            return
        # Keep one byte before the tail, so that the byte before a keyword is still there to look at.
        keep = max(0, limit - 1)
        carry, base, done = buffer[keep:], base + keep, base + limit


def _scan_inflated(streams: BinaryIO, offset: int, budget: int) -> int:
    """Inflate the stream whose data starts at `offset`, if it is zlib data, scanning what comes out.
    Returns the bytes inflated. Data that is not zlib (JPEG images, fonts in other filters) is left alone:
    its raw bytes are part of the main scan."""
    streams.seek(offset)
    inflater = zlib.decompressobj()
    names = _Scanner()
    produced = 0
    while not inflater.eof:
        data = inflater.unconsumed_tail or streams.read(CHUNK)
        if not data:
            break
        try:
            # One byte more than the budget allows tells "exactly at the budget" from "past it".
            out = inflater.decompress(data, min(CHUNK, budget - produced + 1))
        except zlib.error:
            break
        produced += len(out)
        if produced > budget:
            raise _OverBudget
        names.feed(out)
    names.feed(b"", final=True)
    return produced
