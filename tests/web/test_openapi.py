"""The OpenAPI document describes the API as served: schemathesis generates requests from it (valid and
invalid) and checks that no answer is a 5xx or breaks the document."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance, not_a_server_error, response_headers_conformance, response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Mount
from starlette.testclient import TestClient

from portal.app import VERSION, build_api
from tests.conftest import Tenant, invoice_body

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


# The same document the app serves (test_document_is_the_one_served checks that), built without a database
# so that schemathesis can make one test per operation at collection time.
schema = schemathesis.openapi.from_dict(
    build_api().openapi(title="Quittance machine API", version=VERSION, server_url="http://testserver"))


@pytest.fixture
def seeded(tenant: Tenant) -> Tenant:
    """Some data, so that reads and lifecycle calls also reach their success paths."""
    tenant.put_invoice("INV-1")
    tenant.client.put("/api/v1/invoices/DRAFT-1", json=invoice_body(status="draft", number=None))
    return tenant


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_api_matches_its_document(case: Any, app: Any, seeded: Tenant) -> None:
    case.call_and_validate(app=app, headers={"Authorization": f"Bearer {seeded.key}"}, checks=CHECKS)


def test_document_is_the_one_served(app: Any) -> None:
    served = TestClient(app).get("/api/v1/openapi.json").json()
    assert served == schema.raw_schema


def test_document_is_openapi_3_1_and_lists_every_route(app: Any) -> None:
    document = TestClient(app).get("/api/v1/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    mount = next(route for route in app.routes if isinstance(route, Mount))
    served = {("/api/v1" + route.path, method) for route in mount.routes if route.path != "/openapi.json"
              for method in route.methods - {"HEAD"}}
    assert documented == served
    for path, item in document["paths"].items():
        for operation in item.values():
            assert operation["summary"], path
            assert "401" in operation["responses"], path
