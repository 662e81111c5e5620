"""The operators' live view of ``usher serve``: the page at ``/`` and the JSON it reads.

Design: the dashboard is one more sink of the service, like the metrics and the
decision log. ``on_applied`` (called after each ``POST /v1/ops``, once its answer has
left) only appends the request's ops and outputs to a list (O(1)) and, in an event
loop, has them folded at the loop's next turn (while the client reads its answer,
with the request's objects still in the CPU caches, not while a later request
waits): into the history (:class:`usher.service.history.History`: launch
decisions by outcome and reason, logon durations per zone, fleet actions, per bucket
of operation time), into a ring of the latest decisions (for the search box) and a
ring of fleet actions (power, mode, image ... ops: the autoscale planner's and the
rollout's doing as the broker sees it, with the op's ``reason`` when it gave one:
why the planner acted). A sampler task on the same event loop wakes every
``interval`` seconds, and only when ops came in since its last turn: it reads the
fleet once (``Scheduler.servers()``), records the gauges in the current bucket and
encodes one message that every open event stream shares. Nothing is computed per
request on the launch path, and an idle service does no work. The folding shares
the event loop with the requests, so it takes it in short steps: :data:`FOLD_SLICE`
operations (at most :data:`FOLD_REQUESTS` requests) at a time, in the order the
requests came, yielding between slices (the sampler too, between reading the fleet
and encoding the state); the ring keeps each decision with its op, and only the
decisions a search finds are made into records.

Endpoints (docs/SERVICE.md): ``GET /`` (the page) and ``/static/dashboard.{js,css}``
(open without the token: they hold no data), ``GET /v1/dashboard/state`` (the
whole view), ``GET /v1/dashboard/history`` (the buckets), ``GET
/v1/dashboard/search?q=`` (a user or a server: sessions, latest decisions and
fleet actions),
``GET /v1/events`` (server-sent events: one ``data:`` line of JSON per turn of the
sampler). The page (``service/static``) is plain HTML, SVG and canvas with vanilla
JS: it asks no other host for anything.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from importlib import resources

import msgspec
from msgspec import UNSET
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from usher.errors import UsherError
from usher.formats.trace import (
    ImageOp,
    LaunchDecision,
    LaunchFailedOp,
    LogoffOp,
    LogonDoneOp,
    ModeOp,
    PlaceLastOp,
    PowerOp,
    RegisterOp,
    RemoveServerOp,
)
from usher.service.dashboard_views import decision_record, fleet_grid, fleet_summary, jsonable, rollout_progress
from usher.service.history import History

__all__ = ["Dashboard", "DecisionRing", "PUBLIC_PATHS", "STREAM_SECONDS"]

#: paths served without the bearer token (the page and its script: no data in them)
PUBLIC_PATHS = ("/", "/static/dashboard.js", "/static/dashboard.css")
#: an event stream ends after this many seconds (the page reconnects at once), so a
#: server that shuts down gracefully is not held by open dashboards
STREAM_SECONDS = 20.0
KEEPALIVE_SECONDS = 10.0
MAX_LAUNCHED = 1_000_000  # launches waiting for their logon_done, tracked for logon durations
FOLD_SLICE = 1000  # operations folded by the sampler between two turns of the event loop (at least a request)
FOLD_REQUESTS = 100  # and at most this many requests (single-op requests cost more per op)
_ACTION_OPS = {PowerOp: ("power", "state"), ModeOp: ("mode", "mode"), ImageOp: ("image", "image"),
               RegisterOp: ("register", "registered"), RemoveServerOp: ("remove_server", "force")}
_STATIC = {"dashboard.js": "application/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8",
           "index.html": "text/html; charset=utf-8"}
_ENCODER = msgspec.json.Encoder(enc_hook=str)


def _static(name: str) -> bytes:
    return resources.files("usher.service").joinpath("static", name).read_bytes()


class DecisionRing:
    """The latest ``maxlen`` launch decisions, oldest first, read as records
    (``dashboard_views.decision_record``: a dict each). Kept as ``(op, decision)``
    pairs (``pairs``, a deque): the sampler folds every decision of every request,
    the page reads a few."""

    def __init__(self, maxlen: int | None):
        self.pairs: deque = deque(maxlen=maxlen)

    @property
    def maxlen(self) -> int | None:
        return self.pairs.maxlen

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> dict:
        return decision_record(*self.pairs[k])

    def __iter__(self):
        return (decision_record(op, out) for op, out in self.pairs)

    def __reversed__(self):
        return (decision_record(op, out) for op, out in reversed(self.pairs))


class Dashboard:
    """The dashboard over one journal: a sink of the service and its endpoints.

    Args:
        journal: the journal (``usher.journal.open`` or ``in_memory``); its scheduler
            is read by the sampler.
        interval: seconds between the sampler's turns (the page's refresh).
        history: where the buckets go (default: 360 buckets of 60 s of operation time).
        decisions: how many of the latest launch decisions are kept for the search
            (:class:`DecisionRing`).
        actions: how many of the latest fleet actions are kept.
    """

    def __init__(self, journal, interval: float = 1.0, history: History | None = None, decisions: int = 10_000,
                 actions: int = 500, stream_seconds: float = STREAM_SECONDS):
        self.journal = journal
        self.stream_seconds = float(stream_seconds)  # an event stream's length; the page reconnects
        self.interval = float(interval)
        self.history = history if history is not None else History()
        self.decisions = DecisionRing(decisions)
        self.actions: deque = deque(maxlen=actions)
        self._pending: list = []  # (ops, outputs) of the requests since the sampler's last turn
        self._launched: dict = {}  # launch id -> (t, zone) until its logon_done
        self._image_target: str | None = None  # the image most recently set
        self._image_pools: set = set()  # the pools where an image was set
        self._pool_of: dict = {}
        self._task: asyncio.Task | None = None
        self._turned = asyncio.Event()
        self._core: dict | None = None  # the latest state without layout and history
        self._layout: dict = {}
        self._full: dict | None = None  # the latest state whole (made when asked for)
        self._delta: bytes = b""  # the latest state as one event: the history since the turn before
        self._layout_key: tuple = ()
        self._newest: float | None = None  # the newest bucket at the last turn
        self.version = 0  # turns that produced a new state
        self._folded = False  # requests were folded since the last state was made
        self._fold_due: asyncio.AbstractEventLoop | None = None  # the loop a fold of the waiting requests is due on

    # ------------------------------------------------------------ the sink
    def on_applied(self, ops, outputs, request_id=None, seconds=None) -> None:
        """One applied request (``Journal.submit``'s ops and outputs): kept, and folded
        at the event loop's next turn (the request's answer has left by then)."""
        self._pending.append((ops, outputs))
        if self._task is None:
            self._start()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # fed outside an event loop: a turn folds it in
            return
        if self._fold_due is not loop:  # none scheduled on this loop (one that closed may hold one)
            self._fold_due = loop
            loop.call_soon(self._fold_soon)

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # fed outside an event loop: the next request's turn folds it in
            return
        self._task = loop.create_task(self._run())

    def _fold_soon(self) -> None:
        """Fold a slice of what waits; again at the next turn while more waits."""
        self._fold_slice()
        if self._pending:
            asyncio.get_running_loop().call_soon(self._fold_soon)
        else:
            self._fold_due = None

    def _fold_slice(self) -> None:
        """Fold the oldest requests waiting: :data:`FOLD_SLICE` operations (at least one
        request) or :data:`FOLD_REQUESTS` requests, whichever comes first; the order of
        the requests is kept whoever folds them."""
        pending = self._pending
        k = ops = 0
        while k < len(pending) and k < FOLD_REQUESTS and (ops < FOLD_SLICE or k == 0):
            ops += len(pending[k][0])
            k += 1
        if ops > FOLD_SLICE and k > 1:  # the last request would overfill the slice: the next one folds it
            k -= 1
        batches = pending[:k]
        del pending[:k]
        self._fold_batches(batches)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            # what the turns after each request left (requests fed outside the loop),
            # a slice at a time, letting requests in between
            while self._pending:
                self._fold_slice()
                await asyncio.sleep(0)
            if self._core is None or self._folded:
                self._folded = False  # (a fold during the turn of the loop below makes the next state)
                read = self._read()  # the fleet, then (a turn of the loop later) the state made of it
                await asyncio.sleep(0)
                self._make(*read)
                self._signal()

    # ------------------------------------------------------------ the sampler
    def turn(self, force: bool = False) -> bool:
        """Fold the requests since the last turn into the history and the rings, read
        the fleet and encode the state; only when ops came in (or ``force``).
        Returns whether a new state was made."""
        if not self._pending and not self._folded and not force and self._core is not None:
            return False
        batches, self._pending = self._pending, []
        self._fold_batches(batches)
        self._folded = False
        self._make(*self._read())
        self._signal()
        return True

    def _signal(self) -> None:
        """Wake the event streams waiting for a new state."""
        old, self._turned = self._turned, asyncio.Event()
        old.set()

    def _fold_batches(self, batches) -> None:
        """Fold requests' ``(ops, outputs)`` in order: the history, and the ring of
        the latest launch decisions (:class:`DecisionRing`: kept as they are, made
        into records only when read)."""
        if not batches:
            return
        self._folded = True
        ring = self.decisions.pairs
        for ops, outputs in batches:
            ring.extend(self._fold(ops, outputs))

    def _fold(self, ops, outputs) -> list:
        """Fold one request into the history and the launches awaiting their logon;
        returns its ``(op, decision)`` pairs of launches, in order."""
        history, launched = self.history, self._launched
        bucket_t = bucket = None  # the ops of a request mostly share their t: one look-up
        pairs: list = []
        for pair in zip(ops, outputs):
            op, out = pair
            cls = out.__class__
            if cls is LaunchDecision:
                pairs.append(pair)
                t = out.t
                if t != bucket_t:
                    bucket_t, bucket = t, history.at(t)
                if bucket is not None:
                    bucket.outcomes[out.outcome] += 1
                    if out.reason:
                        bucket.rejected[out.reason] += 1
                if out.outcome == "placed":
                    launched[out.id] = (t, out.zone)
                continue
            if out is not None:  # an error line: the op changed nothing
                continue
            cls = op.__class__
            if cls is LogonDoneOp:
                started = launched.pop(op.session, None)
                b = history.at(op.t) if started is not None else None
                if b is not None:
                    b.add_logon(started[1] or "", max(0.0, op.t - started[0]))
            elif cls is LogoffOp or cls is LaunchFailedOp:
                launched.pop(op.session, None)
            elif cls in _ACTION_OPS or cls is PlaceLastOp:
                self._action(op)
        while len(launched) > MAX_LAUNCHED:
            del launched[next(iter(launched))]
        return pairs

    def _action(self, op) -> None:
        if op.__class__ is PlaceLastOp:
            kind, servers, value = "place_last", op.servers, op.flag
        else:
            kind, attr = _ACTION_OPS[op.__class__]
            servers, value = [op.server], getattr(op, attr)
        reason = getattr(op, "reason", UNSET)
        reason = None if reason is UNSET else reason
        for server in servers:
            self.actions.append({"t": op.t, "op": kind, "server": server, "value": value, "reason": reason})
        b = self.history.at(op.t)
        if b is not None:
            b.actions += len(servers)
        if op.__class__ is ImageOp and op.image is not None:
            self._image_target = op.image
            pool = self._pool(op.server)
            if pool is not None:
                self._image_pools.add(pool)

    def _pool(self, server) -> str | None:
        pool = self._pool_of.get(server)
        if pool is None:
            try:
                pool = str(self.journal.scheduler.server(server)["pool"])
            except UsherError:
                return None
            self._pool_of[server] = pool
        return pool

    def _read(self) -> tuple:
        """``(rows, summary, now)``: the fleet (``Scheduler.servers()``) and its summary,
        read together."""
        s = self.journal.scheduler
        rows = s.servers()
        return rows, fleet_summary(s, rows), s.now

    def _make(self, rows, summary, now) -> None:
        """The state (and the event every stream sends) of what :meth:`_read` gave;
        the gauges go into the bucket of ``now``."""
        layout, columns = fleet_grid(rows)
        on = summary["servers"]["by_power"].get("on", 0)
        b = self.history.at(now) if now is not None else None
        if b is not None:
            b.gauges = {"sessions": summary["sessions"], "licences": summary["licences"]["in_use"],
                        "pending": summary["pending"], "servers_on": on, "servers": summary["servers"]["total"],
                        "images": summary["servers"]["by_image"]}
        since = self._newest
        self._newest = b.start if b is not None else since
        self.version += 1
        core = {
            "version": self.version,
            "wall": time.time(),
            "interval": self.interval,
            "bucket_seconds": self.history.bucket_seconds,
            "summary": summary,
            "fleet": columns,
            "logon": self.history.logon_percentiles(),
            "actions": list(self.actions)[-50:],
            "rollout": rollout_progress(rows, self._image_target, self._image_pools),
        }
        key = (len(layout["name"]), hash(tuple(layout["name"])), hash(tuple(layout["pool"])))
        changed = key != self._layout_key
        self._layout_key = key
        self._core, self._layout, self._full = core, layout, None
        delta = dict(core, history=self.history.as_json(since))
        if changed:
            delta["layout"] = layout
        self._delta = b"data: " + _ENCODER.encode(delta) + b"\n\n"

    def _whole(self) -> dict:
        """The state with the layout and the whole history (what a new viewer needs)."""
        assert self._core is not None, "no turn yet"
        if self._full is None:
            self._full = dict(self._core, layout=self._layout, history=self.history.as_json())
        return self._full

    def state(self) -> dict:
        """The whole view now (a turn first when ops came in): ``_whole``."""
        self.turn()
        return self._whole()

    # ------------------------------------------------------------ the search
    def search(self, q: str, limit: int = 20) -> dict | None:
        """A user or a server named ``q``: its view, its live sessions, its latest
        decisions (newest first, with explanations when they were asked for), the
        latest fleet actions on it (newest first, with their reasons); None when
        nothing is known by that name."""
        s = self.journal.scheduler
        found: dict = {"query": q, "server": None, "user": None}
        try:
            found["server"] = jsonable(s.server(q))
        except UsherError:
            pass
        try:
            found["user"] = jsonable(s.user_config(q))
        except UsherError:
            pass
        rows = s.sessions()
        creator = self.journal.replayer.creator
        mask = (rows["user"] == q) | (rows["server"] == q)
        found["sessions"] = [
            {"id": creator.get(int(r["id"]), int(r["id"])), "user": r["user"], "server": r["server"],
             "pool": r["pool"], "state": str(r["state"]), "apps": list(r["apps"]), "t_launch": float(r["t_launch"]),
             "pending": bool(r["pending"])}
            for r in rows[mask]]
        recent = []
        for op, out in reversed(self.decisions.pairs):
            if op.user == q or out.server == q:
                recent.append(decision_record(op, out))
                if len(recent) >= limit:
                    break
        found["decisions"] = recent
        found["actions"] = [a for a in reversed(self.actions) if a["server"] == q][:limit]
        if found["server"] is None and found["user"] is None and not recent and not found["actions"]:
            return None
        return found

    # ------------------------------------------------------------ endpoints
    async def page(self, request: Request):
        return Response(_static("index.html"), media_type=_STATIC["index.html"],
                        headers={"cache-control": "no-cache"})

    async def asset(self, request: Request):
        name = request.path_params["name"]
        if name not in ("dashboard.js", "dashboard.css"):
            return JSONResponse({"error": "NotFound", "field": "path", "message": f"no such file: {name}"},
                                status_code=404)
        return Response(_static(name), media_type=_STATIC[name], headers={"cache-control": "no-cache"})

    async def state_endpoint(self, request: Request):
        self._ensure_task()
        return Response(_ENCODER.encode(self.state()), media_type="application/json")

    async def history_endpoint(self, request: Request):
        self.turn()
        return JSONResponse({"bucket_seconds": self.history.bucket_seconds, "buckets": self.history.as_json()})

    async def search_endpoint(self, request: Request):
        q = request.query_params.get("q", "").strip()
        if not q:
            return JSONResponse({"error": "InvalidArgument", "field": "q", "message": "name a user or a server"},
                                status_code=422)
        self.turn()
        found = self.search(q)
        if found is None:
            return JSONResponse({"error": "NotFound", "field": "q",
                                 "message": f"no user, server or recent decision is named {q!r}"}, status_code=404)
        return Response(_ENCODER.encode(found), media_type="application/json")

    async def events(self, request: Request):
        self._ensure_task()
        self.turn()
        return StreamingResponse(self._stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def _stream(self):
        yield b"data: " + _ENCODER.encode(self._whole()) + b"\n\n"
        seen = self.version
        ends = time.monotonic() + self.stream_seconds
        while (left := ends - time.monotonic()) > 0:
            turned = self._turned
            try:
                await asyncio.wait_for(turned.wait(), min(left, KEEPALIVE_SECONDS))
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if self.version == seen + 1:
                yield self._delta
            elif self.version > seen:  # missed a turn: all of it again
                yield b"data: " + _ENCODER.encode(self._whole()) + b"\n\n"
            seen = self.version

    def _ensure_task(self) -> None:
        if self._task is None:
            self._start()

    def routes(self) -> list[Route]:
        """The dashboard's routes, for the service's app."""
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/static/{name}", self.asset, methods=["GET"]),
            Route("/v1/dashboard/state", self.state_endpoint, methods=["GET"]),
            Route("/v1/dashboard/history", self.history_endpoint, methods=["GET"]),
            Route("/v1/dashboard/search", self.search_endpoint, methods=["GET"]),
            Route("/v1/events", self.events, methods=["GET"]),
        ]
