"""The ``slow_server`` fault and its KPIs (docs/SCENARIOS.md).

A few servers, chosen by the seed among those on in the day, take
``faults.slow_logon_multiplier`` times longer to log a user on. The day counts
the logons placed on them and the mean logon time (launch to ``logon_done``), so
a day with the pools' slow rule (``fleet.slow_logon_factor``) and one without it
can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SlowLogons", "slow_logons", "slow_kpis"]


@dataclass
class SlowLogons:
    """The fault's servers and what the day saw of their logons.

    Attributes:
        mult: per server, the factor its logons take (1.0: healthy).
        placed_on_slow: logons placed on a slow server (new sessions).
        placed: logons placed (new sessions, warm start excluded).
        completed, seconds: logons completed, and their total duration.
        started: launch time of each session whose logon is pending.
    """

    mult: list
    placed_on_slow: int = 0
    placed: int = 0
    completed: int = 0
    seconds: float = 0.0
    started: dict = field(default_factory=dict)

    def logon_length(self, sid: int, srv: int, lg: int, now: float) -> int:
        """The logon length (seconds) of session ``sid`` placed on ``srv`` at ``now``."""
        m = self.mult[srv]
        self.placed += 1
        if m != 1.0:
            self.placed_on_slow += 1
            lg = max(1, int(round(lg * m)))
        self.started[sid] = now
        return lg

    def logon_done(self, sid: int, now: float) -> None:
        t0 = self.started.pop(sid, None)
        if t0 is not None:
            self.completed += 1
            self.seconds += now - t0


def slow_logons(sc, layout, rng: np.random.Generator) -> SlowLogons | None:
    """The fault's servers, or None when neither the fault (``faults.enabled`` and
    ``faults.slow_servers`` > 0) nor the pools' slow rule is on."""
    fl = sc.faults
    n = len(layout.server_names)
    on = fl.enabled and fl.slow_servers > 0
    if not on and sc.fleet.slow_logon_factor <= 0:
        return None
    mult = [1.0] * n
    if on:
        cands = np.nonzero(~layout.server_night_off)[0]
        for i in rng.choice(cands, size=min(fl.slow_servers, len(cands)), replace=False).tolist():
            mult[i] = float(fl.slow_logon_multiplier)
    return SlowLogons(mult)


def slow_kpis(d) -> dict:
    """The ``slow.*`` KPIs (docs/SCENARIOS.md)."""
    sl: SlowLogons = d.slow
    rows = d.s.servers()
    return {
        "slow.servers": sum(1 for m in sl.mult if m != 1.0),
        "slow.rule_factor": float(d.sc.fleet.slow_logon_factor),
        "slow.logons_placed": sl.placed,
        "slow.logons_on_slow": sl.placed_on_slow,
        "slow.logons_on_slow_pct": round(100.0 * sl.placed_on_slow / sl.placed, 3) if sl.placed else 0.0,
        "slow.logons_completed": sl.completed,
        "slow.mean_logon_seconds": round(sl.seconds / sl.completed, 3) if sl.completed else 0.0,
        "slow.marked_at_end": int(rows["slow"].sum()),
    }
