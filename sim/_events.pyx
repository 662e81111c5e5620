# cython: language_level=3, boundscheck=True, wraparound=True
"""The simulated day's per-event code, compiled: the visit and the books, the
engine calls, the launch handler (:mod:`usher.sim.launches`), the session events
and the new visits (:mod:`usher.sim.handlers`).

Design: a simulated day is ~10^5 launches and ~10^6 session events, each a
microsecond or less of engine work; in the interpreter, the code around each one
(drawing its fields, calling the engine, booking the session, scheduling the
next events) cost several times that. Here that code is C, written as the Python
it replaces, in the same order (the same engine calls, the same calendar items,
the same trace lines, the same counts): a :class:`Visit` keeps its integer
fields in C, :class:`Books` and :class:`EngineCalls` are extension types whose
fields are read without a dictionary, and the engine's time is read with
``clock_gettime(CLOCK_MONOTONIC)`` (what ``time.perf_counter`` reads). Indexing
keeps Python's checks (bounds, negative indices), so a bad index raises as the
Python did. Settings
and values whose type the scenario chooses (retry delays, times) stay Python
objects, so their arithmetic is Python's; the presampled columns a placement
schedules from (int64 by construction) are read as int64.

The engine is reached through its C entries while the scheduler's methods are
the engine's own (a subclass's override is called as before): a launch through
``LAUNCH_ROW`` writes its decision into a C row (no ``Decision``); the session
operations of one call of a hot handler (:func:`session_events`,
:func:`launches`) are gathered into a run applied through ``SESSION_ROWS``
before the handler returns or any other engine call (nothing between reads the
engine); a run the engine refuses applies nothing and goes one row at a time
through the public calls, so the state and the error are those of the calls
one by one.
"""

cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport free, realloc
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

import numpy as np

from usher import _engine
from usher.core import layout as _layout
from usher.core.codes import Outcome, SessionOp
from usher.errors import UsherError
from usher.sim import calendar as _cal
from usher.sim.demand import K_IMAGING as _K_IMAGING
from usher.sim.scenario import APP_LABS

PLACED, RECONNECTED, SHARED, REJECTED = (int(Outcome.PLACED), int(Outcome.RECONNECTED),
                                         int(Outcome.SHARED), int(Outcome.REJECTED))

cdef int64_t C_PLACED = PLACED, C_SHARED = SHARED, C_REJECTED = REJECTED
cdef int64_t C_L_NEW = _cal.L_NEW, C_L_SECOND = _cal.L_SECOND, C_L_RECONNECT = _cal.L_RECONNECT
cdef int64_t C_E_LOGON = _cal.E_LOGON, C_E_FAIL = _cal.E_FAIL, C_E_DISCONNECT = _cal.E_DISCONNECT
cdef int64_t C_E_CLOSE = _cal.E_CLOSE, C_E_END = _cal.E_END
cdef int64_t C_K_IMAGING = _K_IMAGING
cdef object L_NEW = _cal.L_NEW

# The engine's C entries (bindings/_engine.pyx, as formats/_replayloop.pyx takes them):
# ``launch_row(s, user, app, location, endpoint, external, now, row)`` is
# ``s.launch(...)`` with the decision written into ``row`` (layout.D_*) instead of a
# Decision; ``session_rows(s, n, ops, sessions, times)`` is ``s.session_ops_many`` of C
# rows (a run it refuses goes to the public call, nothing applied). Used only while the
# scheduler's own methods are the engine's (a subclass's override is called as before).
ctypedef int (*launch_row_fn)(object, object, object, object, object, object, object,
                              int64_t*) except -1
ctypedef int (*session_rows_fn)(object, Py_ssize_t, const int64_t*, const int64_t*,
                                const double*) except -1
cdef launch_row_fn launch_row = <launch_row_fn>PyCapsule_GetPointer(
    _engine.LAUNCH_ROW, b"usher._engine.launch_row")
cdef session_rows_fn session_rows = <session_rows_fn>PyCapsule_GetPointer(
    _engine.SESSION_ROWS, b"usher._engine.session_rows")
cdef Py_ssize_t D_OUTCOME = _layout.D_OUTCOME, D_REASON = _layout.D_REASON, D_SERVER = _layout.D_SERVER
cdef Py_ssize_t D_SESSION = _layout.D_SESSION, D_LOAD_INDEX = _layout.D_LOAD_INDEX
cdef enum:
    ROW_MAX = 16  # room for a decision row
    N_ROW = 5  # a launch's row here: outcome, reason, server, session, load index
if _layout.N_D > ROW_MAX:
    raise ImportError(f"a decision row has {_layout.N_D} fields; the day's row holds {ROW_MAX}")
cdef int64_t OP_LOGON = SessionOp.LOGON_COMPLETE, OP_DISCONNECT = SessionOp.DISCONNECT
cdef int64_t OP_LOGOFF = SessionOp.LOGOFF, OP_FAILED = SessionOp.LAUNCH_FAILED
#: the engine's own methods: a scheduler whose method is one of these is reached
#: through the C entries
cdef tuple ENGINE_SESSION_METHODS = (
    ("logon_complete", _engine.Engine.logon_complete), ("disconnect", _engine.Engine.disconnect),
    ("logoff", _engine.Engine.logoff), ("launch_failed", _engine.Engine.launch_failed),
    ("session_ops_many", _engine.Engine.session_ops_many))


cdef bint _own(s, str name, method):
    """``s.name`` is ``method``, the engine's own (not a subclass's, nor set on ``s``)."""
    return getattr(type(s), name, None) is method and name not in getattr(s, "__dict__", ())


