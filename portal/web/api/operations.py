"""The machine API's operations, declared once: each declaration makes the route (with authentication) and
its entry in the OpenAPI 3.1 document, so the document cannot drift from what is served."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.schemas.models import Problem

Handler = Callable[..., Awaitable[Response]]

_PROBLEM_TITLES = {
    400: "Malformed request (bad JSON, bad header)",
    401: "Missing, malformed or revoked API key",
    404: "No such object in this organization",
    409: "Conflicts with the current state",
    413: "Body larger than the limit",
    415: "Wrong Content-Type",
    422: "Invalid fields; `errors` lists each with its JSON Pointer",
}


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: dict[str, Any]
    description: str


@dataclass
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    # (media type, pydantic model or raw JSON schema) of the request body.
    body: tuple[str, type[pydantic.BaseModel] | dict[str, Any]] | None
    # status -> (description, model, media type); None model means no JSON body (or a binary one).
    responses: dict[int, tuple[str, type[pydantic.BaseModel] | dict[str, Any] | None, str]]
    query: tuple[QueryParam, ...] = ()
    description: str = ""
    tags: tuple[str, ...] = ()


@dataclass
class Api:
    """Collects operations; `routes()` serves them and `openapi()` describes them."""

    operations: list[Operation] = field(default_factory=list)

    def operation(self, method: str, path: str, *, summary: str, operation_id: str,
                  responses: dict[int, tuple[str, Any] | tuple[str, Any, str]],
                  body: tuple[str, Any] | None = None, errors: tuple[int, ...] = (),
                  query: tuple[QueryParam, ...] = (), tags: tuple[str, ...] = ()) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            normalized = {status: (r[0], r[1], r[2] if len(r) > 2 else "application/json")
                          for status, r in responses.items()}
            problems = {401, *errors}
            if "{" in path:
                problems.add(404)
            if body is not None:
                problems |= {400, 413, 415, 422}
            if query:
                problems.add(422)
            for status in problems:
                normalized.setdefault(status, (_PROBLEM_TITLES[status], Problem, "application/problem+json"))
            self.operations.append(Operation(
                method=method, path=path, operation_id=operation_id, summary=summary, handler=handler,
                body=body, responses=normalized, query=query, description=(handler.__doc__ or "").strip(),
                tags=tags))
            return handler
        return register

    def routes(self, authenticate: Callable[[Request, Handler], Awaitable[Response]]) -> list[Route]:
        by_path: dict[str, dict[str, Handler]] = {}
        for op in self.operations:
            by_path.setdefault(op.path, {})[op.method] = op.handler
        routes = []
        for path, handlers in by_path.items():
            async def endpoint(request: Request, handlers: dict[str, Handler] = handlers) -> Response:
                # Starlette routes HEAD to GET routes; the GET handler answers it (the server drops the body).
                method = "GET" if request.method == "HEAD" else request.method
                return await authenticate(request, handlers[method])
            routes.append(Route(path, endpoint, methods=list(handlers)))
        return routes

    def openapi(self, *, title: str, version: str, server_url: str) -> dict[str, Any]:
        models: dict[tuple[type[pydantic.BaseModel], JsonSchemaMode], None] = {}
        for op in self.operations:
            if op.body and isinstance(op.body[1], type):
                models[(op.body[1], "validation")] = None
            for _, model, _ in op.responses.values():
                if isinstance(model, type):
                    models[(model, "serialization")] = None
        refs, definitions = models_json_schema(list(models), ref_template="#/components/schemas/{model}")

        def schema_of(model: Any, mode: JsonSchemaMode) -> dict[str, Any]:
            # Every class here is a pydantic model (models_json_schema above takes nothing else).
            return refs[(model, mode)] if isinstance(model, type) and issubclass(model, pydantic.BaseModel) else model

        paths: dict[str, dict[str, Any]] = {}
        for op in self.operations:
            entry: dict[str, Any] = {
                "operationId": op.operation_id, "summary": op.summary, "tags": list(op.tags),
                "security": [{"bearerAuth": []}],
                "parameters": [
                    {"name": name, "in": "path", "required": True,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 200,
                                "pattern": r"^[A-Za-z0-9._:@-]+$"}}
                    for name in re.findall(r"{(\w+)}", op.path)
                ] + [{"name": q.name, "in": "query", "required": False, "schema": q.schema,
                      "description": q.description} for q in op.query],
                "responses": {},
            }
            if op.description:
                entry["description"] = op.description
            if op.body:
                media_type, model = op.body
                entry["requestBody"] = {"required": True,
                                        "content": {media_type: {"schema": schema_of(model, "validation")}}}
            for status, (description, model, media_type) in sorted(op.responses.items()):
                response: dict[str, Any] = {"description": description}
                if model is not None:
                    response["content"] = {media_type: {"schema": schema_of(model, "serialization")}}
                entry["responses"][str(status)] = response
            if not entry["parameters"]:
                del entry["parameters"]
            paths.setdefault("/api/v1" + op.path, {})[op.method.lower()] = entry
        return {
            "openapi": "3.1.0",
            "info": {"title": title, "version": version,
                     "description": "Push customers, invoices and their PDFs into Quittance and manage each "
                                    "invoice's life. Amounts are decimal strings in the currency's exact "
                                    "decimals. Errors are RFC 9457 problem details."},
            "servers": [{"url": server_url}],
            "paths": paths,
            "components": {
                "schemas": definitions.get("$defs", {}),
                "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                                   "description": "An API key from `portal apikey create`."}},
            },
        }
