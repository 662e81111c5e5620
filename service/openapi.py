"""The OpenAPI document of ``usher serve`` (served at /openapi.json).

The operation schemas are generated from the trace format's Structs
(``usher.formats.trace.Op``) by msgspec, with ``t`` made optional (the server's clock
fills it in), so the document cannot drift from what the service accepts."""

from __future__ import annotations

import functools

import msgspec

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema, description):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description):
    return _json(_ERROR, description)


@functools.cache
def openapi_document() -> dict:
    from usher import __version__
    from usher.formats.trace import LaunchDecision, LineError, Op

    (op_schema, decision_schema, error_line_schema), components = msgspec.json.schema_components(
        [Op, LaunchDecision, LineError], ref_template="#/components/schemas/{name}")
    for schema in components.values():
        if "t" in schema.get("required", ()) and schema.get("title", "").endswith("Op"):
            schema["required"] = [f for f in schema["required"] if f != "t"]
    components["Op"] = op_schema
    components["Error"] = {
        "type": "object", "required": ["error", "field", "message"],
        "properties": {"error": {"type": "string"}, "field": {"type": ["string", "null"]},
                       "message": {"type": "string"}},
    }
    view = {"type": "object", "additionalProperties": True}
    name = lambda n: {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}  # noqa: E731
    ok = lambda d: {"200": _json(view, d)}  # noqa: E731
    paths = {
        "/v1/ops": {"post": {
            "summary": "Apply one operation or an array of them, in order",
            "parameters": [{"name": "explain", "in": "query", "required": False, "schema": {"type": "boolean"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "anyOf": [{"$ref": "#/components/schemas/Op"},
                          # an array item that is not an op is answered by its error line (200),
                          # the others apply: any JSON value is accepted in an array
                          {"type": "array", "items": {"anyOf": [
                              {"$ref": "#/components/schemas/Op"},
                              {"description": "not an op: answered by its error line"}]}}]}}}},
            "responses": {
                "200": {"description": "The decision and error lines, as `usher replay` writes them (JSON Lines)",
                        "content": {"application/x-ndjson": {"schema": {"anyOf": [decision_schema, error_line_schema]}}}},
                "400": _problem("The body is not JSON"),
                "401": _problem("A bearer token is required"),
                "413": _problem("The body is too large"),
                "422": _problem("The operation (a single one) failed, the body is not an op nor an array, "
                                "or explain is not true or false"),
            }}},
        "/v1/sessions/{id}": {"get": {"summary": "A live session, named by the id of the launch that created it",
                                      "parameters": [name("id")],
                                      "responses": {**ok("The session"), "404": _problem("No such live session")}}},
        "/v1/servers": {"get": {"summary": "Every present server",
                                "responses": {"200": _json({"type": "array", "items": view}, "The servers")}}},
        "/v1/servers/{name}": {"get": {"summary": "One server", "parameters": [name("name")],
                                       "responses": {**ok("The server"), "404": _problem("No such server")}}},
        "/v1/summary": {"get": {"summary": "Sessions, licences, servers by power/mode/image, per pool and zone",
                                "responses": ok("The summary")}},
        "/healthz": {"get": {"summary": "The process answers", "responses": ok("Alive")}},
        "/readyz": {"get": {"summary": "State recovered and the journal writable",
                            "responses": {**ok("Ready"), "503": _problem("The journal failed")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "Prometheus text format",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }
    paths.update(_dashboard_paths(view, ok))
    return {
        "openapi": "3.1.0",
        "info": {"title": "usher", "version": __version__,
                 "description": "The placement engine of a connection broker, as a service (docs/SERVICE.md)."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
    }


def _dashboard_paths(view, ok) -> dict:
    """The live view's paths (``usher.service.dashboard``)."""
    page = lambda d, kind: {"200": {"description": d, "content": {kind: {"schema": {"type": "string"}}}}}  # noqa: E731
    return {
        "/": {"get": {"summary": "The dashboard (HTML; served without the token: it holds no data)",
                      "security": [{}], "responses": page("The page", "text/html")}},
        "/static/{name}": {"get": {
            "summary": "The dashboard's script and style sheet (dashboard.js, dashboard.css; without the token)",
            "security": [{}],
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The file", "content": {
                "application/javascript": {"schema": {"type": "string"}},
                "text/css": {"schema": {"type": "string"}}}},
                "404": _problem("No such file")}}},
        "/v1/dashboard/state": {"get": {
            "summary": "The live view now: summary (as /v1/summary, plus pending), fleet grid columns and "
                       "layout, logon p50/p95 per zone, fleet actions, rollout progress, history tail",
            "responses": ok("The state")}},
        "/v1/dashboard/history": {"get": {
            "summary": "The history ring: per bucket of operation time, launches by outcome and rejection "
                       "reason, logon p50/p95 per zone, fleet actions, gauges",
            "responses": ok("The buckets, oldest first")}},
        "/v1/dashboard/search": {"get": {
            "summary": "A user or a server: its view, live sessions and latest decisions (with explanations "
                       "when they were asked for)",
            "parameters": [{"name": "q", "in": "query", "required": True, "schema": {"type": "string"}}],
            "responses": {**ok("What is known by that name"), "404": _problem("Nothing is known by that name"),
                          "422": _problem("q is missing or empty")}}},
        "/v1/events": {"get": {
            "summary": "Server-sent events: one `data:` line of JSON (the state, as /v1/dashboard/state; the "
                       "layout only in the first event and when servers come or go) per turn of the sampler, "
                       "at most one a second; the stream ends after 20 s and the client reconnects",
            "responses": {"200": {"description": "An event stream", "content": {"text/event-stream": {"schema": {
                "type": "object", "required": ["data"],
                "properties": {"data": {"type": "string", "contentMediaType": "application/json",
                                        "description": "the state, as /v1/dashboard/state"},
                               "event": {"type": "string"}}}}}}}}},
    }
