"""The replay's loop in plain Python: the reference the compiled loop
(usher.formats._replayloop.process, what ``Replayer`` runs) is checked against in
tests/test_replay_loop.py. It applies the hot ops inline, with what they use bound to
locals, runs of launches, session lines (through ``Scheduler.session_run``), telemetry
and user lines batched, and leaves every other op and every failure to
``Replayer._one``; the run thresholds are read from usher.formats.replay at each call,
so a test that sets them tiny reaches both loops."""

from __future__ import annotations

import usher.formats.replay as rp
from usher.formats import dispatch
from usher.formats.replay import Replayer
from usher.formats.trace import LaunchOp, TelemetryOp, UserOp


class PythonLoopReplayer(Replayer):
    """A ``Replayer`` whose blocks go through the plain-Python loop."""

    def _process(self, first, ops):
        """Apply one block of ops (``ops[k]`` is line ``first + k``).

        The hot ops are applied inline, with what they use bound to locals and the
        time of the last line applied kept in a local (``self.last_t`` is written back
        before any call that reads it). Inline, the replay makes its own checks (time
        order, fresh launch id, known session) and leaves the rest to the engine (a
        time that is not finite, an unknown app...); a failure goes to :meth:`_one`."""
        s = self.scheduler
        names = self.names
        batch = self.batch
        one = self._one
        decide = self._decide
        # dispatch.launch's call written out (a Python call less per launch); explained
        # launches go through _launch
        launch = None if self.explain else s.launch
        calls = self._session_calls
        if calls is None or calls[0] is not s:  # the scheduler's session methods, bound once
            calls = self._session_calls = (s, {cls: getattr(s, name)
                                               for cls, name in dispatch.SESSION_METHODS.items()}.get)
        session_call = calls[1]
        session_codes = dispatch.SESSION_OPS
        session_run = s.session_run
        pending = self._writer.pending if self._writer is not None else None
        n = len(ops)
        i = 0
        scanned = 0  # ops before this index were found to be in a run too short to batch
        last = self.last_t
        while i < n:
            op = ops[i]
            cls = op.__class__
            if cls is LaunchOp:
                if batch and i >= scanned:
                    j = i + 1
                    while j < n and ops[j].__class__ is LaunchOp:
                        j += 1
                    if j - i >= rp._MIN_LAUNCH_RUN:
                        self.last_t = last
                        i = self._launch_run(first, ops, i, min(j, i + rp._MAX_RUN))
                        last = self.last_t
                        continue
                    scanned = j  # a short run: its launches go one by one
                t = op.t
                rid = op.id
                if launch is not None and last <= t and rid not in names:
                    try:
                        d = launch(op.user, op.app, op.location, op.endpoint, op.external, t)
                    except Exception:
                        pass
                    else:
                        decide(t, rid, d.outcome_code, d.reason_code, d.session_id, d.server, d.zone,
                               d.load_index)
                        if pending is not None and len(pending) >= rp._FLUSH:
                            self._writer.write(False)
                        last = t
                        i += 1
                        continue
            else:
                call = session_call(cls)
                if call is not None:
                    if batch:
                        # the run of session lines from here, up to the first that names
                        # no session or goes back in time, applied with one compiled call
                        end = session_run(ops, i, names, session_codes, last)
                        if end < 0:  # nothing was applied: the run goes line by line
                            self.last_t = last
                            i = self._by_line(first, ops, i, -end)
                            last = self.last_t
                            continue
                        if end > i:
                            last = ops[end - 1].t
                            i = end
                            continue
                    t = op.t
                    sid = names.get(op.session)
                    if sid is not None and last <= t:
                        try:
                            call(sid, t)
                            last = t
                            i += 1
                            continue
                        except Exception:
                            pass
                elif batch and i >= scanned and (cls is TelemetryOp or cls is UserOp):
                    self.last_t = last
                    if cls is TelemetryOp:
                        end, scanned = self._telemetry_run(first, ops, i)
                    else:
                        end, scanned = self._user_run(first, ops, i)
                    last = self.last_t
                    if end > i:  # the run was applied (or replayed line by line)
                        i = end
                        continue
            self.last_t = last
            one(first + i, op)
            last = self.last_t
            i += 1
        self.last_t = last
        if pending is not None and len(pending) >= rp._FLUSH:
            self._writer.write(False)

