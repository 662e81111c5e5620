"""The placement pipeline: request → filter → score → pick → commit.

Design: ``place`` follows docs/SEMANTICS.md step by step and returns a status
code; the decision goes to a row of int64 (``state.DECISION_FIELDS``). The
filters that are properties of a group (pool, zone, tag set) are applied by
choosing which group roots to look at; the filters that depend on the server
(power, registration, mode, capacity, load, sin-bin, slowness, logon tolerance) are folded
into the server's selection key (``loadindex.selection_key``), so every query is
a handful of O(1) root reads and the commit is one O(log n) tree path. The
server-side conditions themselves are written once, in ``eligibility.py``.
"""

from __future__ import annotations

from numba import njit

from . import codes
from . import state as st
from .commit import (
    advance,
    app_in_session,
    check_time,
    join_app,
    open_session,
    session_id,
    user_app_instances,
    user_pool_sessions,
)
from .eligibility import has_tags, takes_running_session
from .tree import better_root, root_server

_OK = int(codes.Status.OK)
_NO_CAPACITY = int(codes.Status.NO_CAPACITY)

_PLACED = int(codes.Outcome.PLACED)
_RECONNECTED = int(codes.Outcome.RECONNECTED)
_SHARED = int(codes.Outcome.SHARED)
_REJECTED = int(codes.Outcome.REJECTED)

_NOT_ENTITLED = int(codes.Reason.NOT_ENTITLED)
_EXTERNAL_DENIED = int(codes.Reason.EXTERNAL_DENIED)
_LICENCE_EXHAUSTED = int(codes.Reason.LICENCE_EXHAUSTED)
_USER_LIMIT = int(codes.Reason.USER_LIMIT)
_APP_LIMIT = int(codes.Reason.APP_LIMIT)
_NO_SERVER = int(codes.Reason.NO_SERVER)
_FULL = int(codes.Reason.FULL)
_LOGON_TOLERANCE = int(codes.Reason.LOGON_TOLERANCE)
_NONE = int(codes.Reason.NONE)

_LAUNCHING = int(codes.SessionState.LAUNCHING)
_ACTIVE = int(codes.SessionState.ACTIVE)
_DISCONNECTED = int(codes.SessionState.DISCONNECTED)

_ALWAYS = int(codes.Reconnection.ALWAYS)
_SAME_ENDPOINT = int(codes.Reconnection.SAME_ENDPOINT)

_Z_USER_LOCATION = int(codes.ZonePreference.USER_LOCATION)
_Z_USER_HOME = int(codes.ZonePreference.USER_HOME)
_Z_APP_HOME = int(codes.ZonePreference.APP_HOME)
_CHOICE_FAILOVER = int(codes.ZoneChoice.FAILOVER)
_CHOICE_ANY = int(codes.ZoneChoice.ANY)


# ------------------------------------------------------------------ request
@njit(inline="always")
def entitled(s: st.State, u, app):
    return (s.ent[u, app >> 6] >> (app & 63)) & 1 != 0


@njit(cache=False)
def pool_allowed(h, app, p, external):
    """p is one of the app's pools and, for an external request, allows it."""
    s = st.unpack(h)
    start = s.app[st.AP_POOLS_START, app]
    for k in range(start, start + s.app[st.AP_POOLS_COUNT, app]):
        if s.app_pools[k] == p:
            return external == 0 or s.pool[st.PO_EXTERNAL, p] != 0
    return False


@njit(cache=False)
def within_instance_limits(h, u, app):
    """0 if one more instance of app for user u is allowed, else the reason."""
    s = st.unpack(h)
    mpu = s.app[st.AP_MAX_PER_USER, app]
    if mpu >= 0 and user_app_instances(h, u, app) >= mpu:
        return _USER_LIMIT
    mt = s.app[st.AP_MAX_TOTAL, app]
    if mt >= 0 and s.app[st.AP_INSTANCES, app] >= mt:
        return _APP_LIMIT
    return 0


