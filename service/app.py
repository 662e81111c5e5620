"""The ASGI app of ``usher serve`` (Starlette): operations in, decision lines out.

Design: every endpoint is a coroutine on one event loop, so operations are applied one
request at a time without a lock of the service's own. ``POST /v1/ops`` is the hot
path: :class:`ServiceApp` answers it before its middleware and router with a plain
ASGI handler (:meth:`Service.ops_asgi`: its own token check, body limit and error
answers) that decodes the body straight into op Structs, applies them through the
journal (``usher.journal.Journal.submit``: apply, append the records to the journal's
buffer), ends the group-commit window once per turn of the event loop (the requests
that arrived together share one fsync; a request of :data:`COMMIT_AT_ONCE` operations
or more ends it at once, its records being a group by themselves), makes its answer
while the journal writes and fsyncs, and awaits their durability before it sends it.
Metrics and the decision log are sinks fed after each answer (``sinks``), never
computed inside a handler. Errors are answered as ``{"error", "field", "message"}``
(400 for a body that is not JSON, 401 without the token, 404 for an unknown name, 413
for a body too large, 422 for a single operation that fails, 503 when the journal
cannot be written); an operation that fails changes nothing. See docs/SERVICE.md.

Extension points of :func:`create_app`: ``routes`` (more endpoints, behind the same
token check) and ``write_guard`` (a check before any write is applied: a follower
refusing writes, for example).
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from usher.errors import SessionEnded, UnknownSession, UsherError
from usher.formats.trace import LineError
from usher.service import opsbody
from usher.service.dashboard_views import fleet_summary
from usher.service.openapi import openapi_document

__all__ = ["create_app", "MAX_BODY"]

MAX_BODY = 8 << 20  # bytes of a request body (an array of ~40,000 launches)
COMMIT_AT_ONCE = 100  # operations in one request that end the group-commit window at once
NDJSON = "application/x-ndjson"
_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]]*)\s*[=:]")
_ENCODER = msgspec.json.Encoder()
_OPEN_PATHS = ("/healthz", "/readyz", "/", "/static/dashboard.js", "/static/dashboard.css")  # + the dashboard's page
_BOOLEAN = {"true": True, "false": False}


def problem(status, error, field, message, headers=None) -> JSONResponse:
    return JSONResponse({"error": error, "field": field, "message": message}, status_code=status, headers=headers)


def _field_of(message: str):
    m = _FIELD.match(message)
    return m.group(1) if m else None


class _Disconnected(Exception):
    """The client went away before its request was read."""


_JSON_TYPE = b"application/json"
_NDJSON_TYPE = NDJSON.encode()


def _problem_body(error, field, message) -> bytes:
    return _ENCODER.encode({"error": error, "field": field, "message": message})


_UNAUTHORIZED = _problem_body("Unauthorized", "Authorization", "a valid bearer token is required")


async def _send(send, status, body: bytes, headers=(), content_type=_JSON_TYPE) -> None:
    """Answer a request: one start message and one body message."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", content_type), *headers]})
    await send({"type": "http.response.body", "body": body})


def _token_ok(given, token: bytes) -> bool:
    """Whether an ``Authorization`` header value carries the bearer ``token``."""
    scheme, _, value = (given or b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), token)


