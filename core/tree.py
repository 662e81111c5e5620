"""Pick stage: one tournament tree per group of interchangeable servers.

Design: servers are grouped by (pool, zone, tag set) — every filter that does not
depend on the server's own load is a property of the group. Each group keeps a
tournament tree (a complete 4-ary tree over its servers; each inner node holds
the best of its four children), so:

* the best server of a group is the root: O(1);
* when a session starts or ends, one server's key changes and only its path to
  the root is replayed: O(log n) — no rescoring of the fleet (the same idea as
  HAProxy's ``lb_fwlc`` tree keyed by an integer load).

Four children per node rather than two: half the levels (a group of 467 servers
has 5 instead of 9, one of 33,000 has 8 instead of 16), and the four children of
a node are adjacent rows, read together.

Layout: group g owns ``first_leaf(cap) + cap`` rows from ``tree_off`` (row 0
unused); node 1 is the root, the children of node k are nodes ``4k - 2 .. 4k + 1``
(so the parent of node c is ``(c + 2) >> 2``), and the leaves, ``cap`` of them (a
power of four), are nodes ``first_leaf(cap) .. first_leaf(cap) + cap - 1``. A
node is a row (server, key, tiebreak, slot) of the ``(tree_len, 4)`` tree table —
the key travels with the node, so a path replay reads sibling rows that sit next
to each other instead of random server records per level (this keeps the cost
flat at 100,000 servers); ``slot`` is the server's leaf position, so the root
names the best server's whole path (the launch kernels prefetch it). An empty
node is (-1, INF, INF, -1).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import state as st
from .loadindex import selection_key

T_SERVER, T_KEY, T_TB, T_SLOT = (st.TREE_COLUMNS_SERVER, st.TREE_COLUMNS_KEY, st.TREE_COLUMNS_TB,
                                 st.TREE_COLUMNS_SLOT)


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


_INVERSE_OF_3 = np.uint64(0xAAAAAAAAAAAAAAAB)  # 3 * this = 1 (mod 2**64)


@njit(inline="always")
def first_leaf(cap):
    """Node of the first leaf of a tree with ``cap`` leaves: ``state.tree_first_leaf``
    (``(cap + 2) // 3``), computed as the kernels can afford on every path replay.
    ``cap`` is a power of four (callers skip the placeholder group of a fleet
    without servers, whose cap is 0), so ``cap - 1`` is a multiple of 3 and dividing it
    by 3 is one multiplication by the inverse of 3 modulo 2**64 (exact, no
    remainder), instead of the multiply-and-correct sequence of a general
    division. ``tests/test_engine.py`` checks the two agree for every power of four."""
    return np.int64(np.uint64(cap - 1) * _INVERSE_OF_3) + 1


@njit(inline="always")
def _better_row(tree, a, b):
    """Row a or b, whichever holds the smaller (key, tb); a on a full tie.
    Branch-free: which one wins is data, not a branch the CPU could mispredict.
    Rows are int64 (rebuilds) or uint64 (the path replay); the result has their type."""
    b_wins = (tree[b, T_KEY] < tree[a, T_KEY]) | (
        (tree[b, T_KEY] == tree[a, T_KEY]) & (tree[b, T_TB] < tree[a, T_TB]))
    return a + (b - a) * type(a)(b_wins)


@njit(inline="always")
def _winner(tree, first):
    """Row of the best of the four sibling rows ``first .. first + 3``: smaller
    (key, tb) wins, the leftmost on a full tie."""
    return _better_row(tree, _better_row(tree, first, first + 1),
                       _better_row(tree, first + 2, first + 3))


@njit(inline="always")
def _pull(tree, base, node):
    """Node ``node`` of the tree at ``base`` takes its best child."""
    c = _winner(tree, base + 4 * node - 2)
    tree[base + node, T_SERVER] = tree[c, T_SERVER]
    tree[base + node, T_KEY] = tree[c, T_KEY]
    tree[base + node, T_TB] = tree[c, T_TB]
    tree[base + node, T_SLOT] = tree[c, T_SLOT]


@njit(inline="always")
def _set_leaf(s: st.State, base, cap, i):
    leaf = base + first_leaf(cap) + s.srv[st.SV_SLOT, i]
    s.tree[leaf, T_KEY] = s.srv[st.SV_KEY, i]
    s.tree[leaf, T_TB] = s.srv[st.SV_TB, i]


@njit(cache=False)
def replay_path(h, i):
    """Recompute server i's key and replay its leaf-to-root path, stopping at
    the first node that comes out unchanged (a server that was not winning
    there and still is not: typically a few levels when a session ends).

    Details: each level compares the node just written (its key and tiebreak
    still in registers) with the best of its three siblings — rows this replay
    does not write, so the CPU reads and compares them ahead of time — and the
    level's result is read from the winning row. Rows are unsigned (uint64):
    numba then leaves out the negative-index fix-up it puts in front of every
    signed index. The result is the node ``_winner`` computes."""
    s = st.unpack(h)
    key = selection_key(h, i)
    s.srv[st.SV_KEY, i] = key
    g = s.srv[st.SV_GROUP, i]
    if g < 0:
        return
    tb = s.srv[st.SV_TB, i]
    off = s.grp[st.GR_TREE_OFF, g]
    cap = s.grp[st.GR_TREE_CAP, g]
    _set_leaf(s, off, cap, i)
    one, two = np.uint64(1), np.uint64(2)
    uoff = np.uint64(off)
    rel = np.uint64(first_leaf(cap) + s.srv[st.SV_SLOT, i])  # node, relative to off
    child = uoff + rel  # its row
    tree = s.tree
    while rel > one:
        node = (rel + two) >> two
        first = np.uint64(4) * node - two  # the children of node: first .. first + 3
        j = rel - first  # the position of `child` among them
        # its three siblings, left to right
        x = uoff + first + np.uint64(j == 0)
        y = uoff + first + one + np.uint64(j <= 1)
        z = uoff + first + two + np.uint64(j <= 2)
        sib = _better_row(tree, _better_row(tree, x, y), z)
        ks, ts = tree[sib, T_KEY], tree[sib, T_TB]
        child_wins = (key < ks) | ((key == ks) & ((tb < ts) | ((tb == ts) & (child < sib))))
        c = sib + (child - sib) * np.uint64(child_wins)
        server, key, tb = tree[c, T_SERVER], tree[c, T_KEY], tree[c, T_TB]
        dst = uoff + node
        if tree[dst, T_SERVER] == server and tree[dst, T_KEY] == key and tree[dst, T_TB] == tb:
            break  # this node is unchanged, so is every node above it
        tree[dst, T_SERVER] = server
        tree[dst, T_KEY] = key
        tree[dst, T_TB] = tb
        tree[dst, T_SLOT] = tree[c, T_SLOT]  # follows the server
        rel, child = node, dst


@njit(inline="always")
def better_root(s: st.State, best, g, limit):
    """The pick across groups: ``best`` (a root row, or -1) or group g's root
    row, whichever holds the better server (as ``better``) with a key below
    ``limit``. Compares the roots' own (key, tiebreak): no server record is
    read, so the pick does not wait on one per group."""
    row = s.grp[st.GR_TREE_OFF, g] + 1
    if s.tree[row, T_SERVER] < 0 or s.tree[row, T_KEY] >= limit:
        return best
    if best < 0:
        return row
    return _better_row(s.tree, best, row)


@njit(inline="always")
def root_server(s: st.State, row):
    """The server a root row (from better_root) names, or -1."""
    return -1 if row < 0 else s.tree[row, T_SERVER]


@njit(cache=False)
def build_all(h, n_groups):
    """Compute every key and build every group's tree from its leaves."""
    s = st.unpack(h)
    for i in range(s.hdr[st.H_N_SERVERS, 0]):
        s.srv[st.SV_KEY, i] = selection_key(h, i)
    rebuild_trees(h, n_groups)


@njit(cache=False)
def rebuild_group(h, g):
    """Copy the keys of group g's servers to its leaves and rebuild its inner
    nodes: O(group), cheaper than replaying paths when much of the group moved."""
    s = st.unpack(h)
    tree = s.tree
    off = s.grp[st.GR_TREE_OFF, g]
    cap = s.grp[st.GR_TREE_CAP, g]
    if cap < 1:
        return  # the placeholder record of a fleet without servers: no tree
    first = first_leaf(cap)
    for leaf in range(s.grp[st.GR_N_SERVERS, g]):
        _set_leaf(s, off, cap, tree[off + first + leaf, T_SERVER])
    for node in range(first - 1, 0, -1):  # children before parents
        _pull(tree, off, node)


@njit(cache=False)
def rebuild_trees(h, n_groups):
    """Rebuild every group's tree from its servers' keys: O(fleet)."""
    for g in range(n_groups):
        rebuild_group(h, g)


@njit(cache=False)
def update_moved(h, moved, n_moved):
    """Bring the trees up to date after the keys of servers ``moved[:n_moved]``
    changed (keys already written): per group, replay the moved servers' paths
    when few of its servers moved, rebuild the group when a quarter or more of
    its tree did (a path costs about log4(cap) pulls, a rebuild cap / 3). Groups
    that no moved server belongs to are not touched."""
    s = st.unpack(h)
    n_groups = s.hdr[st.H_GROUP_CAP, 0]
    count = np.zeros(n_groups, np.int64)
    for k in range(n_moved):
        g = s.srv[st.SV_GROUP, moved[k]]
        if g >= 0:
            count[g] += 1
    for k in range(n_moved):
        i = moved[k]
        g = s.srv[st.SV_GROUP, i]
        if g >= 0 and 4 * count[g] < s.grp[st.GR_TREE_CAP, g]:
            replay_path(h, i)
    for g in range(n_groups):
        if count[g] > 0 and 4 * count[g] >= s.grp[st.GR_TREE_CAP, g]:
            rebuild_group(h, g)
