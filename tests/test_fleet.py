"""Fleet files (docs/TRACE_FORMAT.md, "Fleet files"): TOML configuration plus a
CSV/Parquet servers table. Round trips (files -> scheduler -> files -> scheduler
give the same configuration) and errors that name the file, the line or row, the
field and the value.
"""

from __future__ import annotations

import os
import sys

import pytest

import usher
from usher.formats.fleet import FleetFileError, load_fleet, save_fleet

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "docs", "examples")
FLEET = os.path.join(EXAMPLES, "fleet.toml")
SERVERS = os.path.join(EXAMPLES, "servers.csv")

SERVER_CONFIG = ("name", "zone", "pool", "max_sessions", "weight", "power", "registered", "mode", "image")


def config_of(s: usher.Scheduler) -> dict:
    """Everything fleet files carry, in comparable form."""
    servers = [
        {**{f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in SERVER_CONFIG},
         "tags": sorted(row["tags"])}
        for row in s.servers()
    ]
    return dict(
        settings=(s.enforce_entitlement, s.seed, s.sinbin_seconds, s.pending_timeout),
        licences=s.licence_cap,
        pools=[s.pool_config(p) for p in s.pool_names],
        apps=[s.app_config(a) for a in s.app_names],
        users=[s.user_config(u) for u in s.user_ids],
        servers=servers,
    )


def rich_scheduler() -> usher.Scheduler:
    s = usher.Scheduler(enforce_entitlement=True, seed=11, licences=50, sinbin_seconds=30.0,
                        pending_timeout=90.0)
    s.add_pool("A", load_balancing="vertical", zone_preference=("user_home",), failover=False,
               session_reconnection="same_endpoint", reconnect_in_maintenance=False,
               external_access=True, logon_tolerance=0, tolerance_is_hard=True,
               max_sessions_per_user=2, load_rules=("sessions", "cpu", "memory", "disk_queue", "custom"),
               cpu_full=80.0, memory_full=70.5, disk_queue_full=4.0)
    s.add_pool("B", zone_preference=())
    s.add_app("x", ["A", "B"], home_zone="Z9", tag_restriction=["gpu", "big"], max_instances_total=7,
              max_instances_per_user=1)
    s.add_app("y", ["B"], tag_restriction="gpu")
    s.add_app("z", ["B"])
    s.add_user("u1", home_zone="Z1", apps=["x", "y"])
    s.add_user("u2")
    s.add_user("42", home_zone="Z2", apps=["z", "not-yet-published"])
    s.add_server("a1", "Z1", "A", tags=("gpu", "big"), max_sessions=3, weight=250, image="img v1, \"q\"")
    s.add_server("a2", "Z2", "A", power="off", registered=False, mode="maintenance")
    s.add_server("b1", "Z1", "B", tags=("gpu",), mode="drain", power="booting")
    s.add_server("b2", "Z3", "B", max_sessions=1, weight=1, power="shutting_down")
    return s


# ---------------------------------------------------------------- round trips
def test_examples_load():
    s = usher.Scheduler.from_files(FLEET, SERVERS)
    assert s.pool_names == ["DPI", "Imaging", "Remote"]
    assert s.licence_cap == 24000 and s.seed == 7 and s.enforce_entitlement
    assert s.pool_config("DPI")["max_sessions_per_user"] == 1
    assert s.pool_config("Imaging")["load_rules"] == ["sessions", "cpu"]
    assert s.app_config("pacs")["tag_restriction"] == "imaging"
    assert s.user_config("u1")["apps"] == ["dpi", "pacs"]
    img = s.server("img-01")
    assert img["tags"] == frozenset({"imaging", "gpu"}) and img["max_sessions"] == 10
    assert s.server("img-02")["mode"] == "drain"
    assert s.server("dpi-03")["weight"] == 150 and s.server("dpi-03")["image"] == "w2022-v1"


@pytest.mark.parametrize("servers", ["servers.csv", "servers.parquet", None])
def test_round_trip(tmp_path, servers):
    s = rich_scheduler()
    cfg = tmp_path / "fleet.toml"
    srv = None if servers is None else tmp_path / servers
    s.to_files(cfg, srv)
    t = usher.Scheduler.from_files(cfg, srv)
    assert config_of(t) == config_of(s)
    # files -> scheduler -> files: the same bytes
    cfg2, srv2 = tmp_path / "again.toml", None if srv is None else tmp_path / ("again" + srv.suffix)
    t.to_files(cfg2, srv2)
    assert cfg2.read_text() == cfg.read_text()
    if srv is not None and srv.suffix == ".csv":
        assert srv2.read_text() == srv.read_text()


def test_round_trip_of_examples(tmp_path):
    s = usher.Scheduler.from_files(FLEET, SERVERS)
    s.to_files(tmp_path / "f.toml", tmp_path / "s.csv")
    assert config_of(usher.Scheduler.from_files(tmp_path / "f.toml", tmp_path / "s.csv")) == config_of(s)


