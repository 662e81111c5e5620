"""``launch_many`` by names as a broker's batches are: long, naming a few apps and zones
over and over, with the client endpoints (desks come back, one-off kiosks, None) and the
external flags — by the same objects, by equal objects made apart, by more distinct names
than the compiled path remembers at once, in lists and in object arrays read in place
(contiguous or not). The compiled path equals the general path (the same batch with a
time per row) and the launches one by one; a bad row after many good repeats of the same
objects is still found and named, and changes nothing, the sweep of implicit users
included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import usher
from test_batch_names import _calls  # the general path's kernel calls, counted

_ZONES = ("Z1", "Z2", "Z3")


def _fleet(enforce=False, sweep_every=None):
    s = usher.Scheduler(seed=11, enforce_entitlement=enforce)
    s.add_pool("P", zone_preference=("user_location", "user_home"), max_sessions_per_user=3)
    s.add_pool("Q", zone_preference=("user_location",), max_sessions_per_user=2, external_access=True)
    s.add_app("a", ["P"])
    s.add_app("b", ["P", "Q"], max_instances_per_user=1)
    s.add_app("c", ["Q"])
    for i in range(12):
        s.add_server(f"s{i}", _ZONES[i % 3], ("P", "Q")[i % 2], max_sessions=40, now=0.0)
    for u in range(30):
        s.add_user(f"d{u}", home_zone=_ZONES[u % 3], apps=("a", "b", "c"))
    if sweep_every is not None:
        s._sweep_every = sweep_every
    return s


def _copy(name):
    """An equal str that is another object (as a broker decodes each request)."""
    return name.encode().decode() if name is not None else None


def _column(kind, values):
    if kind == "list":
        return list(values)
    if kind == "array":
        return np.array(values, dtype=object)
    # every other item of an array twice as long: not contiguous, read through a list
    wide = np.empty(2 * len(values), dtype=object)
    wide[::2] = values
    wide[1::2] = "filler"
    return wide[::2]


_names = st.sampled_from(["a", "b", "c"])
# known zones, None, and zone names no server is in (many: more than the memo's slots)
_places = st.one_of(st.sampled_from((None,) + _ZONES), st.integers(0, 150).map(lambda k: f"far{k}"))
# desks used again, kiosks used once, none
_desks = st.one_of(st.none(), st.integers(0, 20).map(lambda k: f"desk{k}"),
                   st.integers(0, 10**6).map(lambda k: f"kiosk{k}"))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(0, 59), _names, _places, st.booleans(), _desks, st.booleans()),
                min_size=1, max_size=300),
       st.sampled_from(["list", "array", "strided"]), st.booleans(), st.booleans(),
       st.sampled_from([None, "list", "tuple", "array"]))
def test_repeated_names_equal_the_general_path_and_one_by_one(rows, kind, enforce, with_desks, flags):
    fast, general, single = _fleet(enforce), _fleet(enforce), _fleet(enforce)
    for s in (fast, general, single):  # endpoints known before the batch, one forgotten slot to reuse
        for k, pc in enumerate(("desk1", "desk2", "old-desk")):
            s.logoff(s.launch(f"d{k}", "a", endpoint=pc, now=0.5).session, now=0.5)
    calls = _calls(fast)
    users = [f"d{u}" if u < 30 else f"new{u}" for u, _a, _z, _c, _e, _x in rows]
    apps = [_copy(a) if c else a for _u, a, _z, c, _e, _x in rows]
    locs = [_copy(z) if c else z for _u, _a, z, c, _e, _x in rows]
    eps = [_copy(e) if c else e for _u, _a, _z, c, e, _x in rows] if with_desks else None
    ext = None if flags is None else [x for *_r, x in rows]
    ext_arg = None if ext is None else {"list": list, "tuple": tuple, "array": np.array}[flags](ext)
    got = fast.launch_many(_column(kind, users), _column(kind, apps), locations=_column(kind, locs),
                           endpoints=None if eps is None else _column(kind, eps), external=ext_arg, now=1.0)
    forced = general.launch_many(users, apps, locations=locs, endpoints=eps, external=ext, now=[1.0] * len(rows))
    one = [single.launch(u, a, location=z, endpoint=None if eps is None else eps[k],
                         external=False if ext is None else ext[k], now=1.0)
           for k, (u, a, z) in enumerate(zip(users, apps, locs))]
    assert calls == []
    assert got.rows.tolist() == forced.rows.tolist()
    assert list(got) == one
    assert fast.user_ids == general.user_ids
    assert fast._endpoint_names == general._endpoint_names == single._endpoint_names
    assert fast.servers().tolist() == general.servers().tolist() == single.servers().tolist()
    assert fast.sessions().tolist() == general.sessions().tolist() == single.sessions().tolist()


class _Name(str):
    """A str subclass: the compiled path leaves it to the general path."""


@pytest.mark.parametrize("kind", ["list", "array", "strided"])
@pytest.mark.parametrize(
    "column, bad, error, field",
    [
        ("apps", "nope", usher.UnknownApp, "apps[250]"),
        ("apps", None, usher.UnknownApp, "apps[250]"),
        ("apps", 7, usher.InvalidArgument, "apps[250]"),
        ("locations", "", usher.InvalidArgument, "locations[250]"),
        ("locations", 7, usher.InvalidArgument, "locations[250]"),
        ("users", "", usher.InvalidArgument, "users[250]"),
        ("users", 7, usher.InvalidArgument, "users[250]"),
        ("endpoints", "", usher.InvalidArgument, "endpoints[250]"),
        ("endpoints", 7, usher.InvalidArgument, "endpoints[250]"),
        ("external", 1, usher.InvalidArgument, "external"),
        ("external", None, usher.InvalidArgument, "external"),
    ],
)
def test_a_bad_row_after_repeats_is_named_and_changes_nothing(kind, column, bad, error, field):
    # the sweep is due: it must not run for a batch that is refused
    s = _fleet(sweep_every=1)
    for k in range(5):  # implicit users without a session: the next sweep forgets them
        d = s.launch(f"gone{k}", "a", now=1.0)
        s.logoff(d.session, now=1.0)
    s._sweep_every = 1
    before = (s.servers().tolist(), s.sessions().tolist(), s.user_ids, list(s._endpoint_names), s.now)
    cols = {"users": [f"new{k % 40}" for k in range(300)], "apps": ["a"] * 300,
            "locations": ["Z1", None, "far"] * 100, "endpoints": [f"pc{k}" if k % 4 else None for k in range(300)],
            "external": [k % 5 == 0 for k in range(300)]}
    cols[column][250] = bad
    with pytest.raises(error) as e:
        s.launch_many(_column(kind, cols["users"]), _column(kind, cols["apps"]),
                      locations=_column(kind, cols["locations"]), endpoints=_column(kind, cols["endpoints"]),
                      external=cols["external"], now=2.0)
    assert e.value.field == field
    assert (s.servers().tolist(), s.sessions().tolist(), s.user_ids, list(s._endpoint_names), s.now) == before


@pytest.mark.parametrize("column", ["users", "apps", "locations", "endpoints"])
def test_a_str_subclass_takes_the_general_path_with_the_same_decisions(column):
    fast, single = _fleet(), _fleet()
    calls = _calls(fast)
    cols = {"users": [f"d{k % 30}" for k in range(90)], "apps": ["a", "b", "c"] * 30,
            "locations": ["Z1", None, "far"] * 30, "endpoints": [f"pc{k % 7}" for k in range(90)]}
    cols[column][80] = _Name(cols[column][80])
    got = fast.launch_many(cols["users"], cols["apps"], locations=cols["locations"], endpoints=cols["endpoints"],
                           now=1.0)
    one = [single.launch(u, a, location=z, endpoint=e, now=1.0) for u, a, z, e in zip(*cols.values())]
    assert calls == [90]
    assert list(got) == one
