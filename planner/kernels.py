"""The autoscale planner's per-group arithmetic: small numba kernels.

Design: :class:`usher.planner.autoscale.Autoscale` decides each group's scalars
in Python (the forecast, the seats needed, whether it scales up or down, the keep
set's free room) and hands them to :func:`plan_groups` as one row of ``par`` per
group (columns ``P_*``). The kernel does every array step of every group in one
call — the enable / boot / drain candidates and their sort orders, the shutdowns
and forced logoffs, the keep set (free room, sort, cumulative sums) — and answers
with action codes (``A_*``) at positions in the planner's group order; the caller
turns them into :class:`usher.planner.power.Action` s with their reasons. The
float arithmetic is numpy's (same operations in the same order, stable sorts),
so a seed plans the same day bit for bit.

All columns are in the planner's group order (a group is ``bounds[k]:bounds[k+1]``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from usher.core.codes import Mode, Power
from usher.core.kernels import compile_settings

__all__ = ["gather", "group_sums", "plan_groups", "P_COLUMNS", "N_SUMS", "UPS", "DOWNS", "OFFS", "MARKS",
           "A_ENABLE", "A_BOOT", "A_DRAIN", "A_SHUTDOWN", "A_LOGOFF", "A_PLACE_LAST", "A_PLACE_FIRST"]

OFF, BOOTING, ON = int(Power.OFF), int(Power.BOOTING), int(Power.ON)
ENABLED, DRAIN_MODE, MAINTENANCE = int(Mode.ENABLED), int(Mode.DRAIN), int(Mode.MAINTENANCE)

#: the load index of a full server
FULL_LOAD = 10_000.0

#: action codes :func:`plan_groups` answers with
A_ENABLE, A_BOOT, A_DRAIN, A_SHUTDOWN, A_LOGOFF, A_PLACE_LAST, A_PLACE_FIRST = range(7)
#: the action lists, carried out in this order
UPS, DOWNS, OFFS, MARKS = range(4)

#: columns of a group's row of ``par``: scale up (flag, seat gap, server gap, boots
#: allowed); scale down (flag, surplus seats, ready servers, minimum ready, most
#: sessions a drained server may hold or -1, fewest first); shut down (flag, delay
#: in seconds, counted from the drain, servers kept powered, powered servers,
#: forced logoff after seconds or NaN); pack (flag, forecast falling, room capped
#: by load index, the keep set's free room)
P_COLUMNS = ("up", "gap", "gap_n", "boot_room", "down", "surplus", "n_ready", "min_ready", "drain_max",
             "fewest_first", "shut", "delay", "from_drain", "keep_powered", "n_powered", "logoff_after",
             "pack", "falling", "by_load", "head")
(P_UP, P_GAP, P_GAP_N, P_BOOT_ROOM, P_DOWN, P_SURPLUS, P_N_READY, P_MIN_READY, P_DRAIN_MAX, P_FEWEST,
 P_SHUT, P_DELAY, P_FROM_DRAIN, P_KEEP_POWERED, P_N_POWERED, P_LOGOFF_AFTER,
 P_PACK, P_FALLING, P_BY_LOAD, P_HEAD) = range(len(P_COLUMNS))

#: columns of :func:`group_sums`' rows
N_SUMS = 7


# the kernels cache where usher's own do, under usher's compile settings
with compile_settings():

    @njit(cache=True, nogil=True)
    def gather(power, mode, sessions, pending, seats, li, down, excluded, registered, now, order, group,
               idle_since, drain_at, chosen, gi, gb, gf, demand):
        """The planner's bookkeeping and its columns in group order, in one pass each.

        In server order: ``idle_since`` (when the server became empty: ``now`` or
        earlier while it stays empty, inf while busy); a server the planner drained
        (``drain_at`` not NaN) that holds more sessions than when chosen is chosen
        again (``drain_at = now``, ``chosen = sessions``), one no longer draining or
        off leaves the drained set (``drain_at`` NaN); ``demand[g]`` += sessions +
        pending logons of each server of group ``g`` (float64, in server order as
        ``np.bincount`` adds). Then in group order (position ``j`` is server
        ``order[j]``): ``gi`` (int64, shape (7, n)) = power, mode, sessions,
        pending, busy, seats, load index; ``gb`` (bool, shape (2, n)) = ready (on
        and registered, or booting; enabled, not locked), locked (maintenance,
        down or ``excluded``); ``gf`` (float64, shape (2, n)) = drain_at,
        idle_since. ``excluded`` / ``registered`` of length 0: none excluded /
        every server registered."""
        n = power.shape[0]
        has_excl = excluded.shape[0] > 0
        has_reg = registered.shape[0] > 0
        for i in range(n):
            busy = sessions[i] + pending[i]
            if busy == 0:
                if now < idle_since[i]:
                    idle_since[i] = now
            else:
                idle_since[i] = np.inf
            if not np.isnan(drain_at[i]):
                if sessions[i] > chosen[i]:
                    drain_at[i] = now
                    chosen[i] = sessions[i]
                if mode[i] != DRAIN_MODE or power[i] == OFF:
                    drain_at[i] = np.nan
            demand[group[i]] += float(busy)
        for j in range(n):
            i = order[j]
            p, md = power[i], mode[i]
            lk = md == MAINTENANCE or down[i] or (has_excl and excluded[i])
            enabled = md == ENABLED and not lk
            rd = enabled and ((p == ON and (not has_reg or registered[i])) or p == BOOTING)
            gi[0, j] = p
            gi[1, j] = md
            gi[2, j] = sessions[i]
            gi[3, j] = pending[i]
            gi[4, j] = sessions[i] + pending[i]
            gi[5, j] = seats[i]
            gi[6, j] = li[i]
            gb[0, j] = rd
            gb[1, j] = lk
            gf[0, j] = drain_at[i]
            gf[1, j] = idle_since[i]

    @njit(cache=True, nogil=True)
    def group_sums(p, md, b, seats, rd, lk, da, bounds, out):
        """Per group ``k`` (row ``k`` of ``out``, int64, shape (n_groups, N_SUMS)),
        integer sums over its servers: held (sessions and pending logons on servers
        not ready), ready servers, their seats, powered servers (on or booting), busy
        on ready servers, seats of ready booting servers, servers drained by the
        planner (``da`` not NaN, on, draining, not locked)."""
        for k in range(bounds.shape[0] - 1):
            held = n_ready = seats_ready = n_powered = busy_ready = boot_room = n_mine = 0
            for j in range(bounds[k], bounds[k + 1]):
                on = p[j] == ON
                if rd[j]:
                    n_ready += 1
                    seats_ready += seats[j]
                    busy_ready += b[j]
                    if p[j] == BOOTING:
                        boot_room += seats[j]
                else:
                    held += b[j]
                if on or p[j] == BOOTING:
                    n_powered += 1
                if on and md[j] == DRAIN_MODE and not lk[j] and not np.isnan(da[j]):
                    n_mine += 1
            out[k, 0], out[k, 1], out[k, 2], out[k, 3] = held, n_ready, seats_ready, n_powered
            out[k, 4], out[k, 5], out[k, 6] = busy_ready, boot_room, n_mine

    @njit(cache=True, nogil=True)
    def _emit(out, counts, lst, j, code, k):
        c = counts[lst]
        out[lst, c, 0] = j
        out[lst, c, 1] = code
        out[lst, c, 2] = k
        counts[lst] = c + 1

    @njit(cache=True, nogil=True)
    def _sorted(cand, key, m):
        """``cand[:m]`` in the stable order of ``key[:m]`` (ascending)."""
        return cand[:m][np.argsort(key[:m], kind="mergesort")]

    @njit(cache=True, nogil=True)
    def _scale_up(k, lo, hi, p, md, s, seats, lk, da, row, cand, key, out, counts):
        """Re-enable drained servers (most sessions first), then boot off servers
        (most seats first), until the seat gap and the server gap are closed or
        ``boot_room`` boots are planned."""
        gap, gap_n = row[P_GAP], np.int64(row[P_GAP_N])
        m = 0
        for j in range(lo, hi):
            if p[j] == ON and md[j] == DRAIN_MODE and not lk[j] and not np.isnan(da[j]):
                cand[m], key[m] = j, -s[j]
                m += 1
        for j in _sorted(cand, key, m):
            if gap <= 0 and gap_n <= 0:
                break
            _emit(out, counts, UPS, j, A_ENABLE, k)
            da[j] = np.nan
            gap -= seats[j] - s[j]
            gap_n -= 1
        room = np.int64(row[P_BOOT_ROOM])
        m = 0
        for j in range(lo, hi):
            if p[j] == OFF and not lk[j]:
                cand[m], key[m] = j, -seats[j]
                m += 1
        if m and room > 0 and (gap > 0 or gap_n > 0):
            for j in _sorted(cand, key, m):
                if (gap <= 0 and gap_n <= 0) or room <= 0:
                    break
                _emit(out, counts, UPS, j, A_BOOT, k)
                gap -= seats[j]
                gap_n -= 1
                room -= 1

    @njit(cache=True, nogil=True)
    def _scale_down(k, lo, hi, p, s, q, seats, rd, lk, da, now, row, cand, key, out, counts):
        """Drain ready servers with no pending logon (fewest sessions first, or last
        first) while their free seats fit in the surplus, keeping ``min_ready``."""
        surplus, left, min_ready = row[P_SURPLUS], np.int64(row[P_N_READY]), np.int64(row[P_MIN_READY])
        cap, fewest = np.int64(row[P_DRAIN_MAX]), row[P_FEWEST] > 0
        m = 0
        for j in range(lo, hi):
            if rd[j] and p[j] == ON and q[j] == 0 and not lk[j] and (cap < 0 or s[j] <= cap):
                cand[m], key[m] = j, s[j]
                m += 1
        order = _sorted(cand, key, m) if fewest else cand[:m][::-1]
        for j in order:
            free = seats[j] - s[j]
            if free > surplus or left <= min_ready:
                if fewest:
                    break
                continue
            _emit(out, counts, DOWNS, j, A_DRAIN, k)
            da[j] = now
            surplus -= free
            left -= 1

    @njit(cache=True, nogil=True)
    def _shutdowns(k, lo, hi, p, md, s, q, lk, da, idle, now, row, out, counts):
        """Shut down the planner's drained servers once empty and the delay is over
        (``n_powered - keep_powered`` at most); log off those past the forced logoff."""
        delay, from_drain = row[P_DELAY], row[P_FROM_DRAIN] > 0
        room = np.int64(row[P_N_POWERED]) - np.int64(row[P_KEEP_POWERED])
        logoff_after = row[P_LOGOFF_AFTER]
        for j in range(lo, hi):
            mine = not np.isnan(da[j]) and p[j] == ON and md[j] == DRAIN_MODE and not lk[j]
            if mine and s[j] == 0 and q[j] == 0 and room > 0:
                since = da[j] if from_drain else max(idle[j], da[j])
                if now - since >= delay:
                    _emit(out, counts, OFFS, j, A_SHUTDOWN, k)
                    room -= 1
        if not np.isnan(logoff_after):
            for j in range(lo, hi):
                mine = not np.isnan(da[j]) and p[j] == ON and md[j] == DRAIN_MODE and not lk[j]
                if mine and s[j] > 0 and now - da[j] >= logoff_after:
                    _emit(out, counts, OFFS, j, A_LOGOFF, k)

    @njit(cache=True, nogil=True)
    def _pack(k, lo, hi, p, b, seats, rd, lk, li, da, mk, key_scale, row, cand, key, want, out, counts):
        """Ramp-down packing: the keep set is the fewest candidates (ready, on, not
        locked, not drained by the planner), most sessions first then most seats,
        whose room (free seats, capped by the load index with ``by_load``: ``floor(
        seats * clip(1 - li / FULL_LOAD, 0, 1))``) sums to ``head``, the server that
        reaches it included; every other candidate is wanted place-last. Emits the
        marks that change (new marks, then cleared ones, each by position) and
        returns how many candidates are kept."""
        m = 0
        for j in range(lo, hi):
            want[j] = False
            if rd[j] and p[j] == ON and not lk[j] and np.isnan(da[j]):
                cand[m], key[m] = j, -(b[j] * key_scale + seats[j])
                m += 1
        n_cand = m
        if m and row[P_FALLING] > 0:
            c = _sorted(cand, key, m)
            head = row[P_HEAD]
            keep = 0
            if head > 0:
                by_load = row[P_BY_LOAD] > 0
                total = 0.0
                keep = m + 1
                for t in range(m):  # np.searchsorted(np.cumsum(max(room, 0)), head) + 1
                    j = c[t]
                    room = float(seats[j] - b[j])
                    if by_load:
                        x = 1.0 - li[j] / FULL_LOAD
                        x = min(max(x, 0.0), 1.0)
                        room = min(room, np.floor(seats[j] * x))
                    total += max(room, 0.0)
                    if total >= head:
                        keep = t + 1
                        break
            for t in range(keep, m):
                want[c[t]] = True
        for j in range(lo, hi):
            if want[j]:
                n_cand -= 1
                if not mk[j]:
                    _emit(out, counts, MARKS, j, A_PLACE_LAST, k)
        for j in range(lo, hi):
            if mk[j] and not want[j]:
                _emit(out, counts, MARKS, j, A_PLACE_FIRST, k)
            mk[j] = want[j]
        return n_cand

    @njit(cache=True, nogil=True)
    def plan_groups(p, md, s, q, b, seats, rd, lk, li, da, idle, mk, bounds, par, now, key_scale, out, counts,
                    kept):
        """Every group's actions for one planner call, group by group: scale up,
        scale down, shutdowns and logoffs, packing, each where its flag in ``par``
        (float64, shape (n_groups, len(P_COLUMNS))) is set. Actions go into the list
        rows of ``out`` (int64, shape (4, n_servers, 3): position, action code,
        group), ``counts[l]`` long; ``da`` (drained at, float64) and ``mk`` (marked
        place-last, bool) are updated in place; ``kept[k]`` is the size of group
        ``k``'s keep set (packing groups)."""
        n = p.shape[0]
        cand = np.empty(n, np.int64)
        key = np.empty(n, np.int64)
        want = np.zeros(n, np.bool_)
        counts[:] = 0
        for k in range(bounds.shape[0] - 1):
            lo, hi = bounds[k], bounds[k + 1]
            if hi == lo:
                continue
            row = par[k]
            if row[P_UP] > 0:
                _scale_up(k, lo, hi, p, md, s, seats, lk, da, row, cand, key, out, counts)
            if row[P_DOWN] > 0:
                _scale_down(k, lo, hi, p, s, q, seats, rd, lk, da, now, row, cand, key, out, counts)
            if row[P_SHUT] > 0:
                _shutdowns(k, lo, hi, p, md, s, q, lk, da, idle, now, row, out, counts)
            if row[P_PACK] > 0:
                kept[k] = _pack(k, lo, hi, p, b, seats, rd, lk, li, da, mk, key_scale, row, cand, key, want,
                                out, counts)
