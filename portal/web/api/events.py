"""What happened, for the billing system: the outbox events in order, and payments that need a person."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.responses import Response

from portal.domain import outbox, reviews
from portal.domain.outbox import EVENT_TYPES
from portal.errors import FieldError, InvalidInput
from portal.web.api.context import ApiContext, json_response, query_bool, query_limit
from portal.schemas.convert import iso
from portal.web.api.operations import Api, QueryParam


class EventOut(BaseModel):
    id: int = Field(description="Increasing; pass the last one you processed as `after`.")
    type: Literal[EVENT_TYPES]  # type: ignore[valid-type]  # a Literal built from a tuple: valid at run time
    invoice: str | None = Field(description="External id of the invoice, if the event is about one.")
    created_at: dt.datetime
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    last_id: int | None = Field(description="The id to pass as `after` next; null when there was nothing new.")


class ReviewOut(BaseModel):
    id: int
    provider: str
    payment_id: str
    reason: Literal["amount_mismatch", "currency_mismatch", "unknown_checkout", "overpaid"]
    detail: str
    data: dict[str, Any]
    created_at: dt.datetime
    resolved_at: dt.datetime | None


class ReviewPage(BaseModel):
    items: list[ReviewOut]


def _after(ctx: ApiContext) -> int:
    raw = ctx.request.query_params.get("after", "0")
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidInput("Bad after.", [FieldError("/after", "an event id (a non-negative integer)")])
    return int(raw)


def register(api: Api) -> None:
    @api.operation("GET", "/events", operation_id="listEvents", tags=("events",),
                   summary="Events for the billing system, in the order they happened",
                   query=(QueryParam("after", {"type": "integer", "minimum": 0}, "Only events after this id."),
                          QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                                     "Page size.")),
                   responses={200: ("The next events", EventPage)})
    async def list_events(ctx: ApiContext) -> Response:
        """invoice.paid, invoice.partially_paid (both with `amount_paid` and `amount_remaining`), payment.refunded,
        payment.charged_back, payment.needs_review, remark.created and credit_note.applied (a credit note the
        debtor deducted from a payment), each written in the same transaction as the change it announces. Pull
        with `after`
        until `items` is empty; a later issue also pushes them to your systems."""
        after, limit = _after(ctx), query_limit(ctx.request)

        rows = await ctx.services.db.read(outbox.events_after, ctx.org_id, after, limit)
        return json_response({"items": [{"id": r.id, "type": r.event_type, "invoice": r.invoice_external_id,
                                         "created_at": iso(r.created_at), "data": r.payload} for r in rows],
                              "last_id": rows[-1].id if rows else None})

    @api.operation("GET", "/payment-reviews", operation_id="listPaymentReviews", tags=("events",),
                   summary="Payments that were not applied to an invoice, or overpaid one",
                   query=(QueryParam("unresolved", {"type": "string", "enum": ["true", "false"]},
                                     "true (default) lists only what nobody resolved yet."),),
                   responses={200: ("The review list", ReviewPage)})
    async def list_reviews(ctx: ApiContext) -> Response:
        """An amount or currency that does not match the checkout, a payment naming no checkout of yours, or an
        invoice paid twice: kept with the provider's data, never applied silently."""
        unresolved = query_bool(ctx.request, "unresolved") is not False

        rows = await ctx.services.db.read(reviews.listing, ctx.org_id, unresolved=unresolved)
        return json_response({"items": [{"id": r.id, "provider": r.provider, "payment_id": r.provider_payment_id,
                                         "reason": r.reason, "detail": r.detail, "data": r.data,
                                         "created_at": iso(r.created_at), "resolved_at": iso(r.resolved_at)}
                                        for r in rows]})
