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
from numba import njit

from usher.core.kernels import compile_settings

__all__ = ["DemandForecast", "day_type"]

DAY_SECONDS = 86_400


def day_type(weekday: int, holiday: bool) -> str:
    """``holiday``, ``weekend`` (Saturday, Sunday) or ``weekday``."""
    if holiday:
        return "holiday"
    return "weekend" if weekday >= 5 else "weekday"


# the kernels cache where usher's own do, under usher's compile settings
with compile_settings():

    @njit(cache=True, nogil=True)
    def _observe(demand, level, trend, ratio, day_sum, profile, a_trend, dt, a_ratio, lo, hi):
        """:meth:`DemandForecast.observe`'s arithmetic, group by group, in place:
        the day's sum, the trend (when ``dt`` > 0), the level, the ratio (when
        ``profile``, the profile's row at now, is not empty); numpy's expressions
        element by element (``np.clip`` is ``min(max(r, lo), hi)``)."""
        for k in range(demand.shape[0]):
            d = float(demand[k])
            day_sum[k] += d
            if dt > 0:
                trend[k] += a_trend * ((d - level[k]) / dt - trend[k])
            level[k] = d
            if profile.shape[0]:
                r = (d + 10.0) / (profile[k] + 10.0)
                ratio[k] += a_ratio * (min(max(r, lo), hi) - ratio[k])

    @njit(cache=True, nogil=True)
    def _peaks(level, trend, ratio, profile, horizons, trends, seasonal, b0, b1, n_bins, out):
        """:meth:`DemandForecast.peak` for each window ``r`` (row ``r`` of ``out``):
        horizon ``horizons[r]``, trend and seasonal flags, the profile's bins
        ``b0[r]`` to ``b1[r]`` (modulo ``n_bins``); ``np.maximum`` keeps its first
        argument on a tie."""
        for r in range(horizons.shape[0]):
            h = horizons[r]
            for k in range(level.shape[0]):
                x = level[k]
                if trends[r]:
                    y = level[k] + max(trend[k], 0.0) * h
                    x = x if x >= y else y
                if seasonal[r] and profile.shape[0]:
                    m = profile[b0[r] % n_bins, k]
                    for b in range(b0[r] + 1, b1[r] + 1):
                        v = profile[b % n_bins, k]
                        m = m if m >= v else v
                    y = ratio[k] * m
                    x = x if x >= y else y
                out[r, k] = x


#: no profile yet (the kernels' argument for None)
_NO_PROFILE, _NO_ROW = np.zeros((0, 0)), np.zeros(0)


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
        self.day_n[b] += 1
        dt = a_trend = 0.0
        if self.last_t is not None and now > self.last_t:
            dt = now - self.last_t
            a_trend = 1.0 - math.exp(-dt / self.trend_tau)
        self.last_t = now
        p = self.profile(kind)
        _observe(demand, self.level, self.trend, self.ratio, self.day_sum[b], _NO_ROW if p is None else p[b],
                 a_trend, dt, 1.0 - math.exp(-60.0 / self.ratio_tau), float(self.ratio_clip[0]),
                 float(self.ratio_clip[1]))

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

    def peaks(self, now: float, horizons: np.ndarray, trends: np.ndarray, seasonal: np.ndarray,
              out: np.ndarray) -> None:
        """:meth:`peak` for several windows at once: row ``r`` of ``out`` (float64,
        shape (len(horizons), n_groups)) over ``[now, now + horizons[r]]``, with the
        trend when ``trends[r]`` and the profile when ``seasonal[r]`` (bool arrays)."""
        p = self.profile(self.kind)
        t = now % DAY_SECONDS
        b0 = int(t // self.bin)
        b1 = [int((t + h) // self.bin) + 1 for h in horizons.tolist()]
        _peaks(self.level, self.trend, self.ratio, _NO_PROFILE if p is None else p, horizons, trends, seasonal,
               np.full(len(b1), b0, dtype=np.int64), np.array(b1, dtype=np.int64), self.n_bins, out)
