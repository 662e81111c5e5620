"""The day's event handlers: one function per kind of event, called by the loop.

Design: each handler receives the day (:class:`usher.sim.day.Day`: the engine
through :class:`usher.sim.calls.EngineCalls`, the books, the calendar, the
presampled arrivals and the mutable :class:`usher.sim.day.DayState`), the tick
and ``now``, and acts; none keeps state of its own, so a handler can be run alone
on a small day with a chosen tick (tests/test_sim_handlers.py). Handlers schedule
follow-ups by appending to the calendar's buckets. The hot ones bind what they
read to locals first: they run ~10^5 times a day.
"""

from __future__ import annotations

import math

import numpy as np

from usher.sim.books import Visit
from usher.sim.calendar import (
    E_CLOSE, E_DISCONNECT, E_END, E_FAIL, E_LOGON, L_NEW, L_RECONNECT, L_SECOND,
    S_BOOTED, S_CRASH, S_OFF, S_RECOVER, S_ZONE_DARK,
)
from usher.sim.demand import K_IMAGING
from usher.planner.power import (
    BOOT, DRAIN, ENABLE, LOGOFF, PLACE_FIRST, PLACE_LAST, REIMAGE, SHUTDOWN, action_valid,
)
from usher.planner.rollout import WARN
from usher.sim.stats import BOOTING, DRAIN as DRAIN_MODE, ENABLED, OFF, SHUTTING_DOWN, power_moves

__all__ = ["server_events", "session_events", "apply_power", "apply_actions", "new_visits", "lose_sessions",
           "finish_visit", "server_off"]


# ---------------------------------------------------------------- shared consequences
def finish_visit(d, v, now):
    """The visit is given up: its extra sessions logged off, the user idle again."""
    books = d.books
    for sid in v.extras:
        if sid in books.entries:
            d.calls.logoff(sid, now)
            books.unbook(sid)
    v.extras = []
    v.gen += 1
    d.state.idle[v.h][v.role].append(v.user)


def lose_sessions(d, lost, tick, now):
    """Sessions the engine reports lost (server off): off the books; a user whose
    main session was lost comes back after ``comeback`` seconds if the visit lasts."""
    books, tally = d.books, d.state.tally
    comeback, launches, T = d.arrivals.comeback, d.cal.launches, d.T
    for sid in lost:
        tally["lost"] += 1
        entry = books.unbook(sid)
        if entry is None:
            tally["lost_unbooked"] += 1
            continue
        v = entry[0]
        if sid == v.sid:
            v.sid = -1
            v.gen += 1
            back = tick + comeback[v.a]
            if back < v.end and back < T:
                launches[back].append((v, v.gen, L_NEW))
                tally["lost_relaunched"] += 1
            else:
                finish_visit(d, v, now)
        elif sid in v.extras:
            v.extras.remove(sid)


def server_off(d, i, tick, now):
    """Power server ``i`` off (a fault or the end of a shutdown), checking the books:
    the engine must report exactly the sessions booked on it as lost."""
    expected = d.books.booked[i]
    lost = d.calls.set_power(i, "off", now)
    if len(lost) != expected:
        d.state.tally["mismatch"] += 1
    lose_sessions(d, lost, tick, now)
    d.state.on_since[i] = -math.inf
    d.state.since[i] = now


# ---------------------------------------------------------------- 1. server events
def server_events(d, evs, tick, now):
    """Boots and shutdowns that finish, crashes, zone outages and recoveries."""
    st, calls, power_v, mode_v = d.state, d.calls, d.power_v, d.mode_v
    down = st.down
    for kind, i in evs:
        if kind == S_BOOTED:
            if power_v[i] == BOOTING and not down[i]:
                calls.set_power(i, "on", now)
                st.on_since[i] = now
                st.since[i] = now
                img = st.boot_image[i]
                if img is not None:  # came back on the image set while it was off
                    st.boot_image[i] = None
                    st.image[i] = img
                    calls.set_image(i, img, now, st.boot_reason[i])
                if st.bad_image is not None:  # a bad image: its servers never register
                    reg = st.image[i] != st.bad_image
                    if bool(d.registered_v[i]) != reg:
                        calls.set_registered(i, reg, now)
        elif kind == S_OFF:
            if power_v[i] == SHUTTING_DOWN:
                server_off(d, i, tick, now)
                if mode_v[i] != ENABLED:
                    calls.set_mode(i, "enabled", now)
        elif kind == S_CRASH or kind == S_ZONE_DARK:
            fl = d.sc.faults
            if kind == S_CRASH:
                members = [i]
                st.tally["crashes"] += 1
                back = tick + int(fl.reboot_minutes * 60)
            else:
                members = np.nonzero(d.layout.server_zone == i)[0].tolist()
                st.tally["zone_outages"] += 1
                back = tick + int(fl.zone_outage_minutes * 60)
            for m in members:
                if power_v[m] != OFF:
                    server_off(d, m, tick, now)
                if mode_v[m] != ENABLED:
                    calls.set_mode(m, "enabled", now)
                down[m] = True
                d.cal.servers[back].append((S_RECOVER, m))
        elif kind == S_RECOVER:
            down[i] = False


