"""Invoice PDFs over the machine API: upload or replace one, download it, import an archive of them.

Bodies are streamed to a temporary file under the body limit (never held in memory), screened there
(`portal.pdf`, `portal.archives`), and only then stored and attached (`portal.domain.documents`). The slow
parts, screening and inflating, run in worker threads so the event loop keeps serving other requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from portal.archives import ArchiveLimits, ArchiveRefused, SafeArchive
from portal.domain import documents
from portal.domain.invoices import get_invoice, get_invoice_by_id
from portal.errors import FieldError, InvalidInput, NotFound
from portal.pdf import PdfRejected, screen_pdf
from portal.web.api.bodies import require_content_type, spool_to_file
from portal.web.api.context import ApiContext, json_response
from portal.schemas.convert import invoice_output
from portal.web.api.operations import Api
from portal.web.api.problems import problem_body, problem_response
from portal.schemas.models import ArchiveResult, InvoiceWriteResult
from portal.web.downloads import attachment

BINARY: dict[str, Any] = {"type": "string", "format": "binary"}
ZIP_TYPES = ("application/zip", "application/x-zip-compressed")
# What an archive entry reports for its attach outcome: a new or replaced document is "stored".
ENTRY_RESULTS: dict[documents.AttachResult, documents.EntryResult] = {
    "created": "stored", "updated": "stored", "unchanged": "unchanged", "unknown_invoice": "unknown_invoice"}


def register(api: Api) -> None:
    @api.operation("PUT", "/invoices/{external_id}/document", operation_id="putInvoiceDocument",
                   tags=("documents",), summary="Upload or replace the invoice's PDF",
                   body=("application/pdf", BINARY),
                   responses={200: ("Replaced, or unchanged (the same bytes)", InvoiceWriteResult),
                              201: ("The invoice's first PDF", InvoiceWriteResult)})
    async def put_document(ctx: ApiContext) -> Response:
        """The body is the PDF itself. It is checked to be a PDF by its bytes (not its name or type):
        encrypted PDFs and PDFs with JavaScript are refused with 422. A new PDF replaces the previous one
        atomically and raises the invoice's `revision` by one; the same bytes again change nothing."""
        external_id = ctx.external_id()
        require_content_type(ctx.request, "application/pdf")
        services = ctx.services
        # Before reading a byte: an unknown invoice (or another organization's) costs no upload.
        await services.db.read(get_invoice, ctx.org_id, external_id)
        store = services.documents
        path = await spool_to_file(ctx.request, services.settings.limits.pdf_bytes, store)
        try:
            try:
                await run_in_threadpool(screen_pdf, path)
            except PdfRejected as exc:
                raise InvalidInput(f"The body is not an acceptable PDF: {exc.reason}.",
                                   [FieldError("", exc.reason)]) from exc
            stored = await run_in_threadpool(store.store_file, path)
        finally:
            path.unlink(missing_ok=True)
        now = ctx.now()

        def write(conn: sa.Connection) -> tuple[str, dict[str, Any]]:
            outcome = documents.attach_document(conn, ctx.org_id, external_id, stored, now)
            assert outcome.invoice_id is not None
            row = get_invoice_by_id(conn, ctx.org_id, outcome.invoice_id)
            return outcome.result, invoice_output(row, services.settings.base_url)

        result, invoice = await services.db.write(write)
        return json_response({"result": result, "invoice": invoice}, 201 if result == "created" else 200)

    @api.operation("GET", "/invoices/{external_id}/document", operation_id="getInvoiceDocument",
                   tags=("documents",), summary="Download the invoice's PDF",
                   responses={200: ("The PDF, as an attachment", None, "application/pdf")})
    async def get_document(ctx: ApiContext) -> Response:
        """404 when the invoice has no PDF."""
        external_id = ctx.external_id()
        document = await ctx.services.db.read(documents.document_of, ctx.org_id, external_id)
        store = ctx.services.documents
        if not await run_in_threadpool(store.exists, document.sha256):
            raise NotFound(f"the document of invoice {external_id!r} is missing from storage")
        # Sanitized name, attachment, nosniff, no-store, CSP sandbox: the same as the debtor portal serves.
        return attachment(store.iter_bytes(document.sha256), name=document.label, extension="pdf",
                          media_type="application/pdf", size=document.size)

    @api.operation("POST", "/invoice-document-archives", operation_id="importInvoiceDocuments",
                   tags=("documents",), summary="Upload many invoice PDFs as one zip archive",
                   body=("application/zip", BINARY),
                   responses={200: ("One result per entry, in the archive's order", ArchiveResult)})
    async def post_archive(ctx: ApiContext) -> Response:
        """Each entry is a PDF named `<invoice external id>.pdf`, at the top of the archive. Entries are
        judged one by one: an unknown invoice, a file that is not an acceptable PDF or a name that is not
        an invoice's is reported in its result and does not stop the others; the rest are attached in one
        transaction. Sending the archive again replaces the PDFs (the same bytes: "unchanged").

        The whole archive is refused, and nothing of it kept, when it looks like a zip bomb or is damaged
        (413: too many entries, an entry or the total inflating past the limits or too many times its
        compressed size; 422: nested archives, overlapping entries, a damaged archive) or when a name is
        unsafe (422: absolute, `..`, backslash, drive letter, NUL or control character, folder, symbolic
        link, over 255 bytes, duplicate or same but for case). The problem's `errors` lists the entries at
        fault as `/entries/{index}` in the archive's order."""
        require_content_type(ctx.request, *ZIP_TYPES)
        services = ctx.services
        limits = services.settings.limits
        store = services.documents
        path = await spool_to_file(ctx.request, limits.archive_bytes, store)
        try:
            staged = await _stage(ctx, path)
        except ArchiveRefused as exc:
            return problem_response(problem_body(
                exc.status, "archive-refused", "Archive refused", exc.detail, code=exc.code,
                errors=[FieldError(f"/entries/{o.index}", f"{o.name!r}: {o.reason}") for o in exc.offenders]))
        finally:
            path.unlink(missing_ok=True)
        try:
            files = await run_in_threadpool(documents.store_staged, store, staged)
        finally:
            documents.discard(staged)
        now = ctx.now()
        outcomes = iter(await services.db.write_bulk(
            documents.attach_documents, ctx.org_id, files, now, source="archive") if files else [])
        entries = []
        for entry in staged:
            result, detail = entry.result, entry.detail
            if result == "stored":
                outcome = next(outcomes).result
                result = ENTRY_RESULTS[outcome]
                if result == "unknown_invoice":
                    detail = "the invoice was removed while the archive was read"
            entries.append({"name": entry.name, "result": result, "invoice": entry.external_id,
                            "detail": detail})
        return json_response({
            "stored": sum(1 for e in entries if e["result"] == "stored"),
            "unchanged": sum(1 for e in entries if e["result"] == "unchanged"),
            "failed": sum(1 for e in entries if e["result"] not in ("stored", "unchanged")),
            "entries": entries})


async def _stage(ctx: ApiContext, path: Path) -> list[documents.StagedEntry]:
    """Open and vet the archive, look up the invoices its names point at, then read and screen it all."""
    limits = ArchiveLimits.from_settings(ctx.services.settings.limits)
    archive = await run_in_threadpool(SafeArchive, path, limits)
    try:
        known = await ctx.services.db.read(documents.existing_invoices, ctx.org_id,
                                           documents.entry_invoices(archive))
        return await run_in_threadpool(documents.stage_archive, archive, known, ctx.services.documents)
    finally:
        archive.close()
