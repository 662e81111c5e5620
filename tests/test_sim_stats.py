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


def _engine_rows(n, *cols):
    """Columns as the engine hands them out: read-only strided views of its server
    records (int64 fields of one record per server)."""
    table = np.zeros((n, 24), dtype=np.int64)
    for j, c in enumerate(cols):
        table[:, 8 + j] = c
    table.flags.writeable = False
    return [table[:, 8 + j] for j in range(len(cols))]


_COEF = np.array([3.0, 3.2, 9.0, 3.0, 12.0, 3.5, 2.0, 1.5])
_WATTS = np.array([300.0, 180.0, 240.0])


def _fleet(rng, trial):
    """A random fleet: powered, booting, off and shutting-down servers in 1 to 4
    zones; every 10th with nothing powered, every 10th (from 5) with nothing on,
    every 7th with its last zone empty, every 6th with sessions and load indexes
    beyond the ranges the kernels count."""
    n = int(rng.integers(1, 300))
    nz = int(rng.integers(1, 5))
    zone = rng.integers(0, nz, n)
    if trial % 7 == 3 and nz > 1:
        zone = rng.integers(0, nz - 1, n)  # the last zone has no server
    power = rng.choice([sim.OFF, sim.BOOTING, sim.ON, sim.SHUTTING_DOWN], n, p=[0.2, 0.05, 0.7, 0.05])
    if trial % 10 == 0:
        power[:] = sim.OFF  # nothing powered
    elif trial % 10 == 5:
        power = np.where(power == sim.ON, sim.BOOTING, power)  # powered, none on
    wide = trial % 6 == 4  # values beyond the counted ranges: the kth and partition paths
    sessions = rng.integers(0, 400 if wide else 31, n)
    li = rng.integers(0, 10_001, n)
    if wide:
        li[rng.random(n) < 0.05] = 20_000
    return dict(n=n, nz=nz, zone=zone, power=power, sessions=sessions, li=li,
                pending=rng.integers(0, 4, n), mode=rng.choice([sim.ENABLED, sim.DRAIN, 2], n),
                pool=rng.integers(0, 3, n), main=rng.random(n) < 0.8, mx=rng.integers(12, 31, n),
                factor=np.where(rng.random(n) < 0.1, 1.8, 1.0), noise=rng.standard_normal(2 * n + 5) * 10)


def _numpy_scan(f, pool_seats):
    """The scan's own outputs the plain numpy way: powered indices, telemetry rows,
    watts, drains, lower-bound servers."""
    power, sessions, pending = f["power"], f["sessions"], f["pending"]
    idx = np.nonzero(power != sim.OFF)[0]
    m = len(idx)
    noise = f["noise"][:2 * m]
    cpu = np.round(np.clip(_COEF[0] + _COEF[1] * sessions[idx] * f["factor"][idx] + _COEF[2] * pending[idx]
                           + _COEF[3] * noise[:m], 0.0, 100.0), 1)
    mem = np.round(np.clip(_COEF[4] + _COEF[5] * sessions[idx] + _COEF[6] * pending[idx]
                           + _COEF[7] * noise[m:], 0.0, 100.0), 1)
    booting = power[idx] == sim.BOOTING
    watts = np.where(booting, _WATTS[0], _WATTS[1] + _WATTS[2] * cpu / 100.0)
    per_pool = np.bincount(f["pool"], weights=sessions, minlength=len(pool_seats))
    return dict(idx=idx, cpu=cpu, mem=mem, watts=watts, n_boot=int(booting.sum()),
                watt_sum=float(watts.sum()) if m else 0.0,
                n_drain=int(np.count_nonzero((power == sim.ON) & (f["mode"] == sim.DRAIN))),
                lb=float(np.ceil(per_pool / pool_seats - 1e-9).sum()))


