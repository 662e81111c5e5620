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
and values whose type the scenario chooses (retry delays, logon lengths, times)
stay Python objects, so their arithmetic is Python's.
"""

cimport cython
from libc.stdint cimport int64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

import numpy as np

from usher.core.codes import Outcome
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
cdef object L_NEW = _cal.L_NEW, L_SECOND = _cal.L_SECOND, L_RECONNECT = _cal.L_RECONNECT
cdef object E_LOGON = _cal.E_LOGON, E_FAIL = _cal.E_FAIL, E_DISCONNECT = _cal.E_DISCONNECT
cdef object E_CLOSE = _cal.E_CLOSE, E_END = _cal.E_END


cdef inline double _clock() noexcept nogil:
    """``time.perf_counter()``: the monotonic clock, in seconds."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


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

    def timed(self, ops, fn, *args, **kw):
        """``fn(*args, **kw)``, its time added to ``seconds``, ``ops`` operations counted."""
        cdef double t0 = _clock()
        out = fn(*args, **kw)
        self.seconds += _clock() - t0
        self.ops += ops
        return out

    cpdef session(self, fn, op, sid, now, reason=None):
        """A session operation ``fn(sid, now)`` (logon_complete, launch_failed,
        disconnect, logoff), traced as ``op`` (with ``reason`` when given)."""
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

    cpdef list launch_each(self, list reqs, now, d):
        """One ``launch()`` per request (visit, generation, kind) of
        :mod:`usher.sim.launches`, in order, of the app from the endpoint of
        :func:`app_and_endpoint`. Returns (app, endpoint, outcome, reason, server,
        session, load index) per request. Adds to ``launch_seconds`` too."""
        launch = self.s.launch
        cdef list out = []
        cdef double spent = 0.0, t0
        cdef Visit v
        for r in reqs:
            v = <Visit>(<tuple>r)[0]
            app, ep = app_and_endpoint(d, v, (<tuple>r)[2])
            t0 = _clock()
            dd = launch(v.uname, app, v.loc, ep, v.ext, now)
            spent += _clock() - t0
            out.append((app, ep, dd.outcome_code, dd.reason_code, dd.server_index, dd.session_id,
                        dd.load_index_value))
        self.seconds += spent
        self.launch_seconds += spent
        self.ops += len(out)
        return out

    cpdef logoff(self, sid, now, reason=None):
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

    cdef readonly object state, s, cal_sessions, cal_launches, slow, rollout_run, sessions, T, fresh_s
    cdef readonly dict tally, endpoints
    cdef readonly list idle, warm, on_since, outcomes, reasons
    cdef readonly list logon, second, t_second, close, t_close, disc, t_disc, rec, t_rec
    cdef readonly list counts, hosp, kind, pick, app, locname, end, ext, ws, fail, user_names
    cdef readonly object launch_batch_min, logon_complete, disconnect
    cdef readonly int64_t W
    cdef readonly Books books
    cdef readonly EngineCalls calls
    cdef readonly bint naming

    def __init__(self, d):
        st, arr = d.state, d.arrivals
        self.state, self.tally, self.idle, self.warm, self.on_since = st, st.tally, st.idle, st.warm, st.on_since
        self.outcomes, self.reasons = st.outcomes, st.reasons
        self.books, self.calls, self.s = d.books, d.calls, d.s
        self.cal_sessions, self.cal_launches = d.cal.sessions, d.cal.launches
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
    r.idle[v.h][v.role].append(v.user)


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
            ep = (<DayRefs>d.refs).endpoints.get(v.h * d.W + w)  # Day.ws_name's cache, read first
            v.ep = ep if ep is not None else d.ws_name(v.h, w)
    return v.app, v.ep