@njit(cache=False)
def reusable(h, x, u, app, external):
    """Session x may take this request (reconnect or share), state aside."""
    s = st.unpack(h)
    p = s.ses[st.SE_POOL, x]
    if not pool_allowed(h, app, p, external):
        return False
    i = s.ses[st.SE_SERVER, x]
    if not takes_running_session(s, i, p):
        return False
    if not has_tags(s.srv[st.SV_TAGS, i], s.app[st.AP_TAGS, app]):
        return False
    if not app_in_session(h, x, app) and within_instance_limits(h, u, app) != 0:
        return False
    return True


# ------------------------------------------------------------------ filter
@njit(cache=False)
def user_may_open(h, u, p):
    """The user is below the pool's max_sessions_per_user."""
    s = st.unpack(h)
    m = s.pool[st.PO_MAX_PER_USER, p]
    return m < 0 or user_pool_sessions(h, u, p) < m


@njit(inline="always")
def _preferred_zone(s: st.State, kind, u, app, location):
    if kind == _Z_USER_LOCATION:
        return location
    if kind == _Z_USER_HOME:
        return s.usr[st.US_HOME_ZONE, u]
    return s.app[st.AP_HOME_ZONE, app]


@njit(cache=False)
def resolve_zones(h, p, u, app, location):
    """The pool's zone preference resolved for this request.

    Returns (n, z0, z1, z2, c0, c1, c2): n zones in order with the preference
    kind that produced each. None (-1) entries are dropped and duplicates keep
    their first place; a zone name no server uses is -2 (a zone without
    candidates)."""
    s = st.unpack(h)
    n = 0
    z0 = z1 = z2 = -1
    c0 = c1 = c2 = -1
    for k in range(s.pool[st.PO_N_ZPREF, p]):
        kind = s.pool[st.PO_ZPREF0 + k, p]
        zone = _preferred_zone(s, kind, u, app, location)
        if zone == -1 or (n >= 1 and zone == z0) or (n >= 2 and zone == z1):
            continue
        if n == 0:
            z0, c0 = zone, kind
        elif n == 1:
            z1, c1 = zone, kind
        else:
            z2, c2 = zone, kind
        n += 1
    return n, z0, z1, z2, c0, c1, c2


# ------------------------------------------------------------------ pick
@njit(cache=False)
def best_in_zone(h, p, z, need, limit):
    """Best candidate of pool p in zone z matching tag mask ``need`` with a key
    below ``limit`` (SLOW_BIT leaves sin-binned and slow servers out), or -1."""
    s = st.unpack(h)
    if z < 0:
        return -1
    row = p * s.hdr[st.H_N_ZONES, 0] + z
    start = s.pz[st.PZ_G_START, row]
    best = -1
    for g in range(start, start + s.pz[st.PZ_G_COUNT, row]):
        if not has_tags(s.grp[st.GR_TAGS, g], need):
            continue
        best = better_root(s, best, g, limit)
    return root_server(s, best)


@njit(cache=False)
def best_in_pool(h, p, need, limit):
    """Best candidate of pool p in any zone (see best_in_zone), or -1."""
    s = st.unpack(h)
    start = s.pool[st.PO_G_START, p]
    best = -1
    for g in range(start, start + s.pool[st.PO_G_COUNT, p]):
        if not has_tags(s.grp[st.GR_TAGS, g], need):
            continue
        best = better_root(s, best, g, limit)
    return root_server(s, best)


@njit(cache=False)
def pick_in_pool(h, p, u, app, location, limit):
    """Zone stage for one pool: (server, zone_choice), server -1 if none."""
    s = st.unpack(h)
    need = s.app[st.AP_TAGS, app]
    n, z0, z1, z2, c0, c1, c2 = resolve_zones(h, p, u, app, location)
    if n == 0:
        return best_in_pool(h, p, need, limit), _CHOICE_ANY
    b = best_in_zone(h, p, z0, need, limit)
    if b >= 0:
        return b, c0
    if n > 1:
        b = best_in_zone(h, p, z1, need, limit)
        if b >= 0:
            return b, c1
    if n > 2:
        b = best_in_zone(h, p, z2, need, limit)
        if b >= 0:
            return b, c2
    if s.pool[st.PO_FAILOVER, p] != 0:
        return best_in_pool(h, p, need, limit), _CHOICE_FAILOVER
    return -1, -1


