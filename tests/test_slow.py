"""Slow servers (docs/SEMANTICS.md, *Slow servers*): a server whose logon EWMA
exceeds its pool's ``slow_logon_factor`` times the pool's median logon is taken
only when no healthy candidate is left, and recovers when its logons do.

Every rule test runs against the engine and the reference model (``backend``).
"""

from __future__ import annotations

import pickle

import pytest

import usher
from usher.formats.dispatch import apply_op


def fleet(backend, n=3, **pool_kw):
    s = backend()
    s.add_pool("p", zone_preference=(), logon_tolerance=100, **pool_kw)
    s.add_app("a", ["p"])
    for k in range(n):
        s.add_server(f"s{k}", "z", "p", max_sessions=1000)
    return s


class Day:
    """Launches and logons on a shared clock; a logon on a server named in
    ``slow`` takes ``slow_seconds``, any other ``seconds``."""

    def __init__(self, s, slow=(), seconds=10.0, slow_seconds=60.0):
        self.s, self.slow, self.seconds, self.slow_seconds = s, set(slow), seconds, slow_seconds
        self.t = 0.0
        self.k = 0

    def logon(self):
        """One launch and its logon; returns the server it was placed on."""
        self.k += 1
        d = self.s.launch(f"u{self.k}", "a", now=self.t)
        assert d.server is not None
        took = self.slow_seconds if d.server in self.slow else self.seconds
        self.t += took
        self.s.logon_complete(d.session, now=self.t)
        self.s.logoff(d.session, now=self.t)
        return d.server

    def row(self, name):
        return self.s.server(name)


def test_becomes_slow_after_min_samples_not_before(backend):
    s = fleet(backend, slow_logon_factor=2.0, slow_min_samples=3)
    day = Day(s, slow={"s1"})
    seen = []  # (samples of s1, slow) after each logon
    while min(r["logons"] for r in s.servers()) < 3:
        day.logon()
        seen.append((day.row("s1")["logons"], day.row("s1")["slow"]))
    # never judged on fewer than 3 samples, nor before the median counted another server
    assert all(not slow for n, slow in seen if n < 3)
    assert not seen[0][1] and seen[-1] == (3, True)
    assert day.row("s1")["logon_ewma"] == 60.0
    assert not day.row("s0")["slow"] and not day.row("s2")["slow"]


def test_slow_server_gets_sessions_only_when_no_healthy_candidate(backend):
    s = fleet(backend, slow_logon_factor=2.0, slow_min_samples=2)
    day = Day(s, slow={"s1"})
    while not day.row("s1")["slow"]:
        day.logon()
    # s1 is emptiest (its sessions all ended) and least recently picked, yet skipped
    for _ in range(12):
        assert day.logon() != "s1"
    # the healthy servers leave: s1 is the candidate of last resort
    s.set_mode("s0", "drain", now=day.t)
    s.set_mode("s2", "maintenance", now=day.t)
    d = s.launch("last", "a", now=day.t)
    assert d.outcome == usher.Outcome.PLACED and d.server == "s1"


def test_slow_before_sinbinned(backend):
    s = fleet(backend, n=2, slow_logon_factor=2.0, slow_min_samples=1)
    day = Day(s, slow={"s1"})
    while not day.row("s1")["slow"]:
        day.logon()
    d = s.launch("x", "a", now=day.t)
    assert d.server == "s0"
    s.launch_failed(d.session, now=day.t)  # s0 sin-binned
    assert s.launch("y", "a", now=day.t).server == "s1"


def test_recovers_when_its_logons_recover(backend):
    s = fleet(backend, slow_logon_factor=2.0, slow_min_samples=2)
    day = Day(s, slow={"s1"})
    while not day.row("s1")["slow"]:
        day.logon()
    day.slow.clear()  # the server is mended; it gets logons when nothing else is left
    s.set_mode("s0", "drain", now=day.t)
    s.set_mode("s2", "drain", now=day.t)
    n = 0
    while day.row("s1")["slow"]:
        assert day.logon() == "s1"
        n += 1
    # 60 -> 45 -> 34.5 -> 27.15 -> 22.005 -> 18.4035 (< 2 x 10)
    assert n == 5
    s.set_mode("s0", "enabled", now=day.t)
    s.set_mode("s2", "enabled", now=day.t)
    assert "s1" in {day.logon() for _ in range(6)}


def test_power_off_forgets_the_samples(backend):
    s = fleet(backend, slow_logon_factor=2.0, slow_min_samples=2)
    day = Day(s, slow={"s1"})
    while not day.row("s1")["slow"]:
        day.logon()
    s.set_power("s1", "off", now=day.t)
    row = day.row("s1")
    assert (row["slow"], row["logons"], row["logon_ewma"]) == (False, 0, 0.0)


