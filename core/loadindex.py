"""Score stage: the load index of a server and its selection key.

Design: a server's rank is one int64 ``key`` plus its tiebreak ``tb``; smaller
wins. Integer keys make ties exact and results reproducible across the engine,
the reference model and any platform (HAProxy keeps servers keyed by an integer
``conns * SCALE / weight`` for the same reason).
"""

from __future__ import annotations

import math

from numba import njit

from . import codes
from . import state as st
from .eligibility import eligible

_SESSIONS = 1 << int(codes.LoadRule.SESSIONS)
_CPU = 1 << int(codes.LoadRule.CPU)
_MEMORY = 1 << int(codes.LoadRule.MEMORY)
_DISK_QUEUE = 1 << int(codes.LoadRule.DISK_QUEUE)
_CUSTOM = 1 << int(codes.LoadRule.CUSTOM)
_FULL = st.FULL_LOAD
_DISK_AT_FULL = 7500.0
_SCORE_SCALE = 1_000_000
_VERTICAL = int(codes.LoadBalancing.VERTICAL)


@njit(inline="always")
def _ratio_index(value, full):
    """min(10000, floor(value * 10000.0 / full)) for a non-negative value."""
    x = math.floor(value * 10000.0 / full)
    if x > _FULL:
        return _FULL
    return int(x)


@njit(cache=False)
def load_index(h, i):
    """Load index of server ``i`` (Citrix's documented formula).

    Details: each rule enabled in the server's pool gives a sub-index in
    0..10000::

        sessions   = sessions * 10000 // max_sessions
        cpu        = min(10000, floor(cpu * 10000.0 / cpu_full))
        memory     = min(10000, floor(mem * 10000.0 / memory_full))
        disk_queue = min(10000, floor(disk_queue * 7500.0 / disk_queue_full))
        custom     = floor(custom)

    With M the largest sub-index and S the sum of the k others (one copy of
    the maximum left out): LI = M if k == 0 else min(10000, M + S // (20 * k)),
    i.e. max + 0.05 * mean(others), in integers.
    """
    s = st.unpack(h)
    p = s.srv[st.SV_POOL, i]
    rules = s.pool[st.PO_RULES, p]
    best = -1
    total = 0
    n = 0
    if rules & _SESSIONS:
        v = s.srv[st.SV_SESSIONS, i] * _FULL // s.srv[st.SV_MAX_SESSIONS, i]
        total += v
        n += 1
        if v > best:
            best = v
    if rules & _CPU:
        v = _ratio_index(s.srvf[st.SF_CPU, i], s.poolf[st.POF_CPU_FULL, p])
        total += v
        n += 1
        if v > best:
            best = v
    if rules & _MEMORY:
        v = _ratio_index(s.srvf[st.SF_MEM, i], s.poolf[st.POF_MEMORY_FULL, p])
        total += v
        n += 1
        if v > best:
            best = v
    if rules & _DISK_QUEUE:
        x = math.floor(s.srvf[st.SF_DISK_QUEUE, i] * _DISK_AT_FULL / s.poolf[st.POF_DISK_QUEUE_FULL, p])
        v = _FULL if x > _FULL else int(x)
        total += v
        n += 1
        if v > best:
            best = v
    if rules & _CUSTOM:
        v = int(math.floor(s.srvf[st.SF_CUSTOM, i]))
        total += v
        n += 1
        if v > best:
            best = v
    if n <= 1:
        return best
    # (total - best) // (20 * (n - 1)); the common rule counts spelled out, so the
    # division is by a constant (a multiply) rather than a hardware divide
    rest = total - best
    if n == 2:
        li = best + rest // 20
    elif n == 3:
        li = best + rest // 40
    else:
        li = best + rest // (20 * (n - 1))
    return _FULL if li > _FULL else li


@njit(cache=False)
def selection_key(h, i):
    """Selection key of server ``i``; smaller is better, INF_KEY = not a candidate.

    Details::

        key = sinbin << 62 | slow << 61 | over_tolerance << 60 | place_last << 59 | score
        score = load_index * 1_000_000 // weight      (horizontal)
              = 10000 - load_index                     (vertical)

    A server is a candidate (finite key) iff it is ``eligibility.eligible``:
    present, power on, registered, mode enabled, sessions < max_sessions and
    load index < 10000. Ties on the key are broken by ``tb`` (see tree.better).
    The sin-bin, slow and place-last bits are kept, ready to OR, in the server's
    ``key_bits`` (set by ``commit.sinbin_server``, ``health.judge`` and
    ``kernels.server_op``): a preference bit costs no branch here.
    """
    s = st.unpack(h)
    srv = s.srv
    if not eligible(srv, i):
        return st.INF_KEY
    li = srv[st.SV_LOAD_INDEX, i]
    p = srv[st.SV_POOL, i]
    if s.pool[st.PO_LOAD_BALANCING, p] == _VERTICAL:
        score = _FULL - li
    else:
        w = srv[st.SV_WEIGHT, i]
        # the default weight divides the scale: the same integer without a divide
        score = li * (_SCORE_SCALE // 100) if w == 100 else li * _SCORE_SCALE // w
    key = score | srv[st.SV_KEY_BITS, i]
    if srv[st.SV_PENDING, i] >= s.pool[st.PO_TOLERANCE, p]:
        key |= st.OVERTOL_BIT
    return key

