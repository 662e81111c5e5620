"""The ASGI app of ``usher serve`` (Starlette): operations in, decision lines out.

Design: every endpoint is a coroutine on one event loop, so operations are applied one
request at a time without a lock of the service's own; ``POST /v1/ops`` applies its
operations through the journal (``usher.journal.Journal.submit``: apply, append the
records to the journal's buffer) and then awaits their durability (group commit: many
requests share one fsync) before it answers. Metrics and the decision log are sinks
fed after each request (``sinks``), never computed inside a handler. Errors are
answered as ``{"error", "field", "message"}`` (400 for a body that is not JSON or too
large, 401 without the token, 404 for an unknown name, 422 for a single operation
that fails); an operation that fails changes nothing. See docs/SERVICE.md.
"""

from __future__ import annotations

import hmac
import re
import time
import uuid
from collections import Counter

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from usher.errors import SessionEnded, UnknownSession, UsherError
from usher.formats.trace import LineError
from usher.service import opsbody
from usher.service.openapi import openapi_document

__all__ = ["create_app", "MAX_BODY"]

MAX_BODY = 8 << 20  # bytes of a request body (an array of ~40,000 launches)
NDJSON = "application/x-ndjson"
_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]]*)\s*[=:]")
_ENCODER = msgspec.json.Encoder()
_OPEN_PATHS = ("/healthz", "/readyz")
_BOOLEAN = {"true": True, "false": False}


def problem(status, error, field, message, headers=None) -> JSONResponse:
    return JSONResponse({"error": error, "field": field, "message": message}, status_code=status, headers=headers)


def _field_of(message: str):
    m = _FIELD.match(message)
    return m.group(1) if m else None


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class _Auth:
    """Bearer-token check (ASGI middleware): every path but /healthz and /readyz."""

    def __init__(self, app, token):
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in _OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, value = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
                response = problem(401, "Unauthorized", "Authorization", "a valid bearer token is required")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Service:
    """The endpoints over one journal (see :func:`create_app`)."""

    def __init__(self, journal, sinks=(), max_body=MAX_BODY):
        self.journal = journal
        self.sinks = list(sinks)
        self.max_body = max_body
        self._reading = 0  # ops requests that have not submitted their operations yet

    # ------------------------------------------------------------ ops
    async def ops(self, request: Request):
        started = time.perf_counter()
        explain = _BOOLEAN.get(request.query_params.get("explain", "false").lower())
        if explain is None:
            return problem(422, "InvalidArgument", "explain", "must be true or false")
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        self._reading += 1
        try:
            body = await _read_body(request, self.max_body)
        except _BodyTooLarge:
            return problem(413, "BodyTooLarge", "body", f"the body is larger than {self.max_body} bytes")
        finally:
            self._reading -= 1
        typed = opsbody.decode(body, self.journal.now)  # well-formed ops: straight to op Structs
        if typed is not None:
            items, single = typed
        else:  # the general way: a dict per item, each bad one answered by its error line
            try:
                items = msgspec.json.decode(body)
            except (msgspec.DecodeError, RecursionError) as e:
                return problem(400, "MalformedJSON", "body", f"not a JSON text ({e})")
            single = isinstance(items, dict)
            if single:
                items = [items]
            elif not isinstance(items, list):
                return problem(422, "InvalidArgument", "body", "must be a JSON object (an op) or an array of ops")
        ops, outputs, ticket = self.journal.submit(items, explain=explain)
        if not self._reading:  # no request in hand will add records: commit the group now
            self.journal.commit_now()
        await self.journal.wait_async(ticket)
        seconds = time.perf_counter() - started
        for sink in self.sinks:
            sink.on_applied(ops, outputs, request_id, seconds)
        headers = {"x-request-id": request_id}
        if single and outputs[0].__class__ is LineError:
            line = outputs[0]
            return JSONResponse({"error": line.error, "field": _field_of(line.message), "message": line.message},
                                status_code=422, headers=headers)
        lines = [o for o in outputs if o is not None]
        errors = sum(1 for o in lines if o.__class__ is LineError)
        headers["x-usher-applied"] = str(len(outputs) - errors)
        headers["x-usher-errors"] = str(errors)
        body = _ENCODER.encode_lines(lines) if lines else b""
        return Response(body, media_type=NDJSON, headers=headers)

    # ------------------------------------------------------------ views
    async def session(self, request: Request):
        name = request.path_params["id"]
        names = self.journal.replayer.names
        key = name if name in names or not re.fullmatch(r"-?\d{1,19}", name) else int(name)
        if key not in names:
            return problem(404, "UnknownSession", "id", f"no launch has the id {name!r}")
        sid = names[key]
        if sid is None:
            return problem(404, "UnknownSession", "id", f"launch {name!r} was rejected: it names no session")
        try:
            view = self.journal.scheduler.session(sid)
        except (UnknownSession, SessionEnded):
            return problem(404, "SessionEnded", "id", f"the session of launch {name!r} has ended")
        view["id"] = self.journal.replayer.creator.get(sid, key)
        return JSONResponse(_plain(view))

    async def servers(self, request: Request):
        rows = self.journal.scheduler.servers()
        return JSONResponse([_plain(_row(r, rows.dtype.names)) for r in rows])

    async def server(self, request: Request):
        name = request.path_params["name"]
        try:
            view = self.journal.scheduler.server(name)
        except UsherError as e:
            return problem(404, type(e).__name__, "name", str(e))
        return JSONResponse(_plain(view))

    async def summary(self, request: Request):
        s = self.journal.scheduler
        rows = s.servers()
        pools: dict = {}
        zones: dict = {}
        for r in rows:
            for table, key in ((pools, str(r["pool"])), (zones, str(r["zone"]))):
                e = table.setdefault(key, {"servers": 0, "sessions": 0, "pending_logons": 0})
                e["servers"] += 1
                e["sessions"] += int(r["sessions"])
                e["pending_logons"] += int(r["pending"])
        return JSONResponse({
            "sessions": s.live_sessions,
            "licences": {"in_use": s.licences_in_use, "cap": s.licence_cap},
            "servers": {
                "total": len(rows),
                "by_power": dict(Counter(str(p) for p in rows["power"])),
                "by_mode": dict(Counter(str(m) for m in rows["mode"])),
                "by_image": dict(Counter("" if i is None else str(i) for i in rows["image"])),
            },
            "pools": pools,
            "zones": zones,
            "now": s.now,
            "journal": {"records": self.journal.seq, "fsync": self.journal.fsync,
                        "directory": self.journal.directory},
        })

    async def healthz(self, request: Request):
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request):
        if not self.journal.healthy:
            return problem(503, "JournalFailed", "journal", "a journal write failed: no decision is acknowledged")
        return JSONResponse({"status": "ready", "records": self.journal.seq})

    async def metrics(self, request: Request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        registry = next((s.registry for s in self.sinks if hasattr(s, "registry")), None)
        if registry is None:
            return problem(404, "NotFound", "path", "metrics are not enabled")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request):
        return JSONResponse(openapi_document())


