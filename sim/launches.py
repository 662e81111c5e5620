"""The launch handler: the tick's launches decided by the engine, then their
consequences.

Design: the decisions of a tick come first, all of them, through
``Scheduler.launch_many`` when the tick holds at least ``day.launch_batch_min``
launches (a storm), else one ``launch()`` each: launch_many costs a fixed call
overhead plus a small cost per row against one launch() per row, so batching
only pays for large ticks. The tick's launch lines go to the trace before any
consequence (a logoff of a denied visit's extra session, of a session a
reconnect replaced), since the engine decided every launch of the tick first and
a replay must too. Then each decision is applied in order by the handler of its
launch kind (:func:`on_new`, :func:`on_second`, :func:`on_reconnect`).
"""

from __future__ import annotations

import numpy as np

from usher.sim.calendar import E_CLOSE, E_DISCONNECT, E_END, E_FAIL, E_LOGON, L_NEW, L_RECONNECT, L_SECOND
from usher.sim.handlers import finish_visit
from usher.sim.scenario import APP_LABS

__all__ = ["launches", "decide", "on_new", "on_second", "on_reconnect", "PLACED", "RECONNECTED", "SHARED",
           "REJECTED"]

from usher.core.codes import Outcome

PLACED, RECONNECTED, SHARED, REJECTED = (int(Outcome.PLACED), int(Outcome.RECONNECTED),
                                         int(Outcome.SHARED), int(Outcome.REJECTED))


def _app_and_endpoint(d, v, kind):
    """What a launch of this kind opens and from where (a reconnect moves the user
    to another workstation, or a second home endpoint)."""
    if kind == L_SECOND:
        return APP_LABS, v.ep
    if kind == L_RECONNECT:
        v.ep = f"home-{v.user}-2" if v.ext else d.ws_name(v.h, d.arrivals.ws2[v.a])
    return v.app, v.ep


def decide(d, reqs, now):
    """The engine's decisions for ``reqs`` (list of (visit, generation, kind)), in
    order: a list of (app, endpoint, outcome, reason, server, session, load index)."""
    calls = d.calls
    if len(reqs) >= d.sc.day.launch_batch_min:
        apps, eps = [], []
        for v, _, kind in reqs:
            app, ep = _app_and_endpoint(d, v, kind)
            apps.append(app)
            eps.append(ep)
        users = d.user_idx[[r[0].user for r in reqs]]
        a_i = np.array([d.app_idx[a] for a in apps], dtype=np.int64)
        locs = [r[0].loc for r in reqs]
        ext = np.array([r[0].ext for r in reqs])
        t_in = calls.seconds
        b = calls.timed(len(reqs), d.s.launch_many, users, a_i, locations=locs, endpoints=eps, external=ext,
                        now=now)
        calls.launch_seconds += calls.seconds - t_in
        rows = list(zip(apps, eps, b.outcome.tolist(), b.reason.tolist(), b.server.tolist(),
                        b.session.tolist(), b.load_index.tolist()))
    else:
        rows = calls.launch_each(reqs, now, d, _app_and_endpoint)
    return rows


def _name_launches(d, reqs, rows, now):
    """Launch ids (``r1``, ``r2``, ...) of the tick's launches, written to the trace."""
    st, append = d.state, d.calls.append
    names = []
    for (v, _, _kind), (app, ep, *_rest) in zip(reqs, rows):
        st.rid += 1
        rname = f"r{st.rid}"
        names.append(rname)
        if append is not None:
            append({"t": now, "op": "launch", "id": rname, "user": v.uname, "app": app,
                    "location": v.loc, "endpoint": ep, "external": v.ext})
    return names


def _logon_tick(d, v, tick, sid, srv, now):
    lg = d.arrivals.logon[v.a]
    if d.slow is not None:
        lg = d.slow.logon_length(sid, srv, lg, now)
    return tick + (lg if lg > 1 else 1)