cdef inline double _clock() noexcept nogil:
    """``time.perf_counter()``: the monotonic clock, in seconds."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef extern from "Python.h":
    object PyUnicode_DecodeASCII(const char* s, Py_ssize_t size, const char* errors)


cpdef str workstation(dict endpoints, int64_t W, int64_t h, int64_t w):
    """The endpoint name of workstation ``w`` of hospital ``h``: ``f"ws-{h:02d}-{w:04d}"``,
    made once and kept in ``endpoints`` under ``h * W + w`` (the day's
    :meth:`usher.sim.day.Day.ws_name`)."""
    key = h * W + w
    cdef PyObject* hit = PyDict_GetItem(endpoints, key)
    if hit != NULL:
        return <str>hit
    cdef char buf[64]
    cdef int n
    if h >= 0 and w >= 0:
        n = snprintf(buf, sizeof(buf), "ws-%02lld-%04lld", <long long>h, <long long>w)
        name = PyUnicode_DecodeASCII(buf, n, NULL)
    else:  # Python's padding of a negative number
        name = f"ws-{h:02d}-{w:04d}"
    endpoints[key] = name
    return name


cdef void* _grown(void* block, size_t size) except NULL:
    """``block`` reallocated to ``size`` bytes (its contents kept)."""
    cdef void* p = realloc(block, size)
    if p == NULL:
        raise MemoryError("cannot allocate a run of session ops")
    return p


# ---------------------------------------------------------------- the calendar's queues
cdef struct SItem:
    PyObject* visit  # a reference held while the item is queued
    PyObject* sid  # likewise (None in a launch)
    int64_t gen, kind
    int64_t next  # the next item of the same tick, or of the free list; -1 none


cdef class TickQueue:
    """A calendar queue of the day's visit events: per tick of the day, items
    (kind, visit, generation, session) in the order scheduled, kept as C records
    in one pool (a FIFO list per tick, freed slots reused) rather than a tuple
    each in a dict of lists. A tick outside the day (``< 0`` or ``>= T``) is
    never run: its items are not kept. A tick's items are taken off all at once
    when it runs: items scheduled for it while it runs make a new list that is
    never run, as a bucket made for a tick already run. The subclasses take
    items from Python (``schedule``) in their form, which :meth:`take` and
    :meth:`peek` give back."""

    cdef SItem* items
    cdef Py_ssize_t cap, used, free, n_live  # slots: made, first free one (-1 none), holding an item
    cdef int64_t* head
    cdef int64_t* tail
    cdef readonly int64_t T

    def __cinit__(self, int64_t T):
        if T < 0:
            raise ValueError(f"T must be >= 0, got {T}")
        self.T = T
        self.free = -1
        self.head = <int64_t*>_grown(NULL, (T + 1) * sizeof(int64_t))
        self.tail = <int64_t*>_grown(NULL, (T + 1) * sizeof(int64_t))
        cdef int64_t t
        for t in range(T + 1):
            self.head[t] = -1
            self.tail[t] = -1

    def __dealloc__(self):
        cdef int64_t t, k
        if self.head != NULL:
            for t in range(self.T):
                k = self.head[t]
                while k >= 0:
                    Py_XDECREF(self.items[k].visit)
                    Py_XDECREF(self.items[k].sid)
                    k = self.items[k].next
        free(self.items)
        free(self.head)
        free(self.tail)

    cdef int add(self, int64_t tick, int64_t kind, visit, int64_t gen, sid) except -1:
        """Schedule an item at ``tick`` (after the items already there)."""
        cdef Py_ssize_t k
        if tick < 0 or tick >= self.T:
            return 0
        k = self.free
        if k < 0:  # a new slot
            k = self.used
            if k == self.cap:
                self.cap = max(1024, 2 * self.cap)
                self.items = <SItem*>_grown(self.items, self.cap * sizeof(SItem))
            self.used += 1
        else:
            self.free = self.items[k].next
        Py_INCREF(visit)
        Py_INCREF(sid)
        self.items[k].visit = <PyObject*>visit
        self.items[k].sid = <PyObject*>sid
        self.items[k].gen = gen
        self.items[k].kind = kind
        self.items[k].next = -1
        if self.tail[tick] >= 0:
            self.items[self.tail[tick]].next = k
        else:
            self.head[tick] = k
        self.tail[tick] = k
        self.n_live += 1
        return 0

    cdef inline bint due(self, int64_t tick) noexcept:
        return 0 <= tick < self.T and self.head[tick] >= 0

    cdef inline int64_t detach(self, int64_t tick) noexcept:
        """The first item of ``tick``'s list (-1 none); the list is off the queue,
        its items then taken one by one with :meth:`release`."""
        if tick < 0 or tick >= self.T:
            return -1
        cdef int64_t k = self.head[tick]
        self.head[tick] = self.tail[tick] = -1
        return k

    cdef inline int64_t release(self, int64_t k, SItem* out) noexcept:
        """Item ``k`` copied into ``out`` (its references now the caller's) and its
        slot freed; returns the next item of its tick (-1 none)."""
        cdef SItem* it = &self.items[k]
        out[0] = it[0]
        cdef int64_t nxt = it.next
        it.visit = it.sid = NULL
        it.next = self.free
        self.free = k
        self.n_live -= 1
        return nxt

    cdef void drop(self, int64_t k) noexcept:
        """Items ``k`` on (of a detached tick) released and their references dropped."""
        cdef SItem x
        while k >= 0:
            k = self.release(k, &x)
            Py_XDECREF(x.visit)
            Py_XDECREF(x.sid)

    cdef tuple _tuple(self, SItem* x):
        """An item's Python form: ``(kind, visit, generation, session)`` (a
        subclass may give another)."""
        return (x.kind, <object>x.visit, x.gen, <object>x.sid)

    def take(self, int64_t tick) -> list:
        """The items of ``tick``, in order (a list of tuples), off the queue."""
        cdef list out = []
        cdef int64_t k = self.detach(tick)
        cdef SItem x
        while k >= 0:
            k = self.release(k, &x)
            try:
                out.append(self._tuple(&x))
            finally:
                Py_DECREF(<object>x.visit)
                Py_DECREF(<object>x.sid)
        return out

    def peek(self, int64_t tick) -> list:
        """The items of ``tick``, in order (a list of tuples), left on the queue."""
        cdef list out = []
        if tick < 0 or tick >= self.T:
            return out
        cdef int64_t k = self.head[tick]
        while k >= 0:
            out.append(self._tuple(&self.items[k]))
            k = self.items[k].next
        return out

    def __len__(self):
        """Items still scheduled."""
        return self.n_live


@cython.final
cdef class SessionQueue(TickQueue):
    """The session events: items ``(kind, visit, generation, session)``."""

    def schedule(self, tick, item):
        """``item`` = ``(kind, visit, generation, session)`` at ``tick``."""
        kind, visit, gen, sid = item
        self.add(tick, kind, visit, gen, sid)


@cython.final
cdef class LaunchQueue(TickQueue):
    """The launches: items ``(visit, generation, kind)``."""

    def schedule(self, tick, item):
        """``item`` = ``(visit, generation, kind)`` at ``tick``."""
        visit, gen, kind = item
        self.add(tick, kind, visit, gen, None)

    cdef tuple _tuple(self, SItem* x):
        return (<object>x.visit, x.gen, x.kind)


# ---------------------------------------------------------------- the idle users
@cython.final
cdef class IdlePools:
    """The idle users of each hospital by role (0 clinical, 1 imaging): per
    (hospital, role) a stack of user indices in C, which a new visit takes from
    (swapping the last one into the hole, as a list's ``pool[j] = pool[-1];
    pool.pop()``) and an ended visit puts back (an append). A user returns to the
    pool it was taken from, so a pool never holds more than the users it started
    with. ``pools``: per hospital, [clinical, imaging] lists of user indices, in
    the order the picks read them."""

    cdef int64_t* users  # the pools' slots, pool p from start[p] (p = 2 * hospital + role)
    cdef Py_ssize_t* start
    cdef Py_ssize_t* size
    cdef readonly Py_ssize_t hospitals

    def __cinit__(self, list pools):
        cdef Py_ssize_t n = 0, p = 0, k
        self.hospitals = len(pools)
        for lists in pools:
            n += len(lists[0]) + len(lists[1])
        self.users = <int64_t*>_grown(NULL, max(n, 1) * sizeof(int64_t))
        self.start = <Py_ssize_t*>_grown(NULL, (2 * self.hospitals + 1) * sizeof(Py_ssize_t))
        self.size = <Py_ssize_t*>_grown(NULL, max(2 * self.hospitals, 1) * sizeof(Py_ssize_t))
        n = 0
        for lists in pools:
            if len(lists) != 2:
                raise ValueError(f"a hospital's idle users are [clinical, imaging] lists, got {len(lists)} lists")
            for role in range(2):
                self.start[p] = n
                self.size[p] = len(lists[role])
                for k in range(self.size[p]):
                    self.users[n + k] = lists[role][k]
                n += self.size[p]
                p += 1
        self.start[p] = n

    def __dealloc__(self):
        free(self.users)
        free(self.start)
        free(self.size)

    cdef inline Py_ssize_t _pool(self, int64_t h, int64_t role) except -1:
        if not (0 <= h < self.hospitals and 0 <= role <= 1):
            raise IndexError(f"no idle pool for hospital {h}, role {role}")
        return 2 * h + role

    cpdef Py_ssize_t count(self, int64_t h, int64_t role) except -1:
        """Idle users of hospital ``h`` in ``role``."""
        return self.size[self._pool(h, role)]

    cpdef int64_t take(self, int64_t h, int64_t role, Py_ssize_t j) except? -1:
        """User ``j`` of the pool (an index as a list takes it), off the pool."""
        cdef Py_ssize_t p = self._pool(h, role), n = self.size[p]
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError("list index out of range")
        cdef int64_t* pool = self.users + self.start[p]
        cdef int64_t u = pool[j]
        pool[j] = pool[n - 1]
        self.size[p] = n - 1
        return u

    cpdef put(self, int64_t h, int64_t role, int64_t u):
        """User ``u`` idle again in its pool (last)."""
        cdef Py_ssize_t p = self._pool(h, role)
        if self.start[p] + self.size[p] == self.start[p + 1]:
            raise RuntimeError(f"idle pool of hospital {h}, role {role} full: user {u} put back twice")
        self.users[self.start[p] + self.size[p]] = u
        self.size[p] += 1

    def users_of(self, int64_t h, int64_t role) -> list:
        """The pool's users, in order (a copy)."""
        cdef Py_ssize_t p = self._pool(h, role)
        return [self.users[self.start[p] + k] for k in range(self.size[p])]