def decide(d, list reqs, now):
    """The engine's decisions for ``reqs`` (list of (visit, generation, kind)), in
    order: a list of (app, endpoint, outcome, reason, server, session, load index)."""
    cdef DayRefs r = d.refs
    cdef EngineCalls calls = r.calls
    cdef Visit v
    cdef double t_in
    if len(reqs) >= r.launch_batch_min:
        apps, eps = [], []
        for q in reqs:
            app, ep = app_and_endpoint(d, <Visit>(<tuple>q)[0], (<tuple>q)[2])
            apps.append(app)
            eps.append(ep)
        users = d.user_idx[[(<Visit>(<tuple>q)[0]).user for q in reqs]]
        a_i = np.array([d.app_idx[a] for a in apps], dtype=np.int64)
        locs = [(<Visit>(<tuple>q)[0]).loc for q in reqs]
        ext = np.array([(<Visit>(<tuple>q)[0]).ext for q in reqs])
        t_in = calls.seconds
        b = calls.timed(len(reqs), d.s.launch_many, users, a_i, locations=locs, endpoints=eps, external=ext,
                        now=now)
        calls.launch_seconds += calls.seconds - t_in
        return list(zip(apps, eps, b.outcome.tolist(), b.reason.tolist(), b.server.tolist(),
                        b.session.tolist(), b.load_index.tolist()))
    return calls.launch_each(reqs, now, d)


cdef list _name_launches(d, list reqs, list rows, now):
    """Launch ids (``r1``, ``r2``, ...) of the tick's launches, written to the trace."""
    st = d.state
    append = (<EngineCalls>d.calls).append
    cdef list names = []
    cdef Visit v
    for r, row in zip(reqs, rows):
        v = <Visit>(<tuple>r)[0]
        st.rid += 1
        rname = f"r{st.rid}"
        names.append(rname)
        if append is not None:
            append({"t": now, "op": "launch", "id": rname, "user": v.uname, "app": (<tuple>row)[0],
                    "location": v.loc, "endpoint": (<tuple>row)[1], "external": v.ext})
    return names


cdef object _logon_tick(DayRefs r, Visit v, tick, sid, srv, now):
    lg = r.logon[v.a]
    slow = r.slow
    if slow is not None:
        lg = slow.logon_length(sid, srv, lg, now)
    return tick + (lg if lg > 1 else 1)


cdef _schedule_visit(DayRefs r, Visit v, sid, tick, srv, now):
    """The events of a freshly placed main session: its logon (or failure), and on
    the first placement the second app, its closing, the disconnect, the reconnect;
    the visit's end."""
    sess, lq = r.cal_sessions, r.cal_launches
    g = v.gen
    cdef Py_ssize_t a = v.a
    if v.fail:
        v.fail = False
        sess[tick + r.sessions.failure_detect_seconds].append((E_FAIL, v, g, sid))
    else:
        lg = r.logon[a]
        if v.first:
            if lg == 0:
                r.warm.append(sid)
            else:
                sess[_logon_tick(r, v, tick, sid, srv, now)].append((E_LOGON, v, g, sid))
            end = v.end
            if r.second[a] and r.t_second[a] < end:
                lq[r.t_second[a]].append((v, g, L_SECOND))
                if r.close[a] and r.t_close[a] < end:
                    sess[r.t_close[a]].append((E_CLOSE, v, g, sid))
            if r.disc[a] and r.t_disc[a] < end:
                sess[r.t_disc[a]].append((E_DISCONNECT, v, g, sid))
                if r.rec[a]:
                    lq[r.t_rec[a]].append((v, g, L_RECONNECT))
        else:
            sess[_logon_tick(r, v, tick, sid, srv, now)].append((E_LOGON, v, g, sid))
        if v.end < r.T:
            sess[v.end].append((E_END, v, g, sid))


cpdef on_new(d, Visit v, oc, srv, sid, rname, tick, now, list placed):
    """A visit's first launch, a retry, or a come-back after a lost session."""
    cdef DayRefs r = d.refs
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
            r.cal_launches[tick + ss.retry_after_seconds].append((v, v.gen, L_NEW))
        else:
            r.tally["denied"] += 1
            finish_visit(d, v, now)
    else:  # the user already had a session: not in this model's books
        r.tally["unexpected"] += 1
        finish_visit(d, v, now)


cpdef on_second(d, Visit v, oc, srv, sid, rname, tick, now, list placed):
    """The second app (lab results): shared into the session, or a new one."""
    if oc != C_REJECTED:
        v.labs = sid
    if oc == C_PLACED:  # not shared: a second session of the visit
        placed.append(srv)
        (<Books>d.books).book(sid, v, srv, rname)
        v.extras.append(sid)
        d.cal.sessions[_logon_tick(<DayRefs>d.refs, v, tick, sid, srv, now)].append((E_LOGON, v, v.gen, sid))
    elif oc != C_SHARED and oc != C_REJECTED:
        d.state.tally["unexpected"] += 1