def test_explained_as_a_preference():
    s = fleet(usher.Scheduler, slow_logon_factor=2.0, slow_min_samples=2)
    day = Day(s, slow={"s1"})
    while not day.row("s1")["slow"]:
        day.logon()
    d = s.launch("x", "a", now=day.t, explain=True)
    pool = d.explanation.pools[0]
    assert pool["funnel"]["slow"] == 1 and pool["funnel"]["candidates"] == 3
    assert [c["slow"] for c in pool["top"]] == [False, False, True]
    assert "1 slow" in str(d.explanation)


def test_off_by_default_tracks_logons_but_marks_nobody(backend):
    s = fleet(backend)
    day = Day(s, slow={"s1"}, slow_seconds=600.0)
    servers = [day.logon() for _ in range(30)]
    assert servers.count("s1") == 10  # the rotation is untouched
    row = day.row("s1")
    assert not row["slow"] and row["logons"] == 10 and row["logon_ewma"] == 600.0


def test_a_pool_without_the_rule_keeps_its_slow_servers_in_rotation(backend):
    s = backend()
    s.add_pool("p", zone_preference=(), slow_logon_factor=2.0, slow_min_samples=1)
    s.add_pool("q", zone_preference=())
    s.add_app("a", ["q"])
    for k in range(2):
        s.add_server(f"q{k}", "z", "q")
    day = Day(s, slow={"q1"})
    assert {day.logon() for _ in range(8)} == {"q0", "q1"}


@pytest.mark.parametrize("bad", [0.5, 1.0, -2.0, float("nan"), True, "2"])
def test_slow_logon_factor_is_checked(backend, bad):
    s = backend()
    with pytest.raises(usher.InvalidArgument) as e:
        s.add_pool("p", slow_logon_factor=bad)
    assert e.value.field == "slow_logon_factor"
    assert s.pool_names == []


def test_slow_min_samples_is_checked(backend):
    s = backend()
    with pytest.raises(usher.InvalidArgument) as e:
        s.add_pool("p", slow_logon_factor=2.0, slow_min_samples=0)
    assert e.value.field == "slow_min_samples"


def test_zero_factor_is_off():
    s = usher.Scheduler()
    s.add_pool("p", slow_logon_factor=0)
    assert s.pool_config("p")["slow_logon_factor"] is None


def test_copies_decide_as_the_original():
    s = fleet(usher.Scheduler, slow_logon_factor=2.0, slow_min_samples=2)
    day = Day(s, slow={"s1"})
    while not day.row("s1")["slow"]:
        day.logon()
    c = pickle.loads(pickle.dumps(s))
    twin = Day(c, slow={"s1"})
    twin.t, twin.k = day.t, day.k
    assert [twin.logon() for _ in range(8)] == [day.logon() for _ in range(8)]
    assert c.servers().tolist() == s.servers().tolist()


def test_trace_pool_op_and_fleet_file_carry_the_setting(tmp_path):
    from usher.formats.fleet import fleet_document

    s = usher.Scheduler()
    apply_op(s, {"op": "pool", "t": 0.0, "name": "p", "slow_logon_factor": 3.0, "slow_min_samples": 4})
    apply_op(s, {"op": "pool", "t": 0.0, "name": "q"})
    cfg = s.pool_config("p")
    assert (cfg["slow_logon_factor"], cfg["slow_min_samples"]) == (3.0, 4)
    pools = fleet_document(s)["pool"]
    assert pools[0]["slow_logon_factor"] == 3.0 and pools[0]["slow_min_samples"] == 4
    assert "slow_logon_factor" not in pools[1] and "slow_min_samples" not in pools[1]


def test_a_large_pool_recomputes_its_median_periodically():
    """With n judged servers the median is computed every n // 16 + 1 logons;
    the engine and the reference agree on every mark along the way."""
    from reference import ReferenceScheduler

    runs = []
    for backend in (usher.Scheduler, ReferenceScheduler):
        s = fleet(backend, n=40, slow_logon_factor=1.5, slow_min_samples=1)
        day = Day(s, slow={f"s{k}" for k in range(0, 40, 7)}, seconds=10.0, slow_seconds=18.0)
        marks = []
        for _ in range(300):
            day.logon()
            marks.append(tuple(bool(r["slow"]) for r in s.servers()))
        runs.append(marks)
    assert runs[0] == runs[1]
    assert any(any(m) for m in runs[0])