# ---------------------------------------------------------------- the visit and the books
@cython.final
cdef class Visit:
    """One user's stay: from the first launch to the planned logoff.

    ``a``: arrival index (into the presampled columns); ``user``/``uname``: user
    index and id; ``kind``: K_* visit kind; ``h``/``role``: hospital and idle-list
    role (0 clinical, 1 imaging); ``app``, ``loc``, ``ext``, ``ep``: what is launched
    from where; ``end``: planned logoff tick; ``gen``: generation (events of an older
    one are stale); ``sid``: the visit's main session (-1 none); ``labs``: the
    session the second app runs in (-1 none); ``extras``: further sessions of the
    visit; ``tries``: retries so far; ``fail``: the next placement's logon fails;
    ``first``: no placement yet."""

    cdef public int64_t a, user, kind, h, role, end, gen, sid, tries, labs
    cdef public object uname, app, loc, ep, extras
    cdef public bint ext, fail, first


@cython.final
cdef class Books:
    """Live sessions as the simulator saw them placed.

    Attributes:
        entries: dict session id -> (visit, server index).
        launching: session ids whose logon has not completed (a user may disconnect,
            or a failure may be due, before it does).
        booked: list of int, booked sessions per server.
        names: session id -> id of the launch that created it (kept when tracing or
            keeping decisions).
    """

    cdef public dict entries, names
    cdef public set launching
    cdef public list booked
    cdef public bint naming

    def __init__(self, n_servers: int, naming: bool):
        self.entries = {}
        self.launching = set()
        self.booked = [0] * n_servers
        self.names = {}
        self.naming = naming

    cpdef book(self, sid, visit, server, launch_name):
        self.entries[sid] = (visit, server)
        self.launching.add(sid)
        self.booked[server] += 1
        if self.naming:
            self.names[sid] = launch_name

    cpdef unbook(self, sid):
        """Take ``sid`` off the books; its (visit, server), or None if not booked."""
        entry = self.entries.pop(sid, None)
        if entry is not None:
            self.booked[(<tuple>entry)[1]] -= 1
        return entry

    def __contains__(self, sid) -> bool:
        return sid in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def balance(self, engine_sessions, engine_live: int) -> bool:
        """True when the books equal the engine's sessions server by server."""
        return bool(np.array_equal(engine_sessions, np.array(self.booked, dtype=np.int64))
                    and len(self.entries) == engine_live)