cpdef on_reconnect(d, Visit v, oc, srv, sid, rname, tick, now, list placed):
    """A reconnect after a disconnect: resumed, or (placed) a new session that
    replaces the old one, which is logged off."""
    cdef Books books
    if oc == C_PLACED:  # the old session could not be resumed
        placed.append(srv)
        d.state.tally["reconnect_missed"] += 1
        books = d.books
        old = v.sid
        if old in books.entries:
            (<EngineCalls>d.calls).logoff(old, now)
            books.unbook(old)
        v.sid = sid
        books.book(sid, v, srv, rname)
        d.cal.sessions[_logon_tick(<DayRefs>d.refs, v, tick, sid, srv, now)].append((E_LOGON, v, v.gen, sid))
    elif oc == C_REJECTED:
        d.state.tally["reconnect_missed"] += 1


def launches(d, list reqs, tick, now):
    """Decide the tick's launches, trace them, apply their consequences in order;
    then the warm-start logons and the peaks. Returns the servers given a new
    session (the only way a server's pending logons grow)."""
    cdef DayRefs r = d.refs
    st = r.state
    cdef list rows = decide(d, reqs, now)
    cdef list names = _name_launches(d, reqs, rows, now) if r.naming else None
    cdef list placed = []
    cdef list oc_n = r.outcomes, rc_n = r.reasons
    dec = st.decisions
    cdef Books books = r.books
    cdef EngineCalls calls
    cdef Py_ssize_t j
    cdef int64_t kind
    cdef tuple row
    cdef Visit v
    for j in range(len(reqs)):
        v = <Visit>(<tuple>reqs[j])[0]
        kind = (<tuple>reqs[j])[2]
        row = <tuple>rows[j]
        oc, rc, srv, sid, li = row[2], row[3], row[4], row[5], row[6]
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
                dec["load_index"].append(li)
                dec["session"].append(rname if oc == C_PLACED else books.names.get(sid))
        if kind == C_L_NEW:
            on_new(d, v, oc, srv, sid, rname, tick, now, placed)
        elif kind == C_L_SECOND:
            on_second(d, v, oc, srv, sid, rname, tick, now, placed)
        elif kind == C_L_RECONNECT:
            on_reconnect(d, v, oc, srv, sid, rname, tick, now, placed)
        else:
            raise KeyError(kind)
    warm = r.warm
    if warm:  # warm start: the sessions open at midnight are established
        calls = r.calls
        logon_complete, launching = r.s.logon_complete, books.launching
        for sid in warm:
            launching.discard(sid)
            calls.session(logon_complete, "logon_done", sid, now)
        warm.clear()
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
    r.idle[v.h][v.role].append(v.user)


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
    (<EngineCalls>d.calls).session(d.s.launch_failed, "launch_failed", sid, now)
    books.unbook(sid)
    st.tally["failed"] += 1
    v.sid = -1
    if v.tries < ss.max_retries and tick + ss.retry_after_seconds < min(v.end, d.T):
        v.tries += 1
        st.tally["retried"] += 1
        v.gen += 1
        d.cal.launches[tick + ss.retry_after_seconds].append((v, v.gen, L_NEW))
    else:
        st.tally["denied"] += 1
        finish_visit(d, v, now)


