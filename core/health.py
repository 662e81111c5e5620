"""Health stage: a server's logon duration, and the *slow* mark it earns.

Design: each ``logon_complete`` gives its server one sample, the logon duration
``now - t_launch``, folded into the server's ``logon_ewma`` (SEMANTICS.md,
*Slow servers*). In a pool with the slow rule on (``slow_factor`` > 0), a server
with at least ``slow_min`` samples whose EWMA exceeds ``slow_factor`` times the
pool's median EWMA is *slow*: ``SLOW_BIT`` is set in its ``key_bits``, so the
pick leaves it out while any healthy candidate is left (``placement.place``'s
first pass), as it does with sin-binned servers.

The pool's median is the lower median of the EWMAs of its present servers with
at least ``slow_min`` samples. It is computed again, and every server of the
pool judged against it, at the pool's logon when ``slow_wait`` has run down to
0; ``slow_wait`` then restarts at ``n // SLOW_MEDIAN_EVERY`` for ``n`` servers
in the median. Between two computations a logon judges its own server against
the median last computed. A pool of fewer than ``SLOW_MEDIAN_EVERY`` judged
servers therefore has its median exact at every logon, and a large one pays
O(pool) once every ``n / SLOW_MEDIAN_EVERY`` logons — O(SLOW_MEDIAN_EVERY · log
n) per logon — while one server's sample moves the median by at most one rank.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import config
from . import state as st
from .tree import leaf_server, replay_path

_ALPHA = config.SLOW_EWMA_ALPHA
_EVERY = config.SLOW_MEDIAN_EVERY


@njit(cache=False)
def judge(h, i):
    """Set or clear server i's slow mark against its pool's median as last
    computed; reposition it when the mark changed.

    Details: slow iff ``logons >= slow_min``, a median exists (>= 0) and
    ``logon_ewma > slow_factor * logon_median`` (IEEE double, as written)."""
    s = st.unpack(h)
    p = s.srv[st.SV_POOL, i]
    med = s.poolf[st.POF_LOGON_MEDIAN, p]
    slow = (s.srv[st.SV_LOGONS, i] >= s.pool[st.PO_SLOW_MIN, p] and med >= 0.0
            and s.srvf[st.SF_LOGON_EWMA, i] > s.poolf[st.POF_SLOW_FACTOR, p] * med)
    bits = s.srv[st.SV_KEY_BITS, i]
    if slow == ((bits & st.SLOW_BIT) != 0):
        return
    s.srv[st.SV_KEY_BITS, i] = (bits | st.SLOW_BIT) if slow else (bits & ~st.SLOW_BIT)
    replay_path(h, i)


@njit(cache=False)
def pool_median(h, p):
    """Compute pool p's logon median (lower median of the EWMAs of its present
    servers with at least ``slow_min`` logons; -1 when none) and restart its
    ``slow_wait``; judge every server of the pool against it."""
    s = st.unpack(h)
    need = s.pool[st.PO_SLOW_MIN, p]
    g0 = s.pool[st.PO_G_START, p]
    g1 = g0 + s.pool[st.PO_G_COUNT, p]
    total = 0
    for g in range(g0, g1):
        total += s.grp[st.GR_N_SERVERS, g]
    vals = np.empty(total, np.float64)
    n = 0
    for g in range(g0, g1):
        off = s.grp[st.GR_TREE_OFF, g]
        cap = s.grp[st.GR_TREE_CAP, g]
        for leaf in range(s.grp[st.GR_N_SERVERS, g]):
            i = leaf_server(s.tree, off, cap, leaf)
            if s.srv[st.SV_PRESENT, i] != 0 and s.srv[st.SV_LOGONS, i] >= need:
                vals[n] = s.srvf[st.SF_LOGON_EWMA, i]
                n += 1
    if n == 0:
        s.poolf[st.POF_LOGON_MEDIAN, p] = -1.0
    else:
        s.poolf[st.POF_LOGON_MEDIAN, p] = np.sort(vals[:n])[(n - 1) // 2]
    s.pool[st.PO_SLOW_WAIT, p] = n // _EVERY
    for g in range(g0, g1):
        off = s.grp[st.GR_TREE_OFF, g]
        cap = s.grp[st.GR_TREE_CAP, g]
        for leaf in range(s.grp[st.GR_N_SERVERS, g]):
            i = leaf_server(s.tree, off, cap, leaf)
            if s.srv[st.SV_PRESENT, i] != 0:
                judge(h, i)


@njit(cache=False)
def record_logon(h, i, seconds):
    """Server i completed a logon that took ``seconds``: fold it into its EWMA
    and, where the pool's slow rule is on, judge the server (or the whole pool,
    when its median is due).

    Details: ``logon_ewma = seconds`` for the first sample, else
    ``logon_ewma + SLOW_EWMA_ALPHA * (seconds - logon_ewma)``."""
    s = st.unpack(h)
    n = s.srv[st.SV_LOGONS, i]
    e = s.srvf[st.SF_LOGON_EWMA, i]
    s.srvf[st.SF_LOGON_EWMA, i] = seconds if n == 0 else e + _ALPHA * (seconds - e)
    s.srv[st.SV_LOGONS, i] = n + 1
    p = s.srv[st.SV_POOL, i]
    if s.poolf[st.POF_SLOW_FACTOR, p] <= 0.0:
        return
    wait = s.pool[st.PO_SLOW_WAIT, p]
    if wait <= 0:
        pool_median(h, p)
    else:
        s.pool[st.PO_SLOW_WAIT, p] = wait - 1
        judge(h, i)


@njit(cache=False)
def forget_logons(h, i):
    """Server i was powered off: its samples and its slow mark are dropped (a
    rebooted server is judged afresh). The caller repositions it."""
    s = st.unpack(h)
    s.srv[st.SV_LOGONS, i] = 0
    s.srvf[st.SF_LOGON_EWMA, i] = 0.0
    s.srv[st.SV_KEY_BITS, i] &= ~st.SLOW_BIT
