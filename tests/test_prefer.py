"""Place-last: a placement preference, never a filter.

Properties over random single-zone fleets: the flags never change whether a launch
is placed or why it is rejected, a placement lands on a marked server only when no
unmarked candidate of the same standing (within tolerance, not sin-binned) is left,
and marking every server or none gives the very decisions of an unmarked run.
Plain tests pin the API edge (validation, state unchanged on error), the trace ops
and the explanation.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import usher
from usher.errors import InvalidArgument, UnknownServer
from usher.formats.dispatch import apply_op


def _fleet(caps, powers, modes, tolerance, seed):
    s = usher.Scheduler(seed=seed, clock=lambda: 0.0)
    s.add_pool("p", logon_tolerance=tolerance)
    s.add_app("a", ["p"])
    for k, (cap, power, mode) in enumerate(zip(caps, powers, modes)):
        s.add_server(f"s{k}", "z", "p", max_sessions=cap, power=power, mode=mode)
    return s


fleets = st.integers(2, 7).flatmap(lambda n: st.tuples(
    st.lists(st.integers(1, 4), min_size=n, max_size=n),
    st.lists(st.sampled_from(["on", "on", "on", "off"]), min_size=n, max_size=n),
    st.lists(st.sampled_from(["enabled", "enabled", "enabled", "drain"]), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n),
    st.integers(0, 3),
    st.integers(0, 2**31 - 1),
))


@settings(max_examples=60, deadline=None)
@given(fleets, st.integers(1, 20))
def test_flags_change_only_the_order_among_eligible_servers(fleet, n):
    caps, powers, modes, flags, tolerance, seed = fleet
    plain = _fleet(caps, powers, modes, tolerance, seed)
    marked = _fleet(caps, powers, modes, tolerance, seed)
    marked.set_place_last([f"s{k}" for k, f in enumerate(flags) if f], True)
    for k in range(n):
        rows = {r["name"]: r for r in marked.servers()}
        eligible = {name for name, r in rows.items() if r["power"] == "on" and r["mode"] == "enabled"
                    and r["sessions"] < r["max_sessions"]}
        a = plain.launch(f"u{k}", "a", now=float(k))
        b = marked.launch(f"u{k}", "a", now=float(k))
        assert (a.outcome, a.reason) == (b.outcome, b.reason)
        if b.server is None:
            continue
        assert b.server in eligible
        within = {x for x in eligible if rows[x]["pending"] < tolerance} or eligible
        unmarked = {x for x in within if not rows[x]["place_last"]}
        if rows[b.server]["place_last"]:
            assert not unmarked, (b.server, unmarked)
        else:
            assert b.server in within
    assert plain.servers()["sessions"].sum() == marked.servers()["sessions"].sum()


@settings(max_examples=30, deadline=None)
@given(fleets, st.integers(1, 15), st.booleans())
def test_uniform_flags_decide_as_no_flags(fleet, n, everyone):
    caps, powers, modes, _, tolerance, seed = fleet
    plain = _fleet(caps, powers, modes, tolerance, seed)
    marked = _fleet(caps, powers, modes, tolerance, seed)
    if everyone:
        marked.set_place_last(marked.server_names(), True)
    else:
        marked.set_place_last(marked.server_names(), True)
        marked.set_place_last(marked.server_names(), False)
    for k in range(n):
        a = plain.launch(f"u{k}", "a", now=float(k))
        b = marked.launch(f"u{k}", "a", now=float(k))
        assert (a.outcome, a.reason, a.server, a.load_index) == (b.outcome, b.reason, b.server, b.load_index)


def test_marked_server_is_taken_last_and_explained():
    s = _fleet([2, 2, 2], ["on"] * 3, ["enabled"] * 3, 5, 1)
    s.set_place_last(["s0", "s2"], True)
    assert s.launch("u0", "a").server == "s1"
    assert s.launch("u1", "a").server == "s1"
    assert s.launch("u2", "a").server in ("s0", "s2")  # s1 is full: the marked ones now
    d = s.launch("u3", "a", explain=True)
    pool = d.explanation.pools[0]
    assert pool["funnel"]["place_last"] == 2
    assert all(c["place_last"] for c in pool["top"])
    rows = {r["name"]: bool(r["place_last"]) for r in s.servers()}
    assert rows == {"s0": True, "s1": False, "s2": True}


def test_place_last_never_admits_an_ineligible_server():
    s = _fleet([1, 1], ["on", "off"], ["enabled", "enabled"], 5, 1)
    s.set_place_last("s1", True)
    assert s.launch("u0", "a").server == "s0"
    assert s.launch("u1", "a").server is None  # s1 is off: marked or not, not a candidate


def test_bad_arguments_change_nothing():
    s = _fleet([1, 1], ["on", "on"], ["enabled", "enabled"], 5, 1)
    before = s.servers().tolist()
    with pytest.raises(UnknownServer):
        s.set_place_last(["s0", "nope"], True)
    with pytest.raises(InvalidArgument):
        s.set_place_last(["s0"], 1)
    with pytest.raises(InvalidArgument):
        s.set_place_last(42.0, True)
    with pytest.raises(InvalidArgument):
        s.set_image("s0", "")
    with pytest.raises(UnknownServer):
        s.set_image("nope", "img")
    assert s.servers().tolist() == before


def test_trace_ops_apply_both_methods():
    s = _fleet([1, 1], ["on", "on"], ["enabled", "enabled"], 5, 1)
    apply_op(s, {"op": "place_last", "t": 1.0, "servers": ["s0"], "flag": True})
    apply_op(s, {"op": "image", "t": 2.0, "server": "s1", "image": "v2"})
    rows = {r["name"]: (bool(r["place_last"]), r["image"]) for r in s.servers()}
    assert rows == {"s0": (True, None), "s1": (False, "v2")}
    assert s.now == 2.0


def test_place_last_survives_a_copy():
    s = _fleet([1, 1], ["on", "on"], ["enabled", "enabled"], 5, 1)
    s.set_place_last("s0", True)
    s.set_image("s0", "v2")
    c = s.copy()
    assert c.server("s0")["place_last"] and c.server("s0")["image"] == "v2"
    assert c.launch("u0", "a").server == "s1"
