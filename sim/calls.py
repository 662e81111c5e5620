"""Every operation the day applies to the engine: timed, counted and traced.

Design: one place wraps the engine: every timed call is in this class
(:meth:`EngineCalls.timed` for any call; :meth:`EngineCalls.session` and
:meth:`EngineCalls.launch_each`, the two that run ~10^5 times a day, time inline
to save a call level). The methods are the day's operations, each written to the trace (docs/TRACE_FORMAT.md) in the order
applied, so ``usher replay`` of the trace reproduces the same decisions.
"""

from __future__ import annotations

from time import perf_counter

from usher.sim.scenario import APP_LABS

__all__ = ["EngineCalls"]


class EngineCalls:
    """The engine ``s`` as the day uses it.

    Attributes:
        seconds: time spent inside the engine; ``launch_seconds``: of that, in
            launches (kept by the launch handler); ``ops``: operations applied.
        trace: the :class:`usher.sim.trace.TraceWriter` or None.
        server_names: list of server names (trace lines).
        session_names: dict session id -> id of the launch that created it.
    """

    __slots__ = ("s", "trace", "append", "server_names", "session_names", "seconds", "launch_seconds", "ops")

    def __init__(self, s, trace, server_names, session_names: dict):
        self.s = s
        self.trace = trace
        self.append = trace.append if trace is not None else None
        self.server_names = server_names
        self.session_names = session_names
        self.seconds = 0.0
        self.launch_seconds = 0.0
        self.ops = 0

    def timed(self, ops, fn, *args, **kw):
        """``fn(*args, **kw)``, its time added to ``seconds``, ``ops`` operations counted."""
        t0 = perf_counter()
        out = fn(*args, **kw)
        self.seconds += perf_counter() - t0
        self.ops += ops
        return out

    def session(self, fn, op, sid, now, reason=None):
        """A session operation ``fn(sid, now)`` (logon_complete, launch_failed,
        disconnect, logoff), traced as ``op`` (with ``reason`` when given)."""
        t0 = perf_counter()
        out = fn(sid, now)
        self.seconds += perf_counter() - t0
        self.ops += 1
        if self.append is not None:
            line = {"t": now, "op": op, "session": self.session_names[sid]}
            if reason is not None:
                line["reason"] = reason
            self.append(line)
        return out

    def launch_each(self, reqs, now, d, where) -> list:
        """One ``launch()`` per request (visit, generation, kind) of
        :mod:`usher.sim.launches`, in order, of the app from the endpoint that
        ``where(d, visit, kind)`` gives. Returns (app, endpoint, outcome, reason,
        server, session, load index) per request. Adds to ``launch_seconds`` too."""
        launch = self.s.launch
        out = []
        spent = 0.0
        for v, _, kind in reqs:
            app, ep = where(d, v, kind)
            t0 = perf_counter()
            dd = launch(v.uname, app, v.loc, ep, v.ext, now)
            spent += perf_counter() - t0
            out.append((app, ep, dd.outcome_code, dd.reason_code, dd.server_index, dd.session_id, dd.load_index_value))
        self.seconds += spent
        self.launch_seconds += spent
        self.ops += len(out)
        return out

    def logoff(self, sid, now, reason=None):
        return self.session(self.s.logoff, "logoff", sid, now, reason)

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
        server) says which rows go to the trace."""
        self.timed(len(idx), self.s.telemetry_many, idx, cpu=cpu, mem=mem, now=now)
        if self.append is not None:
            append, names = self.append, self.server_names
            sel = traced[idx]
            for i, c, m in zip(idx[sel].tolist(), cpu[sel].tolist(), mem[sel].tolist()):
                append({"t": now, "op": "telemetry", "server": names[i], "cpu": c, "mem": m})