# ---------------------------------------------------------------- the engine calls
@cython.final
cdef class EngineCalls:
    """The engine ``s`` as the day uses it: every operation the day applies to the
    engine, timed, counted and written to the trace (docs/TRACE_FORMAT.md) in the
    order applied, so ``usher replay`` of the trace reproduces the same decisions.

    Attributes:
        seconds: time spent inside the engine; ``launch_seconds``: of that, in
            launches; ``ops``: operations applied.
        trace: the :class:`usher.sim.trace.TraceWriter` or None.
        server_names: list of server names (trace lines).
        session_names: dict session id -> id of the launch that created it.
    """

    cdef public object s, trace, append, server_names
    cdef object _logoff  # s.logoff, bound once
    cdef public dict session_names
    cdef public double seconds, launch_seconds
    cdef public int64_t ops
    cdef bint _row_launch  # s.launch is the engine's own: LAUNCH_ROW
    cdef bint _row_sessions  # so are its session calls: runs through SESSION_ROWS
    cdef bint _batching  # session ops are gathered into the run (see _sop)
    cdef int64_t* _rows  # the launches' rows, N_ROW per launch
    cdef Py_ssize_t _rows_cap
    cdef int64_t* _run_ops  # the run of session ops not yet applied: op, session, time
    cdef int64_t* _run_sids
    cdef double* _run_times
    cdef Py_ssize_t _run_n, _run_cap

    def __init__(self, s, trace, server_names, session_names: dict):
        self.s = s
        self._logoff = s.logoff
        self.trace = trace
        self.append = trace.append if trace is not None else None
        self.server_names = server_names
        self.session_names = session_names
        self.seconds = 0.0
        self.launch_seconds = 0.0
        self.ops = 0
        self._row_launch = isinstance(s, _engine.Engine) and _own(s, "launch", _engine.Engine.launch)
        self._row_sessions = isinstance(s, _engine.Engine) and all(
            _own(s, name, m) for name, m in ENGINE_SESSION_METHODS)

    def __dealloc__(self):
        free(self._rows)
        free(self._run_ops)
        free(self._run_sids)
        free(self._run_times)

    cdef int64_t* _room(self, Py_ssize_t n) except NULL:
        """Room for ``n`` launches' rows (kept between calls)."""
        cdef void* p
        if n > self._rows_cap or self._rows == NULL:
            n = max(n, 2 * self._rows_cap, 64)
            p = realloc(self._rows, n * N_ROW * sizeof(int64_t))
            if p == NULL:
                raise MemoryError("cannot allocate the launches' rows")
            self._rows, self._rows_cap = <int64_t*>p, n
        return self._rows

    # ------------------------------------------------------------ the run of session ops
    # Inside a handler of the day's hot events (session_events, launches) the session
    # operations are gathered into a run and applied by one engine call
    # (session_ops_many of C rows: the same as one call each when every row succeeds)
    # before the handler returns and before any other engine call. Nothing between
    # reads the engine. A run the engine refuses applies nothing: its rows then go one
    # by one through the public calls, which apply the rows before the bad one and
    # raise its error, as the calls one by one did.
    cdef bint _begin(self):
        """Start gathering (when the engine's own session calls are used); True
        when this call started it (the caller ends it)."""
        if self._batching or not self._row_sessions:
            return False
        self._batching = True
        return True

    cdef int _end(self) except -1:
        self._batching = False
        return self._flush()

    cdef int _flush(self) except -1:
        """Apply the run, timed as one engine call."""
        cdef Py_ssize_t n = self._run_n, k
        if n == 0:
            return 0
        self._run_n = 0
        cdef double t0 = _clock()
        try:
            session_rows(self.s, n, self._run_ops, self._run_sids, self._run_times)
        except UsherError:
            s = self.s
            calls = {OP_LOGON: s.logon_complete, OP_DISCONNECT: s.disconnect, OP_LOGOFF: s.logoff,
                     OP_FAILED: s.launch_failed}
            for k in range(n):
                calls[self._run_ops[k]](self._run_sids[k], self._run_times[k])
        finally:
            self.seconds += _clock() - t0
        return 0

    cdef int _sop(self, int64_t op, fn, str name, sid, now) except -1:
        """The session operation ``fn(sid, now)`` (``op`` its SessionOp code), traced
        as ``name``: into the run while gathering, else applied now."""
        cdef int64_t x = -1
        cdef Py_ssize_t n = self._run_n
        if self._batching and type(sid) is int and type(now) is float:
            try:
                x = sid
            except OverflowError:
                x = -1
        if x < 0:  # not gathering, or a value the public call checks
            self.session(fn, name, sid, now)
            return 0
        if n == self._run_cap:
            self._run_cap = max(64, 2 * n)
            self._run_ops = <int64_t*>_grown(self._run_ops, self._run_cap * sizeof(int64_t))
            self._run_sids = <int64_t*>_grown(self._run_sids, self._run_cap * sizeof(int64_t))
            self._run_times = <double*>_grown(self._run_times, self._run_cap * sizeof(double))
        self._run_ops[n] = op
        self._run_sids[n] = x
        self._run_times[n] = <double>now
        self._run_n = n + 1
        self.ops += 1
        if self.append is not None:
            self.append({"t": now, "op": name, "session": self.session_names[sid]})
        return 0

    # ------------------------------------------------------------ the calls
    def timed(self, ops, fn, *args, **kw):
        """``fn(*args, **kw)``, its time added to ``seconds``, ``ops`` operations counted."""
        if self._run_n:
            self._flush()
        cdef double t0 = _clock()
        out = fn(*args, **kw)
        self.seconds += _clock() - t0
        self.ops += ops
        return out

    cpdef session(self, fn, op, sid, now, reason=None):
        """A session operation ``fn(sid, now)`` (logon_complete, launch_failed,
        disconnect, logoff), traced as ``op`` (with ``reason`` when given)."""
        if self._run_n:
            self._flush()
        cdef double t0 = _clock()
        out = fn(sid, now)
        self.seconds += _clock() - t0
        self.ops += 1
        if self.append is not None:
            line = {"t": now, "op": op, "session": self.session_names[sid]}
            if reason is not None:
                line["reason"] = reason
            self.append(line)
        return out

    cdef int _launch_rows(self, list reqs, now, d, list apps, list eps, int64_t* out) except -1:
        """One ``launch()`` per request, in order: the app and endpoint of each into
        ``apps`` and ``eps``, its (outcome, reason, server, session, load index) into
        ``out[N_ROW * k:]``. Adds to ``seconds`` and ``launch_seconds``."""
        if self._run_n:
            self._flush()
        s = self.s
        launch = None if self._row_launch else s.launch
        cdef double spent = 0.0, t0
        cdef int64_t row[ROW_MAX]
        cdef int64_t* o
        cdef Visit v
        cdef Py_ssize_t k, n = len(reqs)
        cdef tuple q
        for k in range(n):
            q = <tuple>reqs[k]
            v = <Visit>q[0]
            app, ep = app_and_endpoint(d, v, q[2])
            apps.append(app)
            eps.append(ep)
            o = out + N_ROW * k
            if launch is None:
                t0 = _clock()
                launch_row(s, v.uname, app, v.loc, ep, v.ext, now, row)
                spent += _clock() - t0
                o[0], o[1], o[2], o[3], o[4] = (row[D_OUTCOME], row[D_REASON], row[D_SERVER], row[D_SESSION],
                                                row[D_LOAD_INDEX])
            else:
                t0 = _clock()
                dd = launch(v.uname, app, v.loc, ep, v.ext, now)
                spent += _clock() - t0
                o[0], o[1], o[2], o[3], o[4] = (dd.outcome_code, dd.reason_code, dd.server_index, dd.session_id,
                                                dd.load_index_value)
        self.seconds += spent
        self.launch_seconds += spent
        self.ops += n
        return 0

    cpdef list launch_each(self, list reqs, now, d):
        """One ``launch()`` per request (visit, generation, kind) of
        :mod:`usher.sim.launches`, in order, of the app from the endpoint of
        :func:`app_and_endpoint`. Returns (app, endpoint, outcome, reason, server,
        session, load index) per request. Adds to ``launch_seconds`` too."""
        cdef list apps = [], eps = []
        cdef int64_t* rows = self._room(len(reqs))
        self._launch_rows(reqs, now, d, apps, eps, rows)
        return _row_tuples(apps, eps, rows)

    cpdef logoff(self, sid, now, reason=None):
        if self._batching and reason is None:
            self._sop(OP_LOGOFF, self._logoff, "logoff", sid, now)
            return None
        return self.session(self._logoff, "logoff", sid, now, reason)

    def close_labs(self, sid, now) -> bool:
        """The second app closes in session ``sid``; True when that ended the session."""
        ended = self.timed(1, self.s.close_app, sid, APP_LABS, now)
        if self.append is not None:
            self.append({"t": now, "op": "close_app", "session": self.session_names[sid], "app": APP_LABS})
        return ended

    def _server_op(self, line, reason):
        """Trace a server-state op, with the planner's ``reason`` when it gave one."""
        if reason is not None:
            line["reason"] = reason
        self.append(line)

    def set_power(self, i, state, now, reason=None):
        """Power state of server ``i``; returns the sessions lost (powering off).
        ``reason``: why (a planner's action), traced with the op."""
        out = self.timed(1, self.s.set_power, int(i), state, now=now)
        if self.append is not None:
            self._server_op({"t": now, "op": "power", "server": self.server_names[i], "state": state}, reason)
        return out

    def set_mode(self, i, mode, now, reason=None):
        self.timed(1, self.s.set_mode, int(i), mode, now=now)
        if self.append is not None:
            self._server_op({"t": now, "op": "mode", "server": self.server_names[i], "mode": mode}, reason)

    def set_place_last(self, i, flag, now, reason=None):
        self.timed(1, self.s.set_place_last, int(i), flag, now=now)
        if self.append is not None:
            self._server_op({"t": now, "op": "place_last", "servers": [self.server_names[i]], "flag": flag}, reason)

    def set_place_last_many(self, servers, flag, now, reasons):
        """Mark (``flag`` True) or unmark ``servers`` (a list of indices) in one
        engine call, as one ``set_place_last`` each would; traced one line per
        server, in order, with its reason (``reasons[k]``, or None)."""
        self.timed(len(servers), self.s.set_place_last, servers, flag, now=now)
        if self.append is not None:
            names = self.server_names
            for i, why in zip(servers, reasons):
                self._server_op({"t": now, "op": "place_last", "servers": [names[i]], "flag": flag}, why)

    def set_registered(self, i, registered, now):
        self.timed(1, self.s.set_registered, int(i), registered, now=now)
        if self.append is not None:
            self.append({"t": now, "op": "register", "server": self.server_names[i], "registered": registered})

    def set_image(self, i, image, now, reason=None):
        self.timed(1, self.s.set_image, int(i), image, now=now)
        if self.append is not None:
            self._server_op({"t": now, "op": "image", "server": self.server_names[i], "image": image}, reason)

    def telemetry(self, idx, cpu, mem, now, traced):
        """Telemetry of servers ``idx`` (one ``telemetry_many``); ``traced`` (bool per
        server) says which rows go to the trace. Timed and counted as ``timed`` does,
        the engine called with its arguments in place."""
        if self._run_n:
            self._flush()
        cdef double t0 = _clock()
        self.s.telemetry_many(idx, cpu, mem, None, None, now)
        self.seconds += _clock() - t0
        self.ops += len(idx)
        if self.append is not None:
            append, names = self.append, self.server_names
            sel = traced[idx]
            for i, c, m in zip(idx[sel].tolist(), cpu[sel].tolist(), mem[sel].tolist()):
                append({"t": now, "op": "telemetry", "server": names[i], "cpu": c, "mem": m})



