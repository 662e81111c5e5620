"""Pick stage: one tournament tree per group of interchangeable servers.

Design: servers are grouped by (pool, zone, tag set) — every filter that does not
depend on the server's own load is a property of the group. Each group keeps a
tournament tree (a complete binary tree over its servers; each inner node holds
the better of its two children), so:

* the best server of a group is the root: O(1);
* when a session starts or ends, one server's key changes and only its path to
  the root is replayed: O(log n) — no rescoring of the fleet (the same idea as
  HAProxy's ``lb_fwlc`` tree keyed by an integer load).

Layout: group g owns ``2 * cap`` int64 cells from ``tree_off``; cell 1 is the
root, leaves are cells ``cap .. 2*cap - 1``; a cell holds a server index or -1.
"""

from __future__ import annotations

from numba import njit

from . import state as st
from .loadindex import selection_key


@njit(inline="always")
def better(s: st.State, a, b):
    """The better of servers a and b (-1 = empty): smaller (key, tb) wins."""
    if a < 0:
        return b
    if b < 0:
        return a
    ka = s.srv[st.SV_KEY, a]
    kb = s.srv[st.SV_KEY, b]
    if ka < kb:
        return a
    if kb < ka:
        return b
    if s.srv[st.SV_TB, a] <= s.srv[st.SV_TB, b]:
        return a
    return b


@njit(cache=False)
def replay_path(h, i):
    """Recompute server i's key and replay its leaf-to-root path."""
    s = st.unpack(h)
    s.srv[st.SV_KEY, i] = selection_key(h, i)
    g = s.srv[st.SV_GROUP, i]
    if g < 0:
        return
    off = s.grp[st.GR_TREE_OFF, g]
    node = s.grp[st.GR_TREE_CAP, g] + s.srv[st.SV_SLOT, i]
    tree = s.tree
    node >>= 1
    while node >= 1:
        tree[off + node] = better(s, tree[off + 2 * node], tree[off + 2 * node + 1])
        node >>= 1


@njit(inline="always")
def group_best(s: st.State, g):
    """Best server of group g (its root), or -1."""
    return s.tree[s.grp[st.GR_TREE_OFF, g] + 1]


@njit(cache=False)
def build_all(h, n_groups):
    """Compute every key and build every group's tree from its leaves."""
    s = st.unpack(h)
    for i in range(s.hdr[st.H_N_SERVERS, 0]):
        s.srv[st.SV_KEY, i] = selection_key(h, i)
    rebuild_trees(h, n_groups)


@njit(cache=False)
def rebuild_trees(h, n_groups):
    """Rebuild every group's inner nodes from the current keys: O(n), cheaper
    than replaying n paths when most of the fleet changed at once."""
    s = st.unpack(h)
    tree = s.tree
    for g in range(n_groups):
        off = s.grp[st.GR_TREE_OFF, g]
        cap = s.grp[st.GR_TREE_CAP, g]
        for node in range(cap - 1, 0, -1):
            tree[off + node] = better(s, tree[off + 2 * node], tree[off + 2 * node + 1])
