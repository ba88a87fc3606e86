"""An invoice's PDF: attach a stored file to an invoice, find it again, and import an archive of them.

The bytes live in the content-addressed DocumentStore (`portal.storage`); the invoice row holds a pointer
(`document_sha256`, `document_size`, `document_updated_at`). Replacing a PDF stores the new file first and
then swaps the pointer in the invoice's own transaction, with a "document_attached" timeline entry: a crash
before the commit leaves the old pointer (the new file is an orphan, swept later), after it the new one.
Attaching a different file is a change of the invoice as the API shows it, so its `revision` goes up by one
and `updated_at` moves (a billing system syncing with `updated_since` sees it); attaching the same bytes
again changes nothing and writes nothing. The invoice's content hash is untouched: resending the invoice's
body is still "unchanged".

An archive is imported in two phases so that a refused archive leaves no trace: every entry is read and
screened into temporary files first (any whole-archive violation, see `portal.archives`, discards them
all), and only then are the accepted files stored and attached, all in one transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from portal.archives import EntryUnreadable, Member, SafeArchive
from portal.db.invoices import invoice_timeline, invoices
from portal.errors import NotFound
from portal.pdf import PdfRejected, screen_pdf
from portal.storage import DocumentStore, StoredFile

# `<external id>.pdf`: the external id alphabet less "/", which a flat archive cannot hold (such invoices
# take their PDF through PUT /invoices/{external_id}/document).
_ENTRY_NAME = re.compile(r"(?P<external_id>[A-Za-z0-9._:@-]{1,200})\.pdf", re.IGNORECASE)

AttachResult = Literal["created", "updated", "unchanged", "unknown_invoice"]
EntryResult = Literal["stored", "unchanged", "unknown_invoice", "not_a_pdf", "rejected"]


@dataclass(frozen=True)
class AttachOutcome:
    external_id: str
    result: AttachResult
    invoice_id: int | None = None


@dataclass(frozen=True)
class Document:
    """Where an invoice's PDF is, and what to call it when it is downloaded."""

    sha256: str
    size: int
    label: str


def attach_documents(conn: sa.Connection, organization_id: int, files: Sequence[tuple[str, StoredFile]],
                     now: dt.datetime, *, source: Literal["upload", "archive"]) -> list[AttachOutcome]:
    """Point each named invoice at its stored file; one outcome per item, in order. "created" is an invoice's
    first document, "updated" a replacement, "unchanged" the same bytes again."""
    wanted = {external_id for external_id, _ in files}
    query = (
        sa.select(invoices.c.id, invoices.c.external_id, invoices.c.document_sha256, invoices.c.revision)
        .where(invoices.c.organization_id == organization_id, invoices.c.external_id.in_(wanted))
        .order_by(invoices.c.id)
    )
    if conn.dialect.name == "postgresql":
        # Lock in id order: two imports touching the same invoices queue up instead of deadlocking.
        query = query.with_for_update()
    current = {row.external_id: row._asdict() for row in conn.execute(query)}
    outcomes: list[AttachOutcome] = []
    updates: dict[int, dict[str, Any]] = {}
    timeline: list[dict[str, Any]] = []
    for external_id, stored in files:
        row = current.get(external_id)
        if row is None:
            outcomes.append(AttachOutcome(external_id, "unknown_invoice"))
            continue
        previous = row["document_sha256"]
        if previous == stored.sha256:
            outcomes.append(AttachOutcome(external_id, "unchanged", row["id"]))
            continue
        row["document_sha256"] = stored.sha256
        row["revision"] += 1
        updates[row["id"]] = {"_id": row["id"], "document_sha256": stored.sha256, "document_size": stored.size,
                              "document_updated_at": now, "revision": row["revision"], "updated_at": now}
        timeline.append({"organization_id": organization_id, "invoice_id": row["id"], "occurred_at": now,
                         "kind": "document_attached",
                         "detail": {"sha256": stored.sha256, "size": stored.size, "previous_sha256": previous,
                                    "source": source, "revision": row["revision"]}})
        outcomes.append(AttachOutcome(external_id, "updated" if previous else "created", row["id"]))
    if updates:
        statement = invoices.update().where(invoices.c.id == sa.bindparam("_id")).values(
            {column: sa.bindparam(column) for column in
             ("document_sha256", "document_size", "document_updated_at", "revision", "updated_at")})
        conn.execute(statement, list(updates.values()))
        conn.execute(invoice_timeline.insert(), timeline)
    return outcomes


