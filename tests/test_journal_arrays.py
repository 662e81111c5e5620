"""usher.journal: an array of ops through one ``Journal.submit`` is the same as its
ops submitted one by one.

The oracle is the one-op path: the same ops, each in its own submit, must give the
same decision and error lines (line numbers aside: they count the items of a
request), the same state and a byte-identical journal, whatever the cut into arrays,
typed op Structs (a well-formed body) or dicts, with or without explanations."""

from __future__ import annotations

import os
import random

import msgspec
import pytest

import usher.journal as journal
from journal_workload import PRELUDE, state_of, stream
from usher.formats.trace import LaunchDecision, LineError, as_op
from usher.service import opsbody


def storm(seed: int, n: int, t0: float, prefix: str):
    """A logon storm: ``n`` launches in a row (a duplicate id, a time that goes back,
    an unknown app and a bad op among them), then the logoffs of them all."""
    rng = random.Random(seed)
    ops, t = [], t0
    for k in range(n):
        t += rng.choice((0.0, 0.001, 0.01))
        ops.append({"t": t, "op": "launch", "id": f"{prefix}{k}", "user": f"u{rng.randrange(7)}",
                    "app": rng.choice("aab"), "location": rng.choice((None, "Z0", "Z1"))})
    ops[n // 5]["id"] = f"{prefix}0"  # a launch id already taken
    ops[n // 4]["t"] = t0 - 1.0  # back in time
    ops[n // 3]["app"] = "no-such-app"
    ops.insert(n // 2, {"t": ops[n // 2]["t"], "op": "launch", "id": 1.5})  # not an op
    ops += [{"t": t + 1.0 + k * 0.001, "op": "logoff", "session": f"{prefix}{k}"} for k in range(n)]
    return ops


def workload(seed: int):
    return [*PRELUDE, *stream(seed, 400), *storm(seed, 300, 1000.0, "s"), *stream(seed + 1, 200, 1500.0, "q")]


def typed(op):
    """The item a well-formed body gives (an op Struct), or the dict itself for a bad op."""
    try:
        return as_op(op)
    except Exception:
        return op


def without_line(o):
    """An output line with its line number (which counts a request's items) left out."""
    return msgspec.structs.replace(o, line=0) if o.__class__ is LineError else o


def cuts(rng, n):
    """Random array boundaries over ``n`` items: single ops, short and long arrays."""
    k, out = 0, []
    while k < n:
        m = min(n - k, rng.choice((1, 2, 7, 64, 300, 1200)))
        out.append((k, k + m))
        k += m
    return out


def run(directory, ops, bounds, explain, as_items):
    """Submit ``ops`` in the arrays ``bounds``; returns (lines without line numbers, state, journal bytes)."""
    out = []
    with journal.open(directory, fsync="off", snapshot_every=None) as j:
        for a, b in bounds:
            items = [as_items(op) for op in ops[a:b]]
            _, outputs, ticket = j.submit(items, explain=explain)
            j.wait(ticket)
            assert len(outputs) == b - a
            every_launch = all(o.__class__ is LaunchDecision for o in outputs)
            if j.answer_lines is None:  # the answer is then encoded by the service itself
                assert explain or not every_launch
            else:  # the journal's encoding of the decision lines is exactly the answer
                assert every_launch and not explain
                assert j.answer_lines == (ticket, msgspec.json.Encoder().encode_lines(outputs))
            for k, o in enumerate(outputs):
                assert o.__class__ is not LineError or o.line == k + 1
                out.append(None if o is None else msgspec.json.encode(without_line(o)))
        state = state_of(j.replayer)
    data = b"".join(open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))
                    if name.startswith("journal-"))
    return out, state, data


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("explain", [False, True])
def test_arrays_equal_one_op_per_submit(tmp_path, seed, explain):
    ops = workload(seed)
    one = run(tmp_path / "one", ops, [(k, k + 1) for k in range(len(ops))], explain, dict)
    lines, state, data = one
    assert sum(o is not None and b'"error"' in o for o in lines) >= 6  # the bad ops were met
    assert sum(o is not None and b'"placed"' in o for o in lines) >= 20
    assert sum(o is not None and b'"rejected"' in o for o in lines) >= 50
    rng = random.Random(seed)
    for name, as_items in (("typed", typed), ("dicts", dict)):
        arrays = run(tmp_path / name, ops, cuts(rng, len(ops)), explain, as_items)
        assert arrays[0] == lines, name
        assert arrays[1] == state, name
        assert arrays[2] == data, name


def test_one_array_of_launches_equals_one_by_one(tmp_path):
    """The service's case: an array of well-formed launches (no ``t``: the clock's),
    then an array of their logoffs, as the body decoder gives them."""
    body = msgspec.json.encode([{"op": "launch", "id": f"x{k}", "user": f"u{k % 7}", "app": "ab"[k % 2]}
                                for k in range(500)])
    offs = msgspec.json.encode([{"op": "logoff", "session": f"x{k}"} for k in range(0, 500, 3)])
    results = []
    for name, split in (("array", False), ("one", True)):
        with journal.open(tmp_path / name, fsync="off", snapshot_every=None) as j:
            j.apply(PRELUDE)
            outs = []
            for raw in (body, offs):
                ops, single = opsbody.decode(raw, lambda: 5.0)
                assert not single
                for chunk in ([op] for op in ops) if split else [ops]:
                    outs += j.apply(chunk)
            results.append(([None if o is None else msgspec.json.encode(without_line(o)) for o in outs],
                            state_of(j.replayer),
                            list(journal.trace_lines(tmp_path / name))))
    assert results[0][0] == results[1][0]
    assert results[0][1] == results[1][1]
    assert results[0][2] == results[1][2]
    assert any(o is not None and b'"placed"' in o for o in results[0][0])