# ---------------------------------------------------------------- what the handlers read
@cython.final
cdef class DayRefs:
    """What the compiled handlers read of a :class:`usher.sim.day.Day` on every
    event, taken once when the day is built: the day replaces none of it (its
    state's counters and lists, the books, the engine calls, the calendar queues
    and the presampled columns are the same objects all day, changed in place)."""

    cdef readonly object state, s, slow, rollout_run, sessions, T, fresh_s
    cdef readonly dict tally, endpoints
    cdef readonly list warm, on_since, outcomes, reasons
    cdef readonly IdlePools idle
    cdef readonly list logon, second, t_second, close, t_close, disc, t_disc, rec, t_rec
    cdef readonly list counts, hosp, kind, pick, app, locname, end, ext, ws, fail, user_names
    cdef readonly object launch_batch_min, logon_complete, disconnect
    cdef readonly int64_t W
    # the columns a placement schedules from, as int64 (presampled, never changed)
    cdef const int64_t[:] c_logon, c_second, c_t_second, c_close, c_t_close, c_disc, c_t_disc, c_rec, c_t_rec
    # the columns a new visit is made from (presampled, never changed)
    cdef const int64_t[:] c_hosp, c_kind, c_end, c_ws
    cdef const double[:] c_pick
    cdef const unsigned char[:] c_ext, c_fail
    cdef readonly Books books
    cdef readonly EngineCalls calls
    cdef readonly SessionQueue sq
    cdef readonly LaunchQueue lq
    cdef readonly bint naming

    def __init__(self, d):
        st, arr = d.state, d.arrivals
        self.state, self.tally, self.idle, self.warm, self.on_since = st, st.tally, st.idle, st.warm, st.on_since
        self.outcomes, self.reasons = st.outcomes, st.reasons
        self.books, self.calls, self.s = d.books, d.calls, d.s
        self.sq, self.lq = d.cal.sessions, d.cal.launches
        self.logon, self.second, self.t_second, self.close, self.t_close = (
            arr.logon, arr.second, arr.t_second, arr.close, arr.t_close)
        self.disc, self.t_disc, self.rec, self.t_rec = arr.disc, arr.t_disc, arr.rec, arr.t_rec
        self.slow, self.rollout_run, self.sessions = d.slow, d.rollout_run, d.sc.sessions
        self.T, self.fresh_s, self.endpoints, self.naming = d.T, d.fresh_s, d.endpoints, d.naming
        self.counts, self.hosp, self.kind, self.pick, self.app = arr.counts, arr.hosp, arr.kind, arr.pick, arr.app
        self.locname, self.end, self.ext, self.ws, self.fail = arr.locname, arr.end, arr.ext, arr.ws, arr.fail
        self.user_names, self.W = d.user_names, d.W
        self.launch_batch_min = d.sc.day.launch_batch_min
        self.logon_complete, self.disconnect = d.s.logon_complete, d.s.disconnect
        i64 = np.int64
        self.c_logon, self.c_second = np.asarray(arr.logon, dtype=i64), np.asarray(arr.second, dtype=i64)
        self.c_t_second, self.c_close = np.asarray(arr.t_second, dtype=i64), np.asarray(arr.close, dtype=i64)
        self.c_t_close, self.c_disc = np.asarray(arr.t_close, dtype=i64), np.asarray(arr.disc, dtype=i64)
        self.c_t_disc, self.c_rec = np.asarray(arr.t_disc, dtype=i64), np.asarray(arr.rec, dtype=i64)
        self.c_t_rec = np.asarray(arr.t_rec, dtype=i64)
        self.c_hosp, self.c_kind = np.asarray(arr.hosp, dtype=i64), np.asarray(arr.kind, dtype=i64)
        self.c_end, self.c_ws = np.asarray(arr.end, dtype=i64), np.asarray(arr.ws, dtype=i64)
        self.c_pick = np.asarray(arr.pick, dtype=np.float64)
        self.c_ext = np.asarray(arr.ext, dtype=bool).view(np.uint8)
        self.c_fail = np.asarray(arr.fail, dtype=bool).view(np.uint8)


# ---------------------------------------------------------------- shared consequences
cpdef finish_visit(d, Visit v, now):
    """The visit is given up: its extra sessions logged off, the user idle again."""
    cdef DayRefs r = d.refs
    cdef Books books = r.books
    if v.extras:
        for sid in v.extras:
            if sid in books.entries:
                r.calls.logoff(sid, now)
                books.unbook(sid)
    v.extras = []
    v.gen += 1
    r.idle.put(v.h, v.role, v.user)


# ---------------------------------------------------------------- launches
cpdef tuple app_and_endpoint(d, Visit v, kind):
    """What a launch of this kind opens and from where (a reconnect moves the user
    to another workstation, or a second home endpoint)."""
    if kind == C_L_SECOND:
        return APP_LABS, v.ep
    if kind == C_L_RECONNECT:
        if v.ext:
            v.ep = f"home-{v.user}-2"
        else:
            w = d.arrivals.ws2[v.a]
            v.ep = workstation((<DayRefs>d.refs).endpoints, d.W, v.h, w)
    return v.app, v.ep


cdef list _row_tuples(list apps, list eps, const int64_t* rows):
    """(app, endpoint, outcome, reason, server, session, load index) per launch."""
    cdef Py_ssize_t k
    cdef const int64_t* o
    cdef list out = []
    for k in range(len(apps)):
        o = rows + N_ROW * k
        out.append((apps[k], eps[k], o[0], o[1], o[2], o[3], o[4]))
    return out


