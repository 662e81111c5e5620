"""The dashboard's sampler folds requests the way a plain loop over every decision
would: the same history tallies, the same ring of the latest decisions (only the
decisions that stay in the ring are made into records), whether a turn folds
everything at once or the sampler folds slice by slice between turns of the event loop."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import usher.journal as journal
from journal_workload import PRELUDE, stream
from usher.formats.trace import LaunchDecision
from usher.service import dashboard as dashboard_module
from usher.service.dashboard import Dashboard
from usher.service.dashboard_views import decision_record


def _requests(seed, n, size):
    """``(ops, outputs)`` of requests of ``size`` ops (the last shorter), errors included."""
    j = journal.in_memory(clock=lambda: 0.0)
    j.submit(PRELUDE)
    items = stream(seed, n)
    items[n // 2] = {"t": items[n // 2]["t"], "op": "logoff", "session": "no-such-launch"}  # an error line
    out = []
    for k in range(0, n, size):
        ops, outputs, _ = j.submit(items[k:k + size])
        out.append((ops, outputs))
    return out


def _plain(requests, ring):
    """What folding every decision one by one gives: outcome tallies and the ring."""
    outcomes, records = Counter(), []
    for ops, outputs in requests:
        for op, o in zip(ops, outputs):
            if o.__class__ is LaunchDecision:
                outcomes[o.outcome] += 1
                records.append(decision_record(op, o))
    return outcomes, records[-ring:]


def _tallies(dash):
    total = Counter()
    for b in dash.history.buckets():
        total.update(b.outcomes)
    return total


@pytest.mark.parametrize("size,ring", [(1, 7), (13, 7), (13, 10_000), (400, 3)])
def test_a_turn_folds_like_a_plain_loop(size, ring):
    requests = _requests(3, 600, size)
    dash = Dashboard(journal.in_memory(clock=lambda: 0.0), decisions=ring)
    for ops, outputs in requests:
        dash.on_applied(ops, outputs)  # outside an event loop: only kept
    assert dash.turn()
    outcomes, records = _plain(requests, ring)
    assert sum(outcomes.values()) > min(ring, 100)
    assert _tallies(dash) == outcomes
    assert list(dash.decisions) == records


@pytest.mark.parametrize("fed", ["in the loop", "outside the loop"])
def test_requests_are_folded_in_slices_between_turns_of_the_loop(monkeypatch, fed):
    """Fed in the event loop, requests are folded at its next turns, a slice at a time;
    fed outside it (no loop to schedule on), by the sampler's turn, also in slices."""
    monkeypatch.setattr(dashboard_module, "FOLD_SLICE", 10)
    requests = _requests(5, 500, 3)
    dash = Dashboard(journal.in_memory(clock=lambda: 0.0), interval=0.01, decisions=9)
    ticks = []
    if fed == "outside the loop":
        for ops, outputs in requests:
            dash.on_applied(ops, outputs)  # only kept: no loop to fold them in

    async def main():
        async def ticker():  # runs between the slices
            while dash.version == 0:
                ticks.append(len(dash._pending))
                await asyncio.sleep(0)

        if fed == "in the loop":
            for ops, outputs in requests:
                dash.on_applied(ops, outputs)
        else:
            dash._start()
        await asyncio.gather(ticker(), asyncio.wait_for(dash._turned.wait(), 10))
        dash._task.cancel()

    asyncio.run(main())
    outcomes, records = _plain(requests, 9)
    assert _tallies(dash) == outcomes
    assert list(dash.decisions) == records
    assert len(set(ticks)) > 10 and min(ticks) == 0  # the loop ran between slices until all was folded


def test_a_turn_after_the_loop_folded_the_requests_makes_a_new_state():
    """Requests folded at the loop's turns (not by the sampler) still make the next
    ``turn`` read the fleet again: the state counts them."""
    requests = _requests(7, 200, 20)
    dash = Dashboard(journal.in_memory(clock=lambda: 0.0), interval=3600.0)

    async def main():
        for ops, outputs in requests[:3]:
            dash.on_applied(ops, outputs)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not dash._pending  # folded at the loop's turn
        first = dash.turn()
        assert not dash.turn()  # nothing new
        for ops, outputs in requests[3:]:
            dash.on_applied(ops, outputs)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not dash._pending
        again = dash.turn()
        dash._task.cancel()
        return first, again

    first, again = asyncio.run(main())
    assert first and again
    outcomes, _ = _plain(requests, 10)
    assert _tallies(dash) == outcomes
