"""usher.journal: records, group commit, snapshots and recovery (docs/SERVICE.md).

The oracle is a plain replay of the same ops: a journalled run, closed or cut at any
point and recovered, must hold the state of the replay of the ops it acknowledged,
and must make the same next decisions."""

from __future__ import annotations

import os
import shutil

import msgspec
import pytest

import usher.journal as journal
from journal_workload import PRELUDE, lines, state_of, stream
from usher import Scheduler
from usher.formats.replay import Replayer
from usher.journal import JournalError, records


def reference(ops):
    """A replayer that applied ``ops`` (the uncrashed run)."""
    r = Replayer(Scheduler(), keep=True)
    r.feed(ops)
    return r


def test_record_frame_round_trip_and_crc():
    line = records.encode(b'{"op":"logoff","t":1.0,"session":"r1"}', b"")
    assert line.endswith(b"\n") and line.count(b"\t") == 2
    assert records.split(line[:-1]) == (b'{"op":"logoff","t":1.0,"session":"r1"}', b"")
    flipped = bytearray(line)
    flipped[15] ^= 1
    assert records.split(bytes(flipped[:-1])) is None


@pytest.mark.parametrize("fsync", ["always", "batch", "off"])
def test_journal_is_a_replayable_trace(tmp_path, fsync):
    ops = PRELUDE + stream(1, 300)
    with journal.open(tmp_path / "j", fsync=fsync, snapshot_every=None) as j:
        out = j.apply(ops)
    ref = reference(ops)
    # the decision lines are those of a replay of the same ops
    assert [o for o in lines(out) if o is not None and "outcome" in o] == lines(ref.decisions)
    # cut -f2 of the journal is a trace: replayed, it gives the same state
    trace = list(journal.trace_lines(tmp_path / "j"))
    assert len(trace) == len(ops) - len(ref.errors)
    assert state_of(reference(trace)) == state_of(ref)


def test_failed_op_is_not_journalled_and_changes_nothing(tmp_path):
    with journal.open(tmp_path / "j") as j:
        j.apply(PRELUDE)
        before = state_of(j.replayer), j.seq
        out = j.apply([{"t": 5, "op": "logoff", "session": "nobody"},
                       {"t": 5, "op": "launch", "id": 2.5}, {"op": "nonsense"}, "not an object"])
        assert [o.error for o in out] == ["UnknownSession", "TraceError", "TraceError", "TraceError"]
        assert [o.line for o in out] == [1, 2, 3, 4]
        assert (state_of(j.replayer), j.seq) == before


def test_missing_t_takes_the_clock_never_going_back(tmp_path):
    with journal.open(tmp_path / "j", clock=lambda: 3.0) as j:
        j.apply(PRELUDE + [{"t": 10, "op": "launch", "id": "r0", "user": "u1", "app": "a"}])
        (d,) = j.apply([{"op": "launch", "id": "r1", "user": "u2", "app": "a"}])
        assert d.t == 10.0  # the clock says 3, the last op was at 10
    (last,) = list(journal.trace_lines(tmp_path / "j"))[-1:]
    assert msgspec.json.decode(last)["t"] == 10.0


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("every", [None, 1, 37])
def test_recovery_equals_the_uncrashed_run(tmp_path, every, background):
    ops = PRELUDE + stream(2, 200)
    more = stream(3, 200, t0=5000.0, prefix="m")
    j = journal.open(tmp_path / "j", snapshot_every=every, background_snapshots=background)
    j.apply(ops[:120])
    j.apply(ops[120:])
    j.close()
    files = os.listdir(tmp_path / "j")
    if every is not None:
        assert any(f.startswith("snapshot-") for f in files)
    recovered = journal.open(tmp_path / "j")
    ref = reference(ops)
    assert state_of(recovered.replayer) == state_of(ref)
    # the next decisions equal those of the uncrashed run
    ref.decisions.clear()
    ref.errors.clear()
    ref.lines = 0
    ref.feed(more)
    out = recovered.apply(more)
    assert [o for o in lines(out) if o is not None and "outcome" in o] == lines(ref.decisions)
    recovered.close()


def test_a_new_directory_starts_from_the_given_scheduler(tmp_path):
    base = reference(PRELUDE).scheduler
    with journal.open(tmp_path / "j", scheduler=base.copy()) as j:
        j.apply(stream(4, 50))
    with pytest.raises(JournalError):
        journal.open(tmp_path / "j", scheduler=base.copy())
    assert state_of(journal.recover(tmp_path / "j").replayer) == state_of(reference(PRELUDE + stream(4, 50)))