def _row(row, names) -> dict:
    return {f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in names}


def _plain(view: dict) -> dict:
    """A view with JSON values only (tags as a sorted list, tuples as lists)."""
    out = {}
    for k, v in view.items():
        if isinstance(v, (frozenset, set)):
            v = sorted(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, float) and v != v:
            v = None
        out[k] = v
    return out


async def _not_found(request, exc):
    return problem(exc.status_code, "NotFound" if exc.status_code == 404 else "MethodNotAllowed", "path",
                   f"{request.method} {request.url.path}: {exc.detail}", headers=exc.headers)  # 405: Allow


async def _server_error(request, exc):  # a bug must not take the service down nor leak a trace
    return problem(500, "InternalError", None, f"{type(exc).__name__}")


def create_app(journal, token=None, metrics=None, decision_log=None, max_body=MAX_BODY, role=None) -> Starlette:
    """The ASGI app over ``journal`` (``usher.journal.open`` or ``in_memory``).

    Args:
        token: the bearer token every request but /healthz and /readyz must carry
            (None: no authentication; ``usher serve`` requires one off loopback).
        metrics: a ``usher.service.metrics.Metrics`` sink (/metrics serves its registry).
        decision_log: a ``usher.service.decision_log.DecisionLog`` sink.
        max_body: the largest request body, in bytes (413 beyond).
        role: a ``usher.cluster.Broker`` (its ``journal`` is ``journal``): its gate
            refuses writes on a standby and marks answers with the journal position.
    """
    from starlette.exceptions import HTTPException

    svc = Service(journal, [s for s in (metrics, decision_log) if s is not None], max_body)
    routes = [
        Route("/v1/ops", svc.ops, methods=["POST"]),
        Route("/v1/sessions/{id}", svc.session, methods=["GET"]),
        Route("/v1/servers", svc.servers, methods=["GET"]),
        Route("/v1/servers/{name}", svc.server, methods=["GET"]),
        Route("/v1/summary", svc.summary, methods=["GET"]),
        Route("/healthz", svc.healthz, methods=["GET"]),
        Route("/readyz", svc.readyz, methods=["GET"]),
        Route("/metrics", svc.metrics, methods=["GET"]),
        Route("/openapi.json", svc.openapi, methods=["GET"]),
    ]
    middleware = [Middleware(_Auth, token=token)] if token else []
    if role is not None:  # usher.cluster (docs/CLUSTER.md)
        middleware.append(Middleware(role.middleware))
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={HTTPException: _not_found, Exception: _server_error})
    app.state.service = svc
    return app
