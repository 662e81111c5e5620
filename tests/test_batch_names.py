"""``launch_many`` by names — lists, tuples or object arrays, known users and users not
seen yet, with the sweep of implicit users between and inside runs of batches — takes
the compiled path and equals the general path (the same batch with a time per row)
row for row and table for table, and the same launches one by one
decision for decision; a batch with a bad row raises naming it and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import usher

_APPS = ("a", "b", "nope")
_ZONES = (None, "Z1", "Z2", "elsewhere")


def _fleet(enforce):
    s = usher.Scheduler(seed=7, enforce_entitlement=enforce)
    s.add_pool("P", zone_preference=("user_location", "user_home"), max_sessions_per_user=2)
    s.add_app("a", ["P"])
    s.add_app("b", ["P"], max_instances_per_user=1)
    for i in range(4):
        s.add_server(f"s{i}", ("Z1", "Z2")[i % 2], "P", max_sessions=3, now=0.0)
    for u in range(4):
        s.add_user(f"d{u}", home_zone="Z1", apps=("a", "b"))
    s._sweep_every = 3  # sweeps every few new users: inside a run of batches
    return s


def _calls(s):
    """The general path's kernel calls on ``s``."""
    calls, kernel_call = [], s._launch_arrays

    def counted(*args):
        calls.append(len(args[0]))
        return kernel_call(*args)

    s._launch_arrays = counted
    return calls


def _as(kind, values):
    return {"list": list, "tuple": tuple, "array": lambda v: np.array(v, dtype=object)}[kind](values)


_row = st.tuples(st.sampled_from([f"d{k}" for k in range(4)] + [f"new{k}" for k in range(6)]),
                 st.sampled_from(_APPS[:2]), st.sampled_from(_ZONES))
_batch = st.tuples(st.lists(_row, min_size=1, max_size=8), st.sampled_from(["list", "tuple", "array"]),
                   st.booleans(), st.lists(st.integers(0, 30), max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_batch, min_size=1, max_size=6), st.booleans())
def test_batches_of_names_equal_the_general_path_and_one_by_one(batches, enforce):
    fast, general, single = _fleet(enforce), _fleet(enforce), _fleet(enforce)
    fast_calls, general_calls = _calls(fast), _calls(general)
    t = 1.0
    for rows, kind, with_locations, offs in batches:
        users, apps, locs = (list(x) for x in zip(*rows))
        where = _as(kind, locs) if with_locations else None
        got = fast.launch_many(_as(kind, users), _as(kind, apps), locations=where, now=t)
        forced = general.launch_many(users, apps, locations=locs if with_locations else None,
                                     now=[t] * len(rows))
        one = [single.launch(u, a, location=z if with_locations else None, now=t) for u, a, z in rows]
        assert got.rows.tolist() == forced.rows.tolist()
        assert list(got) == one
        assert fast.user_ids == general.user_ids
        # (one by one sweeps before each launch, so it may remember other idle implicit users)
        live = list(dict.fromkeys(d.session for d in one if d.placed))
        for k in set(offs):  # log some sessions off: their implicit users are swept later
            if k < len(live):
                for s in (fast, general, single):
                    s.logoff(live[k], now=t)
        t += 1.0
    assert fast_calls == [] and len(general_calls) == len(batches)
    assert fast.sessions().tolist() == general.sessions().tolist()
    assert fast.servers().tolist() == general.servers().tolist() == single.servers().tolist()


@pytest.mark.parametrize("kind", ["list", "tuple", "array"])
@pytest.mark.parametrize(
    "users, apps, locs, error, field",
    [
        (["new0", ""], ["a", "a"], None, usher.InvalidArgument, "users[1]"),
        (["new0", 5], ["a", "a"], None, usher.InvalidArgument, "users[1]"),
        (["new0", "new1"], ["a", "nope"], None, usher.UnknownApp, "apps[1]"),
        (["new0", "new1"], ["a", None], None, usher.UnknownApp, "apps[1]"),
        (["new0", "new1"], ["a", "a"], ["Z1", ""], usher.InvalidArgument, "locations[1]"),
        (["new0", "new1"], ["a", "a"], ["Z1"], usher.InvalidArgument, "locations"),
    ],
)
def test_a_bad_row_creates_no_user_and_changes_nothing(kind, users, apps, locs, error, field):
    s = _fleet(False)
    s.launch("seen", "a", now=1.0)
    before = (s.servers().tolist(), s.sessions().tolist(), s.user_ids, s.now)
    with pytest.raises(error) as e:
        s.launch_many(_as(kind, users), _as(kind, apps), locations=None if locs is None else _as(kind, locs),
                      now=2.0)
    assert e.value.field == field
    assert (s.servers().tolist(), s.sessions().tolist(), s.user_ids, s.now) == before


def test_a_batch_going_back_in_time_creates_no_user():
    s = _fleet(False)
    s.launch("seen", "a", now=5.0)
    before = s.user_ids
    with pytest.raises(usher.TimeWentBackwards):
        s.launch_many(["new0", "new1"], ["a", "a"], now=4.0)
    assert s.user_ids == before
