"""An invoice's life over the API: activate, part-activate, cancel, extend the due date."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from starlette.responses import Response

from portal.domain import invoices as domain
from portal.domain import lifecycle
from portal.web.api.bodies import read_model
from portal.web.api.context import ApiContext, json_response
from portal.schemas.convert import invoice_output
from portal.web.api.operations import Api
from portal.schemas.models import DueDateExtension, InvoiceOut, PartActivation, PartActivationResult


def register(api: Api) -> None:
    async def run(ctx: ApiContext, step: Callable[[sa.Connection], int]) -> Response:
        def write(conn: sa.Connection) -> dict[str, Any]:
            invoice_id = step(conn)
            return invoice_output(domain.get_invoice_by_id(conn, ctx.org_id, invoice_id),
                                  ctx.services.settings.base_url)
        return json_response(await ctx.services.db.write(write))

    common: dict[str, Any] = {"tags": ("lifecycle",), "errors": (409,)}

    @api.operation("POST", "/invoices/{external_id}/activate", operation_id="activateInvoice",
                   summary="Make a draft visible and payable", responses={200: ("The open invoice", InvoiceOut)},
                   **common)
    async def activate(ctx: ApiContext) -> Response:
        """The due date starts counting today from the payment terms, and an invoice without a number gets the
        next one of the organization's gapless sequence."""
        external_id, now = ctx.external_id(), ctx.now()
        return await run(ctx, lambda conn: lifecycle.activate(conn, ctx.org_id, external_id, now))

    @api.operation("POST", "/invoices/{external_id}/part-activate", operation_id="partActivateInvoice",
                   summary="Activate some lines of a draft as an invoice of their own",
                   body=("application/json", PartActivation),
                   responses={200: ("The new invoice and what is left of the draft", PartActivationResult)},
                   **common)
    async def part_activate(ctx: ApiContext) -> Response:
        """For deliveries in parts: the selected lines (or part of their quantities) become a new open invoice;
        the rest stays in the draft, whose total keeps the difference."""
        external_id, now = ctx.external_id(), ctx.now()
        body = await read_model(ctx.request, PartActivation, ctx.services.settings.limits.json_bytes)
        selections = [(s.line, Decimal(s.quantity) if s.quantity is not None else None) for s in body.lines]

        def write(conn: sa.Connection) -> dict[str, Any]:
            new_id, draft_id = lifecycle.part_activate(
                conn, ctx.org_id, external_id, body.external_id, selections, body.number, now)
            base = ctx.services.settings.base_url
            return {"activated": invoice_output(domain.get_invoice_by_id(conn, ctx.org_id, new_id), base),
                    "remaining": invoice_output(domain.get_invoice_by_id(conn, ctx.org_id, draft_id), base)}

        return json_response(await ctx.services.db.write(write))

    @api.operation("POST", "/invoices/{external_id}/cancel", operation_id="cancelInvoice",
                   summary="Cancel a draft, or an open invoice with no recorded payment",
                   responses={200: ("The cancelled invoice", InvoiceOut)}, **common)
    async def cancel(ctx: ApiContext) -> Response:
        external_id, now = ctx.external_id(), ctx.now()
        return await run(ctx, lambda conn: lifecycle.cancel(conn, ctx.org_id, external_id, now))

    @api.operation("POST", "/invoices/{external_id}/extend-due-date", operation_id="extendDueDate",
                   summary="Move an open invoice's due date later", body=("application/json", DueDateExtension),
                   responses={200: ("The invoice with its new due date", InvoiceOut)}, **common)
    async def extend_due_date(ctx: ApiContext) -> Response:
        external_id, now = ctx.external_id(), ctx.now()
        body = await read_model(ctx.request, DueDateExtension, ctx.services.settings.limits.json_bytes)
        return await run(ctx, lambda conn: lifecycle.extend_due_date(
            conn, ctx.org_id, external_id, body.due_date, now))