async def _receive_body(receive, declared, limit: int):
    """The request body, or None when it is larger than ``limit`` bytes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _Disconnected
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else None
    chunks, size = [body], len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _refusal(write_guard, scope):
    """``(status, body, headers)`` when ``write_guard`` refuses the write, else None."""
    try:
        write_guard(scope)
    except UsherError as e:
        headers = [(k.encode("latin-1"), v.encode("latin-1"))
                   for k, v in (getattr(e, "http_headers", None) or {}).items()]
        return getattr(e, "http_status", 503), _problem_body(type(e).__name__, e.field, str(e)), headers
    return None


class _Auth:
    """Bearer-token check (ASGI middleware): every path but /healthz and /readyz."""

    def __init__(self, app, token):
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in _OPEN_PATHS:
            if not _token_ok(dict(scope["headers"]).get(b"authorization"), self.token):
                await _send(send, 401, _UNAUTHORIZED)
                return
        await self.app(scope, receive, send)


class Service:
    """The endpoints over one journal (see :func:`create_app`)."""

    def __init__(self, journal, sinks=(), max_body=MAX_BODY, token=None, write_guard=None):
        self.journal = journal
        self.sinks = list(sinks)
        self.max_body = max_body
        self.token = None if token is None else token.encode()
        self.write_guard = write_guard
        self.refusals_raise = False  # a journal's refusal (UsherError) left to an outer gate (usher.cluster)
        self._reading = 0  # ops requests that have not submitted their operations yet
        self._commit_due = False  # a _commit is scheduled on the event loop
        self._request_prefix = secrets.token_hex(8)  # new request ids: this prefix + a counter
        self._requests = 0

    # ------------------------------------------------------------ ops
    async def ops_asgi(self, scope, receive, send, authorize=True) -> None:
        """``POST /v1/ops`` as a plain ASGI app (the hot path: no router, no Request)."""
        try:
            await self._ops(scope, receive, send, authorize)
        except _Disconnected:
            return
        except Exception as e:  # a bug must not take the service down nor leak a trace
            if self.refusals_raise and isinstance(e, UsherError) and not scope.get("usher.answered"):
                raise  # the journal refused the records (a deposed leader): the gate answers 503
            if not scope.get("usher.answered"):
                await _send(send, 500, _problem_body("InternalError", None, type(e).__name__))

    def _commit(self) -> None:
        """End the group commit's window unless a request in hand has yet to submit its
        operations (it will call again): the requests whose bodies arrived in the same
        turn of the event loop share one fsync, and none waits for records that will
        not come."""
        self._commit_due = False
        if not self._reading:
            self.journal.commit_now()

    async def _ops(self, scope, receive, send, authorize) -> None:
        started = time.perf_counter()
        auth = request_id = declared = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = auth if auth is not None else value
            elif name == b"x-request-id":
                request_id = request_id if request_id is not None else value.decode("latin-1")
            elif name == b"content-length":
                declared = declared if declared is not None else value
        if authorize and self.token is not None and not _token_ok(auth, self.token):
            return await _send(send, 401, _UNAUTHORIZED)
        explain: bool | None = False
        if scope["query_string"]:
            query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
            explain = _BOOLEAN.get(query.get("explain", "false").lower())
            if explain is None:
                return await _send(send, 422, _problem_body("InvalidArgument", "explain", "must be true or false"))
        if not request_id:
            self._requests += 1
            request_id = f"{self._request_prefix}{self._requests:016x}"
        self._reading += 1
        try:
            body = await _receive_body(receive, declared, self.max_body)
        finally:
            self._reading -= 1
        if body is None:
            return await _send(send, 413, _problem_body("BodyTooLarge", "body",
                                                        f"the body is larger than {self.max_body} bytes"))
        if self.write_guard is not None:
            refused = _refusal(self.write_guard, scope)
            if refused is not None:
                return await _send(send, *refused)
        typed = opsbody.decode(body, self.journal.now)  # well-formed ops: straight to op Structs
        if typed is not None:
            items, single = typed
        else:  # the general way: a dict per item, each bad one answered by its error line
            try:
                items = msgspec.json.decode(body)
            except (msgspec.DecodeError, RecursionError) as e:
                return await _send(send, 400, _problem_body("MalformedJSON", "body", f"not a JSON text ({e})"))
            single = isinstance(items, dict)
            if single:
                items = [items]
            elif not isinstance(items, list):
                return await _send(send, 422, _problem_body("InvalidArgument", "body",
                                                            "must be a JSON object (an op) or an array of ops"))
        ops, outputs, ticket = self.journal.submit(items, explain=explain)
        if len(ops) >= COMMIT_AT_ONCE:  # a group of its own: written while its answer is made
            self.journal.commit_now()
        elif not self._commit_due:  # end the group once this turn of the loop has run
            self._commit_due = True
            asyncio.get_running_loop().call_soon(self._commit)
        # the answer is made while the journal writes and fsyncs (sent only once durable)
        lines = getattr(self.journal, "answer_lines", None)  # the journal's encoding of the decision lines, when it is the answer
        answer = self._answer(request_id, single, outputs, lines[1] if lines and lines[0] == ticket else None)
        try:
            await self.journal.wait_async(ticket)
        except UsherError:
            if self.refusals_raise:
                raise  # refused (usher.cluster's NotLeader): the gate answers it
            scope["usher.answered"] = True
            await _send(send, 503, _problem_body("JournalFailed", "journal",
                                                 "a journal write failed: no decision is acknowledged"))
            return
        except Exception:  # the journal could not be written: nothing is acknowledged
            scope["usher.answered"] = True
            await _send(send, 503, _problem_body("JournalFailed", "journal",
                                                 "a journal write failed: no decision is acknowledged"))
            return
        seconds = time.perf_counter() - started
        scope["usher.answered"] = True
        try:
            await _send(send, *answer)
            # let the loop send the answer first (a coalescing transport writes at the
            # end of the turn): the sinks run after it has left, off the client's wait
            await asyncio.sleep(0)
        finally:  # even if the client has gone
            for sink in self.sinks:
                sink.on_applied(ops, outputs, request_id, seconds)

    @staticmethod
    def _answer(request_id, single, outputs, encoded=None) -> tuple:
        """``(status, body, headers, content_type)`` of the answer to applied
        operations (:func:`_send`'s arguments): a single op's error as 422, else their
        lines; ``encoded``: those lines already encoded, every output being a launch
        decision (``Journal.answer_lines``)."""
        extra = [(b"x-request-id", request_id.encode("latin-1"))]
        if encoded is not None:
            extra.append((b"x-usher-applied", str(len(outputs)).encode()))
            extra.append((b"x-usher-errors", b"0"))
            return 200, encoded, extra, _NDJSON_TYPE
        if single and outputs[0].__class__ is LineError:
            line = outputs[0]
            return 422, _problem_body(line.error, _field_of(line.message), line.message), extra, _JSON_TYPE
        lines = [o for o in outputs if o is not None]
        errors = sum(1 for o in lines if o.__class__ is LineError)
        extra.append((b"x-usher-applied", str(len(outputs) - errors).encode()))
        extra.append((b"x-usher-errors", str(errors).encode()))
        return 200, _ENCODER.encode_lines(lines) if lines else b"", extra, _NDJSON_TYPE

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
        body = fleet_summary(s, s.servers())
        del body["pending"]
        body["journal"] = {"records": self.journal.seq, "fsync": self.journal.fsync,
                           "directory": self.journal.directory}
        return JSONResponse(body)

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


class _OpsRoute:
    """``POST /v1/ops`` reached through the router (the app mounted under a prefix):
    the same handler; the auth middleware has already checked the token."""

    def __init__(self, service):
        self.service = service

    async def __call__(self, scope, receive, send):
        await self.service.ops_asgi(scope, receive, send, authorize=False)


class ServiceApp(Starlette):
    """Starlette with ``POST /v1/ops`` answered before the middleware and the router
    (its own token check, body limit and error answers; see :meth:`Service.ops_asgi`):
    the hot path pays for none of the machinery the other endpoints use."""

    service: Service
    ops_entry: Any  # POST /v1/ops: the service's handler, behind the cluster's gate when there is one

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/v1/ops" and scope["method"] == "POST":
            await self.ops_entry(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(journal, token=None, metrics=None, decision_log=None, max_body=MAX_BODY, routes=(),
               write_guard=None, dashboard=True, role=None) -> Starlette:
    """The ASGI app over ``journal`` (``usher.journal.open`` or ``in_memory``).

    Args:
        token: the bearer token every request but /healthz and /readyz must carry
            (None: no authentication; ``usher serve`` requires one off loopback).
        metrics: a ``usher.service.metrics.Metrics`` sink (/metrics serves its registry).
        decision_log: a ``usher.service.decision_log.DecisionLog`` sink.
        max_body: the largest request body, in bytes (413 beyond).
        routes: more Starlette routes, served after the built-in ones (behind the
            same token check).
        write_guard: ``write_guard(scope)``, called before a ``POST /v1/ops`` applies
            anything; it refuses the write by raising an ``UsherError``, answered with
            the error's ``http_status`` (default 503) and ``http_headers`` (a dict,
            optional) as ``{"error", "field", "message"}``.
        dashboard: the live view at ``/`` (``usher.service.dashboard``): True for one
            over ``journal``, a ``Dashboard``, or False for none.
        role: a ``usher.cluster.Broker`` (its ``journal`` is ``journal``): its gate
            refuses writes on a standby and marks answers with the journal position.
    """
    from starlette.exceptions import HTTPException

    if dashboard is True:
        from usher.service.dashboard import Dashboard

        dashboard = Dashboard(journal)
    sinks = [s for s in (metrics, decision_log, dashboard or None) if s is not None]
    svc = Service(journal, sinks, max_body, token, write_guard)
    builtin = [
        Route("/v1/ops", _OpsRoute(svc), methods=["POST"]),
        Route("/v1/sessions/{id}", svc.session, methods=["GET"]),
        Route("/v1/servers", svc.servers, methods=["GET"]),
        Route("/v1/servers/{name}", svc.server, methods=["GET"]),
        Route("/v1/summary", svc.summary, methods=["GET"]),
        Route("/healthz", svc.healthz, methods=["GET"]),
        Route("/readyz", svc.readyz, methods=["GET"]),
        Route("/metrics", svc.metrics, methods=["GET"]),
        Route("/openapi.json", svc.openapi, methods=["GET"]),
        *(dashboard.routes() if dashboard else ()),
    ]
    middleware = [Middleware(_Auth, token=token)] if token else []
    if role is not None:  # usher.cluster (docs/CLUSTER.md): the gate before every endpoint
        middleware.append(Middleware(role.middleware))
        svc.refusals_raise = True
    app = ServiceApp(routes=[*builtin, *routes], middleware=middleware,
                     exception_handlers={HTTPException: _not_found, Exception: _server_error})
    app.service = svc
    app.ops_entry = svc.ops_asgi if role is None else role.middleware(svc.ops_asgi)
    app.state.service = svc
    app.state.dashboard = dashboard or None
    return app
