"""The day's random draw, made before the loop: arrivals and faults.

Design: everything about an arrival that does not depend on how the engine
places it (its tick, planned end, logon length, visit kind, hospital, location,
second app, disconnect and reconnect times, workstations, the pick among idle
users, the come-back delay after a lost session) is drawn at once, as arrays, in a
fixed order from one generator seeded by ``day.seed``: the same seed gives the same
day whatever the policy. Columns are kept as Python lists (cheap to index in the
loop). The demand model itself (curve, hazard, arrival rate) is
:func:`usher.sim.scenario.demand_curves`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from usher.sim.calendar import S_CRASH, S_ZONE_DARK
from usher.sim.scenario import APP_PACS, APP_RECORD, FleetLayout, Scenario, clock_seconds, demand_curves

__all__ = ["Arrivals", "presample", "fault_schedule", "K_RECORDS", "K_IMAGING", "K_EXTERNAL"]

# visit kinds
K_RECORDS, K_IMAGING, K_EXTERNAL = 0, 1, 2


@dataclass
class Arrivals:
    """The presampled arrivals (index ``a`` = arrival number, in tick order).

    Attributes:
        target: ndarray (seconds + 1,), the demand curve ``N(t)``.
        counts: list of int (seconds,), arrivals per tick.
        n_warm: arrivals at tick 0 that are established sessions (warm start).
        the rest: lists of length n_arrivals (see :func:`presample`).
    """

    target: np.ndarray
    counts: list
    n_warm: int
    end: list
    logon: list
    kind: list
    hosp: list
    loc: list
    app: list
    ext: list
    locname: list
    fail: list
    second: list
    t_second: list
    close: list
    t_close: list
    disc: list
    t_disc: list
    rec: list
    t_rec: list
    ws: list
    ws2: list
    pick: list
    comeback: list


def presample(sc: Scenario, layout: FleetLayout, rng: np.random.Generator) -> Arrivals:
    """Arrivals and everything about them that does not depend on the run.

    Arrivals are Poisson per tick at the rate of :func:`demand_curves` (plus
    ``Poisson(N(0))`` warm sessions at tick 0); a session ends at the first tick
    where the integrated hazard passes an Exp(1) draw (at least logon + 30 s after
    its start)."""
    dm, ss = sc.demand, sc.sessions
    T = sc.seconds
    target, hazard, lam = demand_curves(sc)
    cum = np.concatenate([[0.0], np.cumsum(hazard[:-1])])  # integral of mu from 0 to k
    counts = rng.poisson(lam[:T])
    n0 = int(rng.poisson(target[0]))
    counts[0] += n0
    tick = np.repeat(np.arange(T, dtype=np.int64), counts)
    A = len(tick)
    e = rng.exponential(size=A)
    end = np.searchsorted(cum, cum[tick] + e)  # first k with cum[k] >= cum[start] + e
    logon = np.clip(np.round(ss.logon_median_seconds * np.exp(ss.logon_sigma * rng.standard_normal(A))),
                    ss.logon_min_seconds, ss.logon_max_seconds).astype(np.int64)
    logon = np.maximum(logon, 1)
    logon[:n0] = 0  # warm start: established overnight
    end = np.maximum(end, tick + logon + 30)
    end[end >= len(cum) - 1] = 1 << 40  # beyond the day
    day_start, day_end = clock_seconds(dm.day_starts), clock_seconds(dm.day_ends)
    tod = tick % 86_400
    ext_share = np.where((tod >= day_start) & (tod < day_end), dm.external_share_day, dm.external_share_night)
    u = rng.random(A)
    kind = np.where(u < dm.imaging_share, K_IMAGING,
                    np.where(u < dm.imaging_share + ext_share, K_EXTERNAL, K_RECORDS))
    hosp = rng.choice(len(layout.hospital_weight), size=A, p=layout.hospital_weight)
    nz = len(sc.fleet.zones)
    loc = layout.hospital_zone[hosp].copy()
    visiting = (rng.random(A) < dm.visiting_share) & (nz > 1)
    loc[visiting] = (loc[visiting] + rng.integers(1, max(nz, 2), size=int(visiting.sum()))) % nz
    span = np.maximum(end - tick - logon, 30).astype(np.float64)
    span = np.minimum(span, 86_400 * 2.0)
    second = (rng.random(A) < ss.second_app_share) & (kind != K_IMAGING)
    t_second = tick + logon + np.maximum(1, (rng.uniform(0.05, 0.30, A) * span).astype(np.int64))
    close = second & (rng.random(A) < ss.second_app_close_share)
    t_close = tick + logon + np.maximum(2, (rng.uniform(0.35, 0.60, A) * span).astype(np.int64))
    t_close = np.maximum(t_close, t_second + 1)
    disc = rng.random(A) < ss.disconnect_share
    t_disc = tick + logon + np.maximum(2, (rng.uniform(0.40, 0.70, A) * span).astype(np.int64))
    t_disc = np.maximum(t_disc, t_second + 1)
    gap = np.round(ss.reconnect_gap_median_minutes * 60 * np.exp(0.6 * rng.standard_normal(A))).astype(np.int64)
    t_rec = t_disc + np.maximum(gap, 1)
    rec = disc & (rng.random(A) < ss.reconnect_share) & (t_rec < end - 30)
    kinds, locs = kind.tolist(), loc.tolist()
    # what a visit launches and from where (the endpoint also needs the user)
    app_of = {K_RECORDS: APP_RECORD, K_IMAGING: APP_PACS, K_EXTERNAL: APP_RECORD}
    zones = sc.fleet.zones
    ext = (kind == K_EXTERNAL).tolist()
    fail = rng.random(A) < ss.launch_failure_rate
    fail[:n0] = False
    W = max(1, ss.workstations_per_hospital)
    ws, ws2 = rng.integers(0, W, A).tolist(), rng.integers(0, W, A).tolist()
    pick = rng.random(A).tolist()
    comeback = np.maximum(
        1, np.round(ss.comeback_median_seconds * np.exp(0.5 * rng.standard_normal(A)))).astype(np.int64).tolist()
    return Arrivals(
        target=target, counts=counts.tolist(), n_warm=n0, end=end.tolist(), logon=logon.tolist(),
        kind=kinds, hosp=hosp.tolist(), loc=locs, app=[app_of[x] for x in kinds], ext=ext,
        locname=[None if x else zones[z] for x, z in zip(ext, locs)], fail=fail.tolist(),
        second=second.tolist(), t_second=t_second.tolist(), close=close.tolist(), t_close=t_close.tolist(),
        disc=disc.tolist(), t_disc=t_disc.tolist(), rec=rec.tolist(), t_rec=t_rec.tolist(),
        ws=ws, ws2=ws2, pick=pick, comeback=comeback)


def fault_schedule(sc: Scenario, layout: FleetLayout, rng: np.random.Generator):
    """The day's faults: ``(events, windows)``, events a list of ``(tick, (kind, i))``
    server events (``S_CRASH`` of server i, ``S_ZONE_DARK`` of zone i) and windows a
    list of ``(start, end, label)`` in seconds of the day. Empty unless
    ``faults.enabled``. Crashes hit servers that are on in the day (not the night set)."""
    fl = sc.faults
    events: list = []
    windows: list = []
    if not fl.enabled:
        return events, windows
    lo, hi = (clock_seconds(x) for x in fl.crash_window)
    n = layout.server_names
    if fl.server_crashes > 0 and hi > lo:
        when = np.sort(rng.integers(int(lo), int(hi), fl.server_crashes))
        cands = np.nonzero(~layout.server_night_off)[0]
        who = rng.choice(cands, size=fl.server_crashes, replace=False)
        for w, i in zip(when.tolist(), who.tolist()):
            if w < sc.seconds:
                events.append((w, (S_CRASH, i)))
                windows.append((w, w + fl.reboot_minutes * 60, f"crash {n[i]}"))
    if fl.zone_outage:
        z = sc.fleet.zones.index(fl.zone_outage)
        w = int(clock_seconds(fl.zone_outage_at))
        if w < sc.seconds:
            events.append((w, (S_ZONE_DARK, z)))
            windows.append((w, w + fl.zone_outage_minutes * 60, f"{fl.zone_outage} dark"))
    return events, windows
