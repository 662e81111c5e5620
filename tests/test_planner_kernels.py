"""planner.kernels.gather against the numpy expressions it replaces, and its
groups' sums against a numpy reference (tests/planner_reference.py); the counting sort against a stable sort."""

from __future__ import annotations

import numpy as np

from usher.planner import kernels

from planner_reference import group_sums

OFF, BOOTING, ON, SHUTTING_DOWN = 0, 1, 2, 3
ENABLED, DRAIN, MAINTENANCE = 0, 1, 2


def _numpy_gather(power, mode, sessions, pending, seats, li, down, excluded, registered, now, order, group,
                  idle_since, drain_at, chosen, n_groups):
    """The planner's bookkeeping as numpy expressions (updates the last three in place)."""
    busy = sessions + pending
    empty = busy == 0
    idle_since[~empty] = np.inf
    np.minimum(idle_since, np.where(empty, now, np.inf), out=idle_since)
    drained = ~np.isnan(drain_at)
    retaken = drained & (sessions > chosen)
    drain_at[retaken] = now
    chosen[retaken] = sessions[retaken]
    drain_at[drained & ((mode != DRAIN) | (power == OFF))] = np.nan
    locked = (mode == MAINTENANCE) | down
    if excluded is not None:
        locked = locked | excluded
    reg = np.ones(len(power), dtype=bool) if registered is None else registered
    ready = ((power == ON) & (mode == ENABLED) & reg & ~locked) | ((power == BOOTING) & (mode == ENABLED) & ~locked)
    demand = np.bincount(group, weights=busy, minlength=n_groups)
    o = order
    gi = np.stack([power[o], mode[o], sessions[o], pending[o], busy[o], seats[o], li[o]])
    return gi, np.stack([ready[o], locked[o]]), np.stack([drain_at[o], idle_since[o]]), demand


def test_gather_matches_numpy():
    rng = np.random.default_rng(11)
    empty = np.zeros(0, dtype=bool)
    for trial in range(60):
        n, n_groups = int(rng.integers(1, 120)), int(rng.integers(1, 7))
        group = rng.integers(0, n_groups, n)
        order = np.argsort(group, kind="stable")
        table = np.stack([rng.choice([OFF, BOOTING, ON, SHUTTING_DOWN], n), rng.choice([ENABLED, DRAIN, MAINTENANCE], n),
                          np.where(rng.random(n) < 0.3, 0, rng.integers(0, 25, n)),
                          np.where(rng.random(n) < 0.7, 0, rng.integers(0, 3, n)), rng.integers(0, 10_001, n)], axis=1)
        table.flags.writeable = False  # read-only strided columns, as the engine hands them out
        power, mode, sessions, pending, li = (table[:, j] for j in range(5))
        seats = rng.integers(10, 31, n)
        down = rng.random(n) < 0.1
        excluded = rng.random(n) < 0.1 if trial % 2 else None
        registered = rng.random(n) < 0.9 if trial % 3 else None
        now = float(rng.integers(0, 86_400))
        idle = np.where(rng.random(n) < 0.5, np.inf, rng.integers(0, 86_400, n).astype(float))
        drain_at = np.where(rng.random(n) < 0.5, np.nan, rng.integers(0, 86_400, n).astype(float))
        chosen = rng.integers(0, 25, n)
        ref_state = (idle.copy(), drain_at.copy(), chosen.copy())
        ref = _numpy_gather(power, mode, sessions, pending, seats, li, down, excluded, registered, now, order,
                            group, *ref_state, n_groups)
        gi, gb, gf = np.empty((7, n), dtype=np.int64), np.empty((2, n), dtype=bool), np.empty((2, n))
        demand = np.zeros(n_groups)
        sums = np.full((n_groups, kernels.N_SUMS), -1, dtype=np.int64)
        kernels.gather(power, mode, sessions, pending, seats, li, down, empty if excluded is None else excluded,
                       empty if registered is None else registered, now, order, group, idle, drain_at, chosen,
                       gi, gb, gf, demand, sums)
        bounds = np.searchsorted(group[order], np.arange(n_groups + 1)).astype(np.int64)
        want_sums = np.zeros_like(sums)
        group_sums(ref[0][0], ref[0][1], ref[0][4], ref[0][5], ref[1][0], ref[1][1], ref[2][0], bounds,
                           want_sums)
        np.testing.assert_array_equal(sums, want_sums)
        np.testing.assert_array_equal(gi, ref[0])
        np.testing.assert_array_equal(gb, ref[1])
        np.testing.assert_array_equal(gf, ref[2])
        np.testing.assert_array_equal(demand, ref[3])
        for got, want in zip((idle, drain_at, chosen), ref_state):
            np.testing.assert_array_equal(got, want)


def test_sorted_is_a_stable_sort():
    """Small key spans (the counting sort) and wide ones (the merge sort)."""
    rng = np.random.default_rng(5)
    for trial in range(200):
        m = int(rng.integers(0, 60))
        span = int(rng.choice([1, 3, 30, 1_000, 10**9]))
        key = np.concatenate([rng.integers(-span, span + 1, m), rng.integers(0, 5, 7)]).astype(np.int64)
        cand = rng.permutation(len(key)).astype(np.int64) * 3
        got = kernels._sorted(cand, key, m)
        np.testing.assert_array_equal(got, cand[:m][np.argsort(key[:m], kind="stable")])
