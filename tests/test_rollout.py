"""The rollout planner on a small stepped fleet: its safety rules as properties.

A tiny model carries the planner's actions out (boot 2 min, shutdown 1 min; a drained
server's sessions end at random; a server booted on a bad image never registers) and
checks, at every step: never more servers draining or rebooting than allowed in a
group, never a shutdown of a server holding a session, after a halt no new drain;
a rollout restored from ``to_dict`` continues the same plan.
"""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from usher.errors import InvalidArgument
from usher.planner.power import BOOT, DRAIN, ENABLE, LOGOFF, FleetView, REIMAGE, SHUTDOWN
from usher.planner.rollout import DRAINING, OLD, REBOOTING, ROLLBACK, WARN, Rollout, RolloutSettings

OFF, BOOTING, ON, SHUTTING = 0, 1, 2, 3


class Fleet:
    def __init__(self, rng, n, n_zones, bad=None, sessions_end=True):
        self.rng, self.n, self.bad, self.sessions_end = rng, n, bad, sessions_end
        self.zone = np.arange(n) % n_zones  # at least two servers on in each zone
        self.pool = np.zeros(n, dtype=np.int64)
        self.power = np.where((rng.random(n) < 0.2) & (np.arange(n) >= 2 * n_zones), OFF, ON)
        self.mode = np.zeros(n, dtype=np.int64)
        self.seats = np.full(n, 20, dtype=np.int64)
        self.sessions = np.where(self.power == ON, rng.integers(0, 4, n), 0)
        self.pending = np.zeros(n, dtype=np.int64)
        self.registered = np.ones(n, dtype=bool)
        self.image = ["v1"] * n
        self.next_image = [None] * n
        self.since = np.zeros(n)
        self.until = np.full(n, np.inf)
        self.zones = [f"z{k}" for k in range(n_zones)]

    def view(self, now):
        return FleetView(now, self.power, self.mode, self.sessions, self.pending, self.sessions * 0,
                         self.seats, self.zone, self.pool, np.zeros(self.n, bool), np.ones(self.n, bool),
                         self.zones, ["p"], registered=self.registered, state_since=self.since,
                         image=list(self.image))

    def tick(self, now):
        for i in range(self.n):
            if now >= self.until[i]:
                self.until[i] = np.inf
                if self.power[i] == BOOTING:
                    self.power[i], self.since[i] = ON, now
                    if self.next_image[i] is not None:
                        self.image[i], self.next_image[i] = self.next_image[i], None
                    self.registered[i] = self.image[i] != self.bad
                elif self.power[i] == SHUTTING:
                    self.power[i], self.since[i], self.mode[i] = OFF, now, 0
        # sessions end on drained servers; new ones only where a session can go
        drained = (self.mode == 1) & (self.sessions > 0)
        if self.sessions_end:
            self.sessions[drained] -= self.rng.random(drained.sum()) < 0.3

    def apply(self, a, now):
        i = a.server
        if a.kind == DRAIN:
            assert self.power[i] in (ON, BOOTING) and self.mode[i] == 0
            self.mode[i] = 1
        elif a.kind == ENABLE:
            self.mode[i] = 0
        elif a.kind == SHUTDOWN:
            assert self.sessions[i] == 0 and self.pending[i] == 0, "shut down with a session"
            self.power[i], self.until[i] = SHUTTING, now + 60
        elif a.kind == REIMAGE:
            assert self.power[i] != ON
            self.next_image[i] = a.image
        elif a.kind == BOOT:
            assert self.power[i] == OFF
            self.power[i], self.mode[i], self.until[i] = BOOTING, 0, now + 120
        elif a.kind == LOGOFF:
            assert self.power[i] == ON and self.mode[i] == 1, "logged off a server not drained"
            self.sessions[i] = self.pending[i] = 0
        elif a.kind == WARN:
            assert self.sessions[i] > 0


def _run(seed, n, n_zones, limit, bad=None, steps=400, restart_at=None):
    rng = np.random.default_rng(seed)
    f = Fleet(rng, n, n_zones, bad)
    r = Rollout(RolloutSettings("v2", start=0, deadline=1e9, max_unavailable=limit, canary=1, soak_minutes=5,
                                soak_launches=0,
                                register_timeout_seconds=300, buffer_pct=10))
    halted_at = None
    for k in range(steps):
        now = 60.0 * k
        f.tick(now)
        if restart_at == k:
            r = Rollout.from_dict(pickle.loads(pickle.dumps(r.to_dict())))
        acts = r.step(f.view(now), now)
        for a in acts:
            if halted_at is not None:
                assert a.kind != DRAIN or r.status[a.server] == ROLLBACK, "drained after the halt"
            f.apply(a, now)
        for z in range(n_zones):
            out = np.isin(r.status[f.zone == z], (DRAINING, REBOOTING)).sum()
            assert out <= limit
        if r.phase == "halted" and halted_at is None:
            halted_at = k
        if r.phase == "done":
            break
    return r, f


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(6, 24), st.integers(1, 3), st.integers(1, 3))
def test_a_good_image_reaches_every_server_safely(seed, n, n_zones, limit):
    r, f = _run(seed, n, n_zones, limit)
    assert r.phase == "done", r.counts()
    assert r.updated == n
    assert all(img == "v2" for img, p in zip(f.image, f.power) if p == ON)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(6, 24), st.integers(1, 3))