def _segment(directory):
    (name,) = [f for f in os.listdir(directory) if f.startswith("journal-")]
    return directory / name


def test_torn_last_record_is_dropped_at_every_byte(tmp_path):
    """Cut the journal at every byte of its last record: recovery drops that record
    whole (the state is that of the ops before it) and never applies part of it."""
    ops = PRELUDE + stream(5, 40)
    src = tmp_path / "src"
    with journal.open(src, snapshot_every=None) as j:
        j.apply(ops)
    data = _segment(src).read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1  # where the last record begins
    applied = list(journal.trace_lines(src))
    before = state_of(reference(applied[:-1]))
    whole = state_of(reference(applied))
    for cut in range(start, len(data) + 1):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        with open(_segment(d), "r+b") as f:
            f.truncate(cut)
        found = journal.recover(d)
        if cut == len(data):
            assert found.torn == 0 and state_of(found.replayer) == whole
        else:
            assert found.torn == (cut > start)
            assert found.seq == len(applied) - 1
            assert state_of(found.replayer) == before, cut
            # opening cuts the torn bytes off: new records follow good ones
            j = journal.open(d)
            j.apply([{"t": 1e6, "op": "logoff", "session": "r0"}])
            j.close()
            assert journal.recover(d).seq == len(applied)
        shutil.rmtree(d)


def test_a_damaged_record_before_the_end_is_an_error(tmp_path):
    with journal.open(tmp_path / "j", snapshot_every=None) as j:
        j.apply(PRELUDE + stream(6, 20))
    seg = _segment(tmp_path / "j")
    data = bytearray(seg.read_bytes())
    data[20] ^= 0x55
    seg.write_bytes(bytes(data))
    with pytest.raises(JournalError, match="damaged record"):
        journal.recover(tmp_path / "j")


def test_a_gap_between_snapshot_and_journal_is_an_error(tmp_path):
    with journal.open(tmp_path / "j", snapshot_every=10) as j:
        j.apply(PRELUDE + stream(7, 30))
        j.snapshot()
        j.apply(stream(8, 30, t0=1000.0, prefix="x"))
    os.unlink(_segment(tmp_path / "j"))
    with journal.open(tmp_path / "j") as j:  # nothing after the snapshot: its state
        pass
    j = journal.open(tmp_path / "j2", snapshot_every=None)
    j.apply(PRELUDE)
    j.snapshot()
    j.close()
    for f in os.listdir(tmp_path / "j2"):
        if f.startswith("snapshot-"):
            os.rename(tmp_path / "j2" / f, tmp_path / "j2" / "snapshot-0000000000000003.pickle")
    with pytest.raises(JournalError):
        journal.recover(tmp_path / "j2")


def test_scheduler_snapshot_restore_and_open(tmp_path):
    r = reference(PRELUDE + stream(9, 100))
    path = tmp_path / "s.pickle"
    r.scheduler.snapshot(path)
    back = Scheduler.restore(path)
    assert isinstance(back, Scheduler)
    a, b = r.scheduler.copy(), back
    for k in range(20):
        da = a.launch(f"u{k % 6}", "a", now=1e5 + k)
        db = b.launch(f"u{k % 6}", "a", now=1e5 + k)
        assert (da.outcome, da.server, da.reason) == (db.outcome, db.server, db.reason)
    with journal.open(tmp_path / "j") as j:
        j.apply(PRELUDE + stream(9, 100))
    opened = Scheduler.open(tmp_path / "j")
    assert isinstance(opened, Scheduler)
    assert opened.live_sessions == r.scheduler.live_sessions
    assert [tuple(x.tolist()) for x in opened.sessions()] == [tuple(x.tolist()) for x in r.scheduler.sessions()]


def test_snapshot_of_something_else_is_refused(tmp_path):
    journal.write_snapshot(tmp_path / "snapshot-0000000000000000.pickle", {"hello": 1})
    with pytest.raises(JournalError):
        journal.recover(tmp_path)
    (tmp_path / "snapshot-0000000000000000.pickle").write_bytes(b"garbage")
    with pytest.raises(JournalError):
        journal.recover(tmp_path)


@pytest.mark.parametrize("fsync", ["always", "batch", "off"])
def test_open_honours_the_fsync_policy(tmp_path, fsync):
    synced = []  # fsync seconds of each group commit: None when the policy does not fsync
    j = journal.open(tmp_path / "j", fsync=fsync, on_flush=lambda n, write_s, fsync_s: synced.append(fsync_s))
    j.apply(PRELUDE)
    j.close()
    assert synced and all((s is None) == (fsync == "off") for s in synced)


