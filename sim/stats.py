"""Statistics of a KPI sample and the power policy's moves: small numba kernels.

Design: each kernel does exactly what a numpy expression over the fleet would do
(same float operations in the same order, integers otherwise), so a seed gives the
same day bit for bit; tests/test_sim_stats.py checks them against numpy. They run
once per sample (``day.sample_seconds``) or per power interval over every server:
a few microseconds each instead of a dozen numpy temporaries.

A sample's statistics are one int64 row whose layout is given by the ``N_ON`` ...
``PEND_MAX`` indices, then ``STATS_ZONE`` values per zone from ``STATS_HEAD``
(``Z_N`` ... ``Z_M_MAX``, the ``M`` values over the patient-record pool only):
:func:`scan_fleet` fills what the telemetry does not change (before it), and
:func:`fleet_stats` the load-index values (after it), from the servers that are on
as the scan grouped them by zone. The engine's server columns are strided views of
its server records, so each kernel reads a record's fields in one visit.

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
    "pctl", "pctl_index", "kth", "scan_fleet", "fleet_stats", "pairwise_sum", "telemetry_rows", "power_moves",
    "STATS_HEAD", "STATS_ZONE", "F_ZONE", "F_POOL", "F_MAIN", "F_MAX",
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
#: rows of the per-server table that :func:`scan_fleet` and :func:`fleet_stats` read
F_ZONE, F_POOL, F_MAIN, F_MAX = range(4)
#: buckets of the counts that give order statistics of small integers (sessions; load indexes in two levels)
BINS = 128


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
    def _select(hist, k):
        """The ``k``-th smallest (from 0) of the values that ``hist`` counts
        (``hist[v]``: how many are ``v``); ``k`` below their number."""
        c = 0
        for v in range(hist.shape[0]):
            c += hist[v]
            if c > k:
                return v
        return hist.shape[0] - 1


    @njit(cache=True, nogil=True)
    def _bucket(hist, k):
        """The bucket of the ``k``-th smallest counted value and how many lie below it."""
        c = 0
        for v in range(hist.shape[0]):
            if c + hist[v] > k:
                return v, c
            c += hist[v]
        return hist.shape[0] - 1, c


    @njit(cache=True, nogil=True)
    def _session_stats(ses, start, nz, out):
        """Per zone and fleet-wide sum, maximum and 99th percentile (as :func:`kth`) of
        ``ses``, the sessions of the servers that are on grouped by zone (bounds
        ``start``), into ``out``. The percentiles from counts of each value where
        every value is in [0, BINS) (sessions are a few dozen a server), else by
        :func:`kth`."""
        hist = np.zeros(BINS, np.int64)
        total = np.zeros(BINS, np.int64)
        counted = True
        s_all, s_top = 0, 0
        for z in range(nz):
            a, e = start[z], start[z + 1]
            b = STATS_HEAD + STATS_ZONE * z
            out[b + Z_N] = e - a
            if e == a:
                continue
            hist[:] = 0
            ok = True
            s_sum, s_max = 0, ses[a]
            for k in range(a, e):
                s = ses[k]
                s_sum += s
                if s > s_max:
                    s_max = s
                if s >= 0 and s < BINS:
                    hist[s] += 1
                else:
                    ok = False
            k99 = pctl_index(e - a, 0.99)
            out[b + Z_S_SUM], out[b + Z_S_MAX] = s_sum, s_max
            out[b + Z_S_P99] = _select(hist, k99) if ok else kth(ses[a:e], k99)
            total += hist
            counted &= ok
            s_all += s_sum
            if s_max > s_top:
                s_top = s_max
        k99 = pctl_index(ses.shape[0], 0.99)
        out[S_SUM], out[S_MAX] = s_all, s_top
        out[S_P99] = _select(total, k99) if counted else kth(ses, k99)


    @njit(cache=True, nogil=True)
    def _two_ranks(values, hi, k1, k2):
        """``values[k1]`` and ``values[k2]`` once sorted, for values in [0, BINS²)
        whose high parts (``x // BINS``) ``hi`` counts: the bucket of each rank, then
        the low parts counted in that bucket."""
        b1, c1 = _bucket(hi, k1)
        b2, c2 = _bucket(hi, k2)
        lo1 = np.zeros(BINS, np.int64)
        lo2 = np.zeros(BINS, np.int64)
        for k in range(values.shape[0]):
            x = values[k]
            h = x // BINS
            if h == b1:
                lo1[x % BINS] += 1
            if h == b2:
                lo2[x % BINS] += 1
        return b1 * BINS + _select(lo1, k1 - c1), b2 * BINS + _select(lo2, k2 - c2)


    @njit(cache=True, nogil=True)
    def scan_fleet(power, sessions, mode, pending, fleet, factor, model, noise, work, out, tele):
        """The part of a KPI sample that the telemetry does not change, and the
        telemetry rows, in one pass over the servers and one over those powered.

        ``fleet``: int32 of shape (4, n), the rows ``F_ZONE``, ``F_POOL``, ``F_MAIN``
        (1: the patient-record pool), ``F_MAX`` (max sessions). ``factor``: float64 of
        shape (n,), the cpu factor per session. ``model``: float64, the telemetry
        coefficients (``[0:8]``, see :func:`telemetry_rows`), the watts model
        (``[8:11]``) and each pool's mean seats per server (``[11:]``). ``noise``:
        float64, at least ``2 n`` standard normals for the telemetry (cpu then memory,
        ``2 m`` of them used for ``m`` powered servers). ``tele``: float64 of shape
        (3, n), filled with the cpu, memory and watts of the powered servers (rows of
        :func:`telemetry_rows`). ``work``: int64 of
        shape (2 n + nz + 1,), filled with the indices of the servers that are not off
        (``[0, n)``, ascending), those of the servers that are on grouped by zone
        (``[n, 2 n)``, ascending in each zone) and the groups' bounds (``[2 n, 2 n +
        nz + 1)``), for :func:`fleet_stats`. ``out``: the sample's row (``N_ON`` ...
        ``PEND_MAX``, then ``Z_*`` per zone), filled but for the load-index values.

        Integers only, so exactly the sums, maxima and order statistics (``pctl`` on
        the sorted values) that numpy gives. Returns (servers powered ``m``, of them
        booting, fleet watts, servers on and draining, the server-hours lower bound's
        servers ``float(np.ceil(np.bincount(pool, weights=sessions) / pool_seats -
        1e-9).sum())``)."""
        n = power.shape[0]
        nz = (out.shape[0] - STATS_HEAD) // STATS_ZONE
        zone, pool, mx = fleet[F_ZONE], fleet[F_POOL], fleet[F_MAX]
        idx, on_idx, start = work[:n], work[n:2 * n], work[2 * n:2 * n + nz + 1]
        pool_seats = model[11:]
        per_pool = np.zeros(pool_seats.shape[0], np.int64)
        start[:] = 0
        out[:] = 0
        m = n_drain = pend_sum = pend_max = pend_on = cap = 0
        for i in range(n):
            p = power[i]
            q = pending[i]
            per_pool[pool[i]] += sessions[i]
            pend_sum += q
            if q > pend_max:
                pend_max = q
            if p != OFF:
                idx[m] = i
                m += 1
                if p == ON:
                    start[zone[i] + 1] += 1
                    if q > pend_on:
                        pend_on = q
                    cap += mx[i]
                    if mode[i] == DRAIN:
                        n_drain += 1
        lb = np.ceil(per_pool / pool_seats - 1e-9)
        servers = pairwise_sum(lb, 0, lb.shape[0])
        for z in range(nz):
            start[z + 1] += start[z]
        n_boot, watts = 0, 0.0
        if m:
            n_boot, watts = telemetry_rows(idx[:m], power, sessions, pending, factor, model[0:8], noise[:2 * m],
                                           BOOTING, model[8:11], tele[0], tele[1], tele[2])
        n_on = start[nz]
        out[N_ON], out[PEND_SUM], out[PEND_MAX], out[PEND_MAX_ON], out[CAPACITY] = n_on, pend_sum, pend_max, pend_on, cap
        if n_on == 0:
            return m, n_boot, watts, n_drain, servers
        fill = start[:nz].copy()
        ses = np.empty(n_on, np.int64)  # grouped by zone
        for k in range(m):
            i = idx[k]
            if power[i] == ON:
                z = zone[i]
                j = fill[z]
                fill[z] = j + 1
                on_idx[j] = i
                ses[j] = sessions[i]
        _session_stats(ses, start, nz, out)
        return m, n_boot, watts, n_drain, servers


    @njit(cache=True, nogil=True)
    def fleet_stats(li, fleet, work, out):
        """The load-index values of the sample's row ``out`` (after the telemetry: the
        engine's load indexes), over the servers that are on as :func:`scan_fleet`
        grouped them in ``work``: fleet-wide median, 99th percentile, maximum and sum;
        per zone 99th percentile, maximum and sum, and over the patient-record pool's
        servers (``fleet[F_MAIN]``) count, sum and maximum. Integers only; the
        fleet-wide order statistics from counts (:func:`_two_ranks`) where every load
        index is in [0, BINS²), else by :func:`kth` and a partition."""
        n = fleet.shape[1]
        nz = (out.shape[0] - STATS_HEAD) // STATS_ZONE
        n_on = out[N_ON]
        if n_on == 0:
            return
        main, on_idx, start = fleet[F_MAIN], work[n:2 * n], work[2 * n:2 * n + nz + 1]
        lis = np.empty(n_on, np.int64)  # grouped by zone
        hi = np.zeros(BINS, np.int64)  # how many load indexes x // BINS counts, while all are in [0, BINS²)
        counted = True
        l_all, l_top = 0, 0
        for z in range(nz):
            a, e = start[z], start[z + 1]
            if e == a:
                continue
            b = STATS_HEAD + STATS_ZONE * z
            l_sum, l_max, m_n, m_sum, m_max = 0, li[on_idx[a]], 0, 0, 0
            for k in range(a, e):
                i = on_idx[k]
                x = li[i]
                lis[k] = x
                l_sum += x
                if x > l_max:
                    l_max = x
                if x >= 0 and x < BINS * BINS:
                    hi[x // BINS] += 1
                else:
                    counted = False
                if main[i]:
                    if m_n == 0 or x > m_max:
                        m_max = x
                    m_n += 1
                    m_sum += x
            out[b + Z_L_SUM], out[b + Z_L_MAX], out[b + Z_L_P99] = l_sum, l_max, kth(lis[a:e], pctl_index(e - a, 0.99))
            out[b + Z_M_N], out[b + Z_M_SUM], out[b + Z_M_MAX] = m_n, m_sum, m_max
            l_all += l_sum
            if l_max > l_top:
                l_top = l_max
        out[L_SUM], out[L_MAX] = l_all, l_top
        k99, k50 = pctl_index(n_on, 0.99), pctl_index(n_on, 0.50)
        if counted:  # load indexes are 0..10000: two passes of counts
            out[L_P99], out[L_P50] = _two_ranks(lis, hi, k99, k50)
        else:
            out[L_P99], out[L_P50] = kth(lis, k99), np.partition(lis, k50)[k50]


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