def attach_document(conn: sa.Connection, organization_id: int, external_id: str, stored: StoredFile,
                    now: dt.datetime) -> AttachOutcome:
    """One uploaded PDF; NotFound when the invoice does not exist in this organization."""
    outcome = attach_documents(conn, organization_id, [(external_id, stored)], now, source="upload")[0]
    if outcome.result == "unknown_invoice":
        raise NotFound(f"no invoice {external_id!r}")
    return outcome


def existing_invoices(conn: sa.Connection, organization_id: int, external_ids: Collection[str]) -> set[str]:
    if not external_ids:
        return set()
    return set(conn.execute(sa.select(invoices.c.external_id).where(
        invoices.c.organization_id == organization_id, invoices.c.external_id.in_(set(external_ids)))).scalars())


def document_of(conn: sa.Connection, organization_id: int, external_id: str) -> Document:
    """The invoice's PDF; NotFound when there is no such invoice or it has no PDF (the same answer)."""
    row = conn.execute(
        sa.select(invoices.c.number, invoices.c.document_sha256, invoices.c.document_size)
        .where(invoices.c.organization_id == organization_id, invoices.c.external_id == external_id)
    ).first()
    if row is None or row.document_sha256 is None:
        raise NotFound(f"no document for invoice {external_id!r}")
    return Document(row.document_sha256, row.document_size, row.number or external_id)


def external_id_of_entry(name: str) -> str | None:
    """`INV-1.pdf` -> "INV-1"; None when the name is not `<external id>.pdf`."""
    match = _ENTRY_NAME.fullmatch(name)
    return match.group("external_id") if match else None


@dataclass
class StagedEntry:
    """One archive entry after reading: its result so far, and its screened file while not yet stored."""

    name: str
    result: EntryResult
    external_id: str | None = None
    detail: str | None = None
    path: Path | None = None


def entry_invoices(archive: SafeArchive) -> set[str]:
    """The external ids the archive's entry names point at: what to look up before reading it."""
    return {external_id for member in archive.members
            if (external_id := external_id_of_entry(member.name)) is not None}


def stage_archive(archive: SafeArchive, known: Collection[str], store: DocumentStore) -> list[StagedEntry]:
    """Read every entry under the archive's caps; screen the PDFs of known invoices into temporary files.

    Every entry is read, even those that will not be kept, so that a bomb is found wherever it hides. On
    ArchiveRefused every temporary file is removed before the error goes on."""
    staged: list[StagedEntry] = []
    try:
        for member in archive.members:
            staged.append(_stage(archive, member, known, store))
    except BaseException:
        discard(staged)
        raise
    return staged


def _stage(archive: SafeArchive, member: Member, known: Collection[str], store: DocumentStore) -> StagedEntry:
    external_id = external_id_of_entry(member.name)
    entry = StagedEntry(member.name, "rejected", external_id)
    keep = external_id is not None and external_id in known
    sink, path = store.temporary_file() if keep else (None, None)
    try:
        try:
            archive.copy(member, sink)
        finally:
            if sink is not None:
                sink.close()
    except EntryUnreadable as exc:
        entry.detail = exc.reason
    except BaseException:
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    else:
        if external_id is None:
            entry.detail = "the name must be <invoice external id>.pdf"
        elif not keep:
            entry.result, entry.detail = "unknown_invoice", f"no invoice {external_id!r} in this organization"
        else:
            assert path is not None
            try:
                screen_pdf(path)
            except PdfRejected as exc:
                entry.result, entry.detail = "not_a_pdf", exc.reason
            else:
                entry.result, entry.path = "stored", path
                return entry
    if path is not None:
        path.unlink(missing_ok=True)
    return entry


def store_staged(store: DocumentStore, staged: Sequence[StagedEntry]) -> list[tuple[str, StoredFile]]:
    """Move the screened files into the store (each consumed), for `attach_documents`."""
    files = []
    for entry in staged:
        if entry.path is not None and entry.external_id is not None:
            files.append((entry.external_id, store.store_file(entry.path)))
            entry.path = None
    return files


def discard(staged: Sequence[StagedEntry]) -> None:
    for entry in staged:
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)
            entry.path = None
