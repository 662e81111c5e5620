"""The day's event handlers: one function per kind of event, called by the loop.

Design: each handler receives the day (:class:`usher.sim.day.Day`: the engine
through :class:`usher.sim.calls.EngineCalls`, the books, the calendar, the
presampled arrivals and the mutable :class:`usher.sim.day.DayState`), the tick
and ``now``, and acts; none keeps state of its own, so a handler can be run alone
on a small day with a chosen tick (tests/test_sim_handlers.py). Handlers schedule
follow-ups by appending to the calendar's buckets. The hot ones (the session
events, the new visits, :func:`finish_visit`; the launches of
:mod:`usher.sim.launches`) run ~10^5-10^6 times a day and are compiled
(sim/_events.pyx); this module holds the rest and names them.
"""

from __future__ import annotations

import math

import numpy as np

from usher.sim._events import finish_visit, new_visits, session_events
from usher.sim.calendar import L_NEW, S_BOOTED, S_CRASH, S_OFF, S_RECOVER, S_ZONE_DARK
from usher.planner.power import (
    BOOT, DRAIN, ENABLE, LOGOFF, PLACE_FIRST, PLACE_LAST, REIMAGE, SHUTDOWN, action_valid,
)
from usher.planner.rollout import WARN
from usher.sim.stats import BOOTING, DRAIN as DRAIN_MODE, ENABLED, OFF, SHUTTING_DOWN, power_moves

__all__ = ["server_events", "session_events", "apply_power", "apply_actions", "new_visits", "lose_sessions",
           "finish_visit", "server_off"]


# ---------------------------------------------------------------- shared consequences
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
                launches.schedule(back, (v, v.gen, L_NEW))
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
# session_events: compiled (sim/_events.pyx)


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
# new_visits: compiled (sim/_events.pyx)
