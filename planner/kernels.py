"""The autoscale planner's per-group arithmetic: small numba kernels.

Design: :class:`usher.planner.autoscale.Autoscale` hands the kernels the fleet's
columns, its groups' settings as numbers (``gset``, columns ``G_*``, made once per
fleet), the slot of each schedule and the forecast peak of each window at this
call. :func:`gather` does the bookkeeping and lays the columns out in group order
with each group's sums; :func:`plan_call` decides each group's scalars
(:func:`decide_groups`: the seats needed, whether it scales up or down, the keep
set's free room, one row of ``par`` per group, columns ``P_*``, and the numbers
its reasons quote, ``whys``, columns ``W_*``), then does every array step of
every group (:func:`plan_groups`: the enable / boot / drain candidates and their
sort orders, the shutdowns and forced logoffs, the keep set: free room, sort,
cumulative sums) and answers with action codes (``A_*``) at positions in the
planner's group order; the caller turns them into
:class:`usher.planner.power.Action` s with their reasons. The float arithmetic is
Python's and numpy's (same operations in the same order, Python's ``max`` / ``min``
on ties, stable sorts), so a seed plans the same day bit for bit; the plain-Python
decisions are kept in tests/planner_reference.py as the reference.

All columns are in the planner's group order (a group is ``bounds[k]:bounds[k+1]``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from usher.core.codes import Mode, Power
from usher.core.kernels import compile_settings

__all__ = ["gather", "decide_groups", "plan_groups", "plan_call", "P_COLUMNS", "G_COLUMNS",
           "W_COLUMNS", "N_SUMS", "UPS", "DOWNS", "OFFS", "MARKS", "A_ENABLE", "A_BOOT", "A_DRAIN", "A_SHUTDOWN",
           "A_LOGOFF", "A_PLACE_LAST", "A_PLACE_FIRST", "PACK_OFF", "PACK_ALWAYS", "PACK_FALLING"]

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
#: by load index, sticky keep set, the keep set's free room, seats of the ready
#: booting servers)
P_COLUMNS = ("up", "gap", "gap_n", "boot_room", "down", "surplus", "n_ready", "min_ready", "drain_max",
             "fewest_first", "shut", "delay", "from_drain", "keep_powered", "n_powered", "logoff_after",
             "pack", "falling", "by_load", "hold", "head", "boot_seats")
(P_UP, P_GAP, P_GAP_N, P_BOOT_ROOM, P_DOWN, P_SURPLUS, P_N_READY, P_MIN_READY, P_DRAIN_MAX, P_FEWEST,
 P_SHUT, P_DELAY, P_FROM_DRAIN, P_KEEP_POWERED, P_N_POWERED, P_LOGOFF_AFTER,
 P_PACK, P_FALLING, P_BY_LOAD, P_HOLD, P_HEAD, P_BOOT_SEATS) = range(len(P_COLUMNS))

#: columns of the groups' sums (:func:`gather`)
N_SUMS = 7

#: ``pack`` settings as codes (column ``G_PACK``)
PACK_OFF, PACK_ALWAYS, PACK_FALLING = range(3)

#: columns of a group's row of ``gset``, its settings as numbers (made once per
#: fleet by the planner): buffer in %, boot lead in seconds, min_ready,
#: min_powered, max_powered (-1: none), cooldown in seconds, hysteresis in %,
#: drain_max_sessions (-1: any), drain fewest first, power-off delay in seconds,
#: delay counted from the drain, forced logoff after seconds (NaN: never), pack
#: (``PACK_*``), pack_pct (NaN: none), pack_margin, pack_by_load, pack_hold, the row of
#: ``peaks`` over the boot lead and over the boot lead plus the cooldown, the row
#: of ``slots`` (the group's schedule)
G_COLUMNS = ("buffer_pct", "lead", "min_ready", "min_powered", "max_powered", "cooldown", "hysteresis_pct",
             "drain_max", "fewest_first", "delay", "from_drain", "logoff_after", "pack", "pack_pct", "pack_margin",
             "by_load", "hold", "peak_up", "peak_dn", "schedule")
(G_BUFFER, G_LEAD, G_MIN_READY, G_MIN_POWERED, G_MAX_POWERED, G_COOLDOWN, G_HYSTERESIS, G_DRAIN_MAX, G_FEWEST,
 G_DELAY, G_FROM_DRAIN, G_LOGOFF_AFTER, G_PACK, G_PACK_PCT, G_PACK_MARGIN, G_BY_LOAD, G_HOLD, G_PEAK_UP, G_PEAK_DN,
 G_SCHEDULE) = range(len(G_COLUMNS))

#: columns of a group's row of ``whys``, the numbers its reasons quote: scale up
#: (forecast, lead in seconds, buffer, seats needed, ready seats, ready servers),
#: scale down (forecast, horizon in seconds, seats needed, surplus; buffer and
#: ready seats as above), packing (the keep set's free room)
W_COLUMNS = ("f_up", "lead", "buf", "need_up", "seats_ready", "n_ready", "f_dn", "horizon", "need_dn", "surplus",
             "pack")
(W_F_UP, W_LEAD, W_BUF, W_NEED_UP, W_SEATS_READY, W_N_READY, W_F_DN, W_HORIZON, W_NEED_DN, W_SURPLUS,
 W_PACK) = range(len(W_COLUMNS))


# the kernels cache where usher's own do, under usher's compile settings
with compile_settings():

    @njit(cache=True, nogil=True)
    def gather(power, mode, sessions, pending, seats, li, down, excluded, registered, now, order, group,
               idle_since, drain_at, chosen, gi, gb, gf, demand, sums):
        """The planner's bookkeeping, its columns in group order and the groups'
        sums, in one pass in group order (position ``j`` is server ``order[j]``;
        ``order`` lists each group's servers in ascending index).

        Per server: ``idle_since`` (when the server became empty: ``now`` or
        earlier while it stays empty, inf while busy); a server the planner drained
        (``drain_at`` not NaN) that holds more sessions than when chosen is chosen
        again (``drain_at = now``, ``chosen = sessions``), one no longer draining or
        off leaves the drained set (``drain_at`` NaN); ``demand[g]`` += sessions +
        pending logons of each server of group ``g`` (float64, in server order as
        ``np.bincount`` adds: a group's servers come in ascending index). In group
        order: ``gi`` (int64, shape (7, n)) = power, mode, sessions, pending, busy,
        seats, load index; ``gb`` (bool, shape (2, n)) = ready (on and registered,
        or booting; enabled, not locked), locked (maintenance, down or
        ``excluded``); ``gf`` (float64, shape (2, n)) = drain_at, idle_since; and
        ``sums`` (int64, shape (n_groups, N_SUMS)), per group: held (sessions
        and pending logons on servers not ready), ready servers, their seats,
        powered servers (on or booting), busy on ready servers, seats of ready
        booting servers, servers drained by the planner (``drain_at`` not NaN, on,
        draining, not locked). ``excluded`` / ``registered`` of length 0: none excluded
        / every server registered."""
        n = power.shape[0]
        has_excl = excluded.shape[0] > 0
        has_reg = registered.shape[0] > 0
        sums[:] = 0
        for j in range(n):
            i = order[j]
            p, md, si = power[i], mode[i], sessions[i]
            busy = si + pending[i]
            if busy == 0:
                if now < idle_since[i]:
                    idle_since[i] = now
            else:
                idle_since[i] = np.inf
            da = drain_at[i]
            if not np.isnan(da):
                if si > chosen[i]:
                    da = now
                    chosen[i] = si
                if md != DRAIN_MODE or p == OFF:
                    da = np.nan
                drain_at[i] = da
            g = group[i]
            demand[g] += float(busy)
            lk = md == MAINTENANCE or down[i] or (has_excl and excluded[i])
            enabled = md == ENABLED and not lk
            rd = enabled and ((p == ON and (not has_reg or registered[i])) or p == BOOTING)
            gi[0, j] = p
            gi[1, j] = md
            gi[2, j] = si
            gi[3, j] = pending[i]
            gi[4, j] = busy
            gi[5, j] = seats[i]
            gi[6, j] = li[i]
            gb[0, j] = rd
            gb[1, j] = lk
            gf[0, j] = da
            gf[1, j] = idle_since[i]
            # the sums: held, ready servers, their seats, powered, busy on ready, booting seats, drained
            on = p == ON
            if rd:
                sums[g, 1] += 1
                sums[g, 2] += seats[i]
                sums[g, 4] += busy
                if p == BOOTING:
                    sums[g, 5] += seats[i]
            else:
                sums[g, 0] += busy
            if on or p == BOOTING:
                sums[g, 3] += 1
            if on and md == DRAIN_MODE and not lk and not np.isnan(da):
                sums[g, 6] += 1

    @njit(cache=True, nogil=True)
    def _pymax(a, b):
        """Python's ``max(a, b)``: ``a`` unless ``b`` is greater."""
        return b if b > a else a

    @njit(cache=True, nogil=True)
    def _pymin(a, b):
        """Python's ``min(a, b)``: ``a`` unless ``b`` is smaller."""
        return b if b < a else a

    @njit(cache=True, nogil=True)
    def _decide(k, now, sums, g, min_on, slot_buf, peak_up, peak_dn, dem, extra, reserve, size, last_up, row, why):
        """Group ``k``'s scalars (see :func:`decide_groups`)."""
        buf = (g[G_BUFFER] if np.isnan(slot_buf) else slot_buf) / 100.0
        lead = g[G_LEAD]
        held, n_ready, seats_ready, n_powered = float(sums[0]), sums[1], sums[2], sums[3]
        busy_ready, boot_room, n_mine = float(sums[4]), float(sums[5]), sums[6]
        min_powered = g[G_MIN_POWERED]
        f_up = _pymax(peak_up, dem) + extra + reserve
        need_up = np.ceil(f_up * (1.0 + buf)) - held
        min_ready = _pymax(min_on, g[G_MIN_READY])
        if seats_ready < need_up or n_ready < min_ready or n_powered < min_powered:
            why[W_F_UP], why[W_LEAD], why[W_BUF], why[W_NEED_UP] = f_up, lead, buf, need_up + held
            why[W_SEATS_READY], why[W_N_READY] = seats_ready, n_ready
            row[P_UP] = 1.0
            row[P_GAP] = need_up - seats_ready
            row[P_GAP_N] = _pymax(min_ready - n_ready, min_powered - n_powered)
            row[P_BOOT_ROOM] = g[G_MAX_POWERED] - n_powered if g[G_MAX_POWERED] >= 0 else size
            last_up[k] = now
        elif now - last_up[k] >= g[G_COOLDOWN]:
            horizon = lead + g[G_COOLDOWN]
            f_dn = _pymax(peak_dn, dem) + extra + reserve
            need_dn = np.ceil(f_dn * (1.0 + buf + g[G_HYSTERESIS] / 100.0)) - held
            surplus = seats_ready - need_dn
            if surplus > 0 and n_ready > min_ready:
                why[W_F_DN], why[W_HORIZON], why[W_BUF], why[W_NEED_DN] = f_dn, horizon, buf, need_dn + held
                why[W_SEATS_READY], why[W_SURPLUS] = seats_ready, surplus
                row[P_DOWN] = 1.0
                row[P_SURPLUS] = surplus
                row[P_N_READY] = n_ready
                row[P_MIN_READY] = min_ready
                row[P_DRAIN_MAX] = g[G_DRAIN_MAX]
                row[P_FEWEST] = g[G_FEWEST]
        if n_mine:  # re-enabling only takes servers out of the drained set
            row[P_SHUT] = 1.0
            row[P_DELAY] = g[G_DELAY]
            row[P_FROM_DRAIN] = g[G_FROM_DRAIN]
            row[P_KEEP_POWERED] = _pymax(min_powered, min_on)
            row[P_N_POWERED] = n_powered
            row[P_LOGOFF_AFTER] = g[G_LOGOFF_AFTER]
        if g[G_PACK] != PACK_OFF:
            free_need = need_up - np.ceil(reserve * (1.0 + buf)) - busy_ready
            falling = True
            if g[G_PACK] == PACK_FALLING:
                falling = peak_dn + extra <= dem
            # booting servers (enabled) will take sessions too: their seats (boot_room) count first
            if np.isnan(g[G_PACK_PCT]):
                head = _pymax(free_need, 0.0) + g[G_PACK_MARGIN] - boot_room
            else:
                head = _pymin(_pymax(free_need, 0.0), g[G_PACK_PCT] / 100.0 * dem) + g[G_PACK_MARGIN] - boot_room
            row[P_PACK] = 1.0
            row[P_FALLING] = falling
            row[P_BY_LOAD] = g[G_BY_LOAD]
            row[P_HOLD] = g[G_HOLD]
            row[P_HEAD] = head
            row[P_BOOT_SEATS] = boot_room
            why[W_PACK] = _pymax(free_need, 0.0) + g[G_PACK_MARGIN]

    @njit(cache=True, nogil=True)
    def decide_groups(sums, gset, slots, peaks, dx, bounds, now, last_up, par, whys):
        """Every group's scalars, each group with servers alone (row ``k`` of ``par``,
        zeroed first, and of ``whys``, float64, shape (n_groups, len(W_COLUMNS));
        ``last_up[k] = now`` when group ``k`` scales up).

        Details: with ``D`` = demand (``dx[0]``), ``X`` = failover demand
        (``dx[1]``), ``R`` = zone reserve (``dx[2]``), ``b`` = the buffer (the
        schedule slot's, else the group's) / 100, ``held`` = sessions and pending
        logons on servers not ready::

            F_up    = max(peak over the lead, D) + X + R
            need_up = ceil(F_up * (1 + b)) - held
            up      = ready seats < need_up or ready servers < max(slot min_on, min_ready)
                      or powered servers < min_powered
            F_dn    = max(peak over lead + cooldown, D) + X + R       (cooldown over)
            need_dn = ceil(F_dn * (1 + b + hysteresis)) - held
            down    = ready seats - need_dn > 0 and ready servers > the minimum
            head    = min(max(need_up - ceil(R * (1 + b)) - busy on ready, 0),
                          pack_pct % of D) + pack_margin - seats of booting servers

        ``max`` and ``min`` are Python's (the first argument on a tie), the
        arithmetic is the float arithmetic of the same expressions in Python."""
        par[:] = 0.0
        for k in range(bounds.shape[0] - 1):
            size = bounds[k + 1] - bounds[k]
            if size == 0:
                continue
            g = gset[k]
            sl = np.int64(g[G_SCHEDULE])
            _decide(k, now, sums[k], g, slots[sl, 0], slots[sl, 1], peaks[np.int64(g[G_PEAK_UP]), k],
                    peaks[np.int64(g[G_PEAK_DN]), k], dx[0, k], dx[1, k], dx[2, k], float(size), last_up, par[k],
                    whys[k])

    @njit(cache=True, nogil=True)
    def _emit(out, counts, lst, j, code, k):
        c = counts[lst]
        out[lst, c, 0] = j
        out[lst, c, 1] = code
        out[lst, c, 2] = k
        counts[lst] = c + 1

    @njit(cache=True, nogil=True)
    def _sorted(cand, key, m):
        """``cand[:m]`` in the stable order of ``key[:m]`` (ascending): a counting
        sort when the keys span at most ``8 m + 64`` values (sessions, seats: a
        group's keys are small integers), else a merge sort."""
        if m == 0:
            return cand[:0].copy()
        lo = hi = key[0]
        for t in range(1, m):
            lo = min(lo, key[t])
            hi = max(hi, key[t])
        span = hi - lo + 1
        if span > 8 * m + 64:
            return cand[:m][np.argsort(key[:m], kind="mergesort")]
        start = np.zeros(span + 1, np.int64)  # start[v]: how many keys are below lo + v
        for t in range(m):
            start[key[t] - lo + 1] += 1
        for v in range(1, span + 1):
            start[v] += start[v - 1]
        res = np.empty(m, np.int64)
        for t in range(m):
            v = key[t] - lo
            res[start[v]] = cand[t]
            start[v] += 1
        return res

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
    def _room(seats, b, li, by_load):
        """A server's free room: its free seats, capped by its load index with
        ``by_load`` (``floor(seats * clip(1 - li / FULL_LOAD, 0, 1))``), at least 0."""
        room = float(seats - b)
        if by_load:
            x = 1.0 - li / FULL_LOAD
            x = min(max(x, 0.0), 1.0)
            room = min(room, np.floor(seats * x))
        return max(room, 0.0)

    @njit(cache=True, nogil=True)
    def _pack(k, lo, hi, p, b, seats, rd, lk, li, da, mk, key_scale, row, cand, key, want, out, counts):
        """Ramp-down packing: choose the keep set among the candidates (ready, on,
        not locked, not drained by the planner), sorted most sessions first then
        most seats (stable); every other candidate is wanted place-last. A
        server's room is :func:`_room`; ``head`` (``P_HEAD``) the room the keep
        set holds, less the seats of the ready booting servers (``P_BOOT_SEATS``).

        Afresh (``hold`` 0): the fewest candidates in that order whose room sums
        to ``head``, the server that reaches it included (none when ``head`` <= 0);
        every non-candidate is unmarked.

        Sticky (``hold`` 1): the keep set is the unmarked candidates. Grow: while
        its room is below ``head``, the fullest marked candidates join it. Shrink:
        then its emptiest members leave it one at a time while the room of the
        rest reaches ``head + boot seats + the leaving server's seats``: a server
        leaves only when a whole server is surplus, and a boot (whose seats count
        in ``head`` while it boots) never marks one. A ready booting server is
        unmarked (its seats are the keep set's room); every other non-candidate
        keeps its mark as it is (it takes no session, so its mark is moot until
        it is a candidate again, and no action is spent on it). The result is a
        fixed point: the same call on the marks it leaves changes none.

        With ``falling`` 0 (``pack = "falling"`` while the forecast rises) every
        mark is cleared. Emits the marks that change (new marks, then cleared
        ones, each by position) and returns how many candidates are kept."""
        falling, hold = row[P_FALLING] > 0, row[P_HOLD] > 0
        m = 0
        for j in range(lo, hi):
            # sticky: a mark stays unless changed below, but on a booting server (its seats are the keep set's)
            want[j] = hold and falling and mk[j] and not (rd[j] and p[j] == BOOTING)
            if rd[j] and p[j] == ON and not lk[j] and np.isnan(da[j]):
                cand[m], key[m] = j, -(b[j] * key_scale + seats[j])
                m += 1
        kept = m
        if m and falling:
            c = _sorted(cand, key, m)
            head = row[P_HEAD]
            by_load = row[P_BY_LOAD] > 0
            if hold:
                have = 0.0
                for t in range(m):
                    j = c[t]
                    if not want[j]:
                        have += _room(seats[j], b[j], li[j], by_load)
                if have < head:  # grow: the fullest marked first
                    for t in range(m):
                        if have >= head:
                            break
                        j = c[t]
                        if want[j]:
                            want[j] = False
                            have += _room(seats[j], b[j], li[j], by_load)
                need_all = head + row[P_BOOT_SEATS]  # the room needed, booting servers aside
                for t in range(m - 1, -1, -1):  # shrink: the emptiest kept first
                    j = c[t]
                    if want[j]:
                        continue
                    room = _room(seats[j], b[j], li[j], by_load)
                    if have - room < need_all + seats[j]:
                        break
                    want[j] = True
                    have -= room
            else:
                keep = 0
                if head > 0:
                    total = 0.0
                    keep = m + 1
                    for t in range(m):  # np.searchsorted(np.cumsum(room), head) + 1
                        total += _room(seats[c[t]], b[c[t]], li[c[t]], by_load)
                        if total >= head:
                            keep = t + 1
                            break
                for t in range(keep, m):
                    want[c[t]] = True
            for t in range(m):
                if want[c[t]]:
                    kept -= 1
        for j in range(lo, hi):
            if want[j] and not mk[j]:
                _emit(out, counts, MARKS, j, A_PLACE_LAST, k)
        for j in range(lo, hi):
            if mk[j] and not want[j]:
                _emit(out, counts, MARKS, j, A_PLACE_FIRST, k)
            mk[j] = want[j]
        return kept

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

    @njit(cache=True, nogil=True)
    def plan_call(gi, gb, gf, order, drain_at, marked, chosen, bounds, gset, slots, peaks, dx, last_up, now, sums,
                  par, whys, out, counts, kept):
        """One planner call after :func:`gather`: :func:`decide_groups` and
        :func:`plan_groups` on the gathered columns (``gi``, ``gb``, ``gf``) and
        sums, with the planner's place-last marks (``marked``,
        server order) read in group order; then ``drain_at`` and ``marked`` (server
        order) take the kernel's updates, and each server chosen to drain records
        its sessions (``chosen``). ``kept`` is zeroed first."""
        p, md, s, q, b, seats, li = gi[0], gi[1], gi[2], gi[3], gi[4], gi[5], gi[6]
        rd, lk = gb[0], gb[1]
        da, idle = gf[0], gf[1]
        n = p.shape[0]
        mk = np.empty(n, np.bool_)
        key_scale = 1
        if n:
            top = seats[0]
            for j in range(n):
                mk[j] = marked[order[j]]
                top = max(top, seats[j])
            key_scale = top + 1  # (busy, seats) as one sort key
        decide_groups(sums, gset, slots, peaks, dx, bounds, now, last_up, par, whys)
        kept[:] = 0
        plan_groups(p, md, s, q, b, seats, rd, lk, li, da, idle, mk, bounds, par, now, key_scale, out, counts, kept)
        for j in range(n):
            drain_at[order[j]] = da[j]
            marked[order[j]] = mk[j]
        for c in range(counts[DOWNS]):
            j = out[DOWNS, c, 0]
            chosen[order[j]] = s[j]
