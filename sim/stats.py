"""Statistics of a KPI sample and the power policy's moves: small numba kernels.

Design: each kernel does exactly what a numpy expression over the fleet would do
(same float operations in the same order, integers otherwise), so a seed gives the
same day bit for bit; tests/test_sim_stats.py checks them against numpy. They run
once per sample (``day.sample_seconds``) or per power interval over every server:
a few microseconds each instead of a dozen numpy temporaries.

:func:`fleet_stats` fills one int64 row whose layout is given by the ``N_ON`` ...
``PEND_MAX`` indices, then ``STATS_ZONE`` values per zone from ``STATS_HEAD``
(``Z_N`` ... ``Z_M_MAX``, the ``M`` values over the patient-record pool only).

The kernels cache where the engine's do (never next to the installed module, where
a folder left by an uninstall would shadow a later editable install).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from usher.core.codes import Mode, Power
from usher.core.kernels import compile_settings

__all__ = [
    "pctl", "pctl_index", "kth", "fleet_stats", "pool_sessions", "powered", "scan_fleet", "pairwise_sum",
    "telemetry_rows", "power_moves",
    "STATS_HEAD", "STATS_ZONE",
]

OFF, BOOTING, ON, SHUTTING_DOWN = int(Power.OFF), int(Power.BOOTING), int(Power.ON), int(Power.SHUTTING_DOWN)
ENABLED, DRAIN = int(Mode.ENABLED), int(Mode.DRAIN)


def pctl(sorted_values, q):
    n = len(sorted_values)
    if n == 0:
        return 0.0
    return float(sorted_values[min(n - 1, int(math.ceil(q * n)) - 1)])


#: layout of the int64 row that :func:`fleet_stats` fills (then per zone: Z_* at 12 + 10 z)
(N_ON, PEND_SUM, PEND_MAX_ON, CAPACITY, S_MAX, S_P99, S_SUM, L_P50, L_P99, L_MAX, L_SUM,
 PEND_MAX) = range(12)
(Z_N, Z_S_SUM, Z_S_MAX, Z_S_P99, Z_L_SUM, Z_L_P99, Z_L_MAX, Z_M_N, Z_M_SUM, Z_M_MAX) = range(10)
STATS_HEAD, STATS_ZONE = 12, 10


# the kernels cache where usher's own do, under usher's compile settings
with compile_settings():


    @njit(cache=True, nogil=True)
    def pctl_index(n, q):  # as pctl: index of the q-quantile among n sorted values
        return min(n - 1, int(math.ceil(q * n)) - 1)


    @njit(cache=True, nogil=True)
    def kth(values, k):
        """values[k] once sorted (ascending), values unchanged: the (n - k) largest are kept
        in a small sorted buffer, so a quantile near the top costs one pass."""
        n = values.shape[0]
        r = n - k
        buf = np.empty(r, np.int64)
        c = 0
        for i in range(n):
            x = values[i]
            if c < r:
                j = c
                while j > 0 and buf[j - 1] > x:
                    buf[j] = buf[j - 1]
                    j -= 1
                buf[j] = x
                c += 1
            elif x > buf[0]:
                j = 1
                while j < r and buf[j] < x:
                    buf[j - 1] = buf[j]
                    j += 1
                buf[j - 1] = x
        return buf[0]


    @njit(cache=True, nogil=True)
    def fleet_stats(power, sessions, li, pending, zone, main, max_sessions, nz, on_code, out):
        """Integer statistics of one KPI sample: counts, sums, maxima and the order
        statistics (as ``pctl`` on the sorted values) of the servers that are on, fleet-wide
        and per zone. Integers only, so exactly what sorting and summing in numpy gives."""
        n = power.shape[0]
        out[:] = 0
        cnt = np.zeros(nz, np.int64)
        pend_max = 0
        for i in range(n):
            p = pending[i]
            out[PEND_SUM] += p
            if p > pend_max:
                pend_max = p
            if power[i] == on_code:
                cnt[zone[i]] += 1
        out[PEND_MAX] = pend_max
        n_on = 0
        for z in range(nz):
            n_on += cnt[z]
        out[N_ON] = n_on
        if n_on == 0:
            return
        start = np.zeros(nz + 1, np.int64)
        for z in range(nz):
            start[z + 1] = start[z] + cnt[z]
        fill = start[:nz].copy()
        ses = np.empty(n_on, np.int64)  # grouped by zone
        lis = np.empty(n_on, np.int64)
        pend_on = 0
        cap = 0
        for i in range(n):
            if power[i] == on_code:
                z = zone[i]
                k = fill[z]
                fill[z] = k + 1
                s = sessions[i]
                x = li[i]
                ses[k] = s
                lis[k] = x
                if pending[i] > pend_on:
                    pend_on = pending[i]
                cap += max_sessions[i]
                b = STATS_HEAD + STATS_ZONE * z
                out[b + Z_S_SUM] += s
                out[b + Z_L_SUM] += x
                if k == start[z] or s > out[b + Z_S_MAX]:
                    out[b + Z_S_MAX] = s
                if k == start[z] or x > out[b + Z_L_MAX]:
                    out[b + Z_L_MAX] = x
                if main[i]:
                    out[b + Z_M_N] += 1
                    out[b + Z_M_SUM] += x
                    if out[b + Z_M_N] == 1 or x > out[b + Z_M_MAX]:
                        out[b + Z_M_MAX] = x
        out[PEND_MAX_ON] = pend_on
        out[CAPACITY] = cap
        for z in range(nz):
            a, e = start[z], start[z + 1]
            b = STATS_HEAD + STATS_ZONE * z
            out[b + Z_N] = e - a
            if e > a:
                k99 = pctl_index(e - a, 0.99)
                out[b + Z_S_P99] = kth(ses[a:e], k99)
                out[b + Z_L_P99] = kth(lis[a:e], k99)
                out[S_SUM] += out[b + Z_S_SUM]
                out[L_SUM] += out[b + Z_L_SUM]
                if out[b + Z_S_MAX] > out[S_MAX]:
                    out[S_MAX] = out[b + Z_S_MAX]
                if out[b + Z_L_MAX] > out[L_MAX]:
                    out[L_MAX] = out[b + Z_L_MAX]
        k99 = pctl_index(n_on, 0.99)
        out[S_P99] = kth(ses, k99)
        out[L_P99] = kth(lis, k99)
        k50 = pctl_index(n_on, 0.50)
        out[L_P50] = np.partition(lis, k50)[k50]


    @njit(cache=True, nogil=True)
    def pool_sessions(sessions, pool, power, mode, on_code, drain_code, out):
        """Sessions per pool into ``out`` (int64, shape (n_pools,)), as
        ``np.bincount(pool, weights=sessions)`` (integers); returns how many servers
        are on and draining."""
        out[:] = 0
        n_drain = 0
        for i in range(sessions.shape[0]):
            out[pool[i]] += sessions[i]
            if power[i] == on_code and mode[i] == drain_code:
                n_drain += 1
        return n_drain


    @njit(cache=True, nogil=True)
    def powered(power, off_code, idx):
        """Indices of the servers that are not off, into ``idx``; returns how many."""
        m = 0
        for i in range(power.shape[0]):
            if power[i] != off_code:
                idx[m] = i
                m += 1
        return m


    @njit(cache=True, nogil=True)
    def scan_fleet(power, sessions, mode, pool, pool_seats, idx):
        """The scan at the start of a sample: the indices of the servers that are
        not off into ``idx`` (as :func:`powered`), how many are on and draining, and
        the server-hours lower bound's server count
        ``float(np.ceil(sessions_per_pool / pool_seats - 1e-9).sum())`` (sessions
        per pool as :func:`pool_sessions`; ``pool_seats`` float64 of shape
        (n_pools,); summed as numpy does, :func:`pairwise_sum`). Returns (powered, on and draining, lower-bound servers)."""
        per_pool = np.zeros(pool_seats.shape[0], np.int64)
        m = 0
        n_drain = 0
        for i in range(power.shape[0]):
            p = power[i]
            per_pool[pool[i]] += sessions[i]
            if p != OFF:
                idx[m] = i
                m += 1
                if p == ON and mode[i] == DRAIN:
                    n_drain += 1
        lb = np.ceil(per_pool / pool_seats - 1e-9)
        servers = pairwise_sum(lb, 0, lb.shape[0])
        return m, n_drain, servers


    @njit(cache=True, nogil=True)
    def pairwise_sum(a, lo, n):
        """``np.add.reduce(a[lo:lo + n])`` for float64, bit for bit: the reduction
        starts from add's identity 0.0 and adds numpy's pairwise sum of the values
        (:func:`_pairwise`), so no values give 0.0 and negative zeros give 0.0."""
        return 0.0 + _pairwise(a, lo, n)


    @njit(cache=True, nogil=True)
    def _pairwise(a, lo, n):
        """numpy's pairwise summation of ``a[lo:lo + n]`` (float64;
        numpy/_core/src/umath/loops_utils.h.src): up to 128 values one block
        (:func:`_pairwise_block`); above, the two halves (the first a multiple of 8
        long) summed the same way, then added. The recursion runs on an explicit
        stack (numba's cache does not keep recursive functions)."""
        if n <= 128:
            return _pairwise_block(a, lo, n)
        s_lo = np.empty(64, np.int64)  # the open halvings: start, length, first half
        s_n = np.empty(64, np.int64)
        s_half = np.empty(64, np.int64)
        s_left = np.empty(64, np.float64)  # the first half's sum, once known
        s_right = np.zeros(64, np.bool_)  # summing the second half
        top = -1
        lo_k, n_k = lo, n
        while True:
            while n_k > 128:  # down the first halves to a block
                n2 = n_k // 2
                n2 -= n2 % 8
                top += 1
                s_lo[top], s_n[top], s_half[top], s_right[top] = lo_k, n_k, n2, False
                n_k = n2
            v = _pairwise_block(a, lo_k, n_k)
            while top >= 0 and s_right[top]:  # second halves done: first + second
                v = s_left[top] + v
                top -= 1
            if top < 0:
                return v
            s_left[top], s_right[top] = v, True  # a first half done: on to its second
            lo_k, n_k = s_lo[top] + s_half[top], s_n[top] - s_half[top]


    @njit(cache=True, nogil=True, inline="always")
    def _pairwise_block(a, lo, n):
        """numpy's pairwise sum of at most 128 values: below 8 a running sum from
        -0.0; else eight running sums over strides of 8, combined as
        ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the remainder added
        in order."""
        if n < 8:
            res = -0.0
            for i in range(lo, lo + n):
                res += a[i]
            return res
        r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
        r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
        end = lo + n - n % 8
        i = lo + 8
        while i < end:
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < lo + n:
            res += a[i]
            i += 1
        return res


    @njit(cache=True, nogil=True)
    def telemetry_rows(idx, power, sessions, pending, factor, coef, noise, boot_code, w, cpu, mem, watts):
        """The telemetry of the powered servers ``idx``, element by element as numpy does
        it (same operations in the same order, no fused multiply-add):
        ``round(clip(idle + per_session * sessions * factor + per_logon * pending
        + noise_sd * noise, 0, 100), 1)`` for cpu (``coef[0:4]``, normals ``noise[:m]``),
        likewise for mem (``coef[4:8]``, factor 1, ``noise[m:]``); and each server's
        watts (booting, or idle + span * cpu / 100). Returns how many are booting
        and the fleet's watts, ``np.add.reduce(watts[:m])`` (:func:`pairwise_sum`)."""
        m = idx.shape[0]
        c_idle, c_ps, c_pl, c_sd, m_base, m_ps, m_pl, m_sd = (
            coef[0], coef[1], coef[2], coef[3], coef[4], coef[5], coef[6], coef[7])
        w_boot, w_idle, w_span = w[0], w[1], w[2]
        n_boot = 0
        for k in range(m):
            i = idx[k]
            s = float(sessions[i])
            p = float(pending[i])
            c = c_idle + c_ps * s * factor[i] + c_pl * p + c_sd * noise[k]
            c = c if c > 0.0 else 0.0  # np.clip: max then min, NaN aside
            c = c if c < 100.0 else 100.0
            c = np.rint(c * 10.0) / 10.0  # np.round(x, 1)
            x = m_base + m_ps * s + m_pl * p + m_sd * noise[m + k]
            x = x if x > 0.0 else 0.0
            x = x if x < 100.0 else 100.0
            mem[k] = np.rint(x * 10.0) / 10.0
            cpu[k] = c
            if power[i] == boot_code:
                watts[k] = w_boot
                n_boot += 1
            else:
                watts[k] = w_idle + w_span * c / 100.0
        return n_boot, pairwise_sum(watts, 0, m)


    @njit(cache=True, nogil=True)
    def power_moves(want, power, mode, down, sessions, out):
        """What the power policy's wish asks for, as index lists (ascending) in the rows
        of ``out``; returns their lengths. 0: off, wanted and not down -> boot; 1: on,
        wanted, draining and not down -> enable; 2: on, unwanted, enabled -> drain; 3: on,
        unwanted, draining or about to be (row 2) and empty -> shut down."""
        nb = ne = nd = ns = 0
        for i in range(power.shape[0]):
            p = power[i]
            if want[i]:
                if down[i]:
                    continue
                if p == OFF:
                    out[0, nb] = i
                    nb += 1
                elif p == ON and mode[i] == DRAIN:
                    out[1, ne] = i
                    ne += 1
            elif p == ON:
                md = mode[i]
                if md == ENABLED:
                    out[2, nd] = i
                    nd += 1
                if (md == ENABLED or md == DRAIN) and sessions[i] == 0:
                    out[3, ns] = i
                    ns += 1
        return nb, ne, nd, ns