def test_sample_kernels_match_numpy():
    rng = np.random.default_rng(7)
    for trial in range(80):
        f = _fleet(rng, trial)
        n, nz = f["n"], f["nz"]
        power, sessions, li, pending, mode = _engine_rows(n, f["power"], f["sessions"], f["li"], f["pending"],
                                                         f["mode"])
        fleet = np.zeros((4, n), dtype=np.int32)
        fleet[sim.F_ZONE], fleet[sim.F_POOL], fleet[sim.F_MAIN], fleet[sim.F_MAX] = f["zone"], f["pool"], f["main"], f["mx"]
        pool_seats = rng.uniform(10.0, 30.0, 3)
        model = np.concatenate([_COEF, _WATTS, pool_seats])
        work = np.full(2 * n + nz + 1, -7, dtype=np.int64)
        out = np.full(sim.STATS_HEAD + sim.STATS_ZONE * nz, -7, dtype=np.int64)
        tele = np.full((3, n), np.nan)
        m, n_boot, watts, n_drain, lb = sim.scan_fleet(power, sessions, mode, pending, fleet, f["factor"], model,
                                                       f["noise"], work, out, tele)
        sim.fleet_stats(li, fleet, work, out)
        ref = _numpy_scan(f, pool_seats)
        assert m == len(ref["idx"])
        np.testing.assert_array_equal(work[:m], ref["idx"])
        np.testing.assert_array_equal(tele[0, :m], ref["cpu"])
        np.testing.assert_array_equal(tele[1, :m], ref["mem"])
        np.testing.assert_array_equal(tele[2, :m], ref["watts"])
        assert (n_boot, watts, n_drain, lb) == (ref["n_boot"], ref["watt_sum"], ref["n_drain"], ref["lb"])
        o, ref = out.tolist(), _numpy_sample(f["power"], f["sessions"], f["li"], f["pending"], f["zone"], f["main"],
                                             f["mx"], nz)
        assert (o[sim.N_ON], o[sim.PEND_SUM], o[sim.PEND_MAX]) == (ref["n_on"], ref["pend_sum"], ref["pend_max"])
        if ref["n_on"]:
            n_on = ref["n_on"]
            assert (o[sim.S_MAX], o[sim.S_P99], o[sim.S_SUM] / n_on) == ref["s"]
            assert (o[sim.L_P50], o[sim.L_P99], o[sim.L_MAX], o[sim.L_SUM] / n_on) == ref["l"]
            assert (o[sim.PEND_MAX_ON], o[sim.CAPACITY]) == (ref["pend_on"], ref["cap"])
        else:
            assert o[:sim.STATS_HEAD] == [0, ref["pend_sum"], 0, 0, 0, 0, 0, 0, 0, 0, 0, ref["pend_max"]]
        for z in range(nz):
            b = sim.STATS_HEAD + sim.STATS_ZONE * z
            if z not in ref:
                assert o[b:b + sim.STATS_ZONE] == [0] * sim.STATS_ZONE
                continue
            m_n = o[b + sim.Z_M_N]
            rmean = o[b + sim.Z_M_SUM] / m_n if m_n else 0.0
            n_z = o[b + sim.Z_N]
            got = (n_z, o[b + sim.Z_S_SUM], o[b + sim.Z_S_SUM] / n_z, o[b + sim.Z_S_MAX], o[b + sim.Z_S_P99],
                   o[b + sim.Z_L_SUM] / n_z, o[b + sim.Z_L_P99], o[b + sim.Z_L_MAX],
                   o[b + sim.Z_M_MAX] / rmean if rmean > 0 else np.nan)
            np.testing.assert_array_equal(np.array(got, dtype=float), np.array(ref[z], dtype=float))


def test_telemetry_rows_match_numpy():
    rng = np.random.default_rng(11)
    for trial in range(40):
        f = _fleet(rng, trial)
        power, sessions, pending = _engine_rows(f["n"], f["power"], f["sessions"], f["pending"])
        idx = np.nonzero(f["power"] != sim.OFF)[0]
        m = len(idx)
        cpu, mem, watts = np.zeros(m), np.zeros(m), np.zeros(m)
        n_boot, watt_sum = sim.telemetry_rows(idx, power, sessions, pending, f["factor"], _COEF, f["noise"][:2 * m],
                                              sim.BOOTING, _WATTS, cpu, mem, watts)
        ref = _numpy_scan(f, np.ones(3))
        np.testing.assert_array_equal(cpu, ref["cpu"])
        np.testing.assert_array_equal(mem, ref["mem"])
        np.testing.assert_array_equal(watts, ref["watts"])
        assert (n_boot, watt_sum) == (ref["n_boot"], ref["watt_sum"])


def test_pairwise_sum_is_numpys_sum():
    """np.add.reduce's value, bit for bit (sign of zero included), for every length
    up to a few blocks, lengths around the block and halving bounds, and offsets."""
    rng = np.random.default_rng(13)
    lengths = [*range(0, 300), 511, 512, 513, 1000, 1023, 1024, 1025, 1399, 1400, 2049, 4099]
    for n in lengths:
        a = rng.standard_normal(n + 5) * 10.0 ** rng.integers(-3, 12, n + 5)
        for lo in (0, 5):
            x, y = sim.pairwise_sum(a, lo, n), np.add.reduce(a[lo:lo + n])
            assert x == y and np.signbit(x) == np.signbit(y), (n, lo)
    for zeros in ([], [-0.0], [-0.0] * 9, [0.0, -0.0]):
        a = np.array(zeros)
        x = sim.pairwise_sum(a, 0, len(a))
        assert x == 0.0 and np.signbit(x) == np.signbit(np.add.reduce(a))


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
