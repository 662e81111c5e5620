"""The day's KPIs: one flat dict (keys documented in docs/SCENARIOS.md).

Assembled once at the end of the day from the counters of the
:class:`usher.sim.day.DayState`, the engine's call counts and the sampled
series; handed to the day's sinks.
"""

from __future__ import annotations

import numpy as np

from usher.core.codes import Reason
from usher.sim.launches import PLACED, RECONNECTED, REJECTED, SHARED
from usher.sim.scenario import clock_text
from usher.sim.slow import slow_kpis

__all__ = ["day_kpis"]


def _launch_kpis(d, outcome_n, reason_n) -> dict:
    sc, lay, st = d.sc, d.layout, d.state
    kp = {
        "scenario.name": sc.name,
        "scenario.policy": sc.day.policy,
        "scenario.seed": sc.day.seed,
        "scenario.faults": bool(sc.faults.enabled),
        "scenario.hours": sc.day.hours,
        "scenario.servers": len(lay.server_names),
        "scenario.zones": len(sc.fleet.zones),
        "scenario.hospitals": sc.fleet.hospitals,
        "scenario.users": sc.fleet.users,
        "scenario.peak_target": sc.demand.peak_sessions,
        "launches.total": int(outcome_n.sum()),
        "launches.placed": int(outcome_n[PLACED]),
        "launches.reconnected": int(outcome_n[RECONNECTED]),
        "launches.shared": int(outcome_n[SHARED]),
        "launches.rejected": int(outcome_n[REJECTED]),
    }
    for r in Reason:
        if r != Reason.NONE:
            kp[f"rejected.{r}"] = int(reason_n[int(r)])
    return kp


def _session_kpis(d, ser) -> dict:
    k, st, sc = d.state.tally, d.state, d.sc
    t = ser["t"]
    night = (t >= 0) & (t < 6 * 3600)
    return {
        "logons.requested": st.requested,
        "logons.warm_start": d.arrivals.n_warm,
        "logons.retried": k["retried"],
        "logons.failed": k["failed"],
        "logons.denied": k["denied"],
        "logons.on_draining": k["on_draining"],
        "logons.no_idle_user": k["no_user"],
        "logons.on_fresh_server": k["fresh"],
        "sessions.peak": int(st.peak),
        "sessions.peak_time": clock_text(st.peak_t),
        "sessions.night_trough": int(ser["sessions"][night].min()) if night.any() else 0,
        "sessions.at_end": int(d.s.live_sessions),
        "sessions.lost": k["lost"],
        "sessions.lost_relaunched": k["lost_relaunched"],
        "sessions.reconnect_missed": k["reconnect_missed"],
        "licences.peak": int(st.lic_peak),
        "licences.cap": sc.fleet.licences,
    }


def _server_kpis(d, ser, zser, jp) -> dict:
    st, lay = d.state, d.layout
    some = len(ser["t"]) > 0
    kp = {
        "servers.sessions_max": int(ser["sessions_max"].max()) if some else 0,
        "servers.sessions_p99_peak": float(ser["sessions_p99"].max()) if some else 0.0,
        "servers.sessions_mean_at_peak": round(float(ser["sessions_mean"][jp]), 2),
        "servers.load_index_max": int(ser["li_max"].max()) if some else 0,
        "servers.load_index_p99_peak": float(ser["li_p99"].max()) if some else 0.0,
        "servers.load_index_mean_at_peak": round(float(ser["li_mean"][jp]), 1),
        "servers.pending_max": int(st.pend_peak),
        "servers.pending_max_time": clock_text(st.pend_peak_t),
        "servers.pending_max_server": lay.server_names[st.pend_peak_srv] if st.pend_peak_srv >= 0 else None,
    }
    for z, zs in zser.items():
        imb = zs["imbalance"]
        busy = zs["li_mean"] >= 1000.0  # ignore the night, where a mean near 0 says nothing
        jz = int(np.argmax(zs["sessions"])) if some else 0  # the zone's own peak
        kp[f"zone.{z}.sessions_peak"] = int(zs["sessions"].max()) if some else 0
        kp[f"zone.{z}.imbalance_at_peak"] = round(float(imb[jz]), 3) if np.isfinite(imb[jz]) else None
        kp[f"zone.{z}.imbalance_mean"] = round(float(np.nanmean(imb[busy])), 3) if busy.any() else None
        kp[f"zone.{z}.load_index_p99_peak"] = float(zs["li_p99"].max()) if some else 0.0
    return kp


