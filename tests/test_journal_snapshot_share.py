"""Automatic snapshots limited to a share of the time (``journal.open(snapshot_share=)``):
after a snapshot that took ``D`` seconds the next waits ``D * (1 / share - 1)``
seconds; the records keep counting, and the state recovered is the same either way.
The journal's clock is replaced by a hand-moved one, so nothing here depends on how
fast the machine is."""

from __future__ import annotations

import os

import pytest

import usher.journal as journal
from journal_workload import PRELUDE, state_of, stream
from usher import Scheduler
from usher.errors import InvalidArgument
from usher.formats.replay import Replayer


def reference(ops):
    """A replayer that applied ``ops`` (the uncrashed run)."""
    r = Replayer(Scheduler(), keep=True)
    r.feed(ops)
    return r


def _snapshots(directory):
    return sorted(int(f[9:25]) for f in os.listdir(directory) if f.startswith("snapshot-"))


def test_a_snapshot_waits_for_its_share_of_the_time(tmp_path, monkeypatch):
    ops = PRELUDE + stream(8, 120)
    j = journal.open(tmp_path / "j", snapshot_every=10, snapshot_share=0.25)
    now = [1000.0]
    j._monotonic = lambda: now[0]
    write = journal.store.snap.write_atomic

    def slow_write(path, state):  # a snapshot that takes 2 s of the journal's clock
        now[0] += 2.0
        write(path, state)

    monkeypatch.setattr(journal.store.snap, "write_atomic", slow_write)
    n = len(PRELUDE)
    j.apply(ops[:n + 2])
    first = _snapshots(tmp_path / "j")
    assert first == [j.seq]  # the first is due at once
    j.apply(ops[n + 2:n + 40])  # more than 10 records, but 2 s * (1 / 0.25 - 1) = 6 s have not passed
    assert j.seq - first[0] >= 10 and _snapshots(tmp_path / "j") == first
    now[0] += 5.9
    j.apply(ops[n + 40:n + 41])
    assert _snapshots(tmp_path / "j") == first
    now[0] += 0.1
    j.apply(ops[n + 41:n + 42])  # due: taken at the first operation after
    assert _snapshots(tmp_path / "j") == [j.seq]
    j.apply(ops[n + 42:])
    j.close()
    assert state_of(journal.open(tmp_path / "j").replayer) == state_of(reference(ops))


def test_without_a_share_every_snapshot_is_taken(tmp_path):
    ops = PRELUDE + stream(9, 60)
    j = journal.open(tmp_path / "j", snapshot_every=10)
    for k in range(0, len(ops), 12):
        before = j.seq
        j.apply(ops[k:k + 12])
        if j.seq - before >= 10:
            assert _snapshots(tmp_path / "j") == [j.seq]
    j.close()


def test_a_child_snapshot_reports_how_long_it_took(tmp_path):
    ops = PRELUDE + stream(10, 80)
    j = journal.open(tmp_path / "j", snapshot_every=20, background_snapshots=True, snapshot_share=1.0)
    j.apply(ops)
    j.wait_snapshot()
    assert j._snapshot_seconds > 0 and j._snapshot_ended > 0
    j.close()
    assert state_of(journal.open(tmp_path / "j").replayer) == state_of(reference(ops))


@pytest.mark.parametrize("share", [0, -0.5, 1.5, float("nan"), "0.5", [0.5], True])
def test_a_share_out_of_range_is_refused_before_anything_is_written(tmp_path, share):
    with pytest.raises(InvalidArgument) as e:
        journal.open(tmp_path / "j", snapshot_share=share)
    assert e.value.field == "snapshot_share"
    assert not (tmp_path / "j").exists()
