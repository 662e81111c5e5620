"""Demand forecast per pool and zone, learned from what the planner has seen.

Design: the planner reports the demand of every group (sessions + pending logons
of one pool in one zone) at every call (:meth:`DemandForecast.observe`). Two
estimates are kept:

- **seasonal**: a profile per day type (``weekday`` = Monday to Friday,
  ``weekend``, ``holiday``; a holiday with no profile yet uses the weekend's) of
  the mean demand in ``bin_seconds`` bins of the day. A finished day
  (:meth:`close_day`) is blended into its day type's profile by an EWMA
  (``profile = alpha * day + (1 - alpha) * profile``; the first day is copied);
- **recent**: the level and the trend (sessions per second, an EWMA with time
  constant ``trend_tau_seconds``) of the last observations, and the ratio of the
  level to the profile at the same time (EWMA, time constant
  ``ratio_tau_seconds``, clipped to ``ratio_clip``): the last hours correct the
  seasonal shape for a busier or quieter day.

Forecast over a window ``[now, now + h]`` (:meth:`peak`), per group::

    reactive = level + max(trend, 0) * h            (trend only when asked)
    seasonal = ratio * max(profile over the window)  (when the day type has one)
    peak     = max(level, reactive, seasonal)

So a ramp that history knows is powered a boot-time ahead of it, and one that it
does not know (a spike) is still followed by the trend. It is never told the
scenario's demand curve: only observations.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DemandForecast", "day_type"]

DAY_SECONDS = 86_400


def day_type(weekday: int, holiday: bool) -> str:
    """``holiday``, ``weekend`` (Saturday, Sunday) or ``weekday``."""
    if holiday:
        return "holiday"
    return "weekend" if weekday >= 5 else "weekday"


class DemandForecast:
    """Seasonal profile + recent level, trend and ratio, for ``n_groups`` groups."""

    def __init__(self, n_groups: int, bin_seconds: int = 300, alpha: float = 0.5,
                 trend_tau_seconds: float = 600.0, ratio_tau_seconds: float = 3600.0,
                 ratio_clip: tuple = (0.7, 1.6)):
        self.n_groups, self.bin = n_groups, int(bin_seconds)
        self.n_bins = -(-DAY_SECONDS // self.bin)
        self.alpha, self.trend_tau, self.ratio_tau, self.ratio_clip = alpha, trend_tau_seconds, ratio_tau_seconds, \
            ratio_clip
        self.profiles: dict[str, np.ndarray] = {}
        self.day_sum = np.zeros((self.n_bins, n_groups))
        self.day_n = np.zeros(self.n_bins)
        self.level = np.zeros(n_groups)
        self.trend = np.zeros(n_groups)
        self.ratio = np.ones(n_groups)
        self.last_t: float | None = None
        self.kind = "weekday"

    def profile(self, kind: str) -> np.ndarray | None:
        """The profile of a day type, shape (n_bins, n_groups), or None."""
        p = self.profiles.get(kind)
        if p is None and kind == "holiday":
            p = self.profiles.get("weekend")
        return p

    def observe(self, now: float, demand: np.ndarray, kind: str = "weekday"):
        """The demand of every group at ``now`` (seconds of the day)."""
        self.kind = kind
        t = now % DAY_SECONDS
        b = min(int(t // self.bin), self.n_bins - 1)
        self.day_sum[b] += demand
        self.day_n[b] += 1
        if self.last_t is not None and now > self.last_t:
            dt = now - self.last_t
            a = 1.0 - math.exp(-dt / self.trend_tau)
            self.trend += a * ((demand - self.level) / dt - self.trend)
        self.level = demand.astype(np.float64)
        self.last_t = now
        p = self.profile(kind)
        if p is not None:
            r = (demand + 10.0) / (p[b] + 10.0)
            a = 1.0 - math.exp(-60.0 / self.ratio_tau)
            self.ratio += a * (np.clip(r, *self.ratio_clip) - self.ratio)

    def close_day(self):
        """Blend the day seen into its day type's profile; start a new day."""
        seen = self.day_n > 0
        if seen.any():
            day = np.zeros_like(self.day_sum)
            day[seen] = self.day_sum[seen] / self.day_n[seen, None]
            if (~seen).any():  # bins never observed: nearest observed value
                idx = np.nonzero(seen)[0]
                near = idx[np.clip(np.searchsorted(idx, np.arange(self.n_bins)), 0, len(idx) - 1)]
                day[~seen] = day[near[~seen]]
            old = self.profiles.get(self.kind)
            self.profiles[self.kind] = day if old is None else self.alpha * day + (1 - self.alpha) * old
        self.day_sum[:] = 0.0
        self.day_n[:] = 0.0
        self.ratio[:] = 1.0
        self.last_t = None

    def peak(self, now: float, horizon: float, trend: bool = True, seasonal: bool = True) -> np.ndarray:
        """The most demand expected per group over ``[now, now + horizon]``; shape (n_groups,)."""
        out = self.level.copy()
        if trend:
            np.maximum(out, self.level + np.maximum(self.trend, 0.0) * horizon, out=out)
        p = self.profile(self.kind) if seasonal else None
        if p is not None:
            t = now % DAY_SECONDS
            b0 = int(t // self.bin)
            b1 = int((t + horizon) // self.bin) + 1
            bins = np.arange(b0, b1 + 1) % self.n_bins
            np.maximum(out, self.ratio * p[bins].max(axis=0), out=out)
        return out