# ---------------------------------------------------------------- 2. session events
def _visit_over(d, v, now):
    """E_END: the visit's sessions are logged off, the user is idle again."""
    books, calls = d.books, d.calls
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
    d.state.idle[v.h][v.role].append(v.user)


def _launch_failed(d, v, sid, tick, now):
    """E_FAIL: the logon failed; retried after ``retry_after_seconds`` while tries
    and the visit last, else the visit is given up (denied)."""
    st, ss = d.state, d.sc.sessions
    if d.rollout_run is not None:  # the rollout's health check counts failed launches
        entry = d.books.entries.get(sid)
        if entry is not None:
            d.rollout_run.failed(entry[1])
    d.books.launching.discard(sid)
    d.calls.session(d.s.launch_failed, "launch_failed", sid, now)
    d.books.unbook(sid)
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


def session_events(d, evs, tick, now):
    """Logons that complete or fail, disconnects, second apps that close, visits
    that end; in the order scheduled. An event of an older visit generation, or
    of a session no longer on the books, is stale and skipped."""
    books, calls, s, mode_v = d.books, d.calls, d.s, d.mode_v
    entries, launching = books.entries, books.launching
    for kind, v, g, sid in evs:
        if v.gen != g:
            continue
        if kind == E_LOGON:
            if sid not in entries or sid not in launching:
                continue
            launching.discard(sid)
            calls.session(s.logon_complete, "logon_done", sid, now)
            if d.slow is not None:
                d.slow.logon_done(sid, now)
        elif kind == E_END:
            _visit_over(d, v, now)
        elif sid not in entries:
            continue
        elif kind == E_DISCONNECT:
            launching.discard(sid)  # a later logon event finds it disconnected
            calls.session(s.disconnect, "disconnect", sid, now)
        elif kind == E_CLOSE:
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


# ---------------------------------------------------------------- 3. power
def apply_power(d, tick, now, wish):
    """Carry out the power policy's wish (None: the previous one): boot, enable,
    drain, shut down — each list in index order, in this order (draining does not
    change who is empty). A boot ends ``power.boot_seconds`` later, a shutdown
    ``power.shutdown_seconds`` later (server events S_BOOTED / S_OFF)."""
    st, calls, pw, mode_v, servers = d.state, d.calls, d.sc.power, d.mode_v, d.cal.servers
    if wish is not None:
        st.want = np.asarray(wish, dtype=bool).copy()
    moves = d.moves
    nb, ne, nd, ns = power_moves(st.want, d.power_v, mode_v, st.down, d.sessions_v, moves)
    for i in moves[0, :nb].tolist():
        calls.set_power(i, "booting", now)
        st.tally["boots"] += 1
        if mode_v[i] != ENABLED:
            calls.set_mode(i, "enabled", now)
        servers[tick + pw.boot_seconds].append((S_BOOTED, i))
        st.since[i] = now
    for i in moves[1, :ne].tolist():
        calls.set_mode(i, "enabled", now)
    for i in moves[2, :nd].tolist():
        calls.set_mode(i, "drain", now)
    for i in moves[3, :ns].tolist():
        calls.set_power(i, "shutting_down", now)
        st.tally["shutdowns"] += 1
        servers[tick + pw.shutdown_seconds].append((S_OFF, i))
        st.since[i] = now


def _forced_logoff(d, i, tick, now, reason=None):
    """Log off every session on server ``i`` (a forced logoff of a drained server,
    traced with the planner's ``reason``): off the books; a user whose main session
    it was comes back as after a lost one."""
    books = d.books
    sids = [sid for sid, (_, srv) in books.entries.items() if srv == i]
    for sid in sids:
        books.launching.discard(sid)
        d.calls.logoff(sid, now, reason)
    d.state.tally["forced_logoffs"] += len(sids)
    lose_sessions(d, sids, tick, now)
    d.state.tally["lost"] -= len(sids)  # logged off, not lost


def _apply_marks(d, now, actions, j):
    """The run of place-last (or place-first) actions from ``actions[j]``, all of
    one kind: each checked as :func:`apply_actions` does (a mark is valid on any
    server), then carried out in one engine call (a mark changes no state a check
    reads, so the run's checks equal those made one by one). Returns the index
    after the run."""
    kind, n_act = actions[j].kind, len(actions)
    power_v, mode_v, sessions_v, pending_v, down = d.power_v, d.mode_v, d.sessions_v, d.pending_v, d.state.down
    n_srv, tally, log = len(power_v), d.state.tally, d.state.actions
    servers: list[int] = []
    reasons: list = []
    while j < n_act and actions[j].kind == kind:
        a = actions[j]
        j += 1
        i = a.server
        if not (0 <= i < n_srv) or not action_valid(kind, int(power_v[i]), int(mode_v[i]), int(sessions_v[i]),
                                                    int(pending_v[i]), bool(down[i])):
            tally["refused"] += 1
            continue
        servers.append(int(i))
        reasons.append(a.reason or None)
        if log is not None:
            log.append((now, kind, i, a.reason))
    if servers:
        d.calls.set_place_last_many(servers, kind == PLACE_LAST, now, reasons)
        tally["marks"] += len(servers)
    return j


