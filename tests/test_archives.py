"""portal.archives: an honest archive reads back byte for byte; bombs, unsafe names and lying headers are
refused, quickly and in bounded memory."""

from __future__ import annotations

import io
import stat
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from portal.archives import ArchiveLimits, ArchiveRefused, EntryUnreadable, SafeArchive, unsafe_name
from tests.support.documents import RawEntry, bomb_entry, make_pdf, make_zip, raw_zip, rename_entry

MB = 1024 * 1024
LIMITS = ArchiveLimits(entries=50, entry_bytes=20 * MB, total_bytes=200 * MB, ratio=100)


def archive_at(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "upload.zip"
    path.write_bytes(data)
    return path


def refusal(tmp_path: Path, data: bytes, limits: ArchiveLimits = LIMITS) -> ArchiveRefused:
    """Open the archive and read every entry; the ArchiveRefused that must come out of it."""
    with pytest.raises(ArchiveRefused) as caught:
        with SafeArchive(archive_at(tmp_path, data), limits) as archive:
            for member in archive.members:
                archive.copy(member, None)
    return caught.value


def test_an_honest_archive_reads_back_byte_for_byte(tmp_path: Path) -> None:
    files = {f"INV-{n}.pdf": make_pdf(f"Invoice {n}") for n in range(3)}
    with SafeArchive(archive_at(tmp_path, make_zip(files.items())), LIMITS) as archive:
        assert [m.name for m in archive.members] == list(files)
        for member in archive.members:
            sink = io.BytesIO()
            assert archive.copy(member, sink) == len(files[member.name])
            assert sink.getvalue() == files[member.name]


@pytest.mark.parametrize("name", [
    "../x.pdf", "../../app/settings.py", "/etc/x.pdf", "/etc/cron.d/x", "C:\\x.pdf", "c:x.pdf", "..\\x.pdf",
    "docs/INV-1.pdf", "docs/", "a\x01b.pdf", "x" * 5000 + ".pdf", "inner.zip", "INV-1.pdf.tar.gz",
])
def test_unsafe_names_are_named(name: str) -> None:
    assert unsafe_name(name) is not None


@pytest.mark.parametrize("name", ["INV-1.pdf", "2026.0001.pdf", "INV:2026@x-y_z.pdf", "..pdf", "facture é.pdf"])
def test_plain_names_are_fine(name: str) -> None:
    assert unsafe_name(name) is None


@pytest.mark.parametrize("name", ["../x.pdf", "/etc/x.pdf", "C:\\x.pdf", "..\\x.pdf", "dir/INV-1.pdf",
                                  "y" * 300 + ".pdf"])
def test_an_unsafe_name_refuses_the_whole_archive_and_is_listed(tmp_path: Path, name: str) -> None:
    refused = refusal(tmp_path, make_zip([("INV-1.pdf", make_pdf()), (name, make_pdf())]))
    assert (refused.status, refused.code) == (422, "unsafe_entries")
    assert [(o.index, o.name) for o in refused.offenders] == [(1, name)]


def test_a_nul_in_a_name_is_seen_although_zipfile_cuts_the_name_there(tmp_path: Path) -> None:
    data = rename_entry(make_zip([("INV-1.pdf", make_pdf()), ("INV-2.pdfXexe", make_pdf())]),
                        "INV-2.pdfXexe", b"INV-2.pdf\x00exe")
    refused = refusal(tmp_path, data)
    assert refused.code == "unsafe_entries"
    assert refused.offenders[0].name == "INV-2.pdf\x00exe"


def test_symbolic_links_and_special_files_are_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("INV-2.pdf")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    fifo = zipfile.ZipInfo("INV-3.pdf")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    refused = refusal(tmp_path, make_zip([("INV-1.pdf", make_pdf()), (link, b"/etc/passwd"), (fifo, b"")]))
    assert [(o.name, o.reason) for o in refused.offenders] == [
        ("INV-2.pdf", "symbolic link"), ("INV-3.pdf", "not a regular file")]


def test_duplicates_and_names_equal_but_for_case_are_refused(tmp_path: Path) -> None:
    refused = refusal(tmp_path, make_zip([("INV-1.pdf", make_pdf("a")), ("INV-1.pdf", make_pdf("b")),
                                          ("INV-2.pdf", make_pdf()), ("inv-2.PDF", make_pdf())]))
    assert [(o.index, o.reason) for o in refused.offenders] == [
        (1, "duplicate name"), (3, "same name as 'INV-2.pdf' but for case")]


def test_nested_archives_are_refused_by_name_and_by_content(tmp_path: Path) -> None:
    inner = make_zip([("INV-1.pdf", make_pdf())])
    by_name = refusal(tmp_path, make_zip([("INV-1.pdf", make_pdf()), ("more.zip", inner)]))
    assert (by_name.status, by_name.code) == (422, "nested_archive")
    by_content = refusal(tmp_path, make_zip([("INV-1.pdf", make_pdf()), ("INV-2.pdf", inner)]))
    assert (by_content.status, by_content.code) == (422, "nested_archive")
    assert by_content.offenders[0].name == "INV-2.pdf"
    gzipped = refusal(tmp_path, make_zip([("INV-3.pdf", b"\x1f\x8b\x08" + bytes(40))]))
    assert gzipped.code == "nested_archive"


def bounded(tmp_path: Path, data: bytes, limits: ArchiveLimits) -> ArchiveRefused:
    """The refusal, checked to come within a second and 4 MB of Python allocations."""
    started = time.monotonic()
    tracemalloc.start()
    try:
        refused = refusal(tmp_path, data, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1
    assert peak < 4 * MB
    return refused


def test_a_zip_bomb_that_admits_its_size_is_refused_before_reading(tmp_path: Path) -> None:
    # 1 MB that inflates to 1 GiB.
    data = raw_zip([RawEntry("INV-1.pdf", b"", method=zipfile.ZIP_STORED), bomb_entry("INV-2.pdf", 1024)])
    assert len(data) < 1.1 * MB
    refused = bounded(tmp_path, data, LIMITS)
    assert (refused.status, refused.code) == (413, "entry_too_large")
    assert [o.name for o in refused.offenders] == ["INV-2.pdf"]


def test_a_bomb_within_the_size_caps_trips_the_ratio_while_reading(tmp_path: Path) -> None:
    # 20 MiB of zeros, within the 20 MiB an entry may have, but 1,000 times its compressed size.
    refused = bounded(tmp_path, raw_zip([bomb_entry("INV-1.pdf", 20)]), LIMITS)
    assert (refused.status, refused.code) == (413, "compression_ratio")
    assert "100 times its compressed size" in refused.offenders[0].reason


def test_a_bomb_that_understates_its_size_is_not_inflated_past_it(tmp_path: Path) -> None:
    # Its headers say 1,000 bytes; the data would make 1 GiB. Even with no ratio to stop it, reading ends
    # at the stated size and the wrong checksum refuses the archive.
    generous = ArchiveLimits(50, 2000 * MB, 4000 * MB, 1_000_000)
    refused = bounded(tmp_path, raw_zip([bomb_entry("INV-1.pdf", 1024, declared=1000)]), generous)
    assert (refused.status, refused.code) == (422, "damaged_archive")


def test_many_small_bombs_trip_the_ratio_of_the_whole_archive(tmp_path: Path) -> None:
    # Each entry stays under its own slack (60 kB of zeros in a few hundred bytes); together they do not.
    entries = [(f"INV-{n}.pdf", bytes(60 * 1024)) for n in range(200)]
    refused = refusal(tmp_path, make_zip(entries), ArchiveLimits(500, 20 * MB, 200 * MB, 100))
    assert (refused.status, refused.code) == (413, "compression_ratio")
    assert "archive" in refused.offenders[0].reason


def test_entries_that_share_their_data_are_refused(tmp_path: Path) -> None:
    shared = RawEntry("INV-1.pdf", zlib.compress(make_pdf())[2:-4], size=len(make_pdf()))
    refused = refusal(tmp_path, raw_zip([shared, RawEntry("INV-2.pdf", shared.data, size=shared.size,
                                                          offset=0)]))
    assert (refused.status, refused.code) == (422, "overlapping_entries")


def test_too_many_entries_are_refused_before_zipfile_reads_the_directory(tmp_path: Path) -> None:
    data = make_zip([(f"INV-{n}.pdf", b"") for n in range(11)])
    refused = refusal(tmp_path, data, ArchiveLimits(10, 20 * MB, 200 * MB, 100))
    assert (refused.status, refused.code) == (413, "too_many_entries")
    assert "11 entries" in refused.detail


def test_a_damaged_entry_refuses_the_archive(tmp_path: Path) -> None:
    pdf = make_pdf()
    data = raw_zip([RawEntry("INV-1.pdf", pdf, method=zipfile.ZIP_STORED, size=len(pdf), crc=1)])
    refused = refusal(tmp_path, data)
    assert (refused.status, refused.code) == (422, "damaged_archive")


@pytest.mark.parametrize("data", [b"", b"%PDF-1.7 not a zip", make_pdf()])
def test_what_is_not_a_zip_is_refused(tmp_path: Path, data: bytes) -> None:
    assert (refusal(tmp_path, data).status, refusal(tmp_path, data).code) == (422, "not_a_zip")


def test_an_empty_archive_is_refused(tmp_path: Path) -> None:
    assert refusal(tmp_path, make_zip([])).code == "empty_archive"


def test_an_entry_that_cannot_be_read_concerns_that_entry_only(tmp_path: Path) -> None:
    pdf = make_pdf()
    data = raw_zip([
        RawEntry("INV-1.pdf", pdf, method=zipfile.ZIP_STORED, size=len(pdf), crc=zlib.crc32(pdf)),
        RawEntry("INV-2.pdf", b"\x00" * 40, method=zipfile.ZIP_STORED, size=28, flags=0x1),  # encrypted
        RawEntry("INV-3.pdf", b"\x00" * 40, method=97, size=40),  # a method nobody implements
    ])
    with SafeArchive(archive_at(tmp_path, data), LIMITS) as archive:
        first, encrypted, unknown = archive.members
        sink = io.BytesIO()
        archive.copy(first, sink)
        assert sink.getvalue() == pdf
        with pytest.raises(EntryUnreadable, match="encrypted"):
            archive.copy(encrypted, None)
        with pytest.raises(EntryUnreadable, match="compression"):
            archive.copy(unknown, None)
