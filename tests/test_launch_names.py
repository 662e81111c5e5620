"""A single ``launch`` finds its app and location by characters (``_engine.NameIndex``) as
the dicts find them: names decoded apart from the registered ones (new strs, as a broker
decodes each request), short and long, ASCII and not, known and unknown, apps and zones
added after the first launch; and when a dict holds a key the index cannot speak for (a
str subclass), the dict answers. Each scheduler is compared with one whose index always
leaves the answer to the dict, decision for decision; bad names raise the same typed
error, naming the field, and change nothing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import usher

_APPS = ("a", "word", "wore", "an-app-name-of-40-characters-or-so-long!", "café")
_ZONES = ("Z1", "Z2", "zone-two", "a-zone-name-longer-than-fifteen", "zöne")


class _Name(str):
    """A str subclass: a key of this type makes the index leave every answer to the dict."""


def _fleet(dict_only=False):
    s = usher.Scheduler(seed=5)
    s.add_pool("P", zone_preference=("user_location", "user_home"), max_sessions_per_user=4)
    for a in _APPS:
        s.add_app(a, ["P"])
    for i in range(10):
        s.add_server(f"s{i}", _ZONES[i % len(_ZONES)], "P", max_sessions=30, now=0.0)
    for u in range(20):
        s.add_user(f"u{u}", home_zone=_ZONES[u % len(_ZONES)], apps=_APPS)
    if dict_only:  # an alias no launch names, of a type the index cannot speak for
        s._apps[_Name("alias-app")] = 0
        s._zones[_Name("alias-zone")] = 0
    return s


def _apart(name):
    return name.encode().decode() if isinstance(name, str) else name


_location = st.one_of(st.none(), st.sampled_from(_ZONES + ("nowhere", "a-place-no-server-is-in")))


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(0, 19), st.sampled_from(_APPS), _location, st.booleans(), st.booleans()),
                min_size=1, max_size=60))
def test_names_found_by_characters_equal_the_dicts_answers(launches):
    fast, slow = _fleet(), _fleet(dict_only=True)
    t = 1.0
    for u, app, loc, decoded, log_off in launches:
        a, z = (_apart(app), _apart(loc)) if decoded else (app, loc)
        got = fast.launch(f"u{u}", a, location=z, now=t)
        want = slow.launch(f"u{u}", app, location=loc, now=t)
        assert got == want and (got.zone, got.pool, got.zone_choice) == (want.zone, want.pool, want.zone_choice)
        if log_off and got.placed:
            fast.logoff(got.session, now=t)
            slow.logoff(want.session, now=t)
        t += 1.0
    assert fast.servers().tolist() == slow.servers().tolist()
    assert fast.sessions().tolist() == slow.sessions().tolist()


def test_a_key_of_a_str_subclass_is_found_through_the_dict():
    s = _fleet()
    s._apps[_Name("sub")] = s._apps["word"]  # before the first launch builds the index
    assert s.launch("u1", _apart("sub"), now=1.0).placed
    assert s.launch("u2", _apart("word"), location=_apart("Z1"), now=1.0).placed


def test_apps_and_zones_added_after_the_first_launch_are_found():
    s = _fleet()
    assert s.launch("u1", "a", location="Z1", now=1.0).placed
    s.add_app("late", ["P"])
    s.add_server("s-late", "Z9", "P", max_sessions=5, now=1.0)
    d = s.launch("u2", _apart("late"), location=_apart("Z9"), now=2.0)
    assert d.placed and d.zone == "Z9" and d.server == "s-late"


@pytest.mark.parametrize(
    "app, location, error, field",
    [
        ("nope", None, usher.UnknownApp, "app"),
        ("", None, usher.UnknownApp, "app"),
        ("an-app-name-nobody-registered-at-all", None, usher.UnknownApp, "app"),
        (5, None, usher.InvalidArgument, "app"),
        ("a", "", usher.InvalidArgument, "location"),
        ("a", 5, usher.InvalidArgument, "location"),
    ],
)
def test_bad_names_raise_naming_the_field_and_change_nothing(app, location, error, field):
    s = _fleet()
    s.launch("u0", "a", now=1.0)  # the index built
    before = (s.servers().tolist(), s.sessions().tolist(), s.user_ids, s.now)
    with pytest.raises(error) as e:
        s.launch("u1", _apart(app), location=_apart(location), now=2.0)
    assert e.value.field == field
    assert (s.servers().tolist(), s.sessions().tolist(), s.user_ids, s.now) == before


def test_names_of_the_same_length_as_a_key_are_told_apart():
    # every one- and two-character name (a home slot next to "a", "Z1" or "Z2" among them)
    s, slow = _fleet(), _fleet(dict_only=True)
    names = [chr(c) for c in range(33, 127)] + [f"{x}{y}" for x in "YZa" for y in "0123456789"]
    for k, name in enumerate(names):
        if name in _APPS:
            assert s.launch(f"u{k % 20}", _apart(name), now=1.0) == slow.launch(f"u{k % 20}", name, now=1.0)
        else:
            with pytest.raises(usher.UnknownApp):
                s.launch("u1", _apart(name), now=1.0)
        got = s.launch(f"u{k % 20}", "a", location=_apart(name), now=1.0)
        want = slow.launch(f"u{k % 20}", "a", location=name, now=1.0)
        assert got == want and got.zone_choice == want.zone_choice
        for d, x in ((got, s), (want, slow)):
            if d.placed:
                x.logoff(d.session, now=1.0)
