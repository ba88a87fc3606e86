"""PUT and GET /api/v1/customers/{external_id}."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.responses import Response

from portal.domain.customers import get_customer, upsert_customer
from portal.web.api.bodies import read_model
from portal.web.api.context import ApiContext, json_response
from portal.schemas.convert import customer_input, customer_output
from portal.web.api.operations import Api
from portal.schemas.models import CustomerIn, CustomerOut


def register(api: Api) -> None:
    @api.operation("PUT", "/customers/{external_id}", operation_id="putCustomer", tags=("customers",),
                   summary="Create or update a customer", body=("application/json", CustomerIn),
                   responses={200: ("Updated or unchanged", CustomerOut), 201: ("Created", CustomerOut)})
    async def put_customer(ctx: ApiContext) -> Response:
        """Full replacement: fields left out are cleared."""
        external_id = ctx.external_id()
        body = await read_model(ctx.request, CustomerIn, ctx.services.settings.limits.json_bytes)
        item = customer_input(external_id, body)
        now = ctx.now()

        def write(conn: sa.Connection) -> tuple[str, sa.Row]:
            result = upsert_customer(conn, ctx.org_id, item, now)
            return result, get_customer(conn, ctx.org_id, external_id)

        result, row = await ctx.services.db.write(write)
        return json_response(customer_output(row), 201 if result == "created" else 200)

    @api.operation("GET", "/customers/{external_id}", operation_id="getCustomer", tags=("customers",),
                   summary="Read a customer", errors=(404,), responses={200: ("The customer", CustomerOut)})
    async def read_customer(ctx: ApiContext) -> Response:
        row = await ctx.services.db.read(get_customer, ctx.org_id, ctx.external_id())
        return json_response(customer_output(row))