def test_commit_now_ends_the_batch_window(tmp_path):
    j = journal.open(tmp_path / "j", fsync="batch", batch_seconds=3600.0, batch_records=10**9)
    _, _, ticket = j.submit(PRELUDE)
    j._writer.wait(ticket, timeout=0.2)  # the window is an hour: nothing is durable yet
    assert j._writer.durable < ticket
    j.commit_now()
    j._writer.wait(ticket, timeout=60)
    assert j._writer.durable >= ticket
    j.close()


def test_a_snapshot_written_by_a_child_replaces_the_older_files(tmp_path):
    ops = PRELUDE + stream(5, 300)
    j = journal.open(tmp_path / "j", snapshot_every=50, background_snapshots=True)
    for k in range(0, len(ops), 40):
        j.apply(ops[k:k + 40])
        j.wait_snapshot()  # one child at a time here, so that each one's files can be checked
        snapshots = sorted(f for f in os.listdir(tmp_path / "j") if f.startswith("snapshot-"))
        segments = sorted(f for f in os.listdir(tmp_path / "j") if f.startswith("journal-"))
        assert len(snapshots) <= 1  # a new directory has none until the first child's
        assert not snapshots or int(snapshots[0][9:25]) <= int(segments[0][8:24])
    assert snapshots and int(snapshots[0][9:25]) > 0  # a child wrote one
    j.close()
    assert state_of(journal.open(tmp_path / "j").replayer) == state_of(reference(ops))


def test_a_child_that_fails_leaves_the_previous_snapshot_and_every_segment(tmp_path, monkeypatch):
    ops = PRELUDE + stream(6, 200)
    j = journal.open(tmp_path / "j", snapshot_every=None)
    j.apply(ops[:60])
    j.snapshot()
    before = sorted(f for f in os.listdir(tmp_path / "j") if f.startswith("snapshot-"))

    def fail(path, obj):
        raise OSError("disk full")

    monkeypatch.setattr(journal.store.snap, "write_atomic", fail)  # in the child, after the fork
    j.background_snapshots, j.snapshot_every = True, 10
    j.apply(ops[60:140])
    j.wait_snapshot()
    j.snapshot_every = None
    j.apply(ops[140:])
    j.close()
    files = os.listdir(tmp_path / "j")
    assert sorted(f for f in files if f.startswith("snapshot-")) == before
    assert len([f for f in files if f.startswith("journal-")]) == 2  # the one before the fork and the one after
    assert state_of(journal.open(tmp_path / "j").replayer) == state_of(reference(ops))


def test_close_kills_a_child_that_does_not_finish_its_snapshot(tmp_path, monkeypatch):
    import time

    ops = PRELUDE + stream(7, 120)
    j = journal.open(tmp_path / "j", snapshot_every=None)
    j.apply(ops[:40])
    j.snapshot()

    def hang(path, obj):
        time.sleep(600)

    monkeypatch.setattr(journal.store.snap, "write_atomic", hang)  # in the child, after the fork
    j.background_snapshots, j.snapshot_every = True, 10
    j.apply(ops[40:])
    assert j._child is not None
    started = time.monotonic()
    j.close(snapshot_timeout=0.5)
    assert time.monotonic() - started < 30 and j._child is None
    assert state_of(journal.open(tmp_path / "j").replayer) == state_of(reference(ops))


def test_a_group_is_counted_before_it_is_acknowledged_and_a_failing_count_stops_nothing(tmp_path, caplog):
    """``on_flush`` (the metrics) runs before the group's waiters are woken, so a client
    that has its answer finds its records counted; an error in it is logged and the
    writer goes on acknowledging."""
    from usher.journal.writer import JournalWriter

    counted, calls = [], []

    def on_flush(records, write_s, fsync_s):
        calls.append(records)
        if len(calls) == 1:
            raise RuntimeError("metrics broke")
        counted.append(records)

    w = JournalWriter(str(tmp_path / "seg"), fsync="batch", on_flush=on_flush)
    try:
        with caplog.at_level("ERROR", logger="usher.journal"):
            first = w.append([records.encode(b'{"op":"logoff","t":1.0,"session":"a"}')])
            w.wait(first, timeout=10)
            assert calls == [1]  # counted (and failed) before the wait returned
            second = w.append([records.encode(b'{"op":"logoff","t":2.0,"session":"b"}')] * 3)
            w.wait(second, timeout=10)
            assert counted == [3] and w.durable >= second
        assert "on_flush failed" in caplog.text
    finally:
        w.close()
