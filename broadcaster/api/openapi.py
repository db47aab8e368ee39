"""The OpenAPI 3.1 document, generated from the models and the route table.

``python -m broadcaster.api.openapi`` writes broadcaster/api/openapi.json
(the committed copy the server serves); ``--check`` exits 1 if it differs
from what the code generates. A test does the same check.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from broadcaster.api.call import DEFAULT_LIMIT, MAX_JSON_BYTES, MAX_LIMIT, Param, Route
from broadcaster.api.models import Body, Error

PATH = Path(__file__).with_name("openapi.json")
REF = "#/components/schemas/{model}"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
STATUS_TEXT = {200: "OK", 201: "Created", 204: "No content", 400: "Bad request: the message names the key path",
               401: "No valid bearer token or console session", 403: "Outside the caller's role or zones",
               404: "Not found", 415: "Wrong media type",
               429: "Too many failures from this address: wait Retry-After seconds",
               405: "Method not allowed", 409: "Conflicts with stored data", 413: "Body too large",
               422: "The upload cannot become a library item", 503: "Busy: try again after Retry-After seconds",
               507: "The disk is full: nothing was changed (audio goes on)"}
DESCRIPTION = (
    "Zones, channels, loudspeakers, media, programmes, alerts, broadcast and audit logs, reports. Every request but "
    "this document needs 'Authorization: Bearer <token>' (broadcaster user token NAME). Errors are "
    '{"error": {"code", "message"}}; a 400 message starts with the key path of the field at fault '
    f"(volume: must be ≤ 100). Lists are paged with limit (default {DEFAULT_LIMIT}, at most {MAX_LIMIT}) and "
    f"offset. JSON bodies are at most {MAX_JSON_BYTES} bytes; unknown fields are refused.")
PAGING = (Param("limit", "page size", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                       "default": DEFAULT_LIMIT}),
          Param("offset", "items to skip", {"type": "integer", "minimum": 0, "default": 0}))


def _models(routes: list[Route]) -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {"Error": Error}
    for route in routes:
        for model in (route.body, route.response, *(m for _, m in route.also)):
            if model is not None:
                found.setdefault(model.__name__, model)
    return list(found.values())


def _parameter(p: Param) -> dict[str, Any]:
    return {"name": p.name, "in": p.where, "required": p.required or p.where == "path",
            "description": p.description, "schema": p.schema}


def _json(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


def _operation(route: Route, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    success: dict[str, Any] = {"description": STATUS_TEXT[route.status]}
    if route.response is not None:
        success["content"] = _json(refs[route.response])
        if route.csv:
            success["content"]["text/csv"] = {"schema": {"type": "string"}}
        if route.xlsx:
            success["content"][XLSX] = {"schema": {"type": "string", "format": "binary"}}
    elif route.reply_media is not None:
        success["content"] = {route.reply_media: {"schema": {"type": "string", "format": "binary"}}}
    elif route.public:
        success["content"] = {"application/json": {"schema": {"type": "object"}}}
    responses[str(route.status)] = success
    for status, model in route.also:
        responses[str(status)] = {"description": STATUS_TEXT[status], "content": _json(refs[model])}
    errors = set(route.errors)
    if not route.public:
        errors.add(401)
    if route.body is not None:
        errors |= {400, 413}
    if route.method != "GET" and not route.public:
        errors.add(507)
    if route.paged or route.query and any(p.where == "query" for p in route.query):
        errors.add(400)
    for status in sorted(errors):
        responses[str(status)] = {"$ref": "#/components/responses/Error", "description": STATUS_TEXT[status]}
    operation: dict[str, Any] = {"summary": route.summary, "tags": [route.tag],
                                 "operationId": route.handler.__name__, "responses": responses}
    params = [*(PAGING if route.paged else ()), *route.query]
    if params:
        operation["parameters"] = [_parameter(p) for p in params]
    if route.body is not None:
        operation["requestBody"] = {"required": True, "content": _json(refs[route.body])}
    elif route.body_media is not None:
        fmt = {"type": "string", "format": "binary"}
        operation["requestBody"] = {"required": True, "content": {route.body_media: {"schema": fmt}}}
    if route.public:
        operation["security"] = []
    return operation


def build(routes: list[Route] | None = None) -> dict[str, Any]:
    if routes is None:
        from broadcaster.api.router import ROUTES
        routes = ROUTES
    models = _models(routes)
    keys, schemas = models_json_schema([(m, "validation" if issubclass(m, Body) else "serialization")
                                        for m in models], ref_template=REF)
    refs = {m: keys[(m, mode)] for (m, mode) in keys}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "broadcaster admin API", "version": "1", "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "An error", "content": _json({"$ref": REF.format(model="Error")})}},
            "schemas": schemas.get("$defs", {}),
        },
    }


def text(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, indent=1) + "\n"


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resources.files("broadcaster.api").joinpath("openapi.json").read_text("utf-8"))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broadcaster.api.openapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is out of date")
    args = parser.parse_args(argv)
    generated = text(build())
    if args.check:
        current = PATH.read_text("utf-8") if PATH.exists() else ""
        if current != generated:
            print(f"{PATH} is out of date: run python -m broadcaster.api.openapi", file=sys.stderr)
            return 1
        return 0
    PATH.write_text(generated, encoding="utf-8")
    print(f"wrote {PATH} ({len(build()['paths'])} paths)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
