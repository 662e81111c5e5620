"""The statistics kernels of usher.sim.stats against the plain numpy expressions
they replace (bit for bit: a seed must give the same day)."""

from __future__ import annotations

import numpy as np

from usher.sim import stats as sim


# ---------------------------------------------------------------- sample kernels
def _numpy_sample(power, sessions, li, pending, zone, main, mx, nz):
    """The KPI sample's statistics the plain numpy way (sort, then _pctl)."""

    on = power == sim.ON
    out = {"n_on": int(on.sum()), "pend_sum": int(pending.sum()), "pend_max": int(pending.max())}
    if on.any():
        so, lo = np.sort(sessions[on]), np.sort(li[on])
        out.update(s=(so[-1], sim.pctl(so, 0.99), so.mean()), l=(sim.pctl(lo, 0.5), sim.pctl(lo, 0.99), lo[-1], lo.mean()),
                   pend_on=int(pending[on].max()), cap=int(mx[on].sum()))
    for z in range(nz):
        zon = on & (zone == z)
        if zon.any():
            so, lo, rli = np.sort(sessions[zon]), np.sort(li[zon]), li[zon & main]
            rmean = rli.mean() if len(rli) else 0.0
            out[z] = (int(zon.sum()), so.sum(), so.mean(), so[-1], sim.pctl(so, 0.99), lo.mean(), sim.pctl(lo, 0.99),
                      lo[-1], rli.max() / rmean if rmean > 0 else np.nan)
    return out


def _engine_like(*cols):
    """Columns as the engine hands them out: read-only strided views of one table
    (so the kernels are compiled for one signature)."""
    table = np.stack(cols, axis=1)
    table.flags.writeable = False
    return [table[:, j] for j in range(len(cols))]


def test_sample_kernels_match_numpy():
    rng = np.random.default_rng(7)
    for trial in range(60):
        n = int(rng.integers(1, 300))
        nz = int(rng.integers(1, 5))
        zone = rng.integers(0, nz, n)
        power = rng.choice([sim.OFF, sim.BOOTING, sim.ON, sim.SHUTTING_DOWN], n, p=[0.2, 0.05, 0.7, 0.05])
        if trial % 10 == 0:
            power[:] = sim.OFF  # nothing on
        sessions, li, pending = rng.integers(0, 31, n), rng.integers(0, 10_001, n), rng.integers(0, 4, n)
        main, mx = rng.random(n) < 0.8, rng.integers(12, 31, n)
        power, sessions, li, pending = _engine_like(power, sessions, li, pending)
        out = np.zeros(sim.STATS_HEAD + sim.STATS_ZONE * nz, dtype=np.int64)
        sim.fleet_stats(power, sessions, li, pending, zone, main, mx, nz, sim.ON, out)
        o, ref = out.tolist(), _numpy_sample(power, sessions, li, pending, zone, main, mx, nz)
        assert (o[sim.N_ON], o[sim.PEND_SUM], o[sim.PEND_MAX]) == (ref["n_on"], ref["pend_sum"], ref["pend_max"])
        if ref["n_on"]:
            n_on = ref["n_on"]
            assert (o[sim.S_MAX], o[sim.S_P99], o[sim.S_SUM] / n_on) == ref["s"]
            assert (o[sim.L_P50], o[sim.L_P99], o[sim.L_MAX], o[sim.L_SUM] / n_on) == ref["l"]
            assert (o[sim.PEND_MAX_ON], o[sim.CAPACITY]) == (ref["pend_on"], ref["cap"])
        for z in range(nz):
            b = sim.STATS_HEAD + sim.STATS_ZONE * z
            if z not in ref:
                assert o[b + sim.Z_N] == 0
                continue
            m_n = o[b + sim.Z_M_N]
            rmean = o[b + sim.Z_M_SUM] / m_n if m_n else 0.0
            n_z = o[b + sim.Z_N]
            got = (n_z, o[b + sim.Z_S_SUM], o[b + sim.Z_S_SUM] / n_z, o[b + sim.Z_S_MAX], o[b + sim.Z_S_P99],
                   o[b + sim.Z_L_SUM] / n_z, o[b + sim.Z_L_P99], o[b + sim.Z_L_MAX],
                   o[b + sim.Z_M_MAX] / rmean if rmean > 0 else np.nan)
            np.testing.assert_array_equal(np.array(got, dtype=float), np.array(ref[z], dtype=float))
        # telemetry rows: the numpy expression, bit for bit
        idx = np.zeros(n, dtype=np.int64)
        m = sim.powered(power, sim.OFF, idx)
        idx = idx[:m]
        np.testing.assert_array_equal(idx, np.nonzero(power != sim.OFF)[0])
        if not m:
            continue
        f = np.where(rng.random(n) < 0.1, 1.8, 1.0)
        coef = np.array([3.0, 3.2, 9.0, 3.0, 12.0, 3.5, 2.0, 1.5])
        w = np.array([300.0, 180.0, 240.0])
        noise = rng.standard_normal(2 * m) * 10
        cpu, mem, watts = np.zeros(m), np.zeros(m), np.zeros(m)
        n_boot = sim.telemetry_rows(idx, power, sessions, pending, f, coef, noise, sim.BOOTING, w, cpu, mem, watts)
        ref_cpu = np.round(np.clip(coef[0] + coef[1] * sessions[idx] * f[idx] + coef[2] * pending[idx]
                                   + coef[3] * noise[:m], 0.0, 100.0), 1)
        ref_mem = np.round(np.clip(coef[4] + coef[5] * sessions[idx] + coef[6] * pending[idx]
                                   + coef[7] * noise[m:], 0.0, 100.0), 1)
        booting = power[idx] == sim.BOOTING
        ref_watts = np.where(booting, w[0], w[1] + w[2] * ref_cpu / 100.0)
        np.testing.assert_array_equal(cpu, ref_cpu)
        np.testing.assert_array_equal(mem, ref_mem)
        np.testing.assert_array_equal(watts, ref_watts)
        assert n_boot == int(booting.sum())


