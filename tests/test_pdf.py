"""portal.pdf: what passes as an invoice PDF, and every disguise that must not."""

from __future__ import annotations

import random
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

from portal.pdf import CHUNK, PdfRejected, screen_pdf
from tests.support.documents import deflated_zeros, make_pdf, object_stream

JS_ACTION = b"<< /S /JavaScript /JS (app.alert('paid?')) >>"


def verdict(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "upload.part"
    path.write_bytes(data)
    try:
        screen_pdf(path)
    except PdfRejected as exc:
        return exc.reason
    return "accepted"


@pytest.mark.parametrize("data", [
    make_pdf(),
    make_pdf(compress=True),
    # Readers accept junk before the header within the first 1024 bytes (some mail gateways add some).
    make_pdf(prefix=b"\x00\x01 scanner header\n"),
    # /OpenAction that only sets the first view is what generators write; so is a trailing newline.
    make_pdf(catalog=b"/OpenAction [3 0 R /Fit] ") + b"\r\n",
    # A resource that happens to be called /JS is not a script.
    make_pdf(objects=[b"<< /Keys [/JS /JSON /JS2] /Font << /JS1 5 0 R >> >>"]),
    # Factur-X / ZUGFeRD invoices embed their XML as a file attachment: that must stay allowed.
    make_pdf(catalog=b"/Names << /EmbeddedFiles << /Names [(factur-x.xml) 6 0 R] >> >> ",
             objects=[b"<< /Type /Filespec /F (factur-x.xml) /EF << /F 7 0 R >> >>",
                      b"<< /Type /EmbeddedFile /Length 5 >>\nstream\n<xml>\nendstream"]),
], ids=["plain", "compressed", "prefix", "open-action-view", "resource-named-js", "embedded-xml"])
def test_real_pdfs_are_accepted(tmp_path: Path, data: bytes) -> None:
    assert verdict(tmp_path, data) == "accepted"


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"),
    (b"<!doctype html><html><body><script>alert(1)</script></body></html>", "no %PDF- header"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "no %PDF- header"),
    (b"<html><script>alert(1)</script>" + make_pdf(), "markup"),
    (b"x" * 1100 + make_pdf(), "no %PDF- header"),
    (make_pdf()[:-40], "truncated"),
    (b"%PDF-1.7\n" + b"\x00" * 4000, "truncated"),
    (make_pdf(trailer=b"/Encrypt 6 0 R ", objects=[b"<< /Filter /Standard /V 2 /R 3 >>"]), "encrypted"),
    (make_pdf(catalog=b"/OpenAction 6 0 R ", objects=[JS_ACTION]), "JavaScript"),
    (make_pdf(catalog=b"/Names << /JavaScript 6 0 R >> ", objects=[b"<< /Names [] >>"]), "JavaScript"),
    # The same names as a reader sees them through #-escapes and odd spacing.
    (make_pdf(catalog=b"/OpenAction 6 0 R ", objects=[b"<< /S /J#61va#53cript >>"]), "JavaScript"),
    (make_pdf(catalog=b"/AA << /O 6 0 R >> ", objects=[b"<</JS(app.alert(1))>>"]), "/JS"),
    (make_pdf(catalog=b"/AA << /O 6 0 R >> ", objects=[b"<< /#4aS 9 0 R >>"]), "/JS"),
    (make_pdf(trailer=b"/Encr#79pt 6 0 R ", objects=[b"<< >>"]), "encrypted"),
    (make_pdf(catalog=b"/OpenAction 6 0 R ", objects=[b"<< /S /Launch /F (cmd.exe) >>"]), "program"),
    # Hidden in a compressed object stream, where a plain byte search cannot see it.
    (make_pdf(objects=[object_stream(JS_ACTION)]), "JavaScript"),
], ids=["empty", "html", "svg", "html-polyglot", "header-too-late", "truncated", "no-eof", "encrypted",
        "javascript-action", "javascript-names", "escaped-name", "js-key", "escaped-js-key", "escaped-encrypt",
        "launch", "object-stream"])
def test_disguises_are_refused_with_a_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    assert reason in verdict(tmp_path, data)


@pytest.mark.parametrize("cut", range(1, 12, 2))
def test_names_split_across_read_chunks_are_found(tmp_path: Path, cut: int) -> None:
    # Padding puts the boundary between two reads `cut` bytes into /JavaScript, then into the "stream"
    # keyword of an object stream that hides one.
    def straddling(marker: bytes, **fields: object) -> bytes:
        at = make_pdf(**fields).find(marker)  # type: ignore[arg-type]
        data = make_pdf(padding=CHUNK - cut - at - 2, **fields)  # type: ignore[arg-type]
        assert data.find(marker) + cut == CHUNK
        return data

    plain = straddling(b"/JavaScript", catalog=b"/Names << /JavaScript 6 0 R >> ", objects=[b"<< >>"])
    assert "JavaScript" in verdict(tmp_path, plain)
    hidden = straddling(b"stream\nx", objects=[object_stream(JS_ACTION)])
    assert "JavaScript" in verdict(tmp_path, hidden)


def test_compressed_objects_after_a_large_stream_are_still_inspected(tmp_path: Path) -> None:
    logo = deflated_zeros(3, zlib_header=True)  # a flat-colour image: 3 MB in a few kB
    data = make_pdf(objects=[b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(logo) + logo
                             + b"\nendstream", object_stream(JS_ACTION)])
    assert "JavaScript" in verdict(tmp_path, data)
    assert verdict(tmp_path, data.replace(b"JavaScript", b"Javascrip_")) != "accepted"
    clean = make_pdf(objects=[b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(logo) + logo
                              + b"\nendstream", object_stream(b"<< /Type /Annot >>")])
    assert verdict(tmp_path, clean) == "accepted"


def test_a_compression_bomb_inside_a_pdf_is_refused_quickly(tmp_path: Path) -> None:
    # 256 MB of zeros in 250 kB: inflating it all is what the budget is there to prevent.
    bomb = deflated_zeros(256, zlib_header=True)
    data = make_pdf(objects=[b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(bomb) + bomb
                             + b"\nendstream", object_stream(JS_ACTION)])
    started = time.monotonic()
    assert "too much to inspect" in verdict(tmp_path, data)
    assert time.monotonic() - started < 1


def test_screening_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    # 12 MB of incompressible bytes in one stream and 2 MB of them deflated in another: the raw scan and
    # the inflating both go through the file in chunks.
    noise = random.Random(7).randbytes(12 * 1024 * 1024)
    packed = zlib.compress(noise[: 2 * 1024 * 1024], 1)
    path = tmp_path / "big.pdf"
    path.write_bytes(make_pdf(objects=[
        b"<< /Length %d >>\nstream\n" % len(noise) + noise + b"\nendstream",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream"]))
    del noise, packed
    tracemalloc.start()
    try:
        screen_pdf(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024
