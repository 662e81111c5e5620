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

from usher.planner.power import BOOT, DRAIN, ENABLE, FleetView, REIMAGE, SHUTDOWN
from usher.planner.rollout import DRAINING, REBOOTING, ROLLBACK, Rollout, RolloutSettings

OFF, BOOTING, ON, SHUTTING = 0, 1, 2, 3


class Fleet:
    def __init__(self, rng, n, n_zones, bad=None):
        self.rng, self.n, self.bad = rng, n, bad
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


def _run(seed, n, n_zones, limit, bad=None, steps=400, restart_at=None):
    rng = np.random.default_rng(seed)
    f = Fleet(rng, n, n_zones, bad)
    r = Rollout(RolloutSettings("v2", start=0, deadline=1e9, max_unavailable=limit, canary=1, soak_minutes=5,
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
    r = Rollout(RolloutSettings("v2", canary=0, max_unavailable=2))
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