def test_round_trip_keeps_server_states_not_sessions(tmp_path):
    s = usher.Scheduler.from_files(FLEET, SERVERS)
    s.launch("u1", "dpi", location="Z1", now=1.0)
    s.set_power("dpi-01", "off", now=2.0)
    s.telemetry("img-01", cpu=50.0, now=3.0)
    s.to_files(tmp_path / "f.toml", tmp_path / "s.csv")
    t = usher.Scheduler.from_files(tmp_path / "f.toml", tmp_path / "s.csv")
    assert t.server("dpi-01")["power"] == "off"
    assert t.live_sessions == 0 and t.server("img-01")["cpu"] == 0.0


def test_same_decisions_after_round_trip(tmp_path):
    s = usher.Scheduler.from_files(FLEET, SERVERS)
    s.to_files(tmp_path / "f.toml", tmp_path / "s.csv")
    t = usher.Scheduler.from_files(tmp_path / "f.toml", tmp_path / "s.csv")
    for k in range(40):
        user, app = ("u1", "dpi") if k % 2 else ("u2", "dpi")
        a = s.launch(user, app, location="Z1", endpoint=f"e{k}", now=float(k))
        b = t.launch(user, app, location="Z1", endpoint=f"e{k}", now=float(k))
        assert a.to_dict() == b.to_dict()


def test_kwargs_win_over_settings():
    s = usher.Scheduler.from_files(FLEET, SERVERS, seed=3, licences=None)
    assert s.seed == 3 and s.licence_cap is None and s.enforce_entitlement


def test_config_only_and_defaults(tmp_path):
    (tmp_path / "c.toml").write_text('[[pool]]\nname = "p"\n[[app]]\nname = "a"\npools = ["p"]\n'
                                     '[[server]]\nname = "s"\nzone = "z"\npool = "p"\n')
    s = usher.Scheduler.from_files(tmp_path / "c.toml")
    assert s.licence_cap is None and not s.enforce_entitlement and s.seed == 0
    ref = usher.Scheduler()
    ref.add_pool("p")
    assert s.pool_config("p") == ref.pool_config("p")
    assert s.server("s")["max_sessions"] == 250 and s.server("s")["power"] == "on"


def test_csv_blank_cells_take_defaults(tmp_path):
    (tmp_path / "s.csv").write_text("name,zone,pool,max_sessions,registered\ns1,Z1,DPI,,\n\ns2,Z1,DPI,5,no\n")
    s = usher.Scheduler.from_files(FLEET, tmp_path / "s.csv")
    assert s.server("s1")["max_sessions"] == 250 and s.server("s1")["registered"] is True
    assert s.server("s2")["max_sessions"] == 5 and s.server("s2")["registered"] is False


# ---------------------------------------------------------------- errors
def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = '[[pool]]\nname = "p"\n\n[[app]]\nname = "a"\npools = ["p"]\n'


@pytest.mark.parametrize(
    "text, line, field, words",
    [
        ('[[pool]]\nname = "p"\nfailover = tru\n', 3, None, "not valid TOML"),
        ('[pools]\nname = "p"\n', 1, "pools", "unknown table"),
        (GOOD + '\n[[pool]]\nname = "q"\nfailovr = true\n', 10, "failovr", "unknown field"),
        (GOOD + '\n[[pool]]\nname = "q"\nlogon_tolerance = "2"\n', 10, "logon_tolerance", "Expected `int"),
        (GOOD + '\n[[pool]]\nname = "q"\nload_balancing = "diagonal"\n', 10, "load_balancing", "load_balancing"),
        (GOOD + '\n[[pool]]\nlogon_tolerance = 2\n', 8, "name", "missing"),
        (GOOD + '\n[[pool]]\nname = "p"\n', 9, "name", "exists"),
        (GOOD + '\n[[app]]\nname = "b"\npools = ["p", "nope"]\n', 10, "pools", "no such pool"),
        (GOOD + '\n[[user]]\nid = "u"\nhome_zone = ""\n', 10, "home_zone", "non-empty"),
        ('[settings]\nseed = -1\n', 2, "seed", "seed"),
        ('[licences]\ncap = -5\n', 2, "cap", "cap"),
        ('[settings]\nseeds = 1\n', 2, "seeds", "unknown field"),
        ('pool = 3\n', 1, "pool", "array of tables"),
        (GOOD + '\n[[server]]\nname = "s"\nzone = "z"\npool = "p"\nmax_sessions = 0\n', 12, "max_sessions", "must be in [1"),
    ],
)
def test_toml_errors_name_file_line_field(tmp_path, text, line, field, words):
    path = write(tmp_path, "fleet.toml", text)
    with pytest.raises(FleetFileError) as e:
        usher.Scheduler.from_files(path)
    err = e.value
    assert isinstance(err, usher.InvalidArgument) and isinstance(err, usher.UsherError)
    msg = str(err)
    assert str(path) in msg and f"line {line}" in msg, msg
    if field is not None:
        assert err.field == field and field in msg, msg
    assert words in msg, msg


