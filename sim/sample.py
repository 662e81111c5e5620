"""The sample handler: telemetry for every powered server, then one KPI sample.

Design: every ``day.sample_seconds`` the handler makes two compiled calls and one
engine call. :func:`usher.sim.stats.scan_fleet` finds the powered servers, the
statistics that the telemetry does not change, and the telemetry rows and watts
(cpu normals, then memory normals, ``2 m`` for ``m`` powered servers, from a
generator seeded by ``day.seed``: drawn in blocks, the same stream as one draw per
sample, see :meth:`Sampler._normals`); one ``telemetry_many`` call sends the rows;
:func:`usher.sim.stats.fleet_stats` reads the load indexes it gave. One row
(:data:`usher.sim.sinks.SERIES_COLUMNS`) and one row per zone go to the day's
sinks. The engine's server columns are strided views of its records: each pass
over them, and each call, is the cost that counts.
"""

from __future__ import annotations

import math
from operator import itemgetter, sub

import numpy as np

from usher.core.codes import Reason
from usher.sim import stats as K
from usher.sim.scenario import POOLS

__all__ = ["Sampler"]

_NAN = math.nan
_EMPTY_ZONE = (0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, _NAN)
_NO_STATS = (0, 0, 0, 0, 0, 0, 0, 0)
_NOISE_SAMPLES = 8  # samples' worth of normals drawn at a time (at most 2 per server each)


