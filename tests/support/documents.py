"""Test files made on the spot: small but well-formed PDFs (with the traps a hostile one would carry), zip
archives as zipfile writes them, and raw zips whose headers say whatever a test needs them to say."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


def make_pdf(text: str = "Invoice 2026-0001", *, catalog: bytes = b"", trailer: bytes = b"",
             objects: Sequence[bytes] = (), compress: bool = False, prefix: bytes = b"",
             padding: int = 0) -> bytes:
    """A one-page PDF with a correct cross-reference table. `catalog` and `trailer` add keys to those
    dictionaries; `objects` are more objects (numbered from 6); `padding` adds a comment of that length
    before the first object, to move things across chunk boundaries."""
    content = f"BT /F1 12 Tf 72 770 Td ({text}) Tj ET".encode()
    if compress:
        content = zlib.compress(content)
    stream_dict = b"<< /Length %d%s >>" % (len(content), b" /Filter /FlateDecode" if compress else b"")
    bodies = [
        b"<< /Type /Catalog /Pages 2 0 R " + catalog + b">>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        stream_dict + b"\nstream\n" + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        *objects,
    ]
    out = bytearray(prefix + b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    if padding:
        out += b"%" + b"p" * padding + b"\n"
    offsets = []
    for number, body in enumerate(bodies, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R " % (len(bodies) + 1) + trailer + b">>\n"
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def object_stream(*objects: bytes, first_number: int = 20) -> bytes:
    """A Flate-compressed object stream (PDF 1.5) holding `objects`: where a hostile file hides them."""
    header = b""
    data = b""
    for number, body in enumerate(objects, start=first_number):
        header += b"%d %d " % (number, len(data))
        data += body + b"\n"
    packed = zlib.compress(header + data)
    return (b"<< /Type /ObjStm /N %d /First %d /Length %d /Filter /FlateDecode >>\nstream\n"
            % (len(objects), len(header), len(packed)) + packed + b"\nendstream")


def make_zip(entries: Iterable[tuple[str | zipfile.ZipInfo, bytes]],
             compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """An archive as zipfile writes it (duplicate names allowed: zipfile only warns about them)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return buffer.getvalue()


def rename_entry(archive: bytes, placeholder: str, name: bytes) -> bytes:
    """Give an entry a name zipfile refuses to write (with a NUL, say): write it under a placeholder of the
    same length, then change the bytes in both headers."""
    encoded = placeholder.encode()
    assert len(encoded) == len(name) and archive.count(encoded) == 2
    return archive.replace(encoded, name)


@dataclass
class RawEntry:
    """An entry of `raw_zip`: its compressed bytes and whatever sizes, CRC and flags its headers claim."""

    name: str
    data: bytes
    method: int = zipfile.ZIP_DEFLATED
    size: int = 0
    crc: int = 0
    flags: int = 0
    external_attr: int = 0o100644 << 16
    # The local header offset written in the central directory; None means the entry's own.
    offset: int | None = None


_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")


def raw_zip(entries: Sequence[RawEntry]) -> bytes:
    """A zip written byte by byte, so headers can lie (sizes, CRC) and entries can share data."""
    out = bytearray()
    offsets = []
    for entry in entries:
        offsets.append(len(out))
        name = entry.name.encode()
        out += _LOCAL.pack(b"PK\x03\x04", 20, entry.flags, entry.method, 0, 0x21, entry.crc, len(entry.data),
                           entry.size, len(name), 0) + name + entry.data
    directory_at = len(out)
    for entry, offset in zip(entries, offsets):
        name = entry.name.encode()
        out += _CENTRAL.pack(b"PK\x01\x02", 0x0314, 20, entry.flags, entry.method, 0, 0x21, entry.crc,
                             len(entry.data), entry.size, len(name), 0, 0, 0, 0, entry.external_attr,
                             offset if entry.offset is None else entry.offset) + name
    out += _END.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), len(out) - directory_at, directory_at, 0)
    return bytes(out)


def deflated_zeros(megabytes: int, *, zlib_header: bool = False) -> bytes:
    """Deflate data that inflates to `megabytes` MiB of zeros, made without compressing them all: once the
    window is full of zeros, every further mebibyte compresses to the same bytes, so they are repeated.
    Raw deflate as in a zip, or with `zlib_header` as in a PDF's FlateDecode stream (whose checksum then
    is wrong: only a reader that inflates it all would notice)."""
    chunk = bytes(1024 * 1024)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 15 if zlib_header else -15)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first + repeat * (megabytes - 1) + compressor.flush()


def bomb_entry(name: str, megabytes: int, *, declared: int | None = None) -> RawEntry:
    """An entry that inflates to `megabytes` MiB while its headers admit to `declared` bytes (by default
    the truth, as far as 32 bits go). Its CRC is wrong on purpose: a reader that checks it has read it all."""
    true_size = megabytes * 1024 * 1024
    return RawEntry(name, deflated_zeros(megabytes),
                    size=min(true_size, 0xFFFFFFFE) if declared is None else declared)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its content: compare before and after to see that nothing was written."""
    if not root.exists():
        return {}
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}
