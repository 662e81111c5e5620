"""Hostile input through ``usher replay`` (docs/TRACE_FORMAT.md, "Errors" and "Exit status").

Every bad input must give a one-line error naming the file, exit status 2 for input
that cannot be used at all (a file that cannot be read, a bad fleet file, a truncated
or corrupt ``.gz``) or 3 for a trace with some failed lines, and never a traceback.
Within a trace a bad line gives an error line with a documented error class and the
replay goes on.

Tables of known-bad files, then hypothesis strategies of random ones. The command runs
in-process (click's CliRunner with ``catch_exceptions=False``: an exception that escapes
the command fails the test with its traceback).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usher.cli import main

#: the error classes of error lines (docs/TRACE_FORMAT.md, "Errors")
DOCUMENTED = {"TraceError", "TimeWentBackwards", "InvalidArgument", "UnknownServer", "UnknownPool",
              "UnknownApp", "UnknownUser", "UnknownSession", "DuplicateName", "InvalidState",
              "SessionEnded", "ServerBusy"}

FLEET = """\
[[pool]]
name = "P"

[[app]]
name = "a"
pools = ["P"]

[[user]]
id = "u1"
apps = ["a"]
"""
SERVERS = "name,zone,pool,max_sessions\ns1,Z1,P,3\ns2,Z2,P,3\n"
GOOD_LINES = [
    {"t": 1, "op": "launch", "id": "r1", "user": "u1", "app": "a"},
    {"t": 2, "op": "logon_done", "session": "r1"},
    {"t": 3, "op": "telemetry", "server": "s1", "cpu": 20.0},
]
BIG = 10**30  # beyond int64
DEEP = 5000  # nesting deeper than the decoders' stacks


def _lines(*objs) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objs)


def _with_good(*bad) -> bytes:
    """A trace holding good lines around the bad ones (the replay must go on)."""
    return _lines(GOOD_LINES[0], *bad, *GOOD_LINES[1:])


def invoke(tmp_path, trace, fleet=FLEET, servers=SERVERS, extra=()):
    """Run ``usher replay`` on files written to ``tmp_path``. ``trace``, ``fleet``,
    ``servers``: the content (bytes or text), a ``Path`` given as it is (an existing
    file or not), or None (not given). Returns (result, trace path, path of the
    decision lines)."""
    def place(name, content):
        if content is None or isinstance(content, Path):
            return None if content is None else str(content)
        p = tmp_path / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(p)

    trace_path = place("trace.jsonl", trace)
    out = tmp_path / "decisions.jsonl"
    args = ["replay", "--out", str(out), *extra]
    fleet_path = place("fleet.toml", fleet)
    servers_path = place("servers.csv", servers) if fleet_path is not None else None
    if fleet_path is not None:
        args += ["--fleet", fleet_path]
    if servers_path is not None:
        args += ["--servers", servers_path]
    args.append(trace_path)
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    return res, trace_path, out


def assert_no_traceback(res):
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr


def assert_unusable(res, path):
    """Exit 2 with exactly one line on stderr: ``Error: ...`` naming ``path``."""
    assert_no_traceback(res)
    assert res.exit_code == 2, (res.exit_code, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("Error: ") and str(path) in lines[0], lines[0]


def assert_failed_lines(res, path, out, error=None):
    """Exit 3; every error line has a documented class; the summary names the file
    and the first failed line on one line."""
    assert_no_traceback(res)
    assert res.exit_code == 3, (res.exit_code, res.stderr)
    records = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    errors = [r for r in records if "error" in r]
    assert errors, records
    assert {e["error"] for e in errors} <= DOCUMENTED, errors
    for e in errors:
        assert "\n" not in e["message"] and len(e["message"]) <= 1000, e
    if error is not None:
        assert errors[0]["error"] == error, errors[0]
    (summary,) = [x for x in res.stderr.splitlines() if x.startswith("errors ")]
    assert f"first at {path}, line {errors[0]['line']}:" in summary, summary
    return records


# ---------------------------------------------------------------- traces: tables
def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


GOOD = _lines(*GOOD_LINES)
UNUSABLE_TRACES = {
    "truncated gzip": ("trace.jsonl.gz", _gz(GOOD * 50)[:-20]),
    "gzip cut in its header": ("trace.jsonl.gz", _gz(GOOD)[:5]),
    "not gzip at all": ("trace.jsonl.gz", GOOD),
    "corrupt gzip body": ("trace.jsonl.gz", _gz(GOOD)[:12] + b"\xff" * 40 + _gz(GOOD)[52:]),
}


@pytest.mark.parametrize("case", list(UNUSABLE_TRACES))
def test_unreadable_trace_exits_2(tmp_path, case):
    name, data = UNUSABLE_TRACES[case]
    path = tmp_path / name
    path.write_bytes(data)
    res, _, _ = invoke(tmp_path, path)
    assert_unusable(res, path)


def test_missing_trace_and_directory_exit_2(tmp_path):
    for path in (tmp_path / "missing.jsonl", tmp_path / "missing.jsonl.gz", tmp_path):
        res, _, _ = invoke(tmp_path, path)
        assert_unusable(res, path)


def test_truncated_gzip_names_the_line_read_to(tmp_path):
    """A large truncated archive: the lines before the break are replayed and their
    decisions written, and the error says after which line the file broke."""
    import re

    from usher.formats import trace as trace_module

    lines = [{"t": 1 + k // 100, "op": "launch", "id": k, "user": "u1", "app": "a"} for k in range(40_000)]
    text = _lines(*lines)
    path = tmp_path / "big.jsonl.gz"
    data = _gz(text)
    path.write_bytes(data[: len(data) * 3 // 4])
    res, _, out = invoke(tmp_path, path)
    assert_unusable(res, path)
    assert len(text) > 2 * trace_module.BLOCK_BYTES
    read_to = int(re.search(r"after line (\d+):", res.stderr).group(1))
    assert 0 < read_to < len(lines)
    decisions = out.read_text().splitlines()
    assert len(decisions) == read_to and json.loads(decisions[-1])["id"] == read_to - 1


BAD_LINES = {
    "binary junk": (b"\x00\x01\x02\xff\xfe garbage \x80", "TraceError"),
    "not UTF-8": (b'{"t":1,"op":"launch","id":"r\xff\xfe","user":"u1","app":"a"}', "TraceError"),
    "lone surrogate escape": (rb'{"t":1,"op":"launch","id":"\ud800","user":"u1","app":"a"}', "TraceError"),
    "NUL in a line": (b'{"t":1,\x00"op":"logoff","session":"r1"}', "TraceError"),
    "deep array": (b"[" * DEEP + b"]" * DEEP, "TraceError"),
    "deep object": (b'{"a":' * DEEP + b"1" + b"}" * DEEP, "TraceError"),
    "deep unknown field": (b'{"t":1,"op":"logoff","session":"r1","x":' + b"[" * DEEP + b"]" * DEEP + b"}",
                           "TraceError"),
    "deep known field": (b'{"t":1,"op":"logoff","session":' + b"[" * DEEP + b"]" * DEEP + b"}", "TraceError"),
    "huge int cap": ({"t": 1, "op": "licences", "cap": BIG}, "TraceError"),
    "huge negative int": ({"t": 1, "op": "pool", "name": "Q", "logon_tolerance": -BIG}, "TraceError"),
    "huge int id": ({"t": 1, "op": "launch", "id": BIG, "user": "u1", "app": "a"}, "TraceError"),
    "huge int user": ({"t": 1, "op": "launch", "id": "r9", "user": BIG, "app": "a"}, "TraceError"),
    "huge int session": ({"t": 1, "op": "logoff", "session": BIG}, "TraceError"),
    "huge int max_sessions": ({"t": 1, "op": "server", "name": "s9", "zone": "Z1", "pool": "P",
                               "max_sessions": BIG}, "TraceError"),
    "huge int seed": ({"t": 1, "op": "settings", "seed": BIG}, "TraceError"),
    "int t beyond a float": ({"t": 10**400, "op": "logoff", "session": "r1"}, "TraceError"),
    "number beyond a float": (b'{"t":1e400,"op":"logoff","session":"r1"}', "TraceError"),
    "float beyond a float in a value": (b'{"t":1,"op":"telemetry","server":"s1","cpu":-1e999}', "TraceError"),
    "t is text": ({"t": "noon", "op": "logoff", "session": "r1"}, "TraceError"),
    "t is missing": ({"op": "logoff", "session": "r1"}, "TraceError"),
    "op is missing": ({"t": 1, "session": "r1"}, "TraceError"),
    "op is a number": ({"t": 1, "op": 7}, "TraceError"),
    "unknown op": ({"t": 1, "op": "reboot_everything"}, "TraceError"),
    "unknown field": ({"t": 1, "op": "logoff", "session": "r1", "sesion": "r1"}, "TraceError"),
    "missing field": ({"t": 1, "op": "launch", "id": "r9", "user": "u1"}, "TraceError"),
    "wrong type list": ({"t": 1, "op": "app", "name": "z", "pools": "P"}, "TraceError"),
    "wrong type bool": ({"t": 1, "op": "register", "server": "s1", "registered": "yes"}, "TraceError"),
    "id is a float": ({"t": 1, "op": "launch", "id": 1.5, "user": "u1", "app": "a"}, "TraceError"),
    "id is a list": ({"t": 1, "op": "launch", "id": ["r"], "user": "u1", "app": "a"}, "TraceError"),
    "not an object": ([1, 2, 3], "TraceError"),
    "a bare string": ("launch", "TraceError"),
    "two objects on a line": (b'{"t":1,"op":"logoff","session":"r1"}{"t":1}', "TraceError"),
    "a very long line": ({"t": 1, "op": "logoff", "session": "r" * 300_000}, "UnknownSession"),
    "int64 max telemetry": ({"t": 1, "op": "server", "name": "s9", "zone": "Z1", "pool": "P",
                             "max_sessions": 2**63 - 1, "weight": 2**63 - 1}, None),
    "int64 min cap": ({"t": 1, "op": "licences", "cap": -2**63}, None),
    "negative t": ({"t": -5, "op": "logoff", "session": "r1"}, "TimeWentBackwards"),
    "unknown server": ({"t": 1, "op": "power", "server": "nope", "state": "off"}, "UnknownServer"),
    "bad enum": ({"t": 1, "op": "mode", "server": "s1", "mode": "sideways"}, "InvalidArgument"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_bad_line_gives_an_error_line_and_the_replay_goes_on(tmp_path, case):
    bad, error = BAD_LINES[case]
    res, path, out = invoke(tmp_path, _with_good(bad))
    if res.exit_code == 0 and error is None:  # accepted in range (int64 max ...)
        return
    records = assert_failed_lines(res, path, out, error)
    # the lines around the bad one were applied: the launch placed, the logon completed
    assert records[0]["outcome"] == "placed"
    assert sum("error" in r for r in records) == 1, records


def test_empty_and_blank_traces_are_fine(tmp_path):
    for data in (b"", b"\n\n  \n"):
        res, _, out = invoke(tmp_path, data)
        assert res.exit_code == 0 and out.read_text() == "", res.stderr


# ---------------------------------------------------------------- fleet files: tables
UNUSABLE_FLEETS = {
    "empty toml pool name": ("fleet", "[[pool]]\n", "name"),
    "toml syntax": ("fleet", "[[pool]\nname = 'P'\n", "line 1"),
    "toml not UTF-8": ("fleet", b"[[pool]]\nname = '\xff'\n", "UTF-8"),
    "toml huge int": ("fleet", FLEET + "[licences]\ncap = %d\n" % (2**63), "cap"),
    "toml huge int in a pool": ("fleet", FLEET.replace('name = "P"', 'name = "P"\nlogon_tolerance = %d' % 2**64),
                                "logon_tolerance"),
    "toml wrong type": ("fleet", FLEET.replace('pools = ["P"]', 'pools = "P"'), "pools"),
    "toml duplicate pool": ("fleet", FLEET + '[[pool]]\nname = "P"\n', "'P'"),
    "toml unknown table": ("fleet", FLEET + "[frobs]\nx = 1\n", "frobs"),
    "toml table not an array": ("fleet", '[pool]\nname = "P"\n', "pool"),
    "toml deep nesting": ("fleet", "x = " + "[" * DEEP + "]" * DEEP + "\n", "fleet.toml"),
    "toml deep nesting in a field": ("fleet", FLEET.replace('pools = ["P"]', "pools = " + "[" * DEEP + "]" * DEEP),
                                     "fleet.toml"),
    "csv empty": ("servers", "", "header"),
    "csv missing column": ("servers", "name,zone\ns1,Z1\n", "pool"),
    "csv unknown column": ("servers", "name,zone,pool,colour\ns1,Z1,P,red\n", "colour"),
    "csv duplicate column": ("servers", "name,zone,pool,zone\ns1,Z1,P,Z1\n", "zone"),
    "csv bad int": ("servers", "name,zone,pool,max_sessions\ns1,Z1,P,lots\n", "lots"),
    "csv huge int": ("servers", "name,zone,pool,max_sessions\ns1,Z1,P,%d\n" % BIG, str(BIG)),
    "csv huge negative weight": ("servers", "name,zone,pool,weight\ns1,Z1,P,-%d\n" % BIG, "weight"),
    "csv bad bool": ("servers", "name,zone,pool,registered\ns1,Z1,P,perhaps\n", "perhaps"),
    "csv duplicate server": ("servers", "name,zone,pool\ns1,Z1,P\ns1,Z2,P\n", "line 3"),
    "csv unknown pool": ("servers", "name,zone,pool\ns1,Z1,Nope\n", "Nope"),
    "csv missing cell": ("servers", "name,zone,pool\ns1,,P\n", "zone"),
    "csv short row": ("servers", "name,zone,pool\ns1,Z1\n", "line 2"),
    "csv not UTF-8": ("servers", b"name,zone,pool\ns\xff1,Z1,P\n", "UTF-8"),
    "csv NUL": ("servers", b"name,zone,pool\ns1,Z1,\x00P\n", "servers.csv"),
}


@pytest.mark.parametrize("case", list(UNUSABLE_FLEETS))
def test_bad_fleet_files_exit_2(tmp_path, case):
    which, content, named = UNUSABLE_FLEETS[case]
    fleet, servers = (content, SERVERS) if which == "fleet" else (FLEET, content)
    res, _, _ = invoke(tmp_path, GOOD, fleet=fleet, servers=servers)
    path = tmp_path / ("fleet.toml" if which == "fleet" else "servers.csv")
    assert_unusable(res, path)
    assert named in res.stderr, res.stderr


def test_missing_and_directory_fleet_files_exit_2(tmp_path):
    missing = tmp_path / "nofile.toml"
    res, _, _ = invoke(tmp_path, GOOD, fleet=missing, servers=None)
    assert_unusable(res, missing)
    assert "No such file" in res.stderr and "=None" not in res.stderr
    res, _, _ = invoke(tmp_path, GOOD, fleet=tmp_path, servers=None)
    assert_unusable(res, tmp_path)
    res, _, _ = invoke(tmp_path, GOOD, servers=tmp_path / "nofile.csv")
    assert_unusable(res, tmp_path / "nofile.csv")
    folder = tmp_path / "servers.csv"  # a directory with a servers table's name
    folder.mkdir()
    fleet = tmp_path / "f.toml"
    fleet.write_text(FLEET)
    res = CliRunner().invoke(main, ["replay", "--fleet", str(fleet), "--servers", str(folder), "-"],
                             input="", catch_exceptions=False)
    assert_unusable(res, folder)


def test_bad_parquet_servers_exit_2(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    fleet = tmp_path / "f.toml"
    fleet.write_text(FLEET)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not a parquet file")
    typed = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"name": ["s1"], "zone": ["Z1"], "pool": ["P"], "max_sessions": ["lots"]}), typed)
    folder = tmp_path / "folder.parquet"
    folder.mkdir()
    for path, named in ((tmp_path / "missing.parquet", "No such file"), (junk, "not a valid Parquet"),
                        (typed, "row 1, field max_sessions='lots'"), (folder, "Is a directory")):
        res = CliRunner().invoke(main, ["replay", "--fleet", str(fleet), "--servers", str(path), "-"],
                                 input="", catch_exceptions=False)
        assert_unusable(res, path)
        assert named in res.stderr, res.stderr


def test_unwritable_output_exits_2(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_bytes(GOOD)
    out = tmp_path / "no" / "such" / "dir.jsonl"
    res = CliRunner().invoke(main, ["replay", "-o", str(out), str(trace)], catch_exceptions=False)
    assert_unusable(res, out)


# ---------------------------------------------------------------- random input
_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)
_json = st.recursive(_json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=12)
_FIELDS = ["t", "op", "id", "user", "app", "session", "server", "state", "mode", "cap", "name", "pools",
           "zone", "pool", "cpu", "max_sessions", "registered", "apps", "home_zone", "force", "seed"]
_OP_NAMES = ["launch", "logon_done", "logoff", "disconnect", "close_app", "launch_failed", "telemetry",
             "power", "mode", "register", "server", "remove_server", "pool", "app", "user", "settings",
             "licences", "frob"]


@st.composite
def hostile_line(draw) -> bytes:
    """A trace line: a good line with a field changed to any JSON value, an op of
    random fields, or random bytes."""
    kind = draw(st.sampled_from(["mutated", "random op", "bytes", "json"]))
    if kind == "mutated":
        obj = dict(draw(st.sampled_from(GOOD_LINES)))
        obj[draw(st.sampled_from(_FIELDS))] = draw(_json)
    elif kind == "random op":
        obj = {"t": draw(st.one_of(st.integers(0, 10), _json)), "op": draw(st.sampled_from(_OP_NAMES))}
        obj.update(draw(st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=4)))
    elif kind == "bytes":
        return draw(st.binary(max_size=40)).replace(b"\n", b" ")
    else:
        return json.dumps(draw(_json)).encode()
    return json.dumps(obj).encode()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
@given(lines=st.lists(hostile_line(), min_size=1, max_size=6))
def test_random_hostile_traces(tmp_path, lines):
    res, path, out = invoke(tmp_path, _with_good(*lines))
    assert_no_traceback(res)
    assert res.exit_code in (0, 3), res.stderr
    if res.exit_code == 3:
        assert_failed_lines(res, path, out)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
@given(data=st.binary(max_size=300), gz=st.booleans(), cut=st.integers(0, 400))
def test_random_bytes_as_a_trace(tmp_path, data, gz, cut):
    path = tmp_path / ("t.jsonl.gz" if gz else "t.jsonl")
    path.write_bytes(_gz(data)[:cut] if gz else data)
    res, _, out = invoke(tmp_path, path)
    assert_no_traceback(res)
    if res.exit_code == 2:
        assert_unusable(res, path)
    else:
        assert res.exit_code in (0, 3), res.stderr


_cell = st.one_of(st.text(max_size=6).map(lambda s: s.replace("\x00", "")),
                  st.integers(-(2**70), 2**70).map(str), st.sampled_from(["", "on", "off", "true", "drain"]))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
@given(columns=st.lists(st.sampled_from(["name", "zone", "pool", "tags", "max_sessions", "weight", "power",
                                         "registered", "mode", "image", "colour"]), min_size=1, max_size=6),
       rows=st.lists(st.lists(_cell, min_size=1, max_size=6), max_size=4))
def test_random_servers_tables(tmp_path, columns, rows):
    text = ",".join(columns) + "\n" + "".join(",".join(json.dumps(c) for c in row) + "\n" for row in rows)
    res, _, _ = invoke(tmp_path, GOOD, servers=text)
    assert_no_traceback(res)
    if res.exit_code == 2:
        assert_unusable(res, tmp_path / "servers.csv")
    else:
        assert res.exit_code in (0, 3), res.stderr


_toml_value = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.floats(allow_nan=False).map(repr),
    st.text(max_size=6).map(json.dumps), st.sampled_from(["true", "[]", "['P']", "{}", "[1, 'x']"]),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
@given(table=st.sampled_from(["[[pool]]", "[[app]]", "[[user]]", "[[server]]", "[settings]", "[licences]"]),
       fields=st.dictionaries(st.sampled_from(_FIELDS + ["load_balancing", "weight", "logon_tolerance",
                                                         "max_instances_total", "sinbin_seconds"]),
                              _toml_value, max_size=4))
def test_random_fleet_tables(tmp_path, table, fields):
    text = FLEET + f"\n{table}\n" + "".join(f"{k} = {v}\n" for k, v in fields.items())
    res, _, _ = invoke(tmp_path, GOOD, fleet=text)
    assert_no_traceback(res)
    if res.exit_code == 2:
        assert_unusable(res, tmp_path / "fleet.toml")
    else:
        assert res.exit_code in (0, 3), res.stderr