class Sampler:
    """Buffers and generator of the day's samples; call :meth:`sample` each period."""

    def __init__(self, d, trace_telemetry: str | None):
        sc, lay = d.sc, d.layout
        tel, pw = sc.telemetry, sc.power
        n_srv = len(lay.server_names)
        self.nz = nz = len(sc.fleet.zones)
        self.period = sc.day.sample_seconds
        self.n_samples = (d.T + self.period - 1) // self.period
        # telemetry rows written to the trace: servers whose load rules read it, or all
        reads = [any(str(r) in ("cpu", "memory") for r in d.s.pool_config(p)["load_rules"]) for p in POOLS]
        self.traced = (np.array([reads[p] for p in lay.server_pool]) if trace_telemetry == "rules"
                       else np.ones(n_srv, dtype=bool))
        self.imaging_factor = np.where(lay.server_pool == 1, tel.imaging_cpu_factor, 1.0)
        self.normal = np.random.default_rng([sc.day.seed, 31]).standard_normal
        self.coef = np.array([tel.cpu_idle, tel.cpu_per_session, tel.cpu_per_logon, tel.cpu_noise,
                              tel.mem_base, tel.mem_per_session, tel.mem_per_logon, tel.mem_noise], dtype=np.float64)
        self.watts_model = np.array([pw.watts_booting, pw.watts_idle, pw.watts_busy - pw.watts_idle],
                                    dtype=np.float64)
        self.work = np.zeros(2 * n_srv + nz + 1, dtype=np.int64)  # see stats.scan_fleet
        self.tele = np.zeros((3, n_srv))  # cpu, memory, watts of the powered servers
        # the generator's normals, drawn _NOISE_SAMPLES samples' worth at a time and
        # used in order (the stream of one normal(2 m) call per sample, see _normals)
        self.noise = np.zeros(_NOISE_SAMPLES * 2 * n_srv)
        self.noise_at = self.noise.shape[0]
        self.fleet = np.zeros((4, n_srv), dtype=np.int32)  # rows stats.F_ZONE, F_POOL, F_MAIN, F_MAX
        self.fleet[K.F_ZONE] = lay.server_zone
        self.fleet[K.F_POOL] = lay.server_pool
        self.fleet[K.F_MAIN] = lay.server_pool == 0  # imbalance: patient-record pool
        self.fleet[K.F_MAX] = lay.server_max
        self.out = np.zeros(K.STATS_HEAD + K.STATS_ZONE * nz, dtype=np.int64)
        self.zone_base = [K.STATS_HEAD + K.STATS_ZONE * z for z in range(nz)]
        self.reason_deltas = itemgetter(*[4 + int(r) for r in Reason if r != Reason.NONE])
        self.last_counts = [0] * (4 + len(Reason))
        # the server-hours lower bound: per pool, sessions / mean seats per server
        pool = np.asarray(lay.server_pool, dtype=np.int64)
        n_pools = len(POOLS)
        cnt = np.bincount(pool, minlength=n_pools)
        self.pool_seats = np.bincount(pool, weights=lay.server_max, minlength=n_pools) / np.maximum(cnt, 1)
        self.last_lost = [0, 0]
        self.model = np.concatenate([self.coef, self.watts_model, self.pool_seats])  # see stats.scan_fleet
        self.n_srv = n_srv

    def _normals(self):
        """The generator's next normals, at least ``2 n`` of them, as a view of the
        buffer (the caller moves ``noise_at`` past those it used). Drawing a block
        at once gives the same stream as one ``normal(k)`` call per sample:
        ``Generator.standard_normal`` fills element by element from the bit
        generator (``random_standard_normal_fill``) and keeps nothing between calls,
        so draws split anywhere concatenate to the same values
        (tests/test_sim_sample.py checks it)."""
        buf, at = self.noise, self.noise_at
        if buf.shape[0] - at < 2 * self.n_srv:
            left = buf.shape[0] - at
            buf[:left] = buf[at:]
            self.normal(out=buf[left:])
            self.noise_at = at = 0
        return buf[at:]

    def _statistics(self, o):
        """Fleet statistics and zone rows from the kernels' row ``o`` (a list)."""
        n_on, _, pend_max_on, _, s_max, s_p99, s_sum, l_p50, l_p99, l_max, l_sum, _ = o[:K.STATS_HEAD]
        if not n_on:
            return _NO_STATS, [_EMPTY_ZONE] * self.nz
        stats = (s_max, s_p99, s_sum / n_on, l_p50, l_p99, l_max, l_sum / n_on, pend_max_on)
        zrow = []
        for b in self.zone_base:
            n_z, zs_sum, zs_max, zs_p99, zl_sum, zl_p99, zl_max, m_n, m_sum, m_max = o[b:b + K.STATS_ZONE]
            if n_z:
                rmean = m_sum / m_n if m_n else 0.0
                zrow.append((n_z, zs_sum, zs_sum / n_z, zs_max, zs_p99, zl_sum / n_z, zl_p99, zl_max,
                             m_max / rmean if rmean > 0 else _NAN))
            else:
                zrow.append(_EMPTY_ZONE)
        return stats, zrow

    def sample(self, d, now):
        """Telemetry, then the statistics of the servers that are on (after the
        telemetry: load indexes), to the sinks. Returns the most pending logons on
        any server (the loop checks its running peak against it)."""
        d.check_views()
        st = d.state
        m, n_boot, watts, n_drain, lb_servers = K.scan_fleet(
            d.power_v, d.sessions_v, d.mode_v, d.pending_v, self.fleet, self.imaging_factor, self.model,
            self._normals(), self.work, self.out, self.tele)
        if m:  # the telemetry of the powered servers, one engine call
            self.noise_at += 2 * m
            tele = self.tele
            d.calls.telemetry(self.work[:m], tele[0, :m], tele[1, :m], now, self.traced)
        K.fleet_stats(d.li_v, self.fleet, self.work, self.out)
        o = self.out.tolist()
        stats, zrow = self._statistics(o)
        cnt = st.outcomes + st.reasons
        dl = list(map(sub, cnt, self.last_counts))
        self.last_counts = cnt
        lost, failed = st.tally["lost"], st.tally["failed"]
        hdr, last_lost, target = d.hdr, self.last_lost, d.arrivals.target
        d0, d1, d2, d3 = dl[0], dl[1], dl[2], dl[3]
        row = (now, hdr[d.H_LIVE], o[K.PEND_SUM], hdr[d.H_HOLD], o[K.N_ON], n_boot, m, o[K.CAPACITY],
               d0 + d1 + d2 + d3, d0, d1, d2, d3, *self.reason_deltas(dl), lost - last_lost[0], failed - last_lost[1],
               *stats, watts, target[min(int(now), len(target) - 1)])
        for sink in d.sinks:
            sink.sample(row, zrow)
        last_lost[0], last_lost[1] = lost, failed
        dt = min(self.period, d.T - now)
        st.server_hours += m * dt / 3600.0
        st.energy_j += watts * dt
        st.lower_bound_hours += lb_servers * dt / 3600.0
        st.draining_hours += n_drain * dt / 3600.0
        return o[K.PEND_MAX]
