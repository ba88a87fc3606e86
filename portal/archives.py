"""Reading an uploaded zip archive without trusting anything it says about itself.

Threats, and what stops each (see also Python's zipfile "Decompression pitfalls"):

- Zip bombs (a small archive that inflates to gigabytes, or holds 100,000 entries): the entry count is read
  from the end record before zipfile parses the central directory; then every byte of every entry is
  counted as it is inflated, against a cap per entry, a cap for the whole archive and a compression ratio
  (per entry, and for the archive against its real size on disk). `ZipInfo.file_size` is only used to
  refuse early an entry that admits being too large, never as the bound.
- Nested archives (a zip in the zip multiplies every cap): refused by name and by their first bytes.
- Zip-Slip: an entry's name is never used as a path; still, names that would be unsafe as paths (absolute,
  `..`, backslashes, drive letters, NUL or control characters, folders, names over 255 bytes) and entries
  that are symbolic links or other non-regular files are refused, as are duplicates and look-alikes (names
  equal once case and Unicode compatibility forms are folded).

Every one of these refuses the whole archive (`ArchiveRefused`): an archive that carries one is broken or
hostile, and importing the rest of it would leave the sender guessing what happened. `EntryUnreadable` is
the exception that concerns one entry only (an encrypted entry, an unknown compression method): nothing
of it was inflated, so it says nothing about the rest.
"""

from __future__ import annotations

import stat
import struct
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from portal.settings import Limits

CHUNK = 64 * 1024
# Slack on top of the compression ratio: tiny entries compress far better than their size suggests.
ENTRY_SLACK = 64 * 1024
ARCHIVE_SLACK = 1024 * 1024
# A central directory record is 46 bytes plus name, extra field and comment; a real one with a 255-byte
# name and the usual extras fits in 512. More per permitted entry means entries we would refuse anyway.
DIRECTORY_BYTES_PER_ENTRY = 512
MAX_NAME_BYTES = 255
READABLE_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}

NESTED_SUFFIXES = (".zip", ".jar", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".zst", ".7z", ".rar", ".cab", ".iso")
NESTED_MAGIC = (
    b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08",  # zip (a file, an empty one, a spanned one)
    b"\x1f\x8b",  # gzip
    b"BZh",  # bzip2
    b"\xfd7zXZ\x00",  # xz
    b"\x28\xb5\x2f\xfd",  # zstandard
    b"7z\xbc\xaf\x27\x1c",  # 7-Zip
    b"Rar!\x1a\x07",  # RAR
    b"MSCF",  # cabinet
)
TAR_MAGIC_OFFSET = 257
# What zipfile raises on bad data: a wrong CRC or local header, truncated or corrupt compressed data.
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)


@dataclass(frozen=True)
class ArchiveLimits:
    entries: int
    entry_bytes: int
    total_bytes: int
    ratio: int

    @classmethod
    def from_settings(cls, limits: Limits) -> ArchiveLimits:
        return cls(entries=limits.archive_entries, entry_bytes=limits.pdf_bytes,
                   total_bytes=limits.archive_uncompressed_bytes, ratio=limits.archive_ratio)


@dataclass(frozen=True)
class Offender:
    """One entry that made the archive unacceptable; `index` is its place in the central directory."""

    index: int
    name: str
    reason: str