def _power_kpis(d, ser, jp, wall) -> dict:
    k, st, pw, calls = d.state.tally, d.state, d.sc.power, d.calls
    launches = int(sum(st.outcomes))
    return {
        "power.server_hours": round(st.server_hours, 1),
        "power.energy_kwh": round(st.energy_j / 3.6e6, 1),
        "power.watts_idle": pw.watts_idle,
        "power.watts_busy": pw.watts_busy,
        "power.watts_booting": pw.watts_booting,
        "power.boots": k["boots"],
        "power.shutdowns": k["shutdowns"],
        "power.server_hours_lower_bound": round(st.lower_bound_hours, 1),
        "power.server_hours_ratio": round(st.server_hours / st.lower_bound_hours, 3) if st.lower_bound_hours else None,
        "power.draining_server_hours": round(st.draining_hours, 1),
        "power.forced_logoffs": k["forced_logoffs"],
        "power.actions_refused": k["refused"],
        "power.policy": getattr(d.policy, "name", "fixed"),
        "power.capacity_at_peak": int(ser["capacity"][jp]) if len(ser["t"]) else 0,
        "faults.server_crashes": k["crashes"],
        "faults.zone_outages": k["zone_outages"],
        "books.lost_reported": k["lost"],
        "books.lost_unbooked": k["lost_unbooked"],
        "books.mismatch": k["mismatch"],
        "books.unexpected_decisions": k["unexpected"],
        "engine.seconds": round(calls.seconds, 4),
        "engine.launch_seconds": round(calls.launch_seconds, 4),
        "engine.decisions": launches,
        "engine.us_per_decision": round(calls.launch_seconds / launches * 1e6, 3) if launches else 0.0,
        "engine.ops": calls.ops,
        "engine.us_per_op": round(calls.seconds / calls.ops * 1e6, 3) if calls.ops else 0.0,
        "run.build_seconds": round(d.build_seconds, 3),
        "run.loop_seconds": round(wall, 3),
        "run.wall_seconds": round(d.build_seconds + wall, 3),
    }


def day_kpis(d, ser: dict, zser: dict, wall: float) -> dict:
    """Every KPI of the day ``d`` (a finished :class:`usher.sim.day.Day`), given its
    series ``ser`` and zone series ``zser`` and the loop's wall time. "At peak"
    values are read at the sample with the most sessions (per zone: the zone's own)."""
    outcome_n = np.array(d.state.outcomes, dtype=np.int64)
    reason_n = np.array(d.state.reasons, dtype=np.int64)
    jp = int(np.argmax(ser["sessions"])) if len(ser["t"]) else 0
    kp = _launch_kpis(d, outcome_n, reason_n)
    kp.update(_session_kpis(d, ser))
    kp.update(_server_kpis(d, ser, zser, jp))
    kp.update(_power_kpis(d, ser, jp, wall))
    if getattr(d, "rollout", None) is not None:
        kp.update(rollout_kpis(d))
    if getattr(d, "slow", None) is not None:
        kp.update(slow_kpis(d))
    return kp


def rollout_kpis(d) -> dict:
    """The ``rollout.*`` KPIs of a day run with a [rollout] (docs/SCENARIOS.md)."""
    comp = d.rollout
    r = comp.rollout
    kp = {
        "rollout.image": r.settings.image,
        "rollout.servers": 0 if r.status is None else len(r.status),
        "rollout.updated": r.updated,
        "rollout.phase": r.phase,
        "rollout.forced_logoffs": int(d.state.tally["forced_logoffs"]),
        "rollout.forced_logoff_servers": int(r.forced_servers),
        "rollout.users_warned": len(d.rollout_run.users_warned),
        "rollout.warnings": int(d.rollout_run.warnings),
        "rollout.updated_by_deadline": r.updated_by_deadline if r.updated_by_deadline is not None else r.updated,
        "rollout.min_spare_seats": comp.min_spare if comp.min_spare is not None else 0,
        "rollout.min_spare_over_buffer": comp.min_spare_over_buffer if comp.min_spare_over_buffer is not None else 0,
        "rollout.halted": r.phase == "halted",
        "rollout.halt_reason": r.halt_reason or "",
        "rollout.rolled_back": int(r.rolled_back),
        "rollout.canaries": len(r.canaries),
        "rollout.max_on_new_image": max((row[-3] for row in comp.timeline), default=0),
    }
    if r.finished_at is not None:
        kp["rollout.finished_at"] = float(r.finished_at)
    return kp