def test_power_moves_match_the_masks():
    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(1, 200))
        want, down = rng.random(n) < 0.6, rng.random(n) < 0.1
        power = rng.choice([sim.OFF, sim.BOOTING, sim.ON, sim.SHUTTING_DOWN], n)
        mode = rng.choice([sim.ENABLED, sim.DRAIN, 2], n)
        sessions = np.where(rng.random(n) < 0.5, 0, rng.integers(1, 20, n))
        power, mode, sessions = _engine_like(power, mode, sessions)
        out = np.zeros((4, n), dtype=np.int64)
        nb, ne, nd, ns = sim.power_moves(want, power, mode, down, sessions, out)
        on = power == sim.ON
        np.testing.assert_array_equal(out[0, :nb], np.nonzero(want & (power == sim.OFF) & ~down)[0])
        np.testing.assert_array_equal(out[1, :ne], np.nonzero(want & on & (mode == sim.DRAIN) & ~down)[0])
        np.testing.assert_array_equal(out[2, :nd], np.nonzero(~want & on & (mode == sim.ENABLED))[0])
        drained = np.where(~want & on & (mode == sim.ENABLED), sim.DRAIN, mode)  # after row 2 is applied
        np.testing.assert_array_equal(out[3, :ns], np.nonzero(~want & on & (drained == sim.DRAIN) & (sessions == 0))[0])


def test_pool_sessions_match_bincount():
    rng = np.random.default_rng(5)
    for _ in range(40):
        n, n_pools = int(rng.integers(1, 200)), int(rng.integers(1, 4))
        pool = rng.integers(0, n_pools, n)
        power = rng.choice([sim.OFF, sim.BOOTING, sim.ON, sim.SHUTTING_DOWN], n)
        mode = rng.choice([sim.ENABLED, sim.DRAIN, 2], n)
        sessions = rng.integers(0, 31, n)
        power, mode, sessions = _engine_like(power, mode, sessions)
        out = np.full(n_pools, -7, dtype=np.int64)
        n_drain = sim.pool_sessions(sessions, pool, power, mode, sim.ON, sim.DRAIN, out)
        np.testing.assert_array_equal(out, np.bincount(pool, weights=sessions, minlength=n_pools))
        assert n_drain == int(np.count_nonzero((power == sim.ON) & (mode == sim.DRAIN)))
