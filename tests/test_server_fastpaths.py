"""The server-side entry points' fast paths against the general ones.

``set_mode`` / ``set_power`` / ``set_registered`` / ``set_place_last`` resolve a
server inline and ``telemetry_many`` reads names in one compiled pass; ``servers()``
is built a column at a time. Each is checked here against a plain reference written
as the general path is (``parse_enum``, ``_server_index`` one server at a time, the
kernel call under the re-entrant lock; ``servers()`` row by row): the same state
after a good call, the same error class, field and value after a bad one, and the
state unchanged by an error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

import usher
from usher import validate as _v
from usher.core import kernels as _kernels
from usher.core import state as st
from usher.core.codes import Mode, Power, parse_enum
from usher.errors import UsherError

N_SERVERS = 8
#: the header's slots that hold table addresses (they differ between two fleets)
_ADDRESSES = {getattr(st, a) for a in dir(st) if a.startswith("H_") and a.endswith("_ADDR")}


def _fleet() -> usher.Scheduler:
    """8 servers in 2 pools and 2 zones, with tags, an image, sessions, a removed
    server (index 5) and servers off, in drain and unregistered."""
    s = usher.Scheduler(seed=3, clock=lambda: 0.0)
    s.add_pool("p", logon_tolerance=2)
    s.add_pool("q")
    s.add_app("a", ["p", "q"])
    for k in range(N_SERVERS):
        s.add_server(f"s{k}", "z1" if k % 2 else "z0", "p" if k < 5 else "q", tags=["gpu"] * (k % 3 == 0),
                     max_sessions=3, image="w11" if k % 4 == 0 else None)
    for k in range(10):
        s.launch(f"u{k}", "a", now=1.0 + k)
    s.remove_server("s5", force=True, now=20.0)
    s.set_power("s6", "off", now=20.0)
    s.set_mode("s7", "drain", now=20.0)
    s.set_registered("s3", False, now=20.0)
    s.set_place_last(["s2"], True, now=20.0)
    s.telemetry("s1", cpu=50.0, mem=20.0, now=20.0)
    return s


def _state(s: usher.Scheduler):
    """Everything a server operation can change, comparable with ``==``."""
    srv = s._t["server_i"][:, : s.server_field("present").shape[0]].copy()
    srvf = s._t["server_f"][:, : srv.shape[1]].copy()
    header = [v for k, v in enumerate(s._header.tolist()) if k not in _ADDRESSES]
    return (srv.tolist(), srvf.tolist(), header, s._clockv.tolist(),
            s._t["tree"].tolist(), s.sessions().tolist())


def _outcome(call):
    """``("ok", result)`` or ``(error class, field, value)`` of ``call()``."""
    try:
        return ("ok", call())
    except UsherError as e:
        return (type(e), e.field, repr(e.value))


# ---------------------------------------------------------------- references
def _change_reference(s, server, op, value, now):
    if now is not None:
        now = _v.time("now", now)
    with s._locked():
        i = s._server_index(server)
        if s._dirty:
            s._relayout()
        sessions = int(s._t["server_i"][st.SV_SESSIONS, i])
        return s._server_call(i, op, value, now, sessions)


def _set_mode_reference(s, server, mode, now=None):
    mode = parse_enum(Mode, "mode", mode)
    _change_reference(s, server, _kernels.OP_MODE, int(mode), now)


def _set_power_reference(s, server, state, now=None):
    state = parse_enum(Power, "state", state)
    return _change_reference(s, server, _kernels.OP_POWER, int(state), now)


def _set_registered_reference(s, server, registered, now=None):
    registered = _v.flag("registered", registered)
    _change_reference(s, server, _kernels.OP_REGISTERED, int(registered), now)


def _set_place_last_reference(s, servers, flag, now=None):
    if isinstance(servers, (str, int, np.integer)) and not isinstance(servers, (bool, np.bool_)):
        servers = [servers]
    else:
        servers = list(_v.sequence("servers", servers))
    flag = _v.flag("flag", flag)
    if now is not None:
        now = _v.time("now", now)
    with s._locked():
        idx = [s._server_index(x, "servers") for x in servers]
        if now is not None:
            s._time_check(now)
        if s._dirty:
            s._relayout()
        if not idx:
            s._advance_to(now)
        for i in idx:
            s._server_call(i, _kernels.OP_PLACE_LAST, int(flag), now, 0)


def _servers_reference(s) -> np.ndarray:
    """``servers()`` row by row."""
    n = int(s._header[st.H_N_SERVERS])
    srv, srvf = s._t["server_i"], s._t["server_f"]
    idx = np.nonzero(srv[st.SV_PRESENT, :n] != 0)[0]
    out = np.zeros(len(idx), dtype=s.SERVER_DTYPE)
    out["index"] = idx
    out["name"] = [s._server_names[i] for i in idx]
    out["zone"] = [s._zone_names[z] for z in srv[st.SV_ZONE, idx]]
    out["pool"] = [s._pool_names[p] for p in srv[st.SV_POOL, idx]]
    out["tags"] = [frozenset(s._server_tagsets[i]) for i in idx]
    out["image"] = [s._server_images[i] for i in idx]
    for f in ("max_sessions", "weight", "sessions", "pending", "load_index", "picks", "logons"):
        out[f] = srv[st.SERVER_INT_FIELDS.index(f), idx]
    out["registered"] = srv[st.SV_REGISTERED, idx] != 0
    out["sinbinned"] = srv[st.SV_SINBIN, idx] != 0
    out["place_last"] = (srv[st.SV_KEY_BITS, idx] & st.PLACE_LAST_BIT) != 0
    out["slow"] = (srv[st.SV_KEY_BITS, idx] & st.SLOW_BIT) != 0
    out["logon_ewma"] = srvf[st.SF_LOGON_EWMA, idx]
    out["power"] = [str(Power(v)) for v in srv[st.SV_POWER, idx]]
    out["mode"] = [str(Mode(v)) for v in srv[st.SV_MODE, idx]]
    for f in st.SERVER_FLOAT_FIELDS[:4]:
        out[f] = srvf[st.SERVER_FLOAT_FIELDS.index(f), idx]
    return out


def _same_rows(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype
    assert len(a) == len(b)
    for f in a.dtype.names:
        left, right = a[f].tolist(), b[f].tolist()
        same = [x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
                for x, y in zip(left, right)]
        assert all(same), f
        assert [type(x) for x in left] == [type(x) for x in right], f


def _both(fast, reference, *args, **kwargs):
    """``fast`` on one fleet and ``reference`` on another: the same outcome and state."""
    s, r = _fleet(), _fleet()
    before = _state(s)
    got = _outcome(lambda: fast(s, *args, **kwargs))
    want = _outcome(lambda: reference(r, *args, **kwargs))
    assert got == want
    assert _state(s) == _state(r)
    if got[0] != "ok":
        assert _state(s) == before
    _same_rows(s.servers(), _servers_reference(r))
    return got


SERVERS = ["s1", 1, np.int64(1), np.uint8(4), "s5", 5, -1, 99, "", None, True, np.bool_(False), 1.0,
           np.str_("s4"), b"s1", ["s1"]]
NOWS = [None, 30.0, 30, np.float64(30.0), 19.0, math.nan, math.inf, "30", 2e15]


@pytest.mark.parametrize("server", SERVERS, ids=repr)
@pytest.mark.parametrize("mode", ["drain", "DRAIN", "Drain", Mode.MAINTENANCE, 0, 2, 7, True, "free", "x",
                                  None, 1.0])
def test_set_mode_is_the_general_path(server, mode):
    _both(lambda s, *a: s.set_mode(*a), _set_mode_reference, server, mode, 30.0)


@pytest.mark.parametrize("server", SERVERS, ids=repr)
@pytest.mark.parametrize("state", ["off", "on", "BOOTING", Power.OFF, Power.SHUTTING_DOWN, 0, 3, 4, False,
                                   "free", None])
def test_set_power_is_the_general_path(server, state):
    got = _both(lambda s, *a: s.set_power(*a), _set_power_reference, server, state, 30.0)
    if got[0] == "ok":
        assert isinstance(got[1], list)


def test_set_power_off_returns_the_lost_sessions():
    s = _fleet()
    held = s.server("s0")["sessions"]
    assert held > 0
    got = _both(lambda s, *a: s.set_power(*a), _set_power_reference, 0, "off", 30.0)
    assert len(got[1]) == held


@pytest.mark.parametrize("now", NOWS, ids=repr)
@pytest.mark.parametrize("server", ["s2", 2, "nope"], ids=repr)
def test_server_changes_check_time_as_the_general_path(now, server):
    _both(lambda s, *a: s.set_mode(*a), _set_mode_reference, server, "drain", now)
    _both(lambda s, *a: s.set_power(*a), _set_power_reference, server, "off", now)
    _both(lambda s, *a: s.set_registered(*a), _set_registered_reference, server, False, now)


@pytest.mark.parametrize("registered", [True, False, np.bool_(True), 1, "false", None])
@pytest.mark.parametrize("server", ["s3", 3, "s5", 2.0], ids=repr)
def test_set_registered_is_the_general_path(server, registered):
    _both(lambda s, *a: s.set_registered(*a), _set_registered_reference, server, registered, 30.0)


PLACE_LAST_SERVERS = [
    "s1", 4, np.int64(4), [], (), [0, 1, 2], ["s0", 3, np.int64(4), "s7"], [0, "s5"], [0, 5], [0, -1],
    [0, 99], [1, True], [1, None], [1, ""], [1, 1.0], [1, ["s2"]], [1, {"s2"}], np.array([0, 4, 7]),
    np.array([0, 5]), np.array([0, -1]), np.array([0, 2**63], dtype=np.uint64), np.array(["s0", "s1"]),
    np.array([[0, 1]]), np.array([0.0]), np.array(["s0", None], dtype=object), iter(["s1", "s2"]),
    "nope", None, 3.0, {"s1": 1}, b"s1", True,
]


@pytest.mark.parametrize("servers", PLACE_LAST_SERVERS, ids=repr)
@pytest.mark.parametrize("flag", [True, False, 1])
def test_set_place_last_is_the_general_path(servers, flag):
    if isinstance(servers, type(iter([]))):
        _both(lambda s, f: s.set_place_last(iter(["s1", "s2"]), f, 30.0),
              lambda s, f: _set_place_last_reference(s, iter(["s1", "s2"]), f, 30.0), flag)
    else:
        _both(lambda s, *a: s.set_place_last(*a), _set_place_last_reference, servers, flag, 30.0)


@pytest.mark.parametrize("now", NOWS, ids=repr)
@pytest.mark.parametrize("servers", [[], [0, 1], [0, "nope"]], ids=repr)
def test_set_place_last_checks_time_as_the_general_path(servers, now):
    _both(lambda s, *a: s.set_place_last(*a), _set_place_last_reference, servers, True, now)


present = [k for k in range(N_SERVERS) if k != 5]


@settings(max_examples=60, deadline=None)
@given(hst.lists(hst.sampled_from(present + [5, 9, -2]).flatmap(
    lambda k: hst.sampled_from([k, f"s{k}"])), max_size=12), hst.booleans())
def test_set_place_last_lists_all_or_nothing(servers, flag):
    got = _both(lambda s, *a: s.set_place_last(*a), _set_place_last_reference, servers, flag, 30.0)
    bad = [x for x in servers if x in (5, 9, -2, "s5", "s9", "s-2")]
    assert (got[0] == "ok") == (not bad)


# ---------------------------------------------------------------- telemetry_many
def _telemetry_reference(s, servers, cpu=None, mem=None, now=None):
    """telemetry_many with the servers resolved one by one (``_server_index``), and
    index arrays through the general path (the indexed shape's entry turned off)."""
    s._telemetry_indexed = lambda *a: False
    if not (isinstance(servers, np.ndarray) and servers.dtype.kind in "iu"):
        servers = _v.sequence("servers", servers)
        with s._locked():
            idx = np.array([s._server_index(x, f"servers[{k}]") for k, x in enumerate(servers)],
                           dtype=np.int64)
        servers = idx
    return s.telemetry_many(servers, cpu=cpu, mem=mem, now=now)


TELEMETRY_SERVERS = [
    ["s0", "s1", "s2"], ("s4", "s4", "s7"), np.array(["s0", "s7", "s1"]), np.array(["s0", "s7", "s1"], dtype=object),
    ["s0", "s5", "s1"], ["s0", "nope", "s1"], ["s0", None, "s1"], ["s0", "", "s1"], ["s0", 1, "s2"],
    ["s0", True, "s2"], ["s0", ["s1"], "s2"], [0, 1, 2], np.array([0, 1, 2]), np.array([0, 5, 2]),
    np.array([0, 1, 2], dtype=np.uint16), ["s0", np.str_("s1"), "s2"], "s0", None,
]


@pytest.mark.parametrize("servers", TELEMETRY_SERVERS, ids=repr)
@pytest.mark.parametrize("cpu", [None, [10.0, 20.0, 30.0], np.array([10.0, 20.0, 30.0]), np.array([1, 2, 3]),
                                 [10.0, 200.0, 30.0], np.array([10.0, 20.0]), np.array([1.0, 2.0, 3.0, 4.0])[::2],
                                 np.array([[1.0, 2.0, 3.0]]), np.array([1.0, 2.0, 3.0], dtype=">f8"),
                                 [True, False, True], ["1", "2", "3"]], ids=repr)
def test_telemetry_many_is_the_general_path(servers, cpu):
    _both(lambda s, *a, **k: s.telemetry_many(*a, **k), _telemetry_reference, servers, cpu=cpu,
          mem=[1.0, 2.0, 3.0] if cpu is None else None, now=30.0)


_F8 = np.dtype(np.float64)
_BAD_INDEX = [5, 8, -1]  # removed, beyond the table, negative
_BAD_VALUE = [-1.0, 100.5, 1e300, math.nan, math.inf]


@settings(max_examples=200, deadline=None)
@given(rows=hst.lists(hst.tuples(hst.sampled_from([0, 1, 2, 3, 4, 6, 7]), hst.floats(0.0, 100.0),
                                 hst.floats(0.0, 100.0)), min_size=1, max_size=12),
       columns=hst.sampled_from(["cpu", "mem", "both"]),
       layout=hst.sampled_from(["native", "swapped", "strided", "indices swapped"]),
       fault=hst.sampled_from([None, None, None, "index", "value", "now"]),
       pick=hst.integers(0, 99), now=hst.sampled_from([30.0, 20.0, None]))
def test_telemetry_many_indexed_is_the_general_path(rows, columns, layout, fault, pick, now):
    """Index arrays with float64 columns (the indexed entry, whatever the layout
    of the arrays: the entry takes native contiguous ones only) against the
    general path: the same state, or the same error with nothing changed."""
    idx = np.array([r[0] for r in rows], dtype=np.int64)
    cpu = np.array([r[1] for r in rows]) if columns != "mem" else None
    mem = np.array([r[2] for r in rows]) if columns != "cpu" else None
    k = pick % len(rows)
    if fault == "index":
        idx[k] = _BAD_INDEX[pick % 3]
    elif fault == "value":
        (cpu if cpu is not None else mem)[k] = _BAD_VALUE[pick % 5]
    elif fault == "now":
        now = [19.0, math.nan, 30][pick % 3]  # earlier than the clock, not a time, an int
    if layout == "swapped":
        cpu = None if cpu is None else cpu.astype(_F8.newbyteorder())
        mem = None if mem is None else mem.astype(_F8.newbyteorder())
    elif layout == "strided":
        cpu = None if cpu is None else np.repeat(cpu, 2)[::2]
    elif layout == "indices swapped":
        idx = idx.astype(np.dtype(np.int64).newbyteorder())
    _both(lambda s, *a, **k: s.telemetry_many(*a, **k), _telemetry_reference, idx, cpu=cpu, mem=mem, now=now)


def test_telemetry_many_by_name_equals_by_index_and_one_by_one():
    s, r, t = _fleet(), _fleet(), _fleet()
    names = ["s7", "s0", "s3", "s0"]
    cpu, mem = [10.0, 20.0, 30.0, 40.0], [5.0, 6.0, 7.0, 8.0]
    s.telemetry_many(names, cpu=cpu, mem=mem, now=30.0)
    r.telemetry_many(r.server_indices(names), cpu=np.array(cpu), mem=np.array(mem), now=30.0)
    for name, c, m in zip(names, cpu, mem):
        t.telemetry(name, cpu=c, mem=m, now=30.0)
    assert _state(s) == _state(r) == _state(t)


# ---------------------------------------------------------------- server_indices
def test_server_indices():
    s = _fleet()
    names = ["s7", "s0", np.str_("s3"), "s0"]
    idx = s.server_indices(names)
    assert idx.dtype == np.int64 and idx.tolist() == [7, 0, 3, 0]
    assert s.server_indices(np.array(["s1", "s2"])).tolist() == [1, 2]
    assert s.server_indices(np.array(["s1", "s2"], dtype=object)).tolist() == [1, 2]
    assert s.server_indices([]).tolist() == []
    assert s.server_indices(s.server_names()).tolist() == s.servers()["index"].tolist()


@pytest.mark.parametrize("names, error, field", [
    (["s0", "s5"], usher.UnknownServer, "servers[1]"),
    (["s0", "nope", "s9"], usher.UnknownServer, "servers[1]"),
    (["s0", ""], usher.InvalidArgument, "servers[1]"),
    (["s0", None], usher.InvalidArgument, "servers[1]"),
    ([0, "s1"], usher.InvalidArgument, "servers[0]"),
    (np.array([0, 1]), usher.InvalidArgument, "servers[0]"),
    ("s0", usher.InvalidArgument, "servers"),
    (None, usher.InvalidArgument, "servers"),
])
def test_server_indices_errors(names, error, field):
    s = _fleet()
    before = _state(s)
    with pytest.raises(error) as e:
        s.server_indices(names)
    assert e.value.field == field
    assert _state(s) == before


# ---------------------------------------------------------------- servers()
def test_servers_is_the_row_by_row_view():
    s = _fleet()
    _same_rows(s.servers(), _servers_reference(s))
    s.add_server("s8", "z2", "q", tags=["gpu", "hires", "gpu"], image="w12", now=40.0)
    s.remove_server("s0", force=True, now=41.0)
    _same_rows(s.servers(), _servers_reference(s))
    rows = s.servers()
    assert rows[rows["name"] == "s8"][0]["tags"] == frozenset({"gpu", "hires"})


def test_servers_of_every_server_and_of_none():
    s = usher.Scheduler()
    assert len(s.servers()) == 0
    _same_rows(s.servers(), _servers_reference(s))
    s.add_pool("p")
    for k, (power, mode) in enumerate(zip(list(Power) * 3, list(Mode) * 4)):
        s.add_server(f"s{k}", f"z{k % 3}", "p", tags=[f"t{k % 2}"], power=power, mode=mode)
    _same_rows(s.servers(), _servers_reference(s))
    assert s.servers()["power"].tolist() == [str(p) for p in list(Power) * 3]


def test_server_is_its_servers_record():
    s = _fleet()
    rows = s.servers()
    for key in ["s0", "s2", 7, np.int64(3), "s6"]:
        got = s.server(key)
        k = key if not isinstance(key, str) else int(key[1:])
        want = rows[rows["index"] == k][0]
        assert list(got) == list(rows.dtype.names)
        assert got == {f: (want[f].item() if hasattr(want[f], "item") else want[f]) for f in rows.dtype.names}
        assert [type(v) for v in got.values()] == [type(want[f].item() if hasattr(want[f], "item") else want[f])
                                                   for f in rows.dtype.names]
    for bad, error in [("s5", usher.UnknownServer), (5, usher.UnknownServer), (None, usher.InvalidArgument)]:
        with pytest.raises(error) as e:
            s.server(bad)
        assert e.value.field == "server"


def _sessions_reference(s) -> np.ndarray:
    """``sessions()`` row by row."""
    ses, sesf = s._t["session_i"], s._t["session_f"]
    idx = np.nonzero(ses[st.SE_STATE] != 0)[0]
    out = np.zeros(len(idx), dtype=s.SESSION_DTYPE)
    out["id"] = (ses[st.SE_GEN, idx] << 32) | idx
    out["user"] = [s._user_names[u] for u in ses[st.SE_USER, idx]]
    out["server"] = [s._server_names[i] for i in ses[st.SE_SERVER, idx]]
    out["pool"] = [s._pool_names[p] for p in ses[st.SE_POOL, idx]]
    out["state"] = [str(usher.SessionState(v)) for v in ses[st.SE_STATE, idx]]
    out["endpoint"] = [None if e < 0 else s._endpoint_names[e] for e in ses[st.SE_ENDPOINT, idx]]
    out["apps"] = [s._session_apps(x) for x in idx]
    out["t_launch"] = sesf[st.SEF_T_LAUNCH, idx]
    out["t_state"] = sesf[st.SEF_T_STATE, idx]
    out["pending"] = ses[st.SE_PENDING, idx] != 0
    return out


def test_sessions_and_session_are_the_row_by_row_view():
    s = _fleet()
    s.add_app("b", ["p"])
    d = s.launch("u1", "b", endpoint="pc-7", now=40.0)
    s.launch("v1", "a", endpoint="pc-8", now=41.0)
    s.logon_complete(d.session, now=42.0)
    s.disconnect(d.session, now=43.0)
    for k in range(40):  # more endpoints and users than sessions of one record: both ways of naming
        s.add_user(f"w{k}")
        s.launch(f"x{k}", "b", endpoint=f"pc-{100 + k}", now=43.0)
    rows = s.sessions()
    _same_rows(rows, _sessions_reference(s))
    assert set(rows["state"].tolist()) >= {"launching", "disconnected"}
    assert {"pc-7", None} <= set(rows["endpoint"].tolist())
    for row in rows:
        one = s.session(int(row["id"]))
        assert list(one) == list(rows.dtype.names)
        assert one == {f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in rows.dtype.names}
    ended = int(rows["id"][0])
    s.logoff(ended, now=44.0)
    with pytest.raises(usher.SessionEnded):
        s.session(ended)
    with pytest.raises(usher.UnknownSession):
        s.session(2**40 + 5)
    _same_rows(s.sessions(), _sessions_reference(s))