cdef int _decide(d, DayRefs r, list reqs, now, list apps, list eps, int64_t* out) except -1:
    """The engine's decisions for ``reqs`` (list of (visit, generation, kind)), in
    order: the app and endpoint of each into ``apps`` and ``eps``, its (outcome,
    reason, server, session, load index) into ``out[N_ROW * k:]``."""
    cdef EngineCalls calls = r.calls
    cdef double t_in
    cdef Py_ssize_t k, n = len(reqs)
    cdef const int64_t[:] col
    if n < r.launch_batch_min:
        return calls._launch_rows(reqs, now, d, apps, eps, out)
    for q in reqs:
        app, ep = app_and_endpoint(d, <Visit>(<tuple>q)[0], (<tuple>q)[2])
        apps.append(app)
        eps.append(ep)
    users = d.user_idx[[(<Visit>(<tuple>q)[0]).user for q in reqs]]
    a_i = np.array([d.app_idx[a] for a in apps], dtype=np.int64)
    locs = [(<Visit>(<tuple>q)[0]).loc for q in reqs]
    ext = np.array([(<Visit>(<tuple>q)[0]).ext for q in reqs])
    t_in = calls.seconds
    b = calls.timed(n, d.s.launch_many, users, a_i, locations=locs, endpoints=eps, external=ext, now=now)
    calls.launch_seconds += calls.seconds - t_in
    for j, field in enumerate((b.outcome, b.reason, b.server, b.session, b.load_index)):
        col = np.asarray(field, dtype=np.int64)
        for k in range(n):
            out[N_ROW * k + j] = col[k]
    return 0


def decide(d, list reqs, now):
    """The engine's decisions for ``reqs`` (list of (visit, generation, kind)), in
    order: a list of (app, endpoint, outcome, reason, server, session, load index)."""
    cdef DayRefs r = d.refs
    cdef list apps = [], eps = []
    cdef int64_t* rows = r.calls._room(len(reqs))
    _decide(d, r, reqs, now, apps, eps, rows)
    return _row_tuples(apps, eps, rows)


cdef list _name_launches(d, list reqs, list apps, list eps, now):
    """Launch ids (``r1``, ``r2``, ...) of the tick's launches, written to the trace."""
    st = d.state
    append = (<EngineCalls>d.calls).append
    cdef list names = []
    cdef Visit v
    cdef Py_ssize_t k
    for k in range(len(reqs)):
        v = <Visit>(<tuple>reqs[k])[0]
        st.rid += 1
        rname = f"r{st.rid}"
        names.append(rname)
        if append is not None:
            append({"t": now, "op": "launch", "id": rname, "user": v.uname, "app": apps[k],
                    "location": v.loc, "endpoint": eps[k], "external": v.ext})
    return names


cdef int64_t _logon_tick(DayRefs r, Visit v, int64_t tick, sid, srv, now) except? -1:
    cdef int64_t lg = r.c_logon[v.a]
    slow = r.slow
    if slow is not None:
        lg = slow.logon_length(sid, srv, lg, now)
    return tick + (lg if lg > 1 else 1)


cdef int _schedule_visit(DayRefs r, Visit v, sid, int64_t tick, srv, now) except -1:
    """The events of a freshly placed main session: its logon (or failure), and on
    the first placement the second app, its closing, the disconnect, the reconnect;
    the visit's end."""
    cdef SessionQueue sess = r.sq
    cdef LaunchQueue lq = r.lq
    cdef int64_t g = v.gen
    cdef Py_ssize_t a = v.a
    cdef int64_t end
    if v.fail:
        v.fail = False
        sess.add(tick + r.sessions.failure_detect_seconds, C_E_FAIL, v, g, sid)
    else:
        if v.first:
            if r.c_logon[a] == 0:
                r.warm.append(sid)
            else:
                sess.add(_logon_tick(r, v, tick, sid, srv, now), C_E_LOGON, v, g, sid)
            end = v.end
            if r.c_second[a] and r.c_t_second[a] < end:
                lq.add(r.c_t_second[a], C_L_SECOND, v, g, None)
                if r.c_close[a] and r.c_t_close[a] < end:
                    sess.add(r.c_t_close[a], C_E_CLOSE, v, g, sid)
            if r.c_disc[a] and r.c_t_disc[a] < end:
                sess.add(r.c_t_disc[a], C_E_DISCONNECT, v, g, sid)
                if r.c_rec[a]:
                    lq.add(r.c_t_rec[a], C_L_RECONNECT, v, g, None)
        else:
            sess.add(_logon_tick(r, v, tick, sid, srv, now), C_E_LOGON, v, g, sid)
        if v.end < r.T:
            sess.add(v.end, C_E_END, v, g, sid)
    return 0


cdef int _on_new(d, DayRefs r, Visit v, int64_t oc, srv, sid, rname, tick, now, list placed) except -1:
    if oc == C_PLACED:
        placed.append(srv)
        if now - r.on_since[srv] < r.fresh_s:
            r.tally["fresh"] += 1
        v.sid = sid
        r.books.book(sid, v, srv, rname)
        v.gen += 1
        if r.rollout_run is not None:  # the rollout's health check counts launches
            r.rollout_run.placed(d, v, srv)
        _schedule_visit(r, v, sid, tick, srv, now)
        v.first = False
    elif oc == C_REJECTED:
        ss = r.sessions
        if v.tries < ss.max_retries and tick + ss.retry_after_seconds < min(v.end, r.T):
            v.tries += 1
            r.tally["retried"] += 1
            r.lq.add(tick + ss.retry_after_seconds, C_L_NEW, v, v.gen, None)
        else:
            r.tally["denied"] += 1
            finish_visit(d, v, now)
    else:  # the user already had a session: not in this model's books
        r.tally["unexpected"] += 1
        finish_visit(d, v, now)
    return 0


cdef int _on_second(d, DayRefs r, Visit v, int64_t oc, srv, sid, rname, tick, now, list placed) except -1:
    if oc != C_REJECTED:
        v.labs = sid
    if oc == C_PLACED:  # not shared: a second session of the visit
        placed.append(srv)
        r.books.book(sid, v, srv, rname)
        v.extras.append(sid)
        r.sq.add(_logon_tick(r, v, tick, sid, srv, now), C_E_LOGON, v, v.gen, sid)
    elif oc != C_SHARED and oc != C_REJECTED:
        r.tally["unexpected"] += 1
    return 0


cdef int _on_reconnect(d, DayRefs r, Visit v, int64_t oc, srv, sid, rname, tick, now, list placed) except -1:
    cdef Books books
    if oc == C_PLACED:  # the old session could not be resumed
        placed.append(srv)
        r.tally["reconnect_missed"] += 1
        books = r.books
        old = v.sid
        if old in books.entries:
            r.calls.logoff(old, now)
            books.unbook(old)
        v.sid = sid
        books.book(sid, v, srv, rname)
        r.sq.add(_logon_tick(r, v, tick, sid, srv, now), C_E_LOGON, v, v.gen, sid)
    elif oc == C_REJECTED:
        r.tally["reconnect_missed"] += 1
    return 0


def on_new(d, Visit v, oc, srv, sid, rname, tick, now, list placed):
    """A visit's first launch, a retry, or a come-back after a lost session."""
    _on_new(d, d.refs, v, oc, srv, sid, rname, tick, now, placed)


def on_second(d, Visit v, oc, srv, sid, rname, tick, now, list placed):
    """The second app (lab results): shared into the session, or a new one."""
    _on_second(d, d.refs, v, oc, srv, sid, rname, tick, now, placed)