def test_toml_error_names_value(tmp_path):
    path = write(tmp_path, "fleet.toml", '[[pool]]\nname = "q"\nload_balancing = "diagonal"\n')
    with pytest.raises(FleetFileError) as e:
        load_fleet(path)
    assert e.value.value == "diagonal" and "'diagonal'" in str(e.value)


@pytest.mark.parametrize(
    "text, where, field, words",
    [
        ("name,zone,pool,colour\ns1,Z1,DPI,red\n", "line 1", "column", "unknown column"),
        ("name,zone\ns1,Z1\n", "line 1", "column", "missing"),
        ("name,zone,pool,pool\ns1,Z1,DPI,DPI\n", "line 1", "column", "twice"),
        ("name,zone,pool,max_sessions\ns1,Z1,DPI,20\ns2,Z1,DPI,lots\n", "line 3", "max_sessions", "integer"),
        ("name,zone,pool,registered\ns1,Z1,DPI,perhaps\n", "line 2", "registered", "true or false"),
        ("name,zone,pool\ns1,Z1,Nope\n", "line 2", "pool", "no such pool"),
        ("name,zone,pool\ns1,Z1,DPI\ns1,Z2,DPI\n", "line 3", "name", "exists"),
        ("name,zone,pool\n,Z1,DPI\n", "line 2", "name", "required"),
        ("name,zone,pool,power\ns1,Z1,DPI,sleepy\n", "line 2", "power", "power"),
        ("name,zone,pool,weight\ns1,Z1,DPI,0\n", "line 2", "weight", "weight"),
        ("name,zone,pool\ns1,Z1,DPI,extra\n", "line 2", None, "cells"),
        ("", "line 1", None, "header"),
    ],
)
def test_csv_errors_name_file_line_field(tmp_path, text, where, field, words):
    path = write(tmp_path, "servers.csv", text)
    with pytest.raises(FleetFileError) as e:
        usher.Scheduler.from_files(FLEET, path)
    msg = str(e.value)
    assert str(path) in msg and where in msg, msg
    if field is not None:
        assert e.value.field == field, msg
    assert words in msg, msg


def test_missing_files_and_bad_suffix(tmp_path):
    with pytest.raises(FleetFileError, match="cannot read"):
        usher.Scheduler.from_files(tmp_path / "nope.toml")
    with pytest.raises(FleetFileError, match="cannot read"):
        usher.Scheduler.from_files(FLEET, tmp_path / "nope.csv")
    bad = write(tmp_path, "servers.xlsx", "x")
    with pytest.raises(FleetFileError, match=r"\.csv or \.parquet"):
        usher.Scheduler.from_files(FLEET, bad)


def test_parquet_without_pyarrow_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "servers.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(FleetFileError) as e:
        usher.Scheduler.from_files(FLEET, path)
    assert "pyarrow" in str(e.value) and str(path) in str(e.value)
    with pytest.raises(FleetFileError, match="pyarrow"):
        usher.Scheduler.from_files(FLEET, SERVERS).to_files(tmp_path / "f.toml", path)


def test_parquet_errors_name_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "servers.parquet"
    pq.write_table(pa.table({"name": ["s1", "s2"], "zone": ["Z1", "Z1"], "pool": ["DPI", "DPI"],
                             "max_sessions": [10, -1]}), path)
    with pytest.raises(FleetFileError) as e:
        usher.Scheduler.from_files(FLEET, path)
    assert "row 2" in str(e.value) and e.value.field == "max_sessions" and e.value.value == -1
    pq.write_table(pa.table({"name": ["s1"], "zone": ["Z1"], "pool": ["DPI"], "tags": [["a", "b"]]}), path)
    s = usher.Scheduler.from_files(FLEET, path)
    assert s.server("s1")["tags"] == frozenset({"a", "b"})


def test_save_refuses_what_cannot_round_trip(tmp_path):
    s = usher.Scheduler()
    s.add_pool("p")
    s.add_server("s", "z", "p", tags=("a;b",))
    with pytest.raises(usher.InvalidArgument, match="tags"):
        save_fleet(s, tmp_path / "f.toml", tmp_path / "s.csv")
    assert not (tmp_path / "f.toml").exists()


def test_error_pickles():
    import pickle

    e = FleetFileError("f.toml", "line 3", "seed", -1, "must be >= 0")
    f = pickle.loads(pickle.dumps(e))
    assert str(f) == str(e) and f.path == "f.toml" and f.location == "line 3"
