"""Invoices over the machine API: push one or a batch, list, read, patch, and the conflict queue."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from starlette.responses import Response

from portal.domain import conflicts
from portal.domain import invoices as domain
from portal.domain.timeline import timeline_of
from portal.errors import FieldError, InvalidInput, QuittanceError
from portal.schemas.validation import may_contain_control_characters, validate, validate_each
from portal.web.api.bodies import parse_json, read_bounded, require_content_type
from portal.web.api.context import (
    ApiContext, decode_cursor, encode_cursor, json_response, query_bool, query_datetime, query_limit,
)
from portal.schemas.convert import (
    conflict_output, invoice_body_dict, invoice_input, invoice_output, timeline_output,
)
from portal.web.api.operations import Api, QueryParam
from portal.schemas.models import (
    BatchInvoice, BatchResult, ConflictOut, ConflictPage, InvoiceBatch, InvoiceBatchEnvelope, InvoiceBody, InvoiceDetail, InvoicePage,
    InvoiceWriteResult,
)
from portal.web.errors import problem_for

MERGE_PATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "JSON Merge Patch (RFC 7396) of the invoice body: fields present replace the stored ones, "
                   "null clears them. The result must be a valid invoice body.",
}

LIST_QUERY = (
    QueryParam("customer", {"type": "string", "maxLength": 200}, "Only this customer's invoices (external id)."),
    QueryParam("status", {"type": "string", "enum": ["draft", "open", "paid", "cancelled"]}, "Only this status."),
    QueryParam("updated_since", {"type": "string", "format": "date-time"}, "Changed at or after this time."),
    QueryParam("has_document", {"type": "string", "enum": ["true", "false"]}, "With or without a stored PDF."),
    QueryParam("may_have_documents", {"type": "string", "enum": ["true", "false"]},
               "false lists invoices taken out of the missing-document routine."),
    QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size."),
    QueryParam("cursor", {"type": "string", "maxLength": 100}, "next_cursor of the previous page."),
)


def _detail(conn: sa.Connection, org_id: int, invoice_id: int, base_url: str) -> dict[str, Any]:
    row = domain.get_invoice_by_id(conn, org_id, invoice_id)
    return {**invoice_output(row, base_url),
            "timeline": [timeline_output(t) for t in timeline_of(conn, org_id, invoice_id)],
            "conflicts": [conflict_output(c) for c in conflicts.conflicts_of(conn, org_id, invoice_id)]}


WriteAnswer = tuple[domain.WriteOutcome, dict[str, Any] | None]


def _upsert(conn: sa.Connection, ctx: ApiContext, item: domain.InvoiceInput, raw: dict[str, Any],
            now: Any) -> WriteAnswer:
    outcome = domain.upsert_invoices(conn, ctx.org_id, [item], now, raw_payloads=[raw])[0]
    if outcome.invoice_id is None or outcome.error is not None:
        return outcome, None
    row = domain.get_invoice_by_id(conn, ctx.org_id, outcome.invoice_id)
    return outcome, invoice_output(row, ctx.services.settings.base_url)


async def _answer(ctx: ApiContext, write: Callable[[sa.Connection], WriteAnswer]) -> Response:
    # The write commits even when the outcome is a conflict: the conflict row must stay visible.
    outcome, invoice = await ctx.services.db.write(write)
    if outcome.error is not None:
        raise outcome.error
    return json_response({"result": outcome.result, "invoice": invoice},
                         201 if outcome.result == "created" else 200)


def register(api: Api) -> None:
    def base_url(ctx: ApiContext) -> str:
        return ctx.services.settings.base_url

    @api.operation("PUT", "/invoices/{external_id}", operation_id="putInvoice", tags=("invoices",),
                   summary="Create or replace an invoice", body=("application/json", InvoiceBody), errors=(409,),
                   responses={200: ("Updated, or unchanged (identical body)", InvoiceWriteResult),
                              201: ("Created", InvoiceWriteResult)})
    async def put_invoice(ctx: ApiContext) -> Response:
        """A full replacement, as billing systems resend invoices. An identical body answers "unchanged" and
        writes nothing. A stale `version` gets 409. A resend that would reopen or cancel an invoice paid
        online, or lower its total below what was paid, gets 409 and is kept in the conflict queue."""
        external_id = ctx.external_id()
        require_content_type(ctx.request, "application/json")
        raw = parse_json(await read_bounded(ctx.request, ctx.services.settings.limits.json_bytes))
        item = invoice_input(external_id, validate(InvoiceBody, raw))
        now = ctx.now()
        return await _answer(ctx, lambda conn: _upsert(conn, ctx, item, raw, now))

    @api.operation("PATCH", "/invoices/{external_id}", operation_id="patchInvoice", tags=("invoices",),
                   summary="Change some fields of an invoice", errors=(409,),
                   body=("application/merge-patch+json", MERGE_PATCH_SCHEMA),
                   responses={200: ("Updated or unchanged", InvoiceWriteResult)})
    async def patch_invoice(ctx: ApiContext) -> Response:
        """For example `{"may_have_documents": false}` takes the invoice out of the missing-document listing.
        The same rules as a PUT apply to the patched invoice. application/json is accepted too."""
        external_id = ctx.external_id()
        require_content_type(ctx.request, "application/merge-patch+json", "application/json")
        patch = parse_json(await read_bounded(ctx.request, ctx.services.settings.limits.json_bytes))
        if not isinstance(patch, dict):
            raise InvalidInput("A merge patch is a JSON object.", [FieldError("", "must be an object")])
        now = ctx.now()

        def write(conn: sa.Connection) -> tuple[domain.WriteOutcome, dict[str, Any] | None]:
            # Read, merge and write in one transaction (the row locked on PostgreSQL): no lost update.
            current = domain.get_invoice(conn, ctx.org_id, external_id, lock=True)
            merged = merge_patch(invoice_body_dict(current), patch)
            item = invoice_input(external_id, validate(InvoiceBody, merged))
            return _upsert(conn, ctx, item, patch, now)

        return await _answer(ctx, write)

    @api.operation("GET", "/invoices/{external_id}", operation_id="getInvoice", tags=("invoices",),
                   summary="Read an invoice with its timeline and conflicts",
                   responses={200: ("The invoice", InvoiceDetail)})
    async def get_invoice(ctx: ApiContext) -> Response:
        external_id = ctx.external_id()

        def read(conn: sa.Connection) -> dict[str, Any]:
            row = domain.get_invoice(conn, ctx.org_id, external_id)
            return _detail(conn, ctx.org_id, row.id, base_url(ctx))

        return json_response(await ctx.services.db.read(read))

    @api.operation("GET", "/invoices", operation_id="listInvoices", tags=("invoices",),
                   summary="List invoices, oldest first, a page at a time", query=LIST_QUERY,
                   responses={200: ("A page of invoices", InvoicePage)})
    async def list_invoices(ctx: ApiContext) -> Response:
        """Pages follow creation order, which updates never change, so paging never skips or repeats."""
        request = ctx.request
        status = request.query_params.get("status")
        if status is not None and status not in ("draft", "open", "paid", "cancelled"):
            raise InvalidInput("Bad status.", [FieldError("/status", "draft, open, paid or cancelled")])
        filters = domain.InvoiceFilter(
            customer=request.query_params.get("customer"), status=status,
            updated_since=query_datetime(request, "updated_since"),
            has_document=query_bool(request, "has_document"),
            may_have_documents=query_bool(request, "may_have_documents"))
        limit = query_limit(request)
        after = decode_cursor(request.query_params.get("cursor"))
        rows, last_id = await ctx.services.db.read(
            domain.list_invoices, ctx.org_id, filters, after_id=after, limit=limit)
        return json_response({"items": [invoice_output(row, base_url(ctx)) for row in rows],
                              "next_cursor": encode_cursor(last_id)})

    @api.operation("POST", "/invoices/batch", operation_id="batchInvoices", tags=("invoices",),
                   summary="Create or replace up to 1,000 invoices", body=("application/json", InvoiceBatch),
                   responses={200: ("One result per item, in order", BatchResult)})
    async def batch(ctx: ApiContext) -> Response:
        """Each item carries its `external_id` and follows the PUT rules. A bad item gets its problem in the
        results and does not stop the others."""
        limits = ctx.services.settings.limits
        require_content_type(ctx.request, "application/json")
        body = await read_bounded(ctx.request, limits.json_bytes)
        raws = _batch_items(body, parse_json(body))
        if len(raws) > limits.batch_items:
            raise InvalidInput("Too many invoices.",
                               [FieldError("/invoices", f"at most {limits.batch_items} in one batch")])
        results: list[dict[str, Any] | None] = [None] * len(raws)
        # An item that is the body which made its invoice's current revision is answered "unchanged" from
        # one lookup, before validation and conversion, most of the work (domain.recognise_resends).
        canonical = [domain.canonical_json(raw) if isinstance(raw, dict) else None for raw in raws]
        digests = [domain.body_digest(text) if text is not None and isinstance(raw.get("external_id"), str)
                   else None for raw, text in zip(raws, canonical, strict=True)]
        recognised: list[domain.WriteOutcome | None] = [None] * len(raws)
        if any(digest is not None for digest in digests):
            recognised = await ctx.services.db.read(domain.recognise_resends, ctx.org_id, [
                (raw["external_id"], digest) if digest is not None else None
                for raw, digest in zip(raws, digests, strict=True)])
        accepted: dict[int, domain.InvoiceInput | domain.Resent] = {
            index: domain.Resent(outcome.external_id, digest)
            for index, (outcome, digest) in enumerate(zip(recognised, digests, strict=True))
            if outcome is not None and digest is not None}
        _convert(raws, canonical, [index for index, outcome in enumerate(recognised) if outcome is None], accepted,
                 results)
        outcomes = [outcome for outcome in recognised if outcome is not None]
        if len(outcomes) < len(accepted) or len({outcome.external_id for outcome in outcomes}) < len(outcomes):
            # Something to write, or an invoice recognised twice (the second is a duplicate): the full path.
            outcomes = await _write_batch(ctx, raws, canonical, digests, accepted, results)
        for index, outcome in zip(sorted(accepted), outcomes, strict=True):
            if outcome.error is not None:
                results[index] = _item_error(outcome.external_id, outcome.error, f"/invoices/{index}")
            else:
                results[index] = {"external_id": outcome.external_id, "result": outcome.result,
                                  "revision": outcome.revision}
        tally = Counter(r["result"] for r in results if r)
        return json_response({"created": tally["created"], "updated": tally["updated"],
                              "unchanged": tally["unchanged"], "failed": tally["error"], "results": results})

    @api.operation("GET", "/conflicts", operation_id="listConflicts", tags=("invoices",),
                   summary="Resends that were refused because they would undo a recorded payment",
                   query=(QueryParam("unresolved", {"type": "string", "enum": ["true", "false"]},
                                     "true (default) lists only conflicts nobody resolved yet."),
                          *LIST_QUERY[-2:]),
                   responses={200: ("A page of conflicts", ConflictPage)})
    async def list_conflicts(ctx: ApiContext) -> Response:
        unresolved = query_bool(ctx.request, "unresolved")
        rows, last_id = await ctx.services.db.read(
            conflicts.list_conflicts, ctx.org_id, unresolved_only=unresolved is not False,
            after_id=decode_cursor(ctx.request.query_params.get("cursor")), limit=query_limit(ctx.request))
        return json_response({"items": [conflict_output(r) for r in rows], "next_cursor": encode_cursor(last_id)})

    @api.operation("POST", "/conflicts/{conflict_id}/resolve", operation_id="resolveConflict",
                   tags=("invoices",), summary="Mark a conflict as dealt with",
                   responses={200: ("The resolved conflict", ConflictOut)})
    async def resolve_conflict(ctx: ApiContext) -> Response:
        raw_id = ctx.request.path_params["conflict_id"]
        conflict_id = int(raw_id) if raw_id.isdigit() and len(raw_id) < 18 else -1
        row = await ctx.services.db.write(conflicts.resolve_conflict, ctx.org_id, conflict_id, ctx.now())
        return json_response(conflict_output(row))


async def _write_batch(ctx: ApiContext, raws: list[Any], canonical: list[bytes | None], digests: list[str | None],
                       accepted: dict[int, domain.InvoiceInput | domain.Resent],
                       results: list[dict[str, Any] | None]) -> list[domain.WriteOutcome]:
    """upsert_invoices for the accepted items, in order. If rows of recognised items changed between the
    lookup and the write (rare: nothing was written), those items are converted after all and the batch
    runs again."""
    now = ctx.now()
    while True:
        order = sorted(accepted)
        try:
            return await ctx.services.db.write_bulk(
                domain.upsert_invoices, ctx.org_id, [accepted[i] for i in order], now,
                raw_payloads=[raws[i] for i in order], body_digests=[digests[i] for i in order])
        except domain.ResentChanged as changed:
            again = [i for i in order if accepted[i].external_id in changed.external_ids
                     and isinstance(accepted[i], domain.Resent)]
            for index in again:
                del accepted[index]
            _convert(raws, canonical, again, accepted, results)


def _convert(raws: list[Any], canonical: list[bytes | None], indexes: list[int],
             accepted: dict[int, domain.InvoiceInput | domain.Resent], results: list[dict[str, Any] | None]) -> None:
    """Validate and convert the batch items at `indexes`: into `accepted`, or their problem into `results`.
    `canonical` are the items' encodings where they are objects, which validation can reuse."""
    if not indexes:
        return
    texts = [text for text in (canonical[i] for i in indexes) if text is not None]
    checks = validate_each(BatchInvoice, [raws[i] for i in indexes], "/invoices", indexes,
                           texts if len(texts) == len(indexes) else None)
    for index, checked in zip(indexes, checks, strict=True):
        try:
            if isinstance(checked, InvalidInput):
                raise checked  # handled below like a conversion error, so both get the same paths
            accepted[index] = invoice_input(checked.external_id, checked)
        except InvalidInput as exc:
            prefix = f"/invoices/{index}"
            exc.errors = [e if e.path.startswith(prefix) else e.under(prefix) for e in exc.errors]
            raw = raws[index]
            external_id = raw.get("external_id") if isinstance(raw, dict) else None
            results[index] = _item_error(external_id if isinstance(external_id, str) else None, exc)


def _batch_items(body: bytes, data: Any) -> list[Any]:
    """The items of a batch body. A body of the usual shape (an object whose only member is a non-empty
    `invoices` array) and without control characters is exactly what validating it as InvoiceBatchEnvelope
    accepts, so it is taken as it is: pydantic need not copy a thousand invoices only to say that they are a
    list. Any other body goes through `validate`, which gives the errors."""
    if (isinstance(data, dict) and len(data) == 1 and isinstance(data.get("invoices"), list) and data["invoices"]
            and not may_contain_control_characters(body)):
        return data["invoices"]
    return validate(InvoiceBatchEnvelope, data).invoices


def _item_error(external_id: str | None, error: QuittanceError, prefix: str = "") -> dict[str, Any]:
    problem = problem_for(error)
    if isinstance(error, InvalidInput) and prefix:
        problem["errors"] = [{"path": e["path"] if e["path"].startswith(prefix) else prefix + e["path"],
                              "message": e["message"]} for e in problem.get("errors", [])]
    return {"external_id": external_id, "result": "error", "problem": problem}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result

