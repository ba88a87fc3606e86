"""Remarks over the machine API: the billing system reads debtors' remarks and answers them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, StringConstraints
from starlette.responses import Response

from portal.domain import remarks
from portal.web.api.bodies import read_model
from portal.web.api.context import (
    ApiContext, decode_cursor, encode_cursor, json_response, query_datetime, query_limit,
)
from portal.schemas.convert import iso
from portal.web.api.operations import Api, QueryParam
from portal.schemas.models import SingleLine, Strict
from portal.errors import FieldError, InvalidInput


class AnswerIn(Strict):
    body: Annotated[str, StringConstraints(min_length=1, max_length=remarks.MAX_LENGTH)]
    author_name: Annotated[SingleLine, StringConstraints(max_length=200)] | None = None


class RemarkOut(BaseModel):
    id: int
    invoice: str
    customer: str
    author: Literal["debtor", "billing_system", "staff"]
    author_name: str | None
    body: str
    reply_to: str | None
    created_at: dt.datetime


class RemarkPage(BaseModel):
    items: list[RemarkOut]
    next_cursor: str | None


def remark_output(row: sa.Row[Any]) -> dict[str, Any]:
    return {"id": row.id, "invoice": row.invoice_external_id, "customer": row.customer_external_id,
            "author": row.author, "author_name": row.author_name, "body": row.body, "reply_to": row.reply_to,
            "created_at": iso(row.created_at)}


def register(api: Api) -> None:
    @api.operation("GET", "/remarks", operation_id="listRemarks", tags=("remarks",),
                   summary="Remarks in the order they were written",
                   query=(QueryParam("since", {"type": "string", "format": "date-time"}, "Written at or after."),
                          QueryParam("author", {"type": "string", "enum": ["debtor", "billing_system", "staff"]},
                                     "Only remarks by this kind of author."),
                          QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                                     "Page size."),
                          QueryParam("cursor", {"type": "string", "maxLength": 100}, "next_cursor of the last page.")),
                   responses={200: ("A page of remarks", RemarkPage)})
    async def list_remarks(ctx: ApiContext) -> Response:
        author = ctx.request.query_params.get("author")
        if author is not None and author not in ("debtor", "billing_system", "staff"):
            raise InvalidInput("Bad author.", [FieldError("/author", "debtor, billing_system or staff")])
        rows, last_id = await ctx.services.db.read(
            remarks.since, ctx.org_id, decode_cursor(ctx.request.query_params.get("cursor")),
            query_datetime(ctx.request, "since"), author, query_limit(ctx.request))
        return json_response({"items": [remark_output(r) for r in rows], "next_cursor": encode_cursor(last_id)})

    @api.operation("POST", "/invoices/{external_id}/remarks", operation_id="answerRemark", tags=("remarks",),
                   summary="Write in an invoice's remarks thread (an answer to the debtor)",
                   body=("application/json", AnswerIn), responses={201: ("The remark", RemarkOut)})
    async def answer(ctx: ApiContext) -> Response:
        """The answer appears in the debtor's thread on the invoice page."""
        external_id = ctx.external_id()
        body = await read_model(ctx.request, AnswerIn, ctx.services.settings.limits.json_bytes)
        row = await ctx.services.db.write(remarks.answer, ctx.org_id, external_id, body.body, "billing_system",
                                          body.author_name, ctx.now())
        return json_response(remark_output(row), 201)