def apply_actions(d, tick, now, actions):
    """Carry out an action policy's actions, in order, each checked first against
    the server's state now (:func:`usher.planner.power.action_valid`): one that the
    state no longer allows is skipped and counted (``power.actions_refused``). A
    boot ends ``power.boot_seconds`` later, a shutdown ``power.shutdown_seconds``
    later (server events S_BOOTED / S_OFF)."""
    st, calls, pw, servers = d.state, d.calls, d.sc.power, d.cal.servers
    power_v, mode_v, sessions_v, pending_v, down = d.power_v, d.mode_v, d.sessions_v, d.pending_v, st.down
    tally, log = st.tally, st.actions
    if d.rollout_run is not None:  # a rollout's warnings change no state: delivered apart
        warn = [a for a in actions if a.kind == WARN]
        if warn:
            d.rollout_run.warn(d, warn, now)
            actions = [a for a in actions if a.kind != WARN]
    n_srv, j, n_act = len(power_v), 0, len(actions)
    while j < n_act:
        a = actions[j]
        k = a.kind
        if k == PLACE_LAST or k == PLACE_FIRST:  # a run of marks: one engine call
            j = _apply_marks(d, now, actions, j)
            continue
        j += 1
        i = a.server
        if not (0 <= i < n_srv) or not action_valid(a.kind, int(power_v[i]), int(mode_v[i]),
                                                           int(sessions_v[i]), int(pending_v[i]), bool(down[i])):
            tally["refused"] += 1
            continue
        k, why = a.kind, a.reason or None
        if k == BOOT:
            calls.set_power(i, "booting", now, why)
            tally["boots"] += 1
            if mode_v[i] != ENABLED:
                calls.set_mode(i, "enabled", now, why)
            servers[tick + pw.boot_seconds].append((S_BOOTED, i))
            st.since[i] = now
        elif k == ENABLE:
            calls.set_mode(i, "enabled", now, why)
        elif k == DRAIN:
            calls.set_mode(i, "drain", now, why)
        elif k == SHUTDOWN:
            calls.set_power(i, "shutting_down", now, why)
            tally["shutdowns"] += 1
            servers[tick + pw.shutdown_seconds].append((S_OFF, i))
            st.since[i] = now
        elif k == LOGOFF:
            _forced_logoff(d, i, tick, now, why)
        elif k == REIMAGE:
            st.boot_image[i] = a.image
            st.boot_reason[i] = why
        if log is not None:
            log.append((now, k, i, a.reason))


# ---------------------------------------------------------------- 4. new visits
def new_visits(d, tick, reqs):
    """The tick's arrivals: each takes an idle user of its hospital (an imaging user
    for an imaging visit; a clinical visit falls back to an imaging user) and
    becomes a visit whose first launch joins ``reqs``. No idle user: counted, dropped."""
    st, arr = d.state, d.arrivals
    c = arr.counts[tick]
    if not c:
        return
    a_hosp, a_kind, a_pick, a_app, a_locname, a_end, a_ext, a_ws, a_fail = (
        arr.hosp, arr.kind, arr.pick, arr.app, arr.locname, arr.end, arr.ext, arr.ws, arr.fail)
    idle, user_names, tally = st.idle, d.user_names, st.tally
    ep_get, ws_name, W = d.endpoints.get, d.ws_name, d.W
    start = st.next_arrival
    for a in range(start, start + c):
        h = a_hosp[a]
        kind = a_kind[a]
        lists = idle[h]
        role = 1 if kind == K_IMAGING else 0
        pool = lists[role]
        if not pool and kind != K_IMAGING:
            role = 1
            pool = lists[1]
        if not pool:
            tally["no_user"] += 1
            continue
        j = int(a_pick[a] * len(pool))
        u = pool[j]
        pool[j] = pool[-1]
        pool.pop()
        v = Visit()
        v.a, v.user, v.uname, v.kind, v.h, v.role = a, u, user_names[u], kind, h, role
        v.app, v.loc, v.end = a_app[a], a_locname[a], a_end[a]
        if a_ext[a]:
            v.ext, v.ep = True, f"home-{u}"
        else:
            w = a_ws[a]
            ep = ep_get(h * W + w)
            v.ext, v.ep = False, ep if ep is not None else ws_name(h, w)
        v.gen, v.sid, v.tries, v.fail, v.extras, v.first = 0, -1, 0, a_fail[a], [], True
        v.labs = -1  # the session the second app runs in, once it does
        st.requested += 1
        reqs.append((v, 0, L_NEW))
    st.next_arrival = start + c
