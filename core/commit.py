"""Commit stage: creating, changing and ending sessions, and the clock.

Design: a session lives in three intrusive doubly linked lists threaded through
the session table — its user's sessions (creation order, for reconnect/share),
its server's sessions (for power-off and forced removal) and, while it counts as
a pending logon, the global pending list (launch order, so the pending timeout
expires from the head). Sin-binned servers sit in a list ordered by expiry.
Every change touches O(1) records plus one O(log n) tree path.

Session ids are ``gen << 32 | slot``: slots are reused, generations are not, so an
id of an ended session is recognised (SESSION_ENDED) without keeping a record.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import codes
from . import state as st
from .loadindex import load_index
from .tree import replay_path

_LAUNCHING = int(codes.SessionState.LAUNCHING)
_ACTIVE = int(codes.SessionState.ACTIVE)
_DISCONNECTED = int(codes.SessionState.DISCONNECTED)
_FREE = int(codes.SessionState.FREE)
_OK = int(codes.Status.OK)
_UNKNOWN_SESSION = int(codes.Status.UNKNOWN_SESSION)
_SESSION_ENDED = int(codes.Status.SESSION_ENDED)
_TIME_WENT_BACKWARDS = int(codes.Status.TIME_WENT_BACKWARDS)
_SLOT_MASK = (1 << 32) - 1


# ------------------------------------------------------------------ lists
@njit(inline="always")
def link_append(tbl, prev_f, next_f, x, owner, head_f, tail_f, col):
    tail = owner[tail_f, col]
    tbl[prev_f, x] = tail
    tbl[next_f, x] = -1
    if tail < 0:
        owner[head_f, col] = x
    else:
        tbl[next_f, tail] = x
    owner[tail_f, col] = x


@njit(inline="always")
def link_remove(tbl, prev_f, next_f, x, owner, head_f, tail_f, col):
    p = tbl[prev_f, x]
    n = tbl[next_f, x]
    if p < 0:
        owner[head_f, col] = n
    else:
        tbl[next_f, p] = n
    if n < 0:
        owner[tail_f, col] = p
    else:
        tbl[prev_f, n] = p
    tbl[prev_f, x] = -1
    tbl[next_f, x] = -1


# ------------------------------------------------------------------ ids
@njit(inline="always")
def session_id(s: st.State, slot):
    return (s.ses[st.SE_GEN, slot] << 32) | slot


@njit(cache=False)
def resolve_session(h, sid):
    """Slot of live session ``sid``, or a negative status (-UNKNOWN_SESSION,
    -SESSION_ENDED)."""
    s = st.unpack(h)
    if sid < 0:
        return -_UNKNOWN_SESSION
    slot = sid & _SLOT_MASK
    gen = sid >> 32
    if slot >= s.hdr[st.H_SESSION_CAP, 0] or gen < 1:
        return -_UNKNOWN_SESSION
    cur = s.ses[st.SE_GEN, slot]
    if gen < cur:
        return -_SESSION_ENDED
    if gen > cur or s.ses[st.SE_STATE, slot] == _FREE:
        return -_UNKNOWN_SESSION
    return slot


# ------------------------------------------------------------------ apps
@njit(cache=False)
def app_in_session(h, slot, app):
    s = st.unpack(h)
    k = s.ses[st.SE_INST_HEAD, slot]
    while k >= 0:
        if s.inst[st.IN_APP, k] == app:
            return True
        k = s.inst[st.IN_NEXT, k]
    return False


@njit(cache=False)
def user_app_instances(h, u, app):
    """Sessions of user u (not ended) running app."""
    s = st.unpack(h)
    n = 0
    x = s.usr[st.US_S_HEAD, u]
    while x >= 0:
        if app_in_session(h, x, app):
            n += 1
        x = s.ses[st.SE_U_NEXT, x]
    return n


@njit(cache=False)
def user_pool_sessions(h, u, p):
    s = st.unpack(h)
    n = 0
    x = s.usr[st.US_S_HEAD, u]
    while x >= 0:
        if s.ses[st.SE_POOL, x] == p:
            n += 1
        x = s.ses[st.SE_U_NEXT, x]
    return n


@njit(cache=False)
def join_app(h, slot, app):
    """The app joins the session (no-op if it already runs there)."""
    s = st.unpack(h)
    if app_in_session(h, slot, app):
        return
    top = s.hdr[st.H_INSTANCE_FREE_TOP, 0] - 1
    s.hdr[st.H_INSTANCE_FREE_TOP, 0] = top
    k = s.inst_free[top]
    s.inst[st.IN_APP, k] = app
    s.inst[st.IN_NEXT, k] = s.ses[st.SE_INST_HEAD, slot]
    s.ses[st.SE_INST_HEAD, slot] = k
    s.ses[st.SE_N_APPS, slot] += 1
    s.app[st.AP_INSTANCES, app] += 1


@njit(cache=False)
def leave_app(h, slot, app):
    """The app leaves the session; returns False if it was not running there."""
    s = st.unpack(h)
    prev = -1
    k = s.ses[st.SE_INST_HEAD, slot]
    while k >= 0:
        if s.inst[st.IN_APP, k] == app:
            nxt = s.inst[st.IN_NEXT, k]
            if prev < 0:
                s.ses[st.SE_INST_HEAD, slot] = nxt
            else:
                s.inst[st.IN_NEXT, prev] = nxt
            top = s.hdr[st.H_INSTANCE_FREE_TOP, 0]
            s.inst_free[top] = k
            s.hdr[st.H_INSTANCE_FREE_TOP, 0] = top + 1
            s.ses[st.SE_N_APPS, slot] -= 1
            s.app[st.AP_INSTANCES, app] -= 1
            return True
        prev = k
        k = s.inst[st.IN_NEXT, k]
    return False


# ------------------------------------------------------------------ server
@njit(inline="always")
def refresh_server(h, i):
    """Recompute load index and key of server i and reposition it."""
    s = st.unpack(h)
    s.srv[st.SV_LOAD_INDEX, i] = load_index(h, i)
    replay_path(h, i)


@njit(cache=False)
def stop_pending(h, slot):
    """The session stops counting as a pending logon (logon done, timeout, end)."""
    s = st.unpack(h)
    if s.ses[st.SE_PENDING, slot] == 0:
        return
    s.ses[st.SE_PENDING, slot] = 0
    link_remove(s.ses, st.SE_P_PREV, st.SE_P_NEXT, slot, s.hdr, st.H_PEND_HEAD, st.H_PEND_TAIL, 0)
    i = s.ses[st.SE_SERVER, slot]
    s.srv[st.SV_PENDING, i] -= 1


# ------------------------------------------------------------------ commit
@njit(cache=False)
def open_session(h, u, app, i, endpoint, now):
    """Commit a PLACED decision: a new launching session of user u running app on
    server i. The caller has checked there is a free session and instance slot.
    Returns the session slot."""
    s = st.unpack(h)
    top = s.hdr[st.H_SESSION_FREE_TOP, 0] - 1
    s.hdr[st.H_SESSION_FREE_TOP, 0] = top
    slot = s.ses_free[top]
    ses = s.ses
    ses[st.SE_STATE, slot] = _LAUNCHING
    ses[st.SE_USER, slot] = u
    ses[st.SE_SERVER, slot] = i
    ses[st.SE_POOL, slot] = s.srv[st.SV_POOL, i]
    ses[st.SE_ENDPOINT, slot] = endpoint
    ses[st.SE_INST_HEAD, slot] = -1
    ses[st.SE_N_APPS, slot] = 0
    ses[st.SE_PENDING, slot] = 1
    s.sesf[st.SEF_T_LAUNCH, slot] = now
    s.sesf[st.SEF_T_STATE, slot] = now
    link_append(ses, st.SE_U_PREV, st.SE_U_NEXT, slot, s.usr, st.US_S_HEAD, st.US_S_TAIL, u)
    link_append(ses, st.SE_V_PREV, st.SE_V_NEXT, slot, s.srv, st.SV_V_HEAD, st.SV_V_TAIL, i)
    link_append(ses, st.SE_P_PREV, st.SE_P_NEXT, slot, s.hdr, st.H_PEND_HEAD, st.H_PEND_TAIL, 0)
    join_app(h, slot, app)
    s.usr[st.US_N_SESSIONS, u] += 1
    if s.usr[st.US_N_SESSIONS, u] == 1:
        s.hdr[st.H_HOLDERS, 0] += 1
    s.hdr[st.H_LIVE_SESSIONS, 0] += 1
    s.srv[st.SV_SESSIONS, i] += 1
    s.srv[st.SV_PENDING, i] += 1
    s.srv[st.SV_PICKS, i] += 1
    seq = s.hdr[st.H_PICK_SEQ, 0] + 1
    s.hdr[st.H_PICK_SEQ, 0] = seq
    s.srv[st.SV_TB, i] = seq
    refresh_server(h, i)
    return slot


@njit(cache=False)
def close_session(h, slot):
    """End a live session: release its slot, licence share, instances and load."""
    s = st.unpack(h)
    ses = s.ses
    i = ses[st.SE_SERVER, slot]
    u = ses[st.SE_USER, slot]
    stop_pending(h, slot)
    while ses[st.SE_INST_HEAD, slot] >= 0:
        leave_app(h, slot, s.inst[st.IN_APP, ses[st.SE_INST_HEAD, slot]])
    link_remove(ses, st.SE_U_PREV, st.SE_U_NEXT, slot, s.usr, st.US_S_HEAD, st.US_S_TAIL, u)
    link_remove(ses, st.SE_V_PREV, st.SE_V_NEXT, slot, s.srv, st.SV_V_HEAD, st.SV_V_TAIL, i)
    s.usr[st.US_N_SESSIONS, u] -= 1
    if s.usr[st.US_N_SESSIONS, u] == 0:
        s.hdr[st.H_HOLDERS, 0] -= 1
    s.hdr[st.H_LIVE_SESSIONS, 0] -= 1
    ses[st.SE_STATE, slot] = _FREE
    ses[st.SE_GEN, slot] += 1
    top = s.hdr[st.H_SESSION_FREE_TOP, 0]
    s.ses_free[top] = slot
    s.hdr[st.H_SESSION_FREE_TOP, 0] = top + 1
    s.srv[st.SV_SESSIONS, i] -= 1
    refresh_server(h, i)


@njit(cache=False)
def close_server_sessions(h, i, out, start):
    """End every session of server i, writing their ids to out[start:].
    Returns how many were ended."""
    s = st.unpack(h)
    n = 0
    while s.srv[st.SV_V_HEAD, i] >= 0:
        slot = s.srv[st.SV_V_HEAD, i]
        out[start + n] = session_id(s, slot)
        close_session(h, slot)
        n += 1
    return n


# ------------------------------------------------------------------ clock
@njit(cache=False)
def sinbin_server(h, i, until):
    """Sin-bin server i until ``until`` (list kept ordered by expiry)."""
    s = st.unpack(h)
    srv = s.srv
    if srv[st.SV_SINBIN, i] != 0:
        link_remove(srv, st.SV_SB_PREV, st.SV_SB_NEXT, i, s.hdr, st.H_SB_HEAD, st.H_SB_TAIL, 0)
    srv[st.SV_SINBIN, i] = 1
    srv[st.SV_KEY_BITS, i] |= st.SINBIN_BIT
    s.srvf[st.SF_SINBIN_UNTIL, i] = until
    # insert after the last server expiring no later than `until`
    after = s.hdr[st.H_SB_TAIL, 0]
    while after >= 0 and s.srvf[st.SF_SINBIN_UNTIL, after] > until:
        after = srv[st.SV_SB_PREV, after]
    if after < 0:
        head = s.hdr[st.H_SB_HEAD, 0]
        srv[st.SV_SB_PREV, i] = -1
        srv[st.SV_SB_NEXT, i] = head
        if head >= 0:
            srv[st.SV_SB_PREV, head] = i
        else:
            s.hdr[st.H_SB_TAIL, 0] = i
        s.hdr[st.H_SB_HEAD, 0] = i
    else:
        nxt = srv[st.SV_SB_NEXT, after]
        srv[st.SV_SB_PREV, i] = after
        srv[st.SV_SB_NEXT, i] = nxt
        srv[st.SV_SB_NEXT, after] = i
        if nxt >= 0:
            srv[st.SV_SB_PREV, nxt] = i
        else:
            s.hdr[st.H_SB_TAIL, 0] = i
    replay_path(h, i)


@njit(cache=False)
def unsinbin_server(h, i):
    s = st.unpack(h)
    if s.srv[st.SV_SINBIN, i] == 0:
        return
    link_remove(s.srv, st.SV_SB_PREV, st.SV_SB_NEXT, i, s.hdr, st.H_SB_HEAD, st.H_SB_TAIL, 0)
    s.srv[st.SV_SINBIN, i] = 0
    s.srv[st.SV_KEY_BITS, i] &= ~st.SINBIN_BIT
    replay_path(h, i)


@njit(cache=False)
def check_time(h, now):
    """OK if ``now`` is not earlier than the clock (checked before any change)."""
    s = st.unpack(h)
    if now < s.clock[st.CK_NOW]:
        return _TIME_WENT_BACKWARDS
    return _OK


@njit(cache=False)
def recount_pending(h):
    """Recompute every pending flag from the launch times after the pending
    timeout changed: a launching session is pending iff
    ``t_launch + pending_timeout > now``. Rebuilds the pending list in launch
    order and every server's pending count (the caller rebuilds the keys)."""
    s = st.unpack(h)
    now = s.clock[st.CK_NOW]
    timeout = s.clock[st.CK_PENDING_TIMEOUT]
    x = s.hdr[st.H_PEND_HEAD, 0]
    while x >= 0:
        nxt = s.ses[st.SE_P_NEXT, x]
        s.ses[st.SE_PENDING, x] = 0
        x = nxt
    s.hdr[st.H_PEND_HEAD, 0] = -1
    s.hdr[st.H_PEND_TAIL, 0] = -1
    for i in range(s.hdr[st.H_N_SERVERS, 0]):
        s.srv[st.SV_PENDING, i] = 0
    n_slots = s.ses.shape[1]
    n = 0
    for x in range(n_slots):
        if s.ses[st.SE_STATE, x] == _LAUNCHING and s.sesf[st.SEF_T_LAUNCH, x] + timeout > now:
            n += 1
    slots = np.empty(n, np.int64)
    t = np.empty(n, np.float64)
    n = 0
    for x in range(n_slots):
        if s.ses[st.SE_STATE, x] == _LAUNCHING and s.sesf[st.SEF_T_LAUNCH, x] + timeout > now:
            slots[n] = x
            t[n] = s.sesf[st.SEF_T_LAUNCH, x]
            n += 1
    order = np.argsort(t, kind="mergesort")
    for k in range(n):
        x = slots[order[k]]
        s.ses[st.SE_PENDING, x] = 1
        link_append(s.ses, st.SE_P_PREV, st.SE_P_NEXT, x, s.hdr, st.H_PEND_HEAD, st.H_PEND_TAIL, 0)
        s.srv[st.SV_PENDING, s.ses[st.SE_SERVER, x]] += 1


@njit(cache=False)
def advance(h, now):
    """Move the clock to ``now`` (already checked): expire pending logons older
    than the pending timeout and sin-bins that have run out."""
    s = st.unpack(h)
    s.clock[st.CK_NOW] = now
    timeout = s.clock[st.CK_PENDING_TIMEOUT]
    while True:
        x = s.hdr[st.H_PEND_HEAD, 0]
        if x < 0 or s.sesf[st.SEF_T_LAUNCH, x] + timeout > now:  # still pending
            break
        i = s.ses[st.SE_SERVER, x]
        stop_pending(h, x)
        replay_path(h, i)
    while True:
        i = s.hdr[st.H_SB_HEAD, 0]
        if i < 0 or s.srvf[st.SF_SINBIN_UNTIL, i] > now:
            break
        unsinbin_server(h, i)