@njit(cache=False)
def any_available_in_reach(h, p, u, app, location):
    """Some server of pool p in its reach, matching the app, is available."""
    s = st.unpack(h)
    need = s.app[st.AP_TAGS, app]
    n, z0, z1, z2, c0, c1, c2 = resolve_zones(h, p, u, app, location)
    if n == 0 or s.pool[st.PO_FAILOVER, p] != 0:
        start = s.pool[st.PO_G_START, p]
        count = s.pool[st.PO_G_COUNT, p]
        for g in range(start, start + count):
            if has_tags(s.grp[st.GR_TAGS, g], need) and s.grp[st.GR_N_AVAILABLE, g] > 0:
                return True
        return False
    nz = s.hdr[st.H_N_ZONES, 0]
    for k in range(n):
        z = z0 if k == 0 else (z1 if k == 1 else z2)
        if z < 0:
            continue
        row = p * nz + z
        start = s.pz[st.PZ_G_START, row]
        for g in range(start, start + s.pz[st.PZ_G_COUNT, row]):
            if has_tags(s.grp[st.GR_TAGS, g], need) and s.grp[st.GR_N_AVAILABLE, g] > 0:
                return True
    return False


# ------------------------------------------------------------------ decide
@njit(inline="always")
def _reject(out, reason):
    out[st.D_OUTCOME] = _REJECTED
    out[st.D_REASON] = reason


@njit(inline="always")
def _reuse(h, x, app, outcome, out):
    s = st.unpack(h)
    i = s.ses[st.SE_SERVER, x]
    join_app(h, x, app)
    out[st.D_OUTCOME] = outcome
    out[st.D_SERVER] = i
    out[st.D_SESSION] = session_id(s, x)
    out[st.D_ZONE] = s.srv[st.SV_ZONE, i]
    out[st.D_LOAD_INDEX] = s.srv[st.SV_LOAD_INDEX, i]
    out[st.D_POOL] = s.ses[st.SE_POOL, x]