def test_a_bad_image_halts_after_the_canary_and_rolls_it_back(seed, n, n_zones):
    r, f = _run(seed, n, n_zones, 2, bad="v2")
    assert r.phase == "halted" and "did not register" in r.halt_reason
    assert f.image.count("v2") + sum(x == "v2" for x in f.next_image) <= 1  # only the canary ever had it
    if r.rolled_back:
        assert r.rolled_back == 1


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(6, 20), st.integers(5, 60))
def test_resume_after_a_restart_continues_the_same_plan(seed, n, restart_at):
    a, fa = _run(seed, n, 2, 2)
    b, fb = _run(seed, n, 2, 2, restart_at=restart_at)
    after = 60.0 * restart_at  # the log is not state: compared from the restart on
    assert [x for x in a.log if x[0] >= after] == [x for x in b.log if x[0] >= after]
    assert fa.image == fb.image


def test_pause_drains_nothing_and_cancel_gives_servers_back():
    rng = np.random.default_rng(1)
    f = Fleet(rng, 8, 1)
    r = Rollout(RolloutSettings("v2", canary=0, max_unavailable=2, soak_launches=0))
    r.pause()
    assert not [a for a in r.step(f.view(0.0), 0.0) if a.kind == DRAIN]
    r.resume()
    drained = [a.server for a in r.step(f.view(60.0), 60.0) if a.kind == DRAIN]
    for i in drained:
        f.mode[i] = 1
    r.cancel()
    back = {a.server for a in r.step(f.view(120.0), 120.0) if a.kind == ENABLE}
    assert drained and back == set(drained)
    assert r.phase == "cancelled"


def test_the_dry_run_lists_canary_staged_and_waves():
    rng = np.random.default_rng(3)
    f = Fleet(rng, 30, 3)
    waves = Rollout(RolloutSettings("v2", canary=2, max_unavailable=2)).waves(f.view(0.0))
    kinds = [w["kind"] for w in waves]
    assert kinds[0] == "canary" and len(waves[0]["servers"]) == 2
    listed = [i for w in waves for i in w["servers"]]
    assert sorted(listed) == list(range(30))
    for w in waves:
        if w["kind"] == "wave":
            for z in range(3):
                assert sum(f.zone[i] == z for i in w["servers"]) <= 2


