"""Connectors and deliveries over the machine API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.responses import Response

from portal.connectors import registry
from portal.domain import connectors as config
from portal.domain import deliveries
from portal.encryption import SecretBox, secret_box
from portal.errors import FieldError, InvalidInput, NotFound
from portal.web.api.bodies import read_model
from portal.web.api.problems import HttpProblem
from portal.web.api.context import ApiContext, decode_cursor, encode_cursor, json_response, query_limit
from portal.schemas.convert import iso
from portal.web.api.operations import Api, QueryParam
from portal.schemas.models import Strict


class ConnectorIn(Strict):
    type: Literal["webhook", "status_patch", "pull_import", "email"]
    settings: Annotated[dict[str, Any], Field(description="Depends on the type: see docs/connectors.md.")]


class ConnectorOut(BaseModel):
    name: str
    type: str
    settings: dict[str, Any] = Field(description="Secrets show only their last four characters.")
    event_types: list[str]
    cursor: str | None
    next_run_at: dt.datetime | None
    last_run: dict[str, Any] | None
    created_at: dt.datetime
    updated_at: dt.datetime


class ConnectorList(BaseModel):
    items: list[ConnectorOut]


class DeliveryOut(BaseModel):
    id: int
    event_id: int
    connector: str
    status: Literal["pending", "in_flight", "delivered", "dead"]
    attempts: int
    next_attempt_at: dt.datetime
    idempotency_key: str
    last_status: int | None
    last_error: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


def box_of(ctx: ApiContext) -> SecretBox:
    return secret_box(ctx.services.settings.encryption_keys)


def connector_output(row: sa.Row[Any], box: SecretBox) -> dict[str, Any]:
    return {"name": row.name, "type": row.type, "settings": registry.masked(config.settings_of(row.settings, box)),
            "event_types": row.event_types, "cursor": row.cursor, "next_run_at": iso(row.next_run_at),
            "last_run": row.last_run, "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}


def delivery_output(row: sa.Row[Any]) -> dict[str, Any]:
    return {"id": row.id, "event_id": row.event_id, "connector": row.connector_name, "status": row.status,
            "attempts": row.attempts, "next_attempt_at": iso(row.next_attempt_at),
            "idempotency_key": row.idempotency_key, "last_status": row.last_status, "last_error": row.last_error,
            "created_at": iso(row.created_at), "delivered_at": iso(row.delivered_at)}


def register(api: Api) -> None:
    @api.operation("PUT", "/connectors/{name}", operation_id="putConnector", tags=("connectors",),
                   summary="Create or replace a connector", body=("application/json", ConnectorIn),
                   responses={200: ("Replaced", ConnectorOut), 201: ("Created", ConnectorOut)})
    async def put(ctx: ApiContext) -> Response:
        """webhook (signed POST of every event), status_patch (a templated request per event type), pull_import
        (read invoices from an upstream API on a schedule) or email (receipts to debtors, remarks to finance).
        Events written from now on are delivered through it."""
        name = ctx.external_id("name")
        body = await read_model(ctx.request, ConnectorIn, ctx.services.settings.limits.json_bytes)
        registry.validate(body.type, body.settings,
                          allow_private_networks=ctx.services.settings.connectors_allow_private_networks)
        types = registry.event_types(body.type, body.settings)
        now = ctx.now()
        box = box_of(ctx)
        if not box.configured:
            raise HttpProblem(503, "encryption-keys-missing", "Cannot store credentials",
                              "This server has no PORTAL_ENCRYPTION_KEYS, so it cannot store a connector's "
                              "credentials; its operator must set them (docs/operations.md, Secrets at rest).")

        def write(conn: sa.Connection) -> tuple[str, sa.Row[Any]]:
            result = config.put(conn, ctx.org_id, name, body.type, body.settings, types, now, box)
            return result, config.get(conn, ctx.org_id, name)

        result, row = await ctx.services.db.write(write)
        return json_response(connector_output(row, box), 201 if result == "created" else 200)

    @api.operation("GET", "/connectors/{name}", operation_id="getConnector", tags=("connectors",),
                   summary="Read a connector", responses={200: ("The connector", ConnectorOut)})
    async def get(ctx: ApiContext) -> Response:
        return json_response(connector_output(await ctx.services.db.read(config.get, ctx.org_id,
                                                                         ctx.external_id("name")), box_of(ctx)))

    @api.operation("GET", "/connectors", operation_id="listConnectors", tags=("connectors",),
                   summary="List connectors", responses={200: ("The connectors", ConnectorList)})
    async def listing(ctx: ApiContext) -> Response:
        rows = await ctx.services.db.read(config.listing, ctx.org_id)
        return json_response({"items": [connector_output(row, box_of(ctx)) for row in rows]})

    @api.operation("DELETE", "/connectors/{name}", operation_id="deleteConnector", tags=("connectors",),
                   summary="Remove a connector and its waiting deliveries", responses={204: ("Removed", None)})
    async def delete(ctx: ApiContext) -> Response:
        await ctx.services.db.write(config.delete, ctx.org_id, ctx.external_id("name"))
        return Response(status_code=204)

    @api.operation("GET", "/deliveries", operation_id="listDeliveries", tags=("connectors",),
                   summary="Deliveries of events through connectors: what still has to reach upstream",
                   query=(QueryParam("status", {"type": "string", "enum": ["pending", "in_flight", "delivered",
                                                                           "dead"]}, "Only this status."),
                          QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                                     "Page size."),
                          QueryParam("cursor", {"type": "string", "maxLength": 100}, "next_cursor of the last page.")),
                   responses={200: ("A page of deliveries", DeliveryPage)})
    async def list_deliveries(ctx: ApiContext) -> Response:
        status = ctx.request.query_params.get("status")
        if status is not None and status not in ("pending", "in_flight", "delivered", "dead"):
            raise InvalidInput("Bad status.", [FieldError("/status", "pending, in_flight, delivered or dead")])
        limit = query_limit(ctx.request)
        rows, last_id = await ctx.services.db.read(deliveries.listing, ctx.org_id, status,
                                                   decode_cursor(ctx.request.query_params.get("cursor")), limit)
        return json_response({"items": [delivery_output(r) for r in rows], "next_cursor": encode_cursor(last_id)})

    @api.operation("POST", "/deliveries/{delivery_id}/retry", operation_id="retryDelivery", tags=("connectors",),
                   summary="Try a dead delivery again", responses={204: ("Queued again", None)})
    async def retry(ctx: ApiContext) -> Response:
        raw = ctx.request.path_params["delivery_id"]
        if not raw.isdigit() or len(raw) > 18:
            raise NotFound("no such delivery")
        await ctx.services.db.write(deliveries.retry, ctx.org_id, int(raw), ctx.now())
        return Response(status_code=204)