@njit(cache=False)
def place(h, u, app, location, endpoint, external, now, out):
    """Decide one launch and commit it. ``u`` is -1 for an unknown user (only
    passed when entitlement is enforced). Returns a status; the decision is in
    ``out`` (DECISION_FIELDS)."""
    s = st.unpack(h)
    status = check_time(h, now)
    if status != _OK:
        return status
    if s.hdr[st.H_SESSION_FREE_TOP, 0] < 1 or s.hdr[st.H_INSTANCE_FREE_TOP, 0] < 1:
        return _NO_CAPACITY
    advance(h, now)
    for k in range(st.N_D):
        out[k] = -1
    out[st.D_REASON] = _NONE

    # 1. entitlement, external access
    if u < 0 or (s.hdr[st.H_ENFORCE_ENTITLEMENT, 0] != 0 and not entitled(s, u, app)):
        _reject(out, _NOT_ENTITLED)
        return _OK
    start = s.app[st.AP_POOLS_START, app]
    stop = start + s.app[st.AP_POOLS_COUNT, app]
    if external != 0:
        allowed = False
        for k in range(start, stop):
            if s.pool[st.PO_EXTERNAL, s.app_pools[k]] != 0:
                allowed = True
        if not allowed:
            _reject(out, _EXTERNAL_DENIED)
            return _OK

    # 2. reconnect: (a) a disconnected session, (b) roam an active one
    x = s.usr[st.US_S_HEAD, u]
    while x >= 0:
        if s.ses[st.SE_STATE, x] == _DISCONNECTED and reusable(h, x, u, app, external):
            mode = s.pool[st.PO_RECONNECTION, s.ses[st.SE_POOL, x]]
            if mode != _SAME_ENDPOINT or s.ses[st.SE_ENDPOINT, x] == endpoint:
                s.ses[st.SE_STATE, x] = _ACTIVE
                s.ses[st.SE_ENDPOINT, x] = endpoint
                s.sesf[st.SEF_T_STATE, x] = now
                _reuse(h, x, app, _RECONNECTED, out)
                return _OK
        x = s.ses[st.SE_U_NEXT, x]
    x = s.usr[st.US_S_HEAD, u]
    while x >= 0:
        if (
            s.ses[st.SE_STATE, x] == _ACTIVE
            and s.ses[st.SE_ENDPOINT, x] != endpoint
            and s.pool[st.PO_RECONNECTION, s.ses[st.SE_POOL, x]] == _ALWAYS
            and reusable(h, x, u, app, external)
        ):
            s.ses[st.SE_ENDPOINT, x] = endpoint
            s.sesf[st.SEF_T_STATE, x] = now
            _reuse(h, x, app, _RECONNECTED, out)
            return _OK
        x = s.ses[st.SE_U_NEXT, x]

    # 3. share an active or launching session
    x = s.usr[st.US_S_HEAD, u]
    while x >= 0:
        state = s.ses[st.SE_STATE, x]
        if (state == _ACTIVE or state == _LAUNCHING) and reusable(h, x, u, app, external):
            _reuse(h, x, app, _SHARED, out)
            return _OK
        x = s.ses[st.SE_U_NEXT, x]

    # 4. licence
    cap = s.hdr[st.H_LICENCE_CAP, 0]
    if s.usr[st.US_N_SESSIONS, u] == 0 and cap >= 0 and s.hdr[st.H_HOLDERS, 0] >= cap:
        _reject(out, _LICENCE_EXHAUSTED)
        return _OK

    # 5. instance limits, then max_sessions_per_user per pool
    reason = within_instance_limits(h, u, app)
    if reason != 0:
        _reject(out, reason)
        return _OK
    any_pool = False
    for k in range(start, stop):
        p = s.app_pools[k]
        if (external == 0 or s.pool[st.PO_EXTERNAL, p] != 0) and user_may_open(h, u, p):
            any_pool = True
            break
    if not any_pool:
        _reject(out, _USER_LIMIT)
        return _OK

    # 6-7. filter, zones, tolerance, pick: pass 1 without sin-binned or slow
    # servers (SLOW_BIT is the key's highest bit below SINBIN_BIT), pass 2 with
    # them when nothing else is left anywhere
    for limit in (st.SLOW_BIT, st.INF_KEY):
        for k in range(start, stop):
            p = s.app_pools[k]
            if external != 0 and s.pool[st.PO_EXTERNAL, p] == 0:
                continue
            if not user_may_open(h, u, p):
                continue
            i, choice = pick_in_pool(h, p, u, app, location, limit)
            if i < 0:
                continue
            if s.srv[st.SV_KEY, i] & st.OVERTOL_BIT and s.pool[st.PO_TOLERANCE_HARD, p] != 0:
                _reject(out, _LOGON_TOLERANCE)
                return _OK
            # 9. commit
            slot = open_session(h, u, app, i, endpoint, now)
            out[st.D_OUTCOME] = _PLACED
            out[st.D_SERVER] = i
            out[st.D_SESSION] = session_id(s, slot)
            out[st.D_ZONE] = s.srv[st.SV_ZONE, i]
            out[st.D_LOAD_INDEX] = s.srv[st.SV_LOAD_INDEX, i]
            out[st.D_POOL] = p
            out[st.D_ZONE_CHOICE] = choice
            return _OK

    # 8. why not: full or no server at all
    for k in range(start, stop):
        p = s.app_pools[k]
        if external != 0 and s.pool[st.PO_EXTERNAL, p] == 0:
            continue
        if user_may_open(h, u, p) and any_available_in_reach(h, p, u, app, location):
            _reject(out, _FULL)
            return _OK
    _reject(out, _NO_SERVER)
    return _OK