def _schedule_visit(d, v, sid, tick, srv, now):
    """The events of a freshly placed main session: its logon (or failure), and on
    the first placement the second app, its closing, the disconnect, the reconnect;
    the visit's end."""
    arr, sess, lq = d.arrivals, d.cal.sessions, d.cal.launches
    g = v.gen
    a = v.a
    if v.fail:
        v.fail = False
        sess[tick + d.sc.sessions.failure_detect_seconds].append((E_FAIL, v, g, sid))
    else:
        lg = arr.logon[a]
        if v.first:
            if lg == 0:
                d.state.warm.append(sid)
            else:
                sess[_logon_tick(d, v, tick, sid, srv, now)].append((E_LOGON, v, g, sid))
            end = v.end
            if arr.second[a] and arr.t_second[a] < end:
                lq[arr.t_second[a]].append((v, g, L_SECOND))
                if arr.close[a] and arr.t_close[a] < end:
                    sess[arr.t_close[a]].append((E_CLOSE, v, g, sid))
            if arr.disc[a] and arr.t_disc[a] < end:
                sess[arr.t_disc[a]].append((E_DISCONNECT, v, g, sid))
                if arr.rec[a]:
                    lq[arr.t_rec[a]].append((v, g, L_RECONNECT))
        else:
            sess[_logon_tick(d, v, tick, sid, srv, now)].append((E_LOGON, v, g, sid))
        if v.end < d.T:
            sess[v.end].append((E_END, v, g, sid))


def on_new(d, v, oc, srv, sid, rname, tick, now, placed):
    """A visit's first launch, a retry, or a come-back after a lost session."""
    st = d.state
    if oc == PLACED:
        placed.append(srv)
        if now - st.on_since[srv] < d.fresh_s:
            st.tally["fresh"] += 1
        v.sid = sid
        d.books.book(sid, v, srv, rname)
        v.gen += 1
        if d.rollout_run is not None:  # the rollout's health check counts launches
            d.rollout_run.placed(d, v, srv)
        _schedule_visit(d, v, sid, tick, srv, now)
        v.first = False
    elif oc == REJECTED:
        ss = d.sc.sessions
        if v.tries < ss.max_retries and tick + ss.retry_after_seconds < min(v.end, d.T):
            v.tries += 1
            st.tally["retried"] += 1
            d.cal.launches[tick + ss.retry_after_seconds].append((v, v.gen, L_NEW))
        else:
            st.tally["denied"] += 1
            finish_visit(d, v, now)
    else:  # the user already had a session: not in this model's books
        st.tally["unexpected"] += 1
        finish_visit(d, v, now)


def on_second(d, v, oc, srv, sid, rname, tick, now, placed):
    """The second app (lab results): shared into the session, or a new one."""
    if oc != REJECTED:
        v.labs = sid
    if oc == PLACED:  # not shared: a second session of the visit
        placed.append(srv)
        d.books.book(sid, v, srv, rname)
        v.extras.append(sid)
        d.cal.sessions[_logon_tick(d, v, tick, sid, srv, now)].append((E_LOGON, v, v.gen, sid))
    elif oc != SHARED and oc != REJECTED:
        d.state.tally["unexpected"] += 1


def on_reconnect(d, v, oc, srv, sid, rname, tick, now, placed):
    """A reconnect after a disconnect: resumed, or (placed) a new session that
    replaces the old one, which is logged off."""
    if oc == PLACED:  # the old session could not be resumed
        placed.append(srv)
        d.state.tally["reconnect_missed"] += 1
        old = v.sid
        if old in d.books.entries:
            d.calls.logoff(old, now)
            d.books.unbook(old)
        v.sid = sid
        d.books.book(sid, v, srv, rname)
        d.cal.sessions[_logon_tick(d, v, tick, sid, srv, now)].append((E_LOGON, v, v.gen, sid))
    elif oc == REJECTED:
        d.state.tally["reconnect_missed"] += 1


_BY_KIND = {L_NEW: on_new, L_SECOND: on_second, L_RECONNECT: on_reconnect}


def launches(d, reqs, tick, now):
    """Decide the tick's launches, trace them, apply their consequences in order;
    then the warm-start logons and the peaks. Returns the servers given a new
    session (the only way a server's pending logons grow)."""
    st = d.state
    rows = decide(d, reqs, now)
    names = _name_launches(d, reqs, rows, now) if d.naming else None
    placed: list = []
    oc_n, rc_n, dec = st.outcomes, st.reasons, st.decisions
    by_kind = _BY_KIND
    sname_of = d.books.names
    for j, ((v, _, kind), (app, ep, oc, rc, srv, sid, li)) in enumerate(zip(reqs, rows)):
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
                dec["session"].append(rname if oc == PLACED else sname_of.get(sid))
        by_kind[kind](d, v, oc, srv, sid, rname, tick, now, placed)
    if st.warm:  # warm start: the sessions open at midnight are established
        calls, logon_complete, launching = d.calls, d.s.logon_complete, d.books.launching
        for sid in st.warm:
            launching.discard(sid)
            calls.session(logon_complete, "logon_done", sid, now)
        st.warm.clear()
    return placed