def _forced_run(seed, n, n_zones, limit, forced=True):
    """Sessions that never end by themselves: only a forced logoff frees their servers."""
    rng = np.random.default_rng(seed)
    f = Fleet(rng, n, n_zones, sessions_end=False)
    f.power[-1] = OFF  # the canary: a server that is off (one that is on would never empty)
    f.sessions[f.power == ON] = rng.integers(1, 4, int((f.power == ON).sum()))
    f.sessions[f.power != ON] = 0
    r = Rollout(RolloutSettings("v2", start=0, deadline=3 * 3600, max_unavailable=limit, canary=1, soak_minutes=5,
                                soak_launches=0,
                                forced_logoff=forced, warn_minutes=[15, 5, 1],
                                logoff_lead_minutes=5 + 6 * -(-n // (n_zones * limit))))  # time for the waves
    warned, logoffs = {}, []
    for k in range(3 * 60 + 1):
        now = 60.0 * k
        f.tick(now)
        acts = r.step(f.view(now), now)
        for a in acts:
            if a.kind == WARN:
                warned.setdefault(now, set()).add(a.server)
            if a.kind == LOGOFF:
                logoffs.append((now, a.server))
            f.apply(a, now)
        for z in range(n_zones):
            assert np.isin(r.status[f.zone == z], (DRAINING, REBOOTING)).sum() <= limit
    return r, f, warned, logoffs


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(6, 20), st.integers(1, 3), st.integers(1, 3))
def test_a_forced_logoff_updates_every_server_by_the_deadline_after_warnings(seed, n, n_zones, limit):
    r, f, warned, logoffs = _forced_run(seed, n, n_zones, limit)
    at = r.settings.logoff_at
    assert r.phase == "done" and r.finished_at <= r.settings.deadline and r.updated == n
    assert logoffs and all(t >= at for t, _ in logoffs)
    assert sorted(warned) == [at - 15 * 60, at - 5 * 60, at - 60]  # each warning once, at its time
    first = {i for t, i in logoffs if t == at}
    assert first <= warned[at - 60]  # a server logged off at the logoff time was warned the minute before
    assert r.forced_servers == len({i for _, i in logoffs})


def test_without_forced_logoff_no_one_is_warned_or_logged_off():
    r, f, warned, logoffs = _forced_run(5, 12, 2, 2, forced=False)
    assert not warned and not logoffs
    assert r.phase == "waves" and (r.status == OLD).any()  # the sessions hold their servers


def _launch_run(seed, n, fail_rate, steps=200):
    """A good-registering image whose logons fail at ``fail_rate`` on the new image."""
    rng = np.random.default_rng(seed)
    f = Fleet(rng, n, 2)
    r = Rollout(RolloutSettings("v2", start=0, deadline=1e9, max_unavailable=2, canary=1, soak_minutes=30,
                                max_failed_launch_pct=25, failed_launch_min=10))
    drains_after_halt = []
    for k in range(steps):
        now = 60.0 * k
        f.tick(now)
        for i in np.nonzero(f.power == ON)[0].tolist():  # two launches a minute on every server on
            for _ in range(2):
                r.launch_placed(i)
                if f.image[i] == "v2" and rng.random() < fail_rate:
                    r.launch_failed(i)
        halted = r.phase == "halted"
        for a in r.step(f.view(now), now):
            if halted and a.kind == DRAIN:
                drains_after_halt.append(r.status[a.server] == ROLLBACK)
            f.apply(a, now)
    return r, f, drains_after_halt


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(6, 16))
def test_failing_launches_on_the_new_image_halt_the_rollout_after_the_canary(seed, n):
    r, f, drains_after_halt = _launch_run(seed, n, 0.6)
    assert r.phase == "halted" and "launches on v2 failed" in r.halt_reason, r.halt_reason
    assert all(drains_after_halt)  # only the rollback of the failing canary
    # the canary is back on the old image (one that was off stays off, set to boot it)
    assert r.rolled_back == 1 and all((nxt or img) == "v1" for img, nxt in zip(f.image, f.next_image))


def test_launches_that_fail_at_the_usual_rate_do_not_halt():
    r, _, _ = _launch_run(3, 10, 0.004, steps=400)
    assert r.phase == "done", r.halt_reason


@pytest.mark.parametrize("key, value", [("warn_minutes", [5, -1]), ("warn_minutes", "15"),
                                        ("max_failed_launch_pct", 0), ("failed_launch_min", 0),
                                        ("forced_logoff", 1), ("logoff_lead_minutes", 600.0)])
def test_bad_settings_name_the_field(key, value):
    kw = {"forced_logoff": True, key: value} if key != "forced_logoff" else {key: value}
    with pytest.raises(InvalidArgument) as e:
        RolloutSettings("v2", deadline=3600.0, **kw).check()
    assert e.value.field == key


def test_the_plan_reads_the_fleet_without_its_users_and_gives_the_same_waves(tmp_path):
    import json

    from click.testing import CliRunner

    import usher
    from usher.cli.rollout import rollout_command, without_users
    from usher.sim.scenario import Scenario, build_scheduler, fleet_layout, fleet_ops

    sc = Scenario().scaled(0.05)
    s = build_scheduler(fleet_ops(sc, fleet_layout(sc)))
    s.to_files(tmp_path / "fleet.toml", tmp_path / "servers.csv")
    text = (tmp_path / "fleet.toml").read_text()
    lean = without_users(text)
    assert "[[user]]" in text and "[[user]]" not in lean and "[[pool]]" in lean
    args = ["plan", "--fleet", str(tmp_path / "fleet.toml"), "--servers", str(tmp_path / "servers.csv"),
            "--image", "v2", "--max-unavailable", "2", "--json"]
    out = CliRunner().invoke(rollout_command, args)
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)["waves"]
    from usher.cli.rollout import fleet_view
    from usher.planner.rollout import dry_run

    full = usher.Scheduler.from_files(tmp_path / "fleet.toml", tmp_path / "servers.csv")
    names = full.servers()["name"]
    want = dry_run(RolloutSettings("v2", start=22 * 3600.0, deadline=30 * 3600.0, max_unavailable=2), fleet_view(full))
    assert [[names[i] for i in w["servers"]] for w in want] == [w["servers"] for w in got]