class ArchiveRefused(Exception):
    """The whole archive is refused and nothing of it may be kept.

    `status` is 413 for size and bomb indicators, 422 for a damaged or unsafe archive; `code` is stable
    for machines; `offenders` lists the entries at fault (empty when the archive as a whole is)."""

    def __init__(self, status: Literal[413, 422], code: str, detail: str,
                 offenders: list[Offender] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.offenders = offenders or []


class EntryUnreadable(Exception):
    """This entry cannot be read (encrypted, unknown compression); the rest of the archive is unaffected."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Member:
    index: int
    name: str
    info: zipfile.ZipInfo


class SafeArchive:
    """An opened, vetted archive: constructing it checks the end record, the count and every name; `copy`
    inflates one entry under the caps. Close it (or use `with`) to release the file."""

    def __init__(self, path: Path, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.size = path.stat().st_size
        self.total = 0
        with path.open("rb") as file:
            _check_end_record(file, self.size, limits)
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
            raise ArchiveRefused(422, "not_a_zip", f"The body is not a readable zip archive ({exc}).") from exc
        try:
            self.members = self._vet(self._zip.infolist())
        except BaseException:
            self._zip.close()
            raise

    def __enter__(self) -> SafeArchive:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def _vet(self, infos: list[zipfile.ZipInfo]) -> list[Member]:
        limits = self.limits
        if len(infos) > limits.entries:
            raise ArchiveRefused(413, "too_many_entries",
                                 f"The archive holds {len(infos)} entries; at most {limits.entries} are accepted.")
        if not infos:
            raise ArchiveRefused(422, "empty_archive", "The archive holds no files.")
        offenders: list[Offender] = []
        seen: dict[str, int] = {}
        for index, info in enumerate(infos):
            # orig_filename: zipfile cuts `filename` at the first NUL, hiding the very trick to look for.
            name = info.orig_filename
            reason = unsafe_name(name) or _unsafe_kind(info)
            folded = unicodedata.normalize("NFKC", name).casefold()
            if reason is None and folded in seen:
                first = infos[seen[folded]].orig_filename
                reason = "duplicate name" if first == name else f"same name as {first!r} but for case"
            seen.setdefault(folded, index)
            if reason is not None:
                offenders.append(Offender(index, name, reason))
        if offenders:
            nested = [o for o in offenders if o.reason.startswith("nested archive")]
            code, what = ("nested_archive", "nests archives") if len(nested) == len(offenders) else (
                "unsafe_entries", "has entries that are unsafe")
            raise ArchiveRefused(422, code, f"The archive {what}; nothing was imported.", offenders)
        overlapping = _overlapping(infos)
        if overlapping:
            raise ArchiveRefused(422, "overlapping_entries",
                                 "Entries of the archive share their data (a zip bomb's trick); nothing was "
                                 "imported.", overlapping)
        # Sizes the archive admits to are enough to refuse it early; they never bound what is read.
        too_big = [Offender(i, info.orig_filename, f"declares {info.file_size} bytes")
                   for i, info in enumerate(infos) if info.file_size > limits.entry_bytes]
        if too_big:
            raise ArchiveRefused(413, "entry_too_large",
                                 f"An entry may inflate to at most {limits.entry_bytes} bytes.", too_big)
        if sum(info.file_size for info in infos) > limits.total_bytes:
            raise ArchiveRefused(413, "archive_too_large",
                                 f"The entries may inflate to at most {limits.total_bytes} bytes in all.")
        return [Member(index, info.orig_filename, info) for index, info in enumerate(infos)]

    def copy(self, member: Member, sink: BinaryIO | None) -> int:
        """Inflate `member` into `sink` (or only count it, when None) and return its size. Raises
        ArchiveRefused when a cap trips, or when the entry is itself an archive; EntryUnreadable when it
        cannot be read at all."""
        info = member.info
        if info.flag_bits & 0x1:
            raise EntryUnreadable("the entry is encrypted")
        if info.compress_type not in READABLE_METHODS:
            raise EntryUnreadable(f"unsupported compression method {info.compress_type}")
        limits = self.limits
        by_ratio = limits.ratio * max(min(info.compress_size, self.size), 1) + ENTRY_SLACK
        archive_by_ratio = limits.ratio * self.size + ARCHIVE_SLACK
        size = 0
        head = b""
        try:
            entry = self._zip.open(info)
        except (NotImplementedError, RuntimeError) as exc:  # zipfile: compression it lacks, password required
            raise EntryUnreadable(str(exc)) from exc
        except _DAMAGE as exc:
            raise self._damaged(member, exc) from exc
        with entry:
            while True:
                try:
                    chunk = entry.read(CHUNK)
                except _DAMAGE as exc:
                    raise self._damaged(member, exc) from exc
                if not chunk:
                    break
                if len(head) < TAR_MAGIC_OFFSET + 8:
                    head += chunk[:TAR_MAGIC_OFFSET + 8 - len(head)]
                    _refuse_nested(member, head)
                size += len(chunk)
                self.total += len(chunk)
                if size > limits.entry_bytes:
                    raise self._bomb(member, "entry_too_large", f"inflates past {limits.entry_bytes} bytes")
                if size > by_ratio:
                    raise self._bomb(member, "compression_ratio",
                                     f"inflates more than {limits.ratio} times its compressed size")
                if self.total > limits.total_bytes:
                    raise self._bomb(member, "archive_too_large",
                                     f"brings the archive past {limits.total_bytes} inflated bytes")
                if self.total > archive_by_ratio:
                    raise self._bomb(member, "compression_ratio",
                                     f"brings the archive past {limits.ratio} times its size")
                if sink is not None:
                    sink.write(chunk)
        return size

    def _damaged(self, member: Member, exc: BaseException) -> ArchiveRefused:
        return ArchiveRefused(422, "damaged_archive", "The archive is damaged; nothing was imported.",
                              [Offender(member.index, member.name, str(exc) or type(exc).__name__)])

    def _bomb(self, member: Member, code: str, reason: str) -> ArchiveRefused:
        return ArchiveRefused(413, code, "The archive inflates beyond what is accepted; nothing was imported.",
                              [Offender(member.index, member.name, reason)])


def unsafe_name(name: str) -> str | None:
    """Why `name` would be unsafe as a path (or as anything but a flat file name); None when it is not."""
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "NUL or control character in the name"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"name longer than {MAX_NAME_BYTES} bytes"
    if not name:
        return "empty name"
    if name.startswith(("/", "\\")):
        return "absolute path"
    if len(name) >= 2 and name[1] == ":" and name[0].isascii() and name[0].isalpha():
        return "drive letter"
    if "\\" in name:
        return "backslash in the name"
    if ".." in name.split("/"):
        return "climbs out of its folder (..)"
    if "/" in name:
        return "folder in the name (put the files at the top of the archive)"
    if name.lower().endswith(NESTED_SUFFIXES):
        return "nested archive"
    return None


def _unsafe_kind(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode) or info.external_attr & 0x10:
        return "folder entry"
    if kind not in (0, stat.S_IFREG):
        return "not a regular file"
    return None


def _overlapping(infos: list[zipfile.ZipInfo]) -> list[Offender]:
    """Entries whose data starts inside the previous entry's (the "overlapping files" zip bomb). Each local
    header takes at least 30 bytes before the compressed data, so this bound never flags an honest archive."""
    order = sorted(range(len(infos)), key=lambda i: infos[i].header_offset)
    offenders = []
    for previous, current in zip(order, order[1:]):
        before = infos[previous]
        end = before.header_offset + 30 + before.compress_size
        if infos[current].header_offset < end:
            offenders.append(Offender(current, infos[current].orig_filename,
                                      f"its data overlaps that of {before.orig_filename!r}"))
    return offenders


def _refuse_nested(member: Member, head: bytes) -> None:
    tar = head[TAR_MAGIC_OFFSET:TAR_MAGIC_OFFSET + 5] == b"ustar"
    if tar or head.startswith(NESTED_MAGIC):
        raise ArchiveRefused(422, "nested_archive", "The archive nests archives; nothing was imported.",
                             [Offender(member.index, member.name, "nested archive (by its content)")])


_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


def _check_end_record(file: BinaryIO, size: int, limits: ArchiveLimits) -> None:
    """Refuse an archive whose end record announces more entries (or a bigger central directory) than we
    accept, before zipfile builds an object per entry."""
    tail_size = min(size, _EOCD.size + 0xFFFF)
    file.seek(size - tail_size)
    tail = file.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise ArchiveRefused(422, "not_a_zip", "The body is not a zip archive (no end of central directory).")
    _, _, _, _, entries, directory_size, _, _ = _EOCD.unpack_from(tail, at)
    if entries == 0xFFFF or directory_size == 0xFFFFFFFF:
        locator_at = size - tail_size + at - _ZIP64_LOCATOR.size
        if locator_at >= 0:
            file.seek(locator_at)
            signature, _, record_at, _ = _ZIP64_LOCATOR.unpack(file.read(_ZIP64_LOCATOR.size))
            if signature == b"PK\x06\x07" and record_at + _ZIP64_EOCD.size <= size:
                file.seek(record_at)
                record = _ZIP64_EOCD.unpack(file.read(_ZIP64_EOCD.size))
                if record[0] == b"PK\x06\x06":
                    entries, directory_size = record[7], record[8]
    if entries > limits.entries or directory_size > limits.entries * DIRECTORY_BYTES_PER_ENTRY:
        raise ArchiveRefused(413, "too_many_entries",
                             f"The archive announces {entries} entries ({directory_size} bytes of directory); "
                             f"at most {limits.entries} are accepted.")
