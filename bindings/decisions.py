"""What a launch returns: :class:`Decision` (one launch, compiled), :class:`Decisions`
(a ``launch_many`` batch, as arrays) and :class:`Explanation` (why a launch went where
it went: the filter funnel per pool and the best candidates).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from usher import _engine
from usher.core import state as st
from usher.core.codes import Outcome, Reason, ZoneChoice

Decision = _engine.Decision

__all__ = ["Decision", "Decisions", "Explanation"]


class Explanation:
    """Why a launch went where it went (``launch(..., explain=True)``).

    Attributes:
        pools: one dict per pool of the app, in priority order: ``pool``,
            ``allowed`` and a ``funnel`` of how many servers each filter removed
            (``servers, power, unregistered, mode, tags, zone, full, load``),
            how many ``candidates`` remain, how many of those are ``sinbin``-ned
            or ``over_tolerance``, and ``top``: the best candidates with
            ``server, zone, load_index, score, pending, over_tolerance, sinbinned``.
        zone, zone_choice: the zone of the decision and why it was chosen.
    """

    def __init__(self, pools: list[dict[str, Any]]) -> None:
        self.pools = pools
        self.outcome: Outcome | None = None
        self.reason: Reason | None = None
        self.server: str | None = None
        self.zone: str | None = None
        self.zone_choice: ZoneChoice | None = None

    def _attach(self, decision: Decision) -> None:
        self.outcome = decision.outcome
        self.reason = decision.reason
        self.server = decision.server
        self.zone = decision.zone
        self.zone_choice = decision.zone_choice

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": None if self.outcome is None else str(self.outcome),
            "reason": None if self.reason is None else str(self.reason),
            "server": self.server,
            "zone": self.zone,
            "zone_choice": None if self.zone_choice is None else str(self.zone_choice),
            "pools": self.pools,
        }

    def _headline(self) -> str:
        """``decision: placed server=s3 zone=Z1 (user_location)``, ``decision:
        rejected reason=full``: only the parts the decision has."""
        if self.outcome is None:
            return "decision: none attached"
        parts = [f"decision: {self.outcome}"]
        if self.server is not None:
            parts.append(f"server={self.server} zone={self.zone}")
        if self.zone_choice is not None:
            parts.append(f"({self.zone_choice})")
        if self.reason is not None:
            parts.append(f"reason={self.reason}")
        return " ".join(parts)

    def __str__(self) -> str:
        lines = [self._headline()]
        for p in self.pools:
            f = p["funnel"]
            # how many servers each filter removed, in the funnel's order
            removed = ", ".join(f"{k} {v}" for k, v in f.items()
                                if k not in ("servers", "candidates", "sinbin", "over_tolerance", "place_last", "slow")
                                and v)
            lines.append(
                f"  pool {p['pool']}: {'allowed' if p['allowed'] else 'not allowed'}, "
                f"{f['servers']} servers, removed: {removed or 'none'}, {f['candidates']} candidates "
                f"({f['over_tolerance']} over tolerance, {f['sinbin']} sin-binned, "
                f"{f.get('place_last', 0)} place-last" + (f", {f['slow']} slow" if f.get("slow") else "") + ")"
            )
            for c in p["top"]:
                lines.append(
                    f"    {c['server']} zone={c['zone']} load_index={c['load_index']} "
                    f"score={c['score']} pending={c['pending']}"
                    + (" over-tolerance" if c["over_tolerance"] else "")
                    + (" sin-binned" if c["sinbinned"] else "")
                    + (" place-last" if c.get("place_last") else "")
                    + (" slow" if c.get("slow") else "")
                )
        return "\n".join(lines)

    __repr__ = __str__


class Decisions:
    """Decisions of a ``launch_many`` batch, as arrays (one row per launch).

    Attributes (numpy int64 arrays of shape (n,), -1 = none):
        outcome, reason: codes of :class:`usher.Outcome` / :class:`usher.Reason`.
        server, zone, pool: indices (names via ``b[i].server`` or ``server_names()``).
        session: session ids. load_index: the server's load index after the decision.
    """

    __slots__ = ("rows", "_names")

    def __init__(self, rows: np.ndarray, names: tuple[list[str], list[str], list[str]]) -> None:
        self.rows = rows
        self._names = names

    outcome = property(lambda self: self.rows[:, st.D_OUTCOME])
    reason = property(lambda self: self.rows[:, st.D_REASON])
    server = property(lambda self: self.rows[:, st.D_SERVER])
    session = property(lambda self: self.rows[:, st.D_SESSION])
    zone = property(lambda self: self.rows[:, st.D_ZONE])
    load_index = property(lambda self: self.rows[:, st.D_LOAD_INDEX])
    pool = property(lambda self: self.rows[:, st.D_POOL])

    @property
    def names(self) -> tuple[list[str], list[str], list[str]]:
        """The scheduler's name lists ``(servers, zones, pools)`` that the ``server``,
        ``zone`` and ``pool`` indices point into (append-only: an index stays valid)."""
        return self._names

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, i: int) -> Decision:
        return _engine.decision_from_row(np.ascontiguousarray(self.rows[i]), self._names)

    def __iter__(self) -> Iterator[Decision]:
        for i in range(len(self)):
            yield self[i]

    def server_names(self) -> list[str | None]:
        """Server name per row (None when rejected)."""
        names = self._names[0]
        return [None if i < 0 else names[i] for i in self.server]

    def counts(self) -> dict[str, int]:
        """{outcome name or 'rejected:<reason>': count}."""
        out: dict[str, int] = {}
        for o, r in zip(self.outcome.tolist(), self.reason.tolist()):
            key = str(Outcome(o)) if o != Outcome.REJECTED else f"rejected:{Reason(r)}"
            out[key] = out.get(key, 0) + 1
        return out
