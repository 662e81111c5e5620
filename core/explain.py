"""Explain stage: why a launch goes where it goes, on request.

Design: explanations are computed only when asked (the hot path never pays for
them) and from the same helpers as the decision — ``resolve_zones``, the
conditions of ``eligibility.py`` (which the selection key reads) and
``tree.better`` — so the explanation cannot disagree with the pick. Counts are a
funnel: each server of a pool is counted under the first filter that removes
it, in the order below.
"""

from __future__ import annotations

from numba import njit

from . import codes
from . import state as st
from .eligibility import (
    AT_MAX_SESSIONS, LOAD_FULL, NOT_ENABLED, NOT_POWERED, UNREGISTERED, availability, has_tags, room,
)
from .placement import pick_in_pool, resolve_zones, user_may_open
from .tree import better, leaf_server

#: Columns of a pool's funnel row (the order filters are applied in).
FUNNEL = (
    "allowed",  # 1 if the pool may take the request (external access, max_sessions_per_user)
    "servers",  # servers of the pool
    "power",  # removed: not powered on
    "unregistered",  # removed: not registered
    "mode",  # removed: drain or maintenance
    "tags",  # removed: lacks the app's tag restriction
    "zone",  # removed: zone out of reach (no failover)
    "full",  # removed: at max_sessions
    "load",  # removed: load index 10000
    "sinbin",  # sin-binned (candidates of last resort)
    "candidates",  # eligible servers in reach, sin-binned ones included
    "over_tolerance",  # candidates with pending logons >= the pool's tolerance
    "place_last",  # candidates marked place-last (taken after every unmarked one)
    "slow",  # candidates marked slow (candidates of last resort, before sin-binned ones)
)
N_FUNNEL = len(FUNNEL)
(F_ALLOWED, F_SERVERS, F_POWER, F_UNREGISTERED, F_MODE, F_TAGS, F_ZONE, F_FULL, F_LOAD, F_SINBIN,
 F_CANDIDATES, F_OVER_TOLERANCE, F_PLACE_LAST, F_SLOW) = range(N_FUNNEL)

_CHOICE_FAILOVER = int(codes.ZoneChoice.FAILOVER)
_CHOICE_ANY = int(codes.ZoneChoice.ANY)


@njit(cache=False)
def _in_reach(h, p, z, n, z0, z1, z2):
    s = st.unpack(h)
    if n == 0 or s.pool[st.PO_FAILOVER, p] != 0:
        return True
    return z == z0 or (n > 1 and z == z1) or (n > 2 and z == z2)


@njit(cache=False)
def explain_launch(h, u, app, location, external, counts, top):
    """Fill ``counts`` (n_app_pools, N_FUNNEL) and ``top`` (n_app_pools, K):
    the K best candidates of each pool by (key, tiebreak), -1 padded. When the
    pick would settle on a preferred zone, ``top`` lists that zone's candidates
    (the set the pick chooses from)."""
    s = st.unpack(h)
    start = s.app[st.AP_POOLS_START, app]
    need = s.app[st.AP_TAGS, app]
    k_top = top.shape[1]
    for k in range(s.app[st.AP_POOLS_COUNT, app]):
        p = s.app_pools[start + k]
        row = counts[k]
        row[:] = 0
        top[k, :] = -1
        allowed = external == 0 or s.pool[st.PO_EXTERNAL, p] != 0
        if allowed and u >= 0:
            allowed = user_may_open(h, u, p)
        row[F_ALLOWED] = 1 if allowed else 0
        n, z0, z1, z2, c0, c1, c2 = resolve_zones(h, p, u, app, location) if u >= 0 else (0, -1, -1, -1, -1, -1, -1)
        zone_only = -1
        if u >= 0:
            chosen, choice = pick_in_pool(h, p, u, app, location, st.SLOW_BIT)
            if chosen < 0:
                chosen, choice = pick_in_pool(h, p, u, app, location, st.INF_KEY)
            if chosen >= 0 and choice != _CHOICE_FAILOVER and choice != _CHOICE_ANY:
                zone_only = s.srv[st.SV_ZONE, chosen]
        g0 = s.pool[st.PO_G_START, p]
        for g in range(g0, g0 + s.pool[st.PO_G_COUNT, p]):
            off = s.grp[st.GR_TREE_OFF, g]
            cap = s.grp[st.GR_TREE_CAP, g]
            for leaf in range(s.grp[st.GR_N_SERVERS, g]):
                i = leaf_server(s.tree, off, cap, leaf)
                row[F_SERVERS] += 1
                why = availability(s.srv, i)
                if why == NOT_POWERED:
                    row[F_POWER] += 1
                elif why == UNREGISTERED:
                    row[F_UNREGISTERED] += 1
                elif why == NOT_ENABLED:
                    row[F_MODE] += 1
                elif not has_tags(s.srv[st.SV_TAGS, i], need):
                    row[F_TAGS] += 1
                elif not _in_reach(h, p, s.srv[st.SV_ZONE, i], n, z0, z1, z2):
                    row[F_ZONE] += 1
                elif room(s.srv, i) == AT_MAX_SESSIONS:
                    row[F_FULL] += 1
                elif room(s.srv, i) == LOAD_FULL:
                    row[F_LOAD] += 1
                else:
                    row[F_CANDIDATES] += 1
                    if s.srv[st.SV_SINBIN, i] != 0:
                        row[F_SINBIN] += 1
                    if s.srv[st.SV_KEY, i] & st.OVERTOL_BIT:
                        row[F_OVER_TOLERANCE] += 1
                    if s.srv[st.SV_KEY, i] & st.PLACE_LAST_BIT:
                        row[F_PLACE_LAST] += 1
                    if s.srv[st.SV_KEY, i] & st.SLOW_BIT:
                        row[F_SLOW] += 1
                    if zone_only >= 0 and s.srv[st.SV_ZONE, i] != zone_only:
                        continue
                    # insert into the top list (sorted, best first)
                    cur = i
                    for j in range(k_top):
                        if top[k, j] < 0:
                            top[k, j] = cur
                            break
                        if better(s, cur, top[k, j]) == cur:
                            cur, top[k, j] = top[k, j], cur
