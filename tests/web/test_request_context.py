"""Request ids, route templates and organizations in what the server logs and records."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
from typing import Any

import pytest
import sqlalchemy as sa
from asgi_correlation_id import CorrelationIdMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from portal import logs
from portal.db.payments import outbox_events
from portal.web.request_context import RouteContext, route_template, valid_request_id
from tests.conftest import Tenant
from tests.web.test_portal import Debtor, invoice_id, link_for


def test_every_response_carries_a_request_id(app: Any) -> None:
    client = TestClient(app)
    made = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert client.get("/healthz").headers["x-request-id"] != made

    assert client.get("/healthz", headers={"X-Request-ID": "edge-7f3a.1"}).headers["x-request-id"] == "edge-7f3a.1"
    for forged in ("x" * 200, "two words", "a;b"):
        kept = client.get("/healthz", headers={"X-Request-ID": forged}).headers["x-request-id"]
        assert kept != forged and re.fullmatch(r"[0-9a-f]{32}", kept)


def test_the_request_id_follows_an_event_into_the_outbox(tenant: Tenant, database: Any, app: Any) -> None:
    tenant.put_invoice("OPEN-1")
    debtor = Debtor(app)
    debtor.open(link_for(tenant))
    open_id = invoice_id(database, "OPEN-1")
    csrf = debtor.csrf(f"/portal/invoices/{open_id}")
    sent = debtor.post_form(f"/portal/invoices/{open_id}/remarks", {"csrf": csrf, "body": "Question"},
                            headers={"X-Request-ID": "proxy-req-42"})
    assert sent.status_code == 303
    with database.transaction(write=False) as conn:
        recorded = conn.execute(sa.select(outbox_events.c.event_type, outbox_events.c.request_id)).all()
    assert [tuple(row) for row in recorded] == [("remark.created", "proxy-req-42")]


def test_route_templates_never_carry_ids_or_tokens() -> None:
    async def endpoint(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("")

    routes = [Mount("/api/v1", routes=[Route("/invoices/{external_id}", endpoint)]),
              Route("/l/{token}", endpoint)]
    scope = {"type": "http", "method": "GET", "root_path": ""}
    assert route_template(routes, {**scope, "path": "/api/v1/invoices/INV-9"}) == "/api/v1/invoices/{external_id}"
    assert route_template(routes, {**scope, "path": "/l/secret-token"}) == "/l/{token}"
    assert route_template(routes, {**scope, "path": "/nowhere"}) == "unmatched"


def test_json_log_lines_carry_the_request_id_route_and_organization(capsys: pytest.CaptureFixture[str]) -> None:
    async def endpoint(request: Request) -> PlainTextResponse:
        logs.organization.set("acme")
        logging.getLogger("portal.test").info("handling invoice %s", request.path_params["external_id"])
        return PlainTextResponse("ok")

    routes = [Route("/invoices/{external_id}", endpoint)]
    app = Starlette(routes=routes, middleware=[
        Middleware(CorrelationIdMiddleware, header_name="X-Request-ID", validator=valid_request_id,
                   transformer=str),
        Middleware(RouteContext, routes=routes)])
    logs.configure_logging("json", "INFO")
    try:
        assert TestClient(app).get("/invoices/INV-3", headers={"X-Request-ID": "rid-1"}).text == "ok"
        logging.getLogger("portal.test").info("outside a request")
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line["logger"] == "portal.test"]
    assert mine[0] == {"time": mine[0]["time"], "level": "INFO", "logger": "portal.test",
                       "message": "handling invoice INV-3", "request_id": "rid-1", "organization": "acme",
                       "route": "/invoices/{external_id}", "pid": os.getpid()}
    assert (mine[1]["request_id"], mine[1]["organization"], mine[1]["route"]) == ("-", None, None)


@pytest.mark.parametrize("secret", [
    "qtc_0123456789abcdef", "/l/eyJsIjoxfQ.ZmFrZS1zaWduYXR1cmU", "sk_test_quittance_e2e_key",
    "whsec_quittance_e2e", "test_quittancee2eAbcdefghijklmnop", "Bearer abc.def.ghi-jkl"])
def test_a_secret_that_reaches_a_message_is_redacted(secret: str, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_logging("text", "DEBUG")
    try:
        logging.getLogger("portal.test").debug("calling with %s and Authorization: %s", secret, secret)
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    output = capsys.readouterr().err
    assert "[redacted]" in output
    assert secret not in output and secret.split()[-1] not in output