def on_reconnect(d, Visit v, oc, srv, sid, rname, tick, now, list placed):
    """A reconnect after a disconnect: resumed, or (placed) a new session that
    replaces the old one, which is logged off."""
    _on_reconnect(d, d.refs, v, oc, srv, sid, rname, tick, now, placed)


def launches(d, list reqs, tick, now):
    """Decide the tick's launches, trace them, apply their consequences in order;
    then the warm-start logons and the peaks. Returns the servers given a new
    session (the only way a server's pending logons grow). The session ops of the
    consequences go to the engine as one run (:class:`EngineCalls`)."""
    cdef DayRefs r = d.refs
    cdef EngineCalls calls = r.calls
    cdef Py_ssize_t j, n = len(reqs)
    cdef list apps = [], eps = []
    cdef int64_t* rows = calls._room(n)
    _decide(d, r, reqs, now, apps, eps, rows)
    cdef list names = _name_launches(d, reqs, apps, eps, now) if r.naming else None
    cdef list placed = []
    cdef list oc_n = r.outcomes, rc_n = r.reasons
    dec = r.state.decisions
    cdef Books books = r.books
    cdef int64_t kind, oc, rc
    cdef const int64_t* o
    cdef tuple q
    cdef Visit v
    cdef bint gathering = calls._begin()
    try:
        for j in range(n):
            q = <tuple>reqs[j]
            v = <Visit>q[0]
            kind = q[2]
            o = rows + N_ROW * j
            oc, rc = o[0], o[1]
            srv, sid = o[2], o[3]
            oc_n[oc] += 1
            rc_n[rc] += 1
            rname = None
            if names is not None:
                rname = names[j]
                if dec is not None:
                    dec["id"].append(rname)
                    dec["outcome"].append(oc)
                    dec["reason"].append(rc)
                    dec["server"].append(srv)
                    dec["load_index"].append(o[4])
                    dec["session"].append(rname if oc == C_PLACED else books.names.get(sid))
            if kind == C_L_NEW:
                _on_new(d, r, v, oc, srv, sid, rname, tick, now, placed)
            elif kind == C_L_SECOND:
                _on_second(d, r, v, oc, srv, sid, rname, tick, now, placed)
            elif kind == C_L_RECONNECT:
                _on_reconnect(d, r, v, oc, srv, sid, rname, tick, now, placed)
            else:
                raise KeyError(kind)
        warm = r.warm
        if warm:  # warm start: the sessions open at midnight are established
            logon_complete, launching = r.logon_complete, books.launching
            for sid in warm:
                launching.discard(sid)
                calls._sop(OP_LOGON, logon_complete, "logon_done", sid, now)
            warm.clear()
    finally:
        if gathering:
            calls._end()
    return placed


# ---------------------------------------------------------------- session events
cdef _visit_over(d, Visit v, now):
    """E_END: the visit's sessions are logged off, the user is idle again."""
    cdef DayRefs r = d.refs
    cdef Books books = r.books
    cdef EngineCalls calls = r.calls
    x = v.sid
    if x in books.entries:
        calls.logoff(x, now)
        books.unbook(x)
    if v.extras:  # rare: second sessions of the visit
        for x in v.extras:
            if x in books.entries:
                calls.logoff(x, now)
                books.unbook(x)
        v.extras = []
    v.sid = -1
    v.gen += 1
    r.idle.put(v.h, v.role, v.user)


cdef _launch_failed(d, Visit v, sid, tick, now):
    """E_FAIL: the logon failed; retried after ``retry_after_seconds`` while tries
    and the visit last, else the visit is given up (denied)."""
    st, ss = d.state, d.sc.sessions
    cdef Books books = d.books
    rollout_run = d.rollout_run
    if rollout_run is not None:  # the rollout's health check counts failed launches
        entry = books.entries.get(sid)
        if entry is not None:
            rollout_run.failed((<tuple>entry)[1])
    books.launching.discard(sid)
    (<EngineCalls>d.calls)._sop(OP_FAILED, d.s.launch_failed, "launch_failed", sid, now)
    books.unbook(sid)
    st.tally["failed"] += 1
    v.sid = -1
    if v.tries < ss.max_retries and tick + ss.retry_after_seconds < min(v.end, d.T):
        v.tries += 1
        st.tally["retried"] += 1
        v.gen += 1
        (<DayRefs>d.refs).lq.add(tick + ss.retry_after_seconds, C_L_NEW, v, v.gen, None)
    else:
        st.tally["denied"] += 1
        finish_visit(d, v, now)


def session_events(d, list evs, tick, now):
    """Logons that complete or fail, disconnects, second apps that close, visits
    that end: the items ``(kind, visit, generation, session)`` of ``evs``, in
    order (:func:`_session_event`). The session ops go to the engine as one run
    (:class:`EngineCalls`)."""
    cdef DayRefs r = d.refs
    cdef EngineCalls calls = r.calls
    cdef bint gathering = calls._begin()
    cdef tuple e
    try:
        for ev in evs:
            e = <tuple>ev
            _session_event(d, r, e[0], <Visit>e[1], e[2], e[3], tick, now)
    finally:
        if gathering:
            calls._end()


cdef int _due_session_events(d, DayRefs r, int64_t t, tick, now) except -1:
    """:func:`session_events` of the items the session queue holds for tick ``t``."""
    cdef EngineCalls calls = r.calls
    cdef SessionQueue q = r.sq
    cdef bint gathering = calls._begin()
    cdef int64_t k = q.detach(t)
    cdef SItem x
    cdef Visit v
    try:
        while k >= 0:
            k = q.release(k, &x)
            v, sid = <Visit>x.visit, <object>x.sid  # the queue's references, now ours
            Py_DECREF(v)
            Py_DECREF(sid)
            _session_event(d, r, x.kind, v, x.gen, sid, tick, now)
    finally:
        q.drop(k)  # after an error: the tick's other items
        if gathering:
            calls._end()
    return 0


cdef int _session_event(d, DayRefs r, int64_t kind, Visit v, int64_t g, sid, tick, now) except -1:
    """One session event. An event of an older visit generation, or of a session
    no longer on the books, is stale and skipped."""
    if v.gen != g:
        return 0
    cdef dict entries = r.books.entries
    cdef set launching = r.books.launching
    if kind == C_E_LOGON:
        if sid not in entries or sid not in launching:
            return 0
        launching.discard(sid)
        r.calls._sop(OP_LOGON, r.logon_complete, "logon_done", sid, now)
        if r.slow is not None:
            r.slow.logon_done(sid, now)
    elif kind == C_E_END:
        _visit_over(d, v, now)
    elif sid not in entries:
        return 0
    elif kind == C_E_DISCONNECT:
        launching.discard(sid)  # a later logon event finds it disconnected
        r.calls._sop(OP_DISCONNECT, r.disconnect, "disconnect", sid, now)
    elif kind == C_E_CLOSE:
        x = v.labs  # where the second app runs (none if it was refused)
        if x < 0 or x not in entries:
            return 0
        v.labs = -1
        if r.calls.close_labs(x, now):
            r.books.unbook(x)
    elif sid not in launching:  # E_FAIL after a disconnect: it came up after all
        return 0
    else:  # E_FAIL
        _launch_failed(d, v, sid, tick, now)
    return 0