def session_events(d, list evs, tick, now):
    """Logons that complete or fail, disconnects, second apps that close, visits
    that end; in the order scheduled. An event of an older visit generation, or
    of a session no longer on the books, is stale and skipped."""
    cdef DayRefs r = d.refs
    cdef Books books = r.books
    cdef EngineCalls calls = r.calls
    cdef dict entries = books.entries
    cdef set launching = books.launching
    slow = r.slow
    cdef int64_t kind, g
    cdef Visit v
    cdef tuple e
    for ev in evs:
        e = <tuple>ev
        kind, v, g, sid = e[0], <Visit>e[1], e[2], e[3]
        if v.gen != g:
            continue
        if kind == C_E_LOGON:
            if sid not in entries or sid not in launching:
                continue
            launching.discard(sid)
            calls.session(r.logon_complete, "logon_done", sid, now)
            if slow is not None:
                slow.logon_done(sid, now)
        elif kind == C_E_END:
            _visit_over(d, v, now)
        elif sid not in entries:
            continue
        elif kind == C_E_DISCONNECT:
            launching.discard(sid)  # a later logon event finds it disconnected
            calls.session(r.disconnect, "disconnect", sid, now)
        elif kind == C_E_CLOSE:
            x = v.labs  # where the second app runs (none if it was refused)
            if x < 0 or x not in entries:
                continue
            v.labs = -1
            if calls.close_labs(x, now):
                books.unbook(x)
        elif sid not in launching:  # E_FAIL after a disconnect: it came up after all
            continue
        else:  # E_FAIL
            _launch_failed(d, v, sid, tick, now)


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
    cdef list a_hosp = r.hosp, a_kind = r.kind, a_pick = r.pick, a_app = r.app
    cdef list a_locname = r.locname, a_end = r.end, a_ext = r.ext, a_ws = r.ws, a_fail = r.fail
    cdef list idle = r.idle, user_names = r.user_names
    tally = r.tally
    cdef dict endpoints = r.endpoints
    ws_name = d.ws_name
    cdef int64_t W = r.W
    cdef Py_ssize_t start = st.next_arrival, a, j, n_new = 0
    cdef int64_t h, kind, role, w
    cdef list lists, pool
    cdef Visit v
    for a in range(start, start + c):
        h = a_hosp[a]
        kind = a_kind[a]
        lists = <list>idle[h]
        role = 1 if kind == C_K_IMAGING else 0
        pool = <list>lists[role]
        if not pool and kind != C_K_IMAGING:
            role = 1
            pool = <list>lists[1]
        if not pool:
            tally["no_user"] += 1
            continue
        j = int(a_pick[a] * len(pool))
        u = pool[j]
        pool[j] = pool[-1]
        pool.pop()
        v = Visit.__new__(Visit)
        v.a, v.user, v.uname, v.kind, v.h, v.role = a, u, user_names[u], kind, h, role
        v.app, v.loc, v.end = a_app[a], a_locname[a], a_end[a]
        if a_ext[a]:
            v.ext, v.ep = True, f"home-{u}"
        else:
            w = a_ws[a]
            ep = endpoints.get(h * W + w)
            v.ext, v.ep = False, ep if ep is not None else ws_name(h, w)
        v.gen, v.sid, v.tries, v.fail, v.extras, v.first = 0, -1, 0, a_fail[a], [], True
        v.labs = -1  # the session the second app runs in, once it does
        n_new += 1
        reqs.append((v, 0, L_NEW))
    st.requested += n_new
    st.next_arrival = start + c


# ---------------------------------------------------------------- the tick loop
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
    prog_every = max(1, T // 200)
    next_prog = 0 if progress is not None else T
    next_sample = 0
    srv_pop, sess_pop, launch_pop = cal.servers.pop, cal.sessions.pop, cal.launches.pop
    cdef list counts = (<DayRefs>d.refs).counts
    cdef bint tracing = d.trace is not None
    cdef bint settled = d.settled
    cdef Py_ssize_t t, j, n_ticks = T
    cdef list kept
    for t in range(n_ticks):
        tick = <object>t  # a Python int, as the handlers and the calendar keys take it
        now = float(tick)
        evs = srv_pop(tick, None)
        if evs:
            server_events(d, evs, tick, now)
        evs = sess_pop(tick, None)
        if evs:
            session_events(d, evs, tick, now)
        if tick >= next_policy:
            if acts:
                apply_actions(d, tick, now, policy.plan(d.view(now), now))
            else:
                apply_power(d, tick, now, policy.plan(d.view(now)) if t else st.want)
            next_policy = tick + interval
        reqs = launch_pop(tick, None)
        if reqs:
            kept = []
            for r in reqs:
                if (<Visit>(<tuple>r)[0]).gen == (<tuple>r)[1]:
                    kept.append(r)
            reqs = kept
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
        if tick == next_sample:
            if sample(d, now) > st.pend_peak and not st.pend_full_scan:
                st.pend_full_scan = True  # pending grew without a placement: scan every tick
            next_sample = tick + period
            if tracing:
                d.trace.maybe_flush()
        if tick == next_prog:
            progress(tick, T)
            next_prog = tick + prog_every