# ---------------------------------------------------------------- new visits
def new_visits(d, tick, list reqs):
    """The tick's arrivals: each takes an idle user of its hospital (an imaging user
    for an imaging visit; a clinical visit falls back to an imaging user) and
    becomes a visit whose first launch joins ``reqs``. No idle user: counted, dropped."""
    cdef DayRefs r = d.refs
    st = r.state
    c = r.counts[tick]
    if not c:
        return
    cdef list a_app = r.app, a_locname = r.locname
    cdef const int64_t[:] a_hosp = r.c_hosp, a_kind = r.c_kind, a_end = r.c_end, a_ws = r.c_ws
    cdef const double[:] a_pick = r.c_pick
    cdef const unsigned char[:] a_ext = r.c_ext, a_fail = r.c_fail
    cdef double pj
    cdef IdlePools idle = r.idle
    cdef list user_names = r.user_names
    tally = r.tally
    cdef dict endpoints = r.endpoints
    cdef int64_t W = r.W
    cdef Py_ssize_t start = st.next_arrival, a, j, n_new = 0
    cdef int64_t h, kind, role, w, u
    cdef Py_ssize_t n_idle
    cdef Visit v
    for a in range(start, start + c):
        h = a_hosp[a]
        kind = a_kind[a]
        role = 1 if kind == C_K_IMAGING else 0
        n_idle = idle.count(h, role)
        if not n_idle and kind != C_K_IMAGING:
            role = 1
            n_idle = idle.count(h, 1)
        if not n_idle:
            tally["no_user"] += 1
            continue
        pj = a_pick[a] * n_idle
        j = <Py_ssize_t>pj if 0.0 <= pj < 9.2e18 else int(pj)  # else: Python's int() (its errors)
        u = idle.take(h, role, j)
        v = Visit.__new__(Visit)
        v.a, v.user, v.uname, v.kind, v.h, v.role = a, u, user_names[u], kind, h, role
        v.app, v.loc, v.end = a_app[a], a_locname[a], a_end[a]
        if a_ext[a]:
            v.ext, v.ep = True, f"home-{u}"
        else:
            w = a_ws[a]
            v.ext, v.ep = False, workstation(endpoints, W, h, w)
        v.gen, v.sid, v.tries, v.fail, v.extras, v.first = 0, -1, 0, a_fail[a] != 0, [], True
        v.labs = -1  # the session the second app runs in, once it does
        n_new += 1
        reqs.append((v, 0, L_NEW))
    st.requested += n_new
    st.next_arrival = start + c


# ---------------------------------------------------------------- the tick loop
cdef list _due_launches(LaunchQueue q, int64_t t):
    """The launches the queue holds for tick ``t`` (a list of (visit, generation,
    kind)), off the queue; those of an older visit generation are stale, dropped."""
    cdef list out = []
    cdef int64_t k = q.detach(t)
    cdef SItem x
    cdef Visit v
    try:
        while k >= 0:
            k = q.release(k, &x)
            v = <Visit>x.visit
            Py_DECREF(v)  # the queue's reference, now v's
            Py_DECREF(<object>x.sid)
            if v.gen == x.gen:
                out.append((v, x.gen, x.kind))
    finally:
        q.drop(k)  # after an error: the tick's other items
    return out


cdef _track_peaks(d, st, list placed, tick, now):
    """The running peaks after the tick's launches. The most pending logons on a
    server: only a placed launch adds one (docs/SEMANTICS.md), so only those
    servers can top the peak (each sample checks that no other server ever did)."""
    cdef Py_ssize_t k
    if st.pend_full_scan:
        pending_v = d.pending_v
        pm = int(np.maximum.reduce(pending_v)) if len(pending_v) else 0
    elif placed:
        mv = d.pending_mv
        pm = mv[placed[0]]
        for k in range(1, len(placed)):
            x = mv[placed[k]]
            if x > pm:
                pm = x
    else:
        pm = 0
    if pm > st.pend_peak:
        st.pend_peak, st.pend_peak_t, st.pend_peak_srv = pm, now, int(d.pending_v.argmax())
    hdr = d.hdr
    live = hdr[d.H_LIVE]
    if live > st.peak:
        st.peak, st.peak_t = live, tick
    lic = hdr[d.H_HOLD]
    if lic > st.lic_peak:
        st.lic_peak = lic


def run_ticks(d, policy, bint acts, interval, next_policy, Py_ssize_t settle_batch, server_events, apply_actions,
              apply_power):
    """The loop of :meth:`usher.sim.day.Day.run`: each tick dispatches its events to
    the handlers, in order (``server_events``, the session events, the power policy
    every ``interval`` from ``next_policy`` through ``apply_actions`` or
    ``apply_power``, the launches and the running peaks, the sample); at tick 0 of a
    settled warm start the launches go in batches of ``settle_batch``, logons
    completed in between. The Python handlers are given by the caller (the day
    module's names, as it calls them)."""
    T, st, cal = d.T, d.state, d.cal
    sampler = d.sampler
    period, sample = sampler.period, sampler.sample
    progress = d.progress
    cdef int64_t prog_every = max(1, T // 200)
    cdef int64_t next_prog = 0 if progress is not None else T
    next_sample = 0
    srv_pop = cal.servers.pop
    cdef DayRefs refs = d.refs
    cdef SessionQueue sq = refs.sq
    cdef LaunchQueue lq = refs.lq
    cdef list counts = refs.counts
    cdef bint tracing = d.trace is not None
    cdef bint settled = d.settled
    cdef Py_ssize_t t, j, n_ticks = T
    cdef list kept
    # the sample's clock in C when its period is an int (else Python's comparisons)
    cdef bint c_sample = type(period) is int
    cdef int64_t c_next_sample = 0, c_period = period if c_sample else 0
    for t in range(n_ticks):
        tick = <object>t  # a Python int, as the handlers and the calendar keys take it
        now = float(tick)
        evs = srv_pop(tick, None)
        if evs:
            server_events(d, evs, tick, now)
        if sq.due(t):
            _due_session_events(d, refs, t, tick, now)
        if tick >= next_policy:
            if acts:
                apply_actions(d, tick, now, policy.plan(d.view(now), now))
            else:
                apply_power(d, tick, now, policy.plan(d.view(now)) if t else st.want)
            next_policy = tick + interval
        reqs = _due_launches(lq, t) if lq.due(t) else None
        if counts[t]:
            if reqs is None:
                reqs = []
            new_visits(d, tick, reqs)
        if reqs:
            if t == 0 and settled:  # warm start in small batches, logons completed in between
                for j in range(0, len(reqs), settle_batch):
                    _track_peaks(d, st, launches(d, reqs[j:j + settle_batch], tick, now), tick, now)
            else:
                _track_peaks(d, st, launches(d, reqs, tick, now), tick, now)
        if (t == c_next_sample) if c_sample else (tick == next_sample):
            if sample(d, now) > st.pend_peak and not st.pend_full_scan:
                st.pend_full_scan = True  # pending grew without a placement: scan every tick
            if c_sample:
                c_next_sample = t + c_period
            else:
                next_sample = tick + period
            if tracing:
                d.trace.maybe_flush()
        if t == next_prog:
            progress(tick, T)
            next_prog = t + prog_every
