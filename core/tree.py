"""Pick stage: one tournament tree per group of interchangeable servers.

Design: servers are grouped by (pool, zone, tag set) — every filter that does not
depend on the server's own load is a property of the group. Each group keeps a
tournament tree (a complete 8-ary tree over its servers; each inner node holds
the best of its eight children), so:

* the best server of a group is the root: O(1);
* when a session starts or ends, one server's key changes and only its path to
  the root is replayed: O(log n) — no rescoring of the fleet (the same idea as
  HAProxy's ``lb_fwlc`` tree keyed by an integer load).

Eight children per node, compared at once: a group of 467 servers has 3 levels
(9 with a binary tree, 5 with a 4-ary one), one of 33,000 has 6 (16; 8), and a level is
one vector compare of the eight children's keys (``_block_best``: a minimum over
eight int64 lanes, then over the tiebreaks of the lanes that hold it), not a
chain of scalar compares.

Layout: nodes are numbered as in a heap — node 1 is the root, the children of
node k are nodes ``8k - 6 .. 8k + 1`` (so the parent of node c is
``(c + 6) >> 3``), and the leaves, ``cap`` of them (a power of eight), are nodes
``first_leaf(cap) ..``. A node's *entry* (key, tiebreak, server, leaf slot: the
best server of its subtree) is stored in its parent's *block*: block k (a row of
the ``(tree_len, 32)`` tree table, ``tree_off`` rows into the group's part)
holds the entries of node k's eight children, lane ``(c + 6) & 7`` for child c,
field by field (eight keys, eight tiebreaks, eight servers, eight slots: each
field one aligned 64-byte line); block 0 holds the root's entry in lane 7. The
key travels with the entry, so a path replay reads one block per level instead
of random server records (this keeps the cost flat at 100,000 servers);
``slot`` names the best server's whole path (the launch kernels prefetch it).
An empty entry is (INF, INF, -1, -1).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import state as st
from .loadindex import selection_key

ARITY = st.TREE_ARITY
K, T, S, L = st.TREE_KEY, st.TREE_TB, st.TREE_SERVER, st.TREE_SLOT
ROOT_LANE = 7  # the root's entry: block 0, lane (1 + 6) & 7
_BLOCK_BYTES = st.N_TREE_COLUMNS * 8


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


_INVERSE_OF_7 = np.uint64(0x6DB6DB6DB6DB6DB7)  # 7 * this = 1 (mod 2**64)


@njit(inline="always")
def first_leaf(cap):
    """Node of the first leaf of a tree with ``cap`` leaves: ``state.tree_first_leaf``
    (``(cap + 6) // 7``), computed as the kernels can afford on every path replay.
    ``cap`` is a power of eight (callers skip the placeholder group of a fleet
    without servers, whose cap is 0), so ``cap - 1`` is a multiple of 7 and dividing it
    by 7 is one multiplication by the inverse of 7 modulo 2**64 (exact, no
    remainder), instead of the multiply-and-correct sequence of a general
    division. ``tests/test_engine.py`` checks the two agree for every power of eight."""
    return np.int64(np.uint64(cap - 1) * _INVERSE_OF_7) + 1


entry_of = njit(inline="always")(st.tree_entry)


@njit(inline="always")
def leaf_server(tree, off, cap, leaf):
    """The server at leaf position ``leaf`` of the tree at ``off`` (-1: none)."""
    b, lane = entry_of(first_leaf(cap) + leaf)
    return tree[off + b, S + lane]


@intrinsic
def _block_best(typingctx, address, lane, key, tb):
    """The best of a block's eight entries, with entry ``lane`` taken as
    (``key``, ``tb``) instead of what memory holds: (lane of the winner, its key,
    its tiebreak). Smaller key wins, then smaller tiebreak, then the leftmost lane
    (ties on both happen between empty entries only). ``address`` is the block's
    first byte: its eight keys, then its eight tiebreaks.

    Details: two 64-byte vector loads; the minimum key over the eight lanes
    (``llvm.vector.reduce.smin``), the minimum tiebreak over the lanes that hold
    it, the first lane holding both (count of trailing zeros of the match mask).
    A path replay reads the block *before* it stores the child's new entry and
    puts the new values in the loaded vectors (``lane``), so the loads never wait
    on the stores (a vector load over a just-stored int64 cannot take it from
    the store buffer)."""
    sig = types.UniTuple(types.int64, 3)(types.int64, types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        address, lane, key, tb = args
        i32, i64 = ir.IntType(32), ir.IntType(64)
        vec = ir.VectorType(i64, ARITY)
        smin = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [vec]), f"llvm.vector.reduce.smin.v{ARITY}i64")

        def splat(x):
            one = builder.insert_element(ir.Constant(vec, ir.Undefined), x, i32(0))
            return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                          ir.Constant(ir.VectorType(i32, ARITY), [0] * ARITY))

        ptr = builder.inttoptr(address, vec.as_pointer())
        # the new entry goes in by a select on lane == (0 .. 7), not an insert at a
        # variable position: without AVX-512 the insert goes through the stack (a
        # vector store, a scalar store into it, a vector load that must wait for both)
        at_lane = builder.icmp_signed("==", ir.Constant(vec, list(range(ARITY))), splat(lane))
        keys = builder.select(at_lane, splat(key), builder.load(ptr, align=8))
        tbs = builder.select(at_lane, splat(tb), builder.load(builder.gep(ptr, [i32(1)]), align=8))
        kmin = builder.call(smin, [keys])
        at_min = builder.icmp_signed("==", keys, splat(kmin))
        tmin = builder.call(smin, [builder.select(at_min, tbs, ir.Constant(vec, [st.INF_KEY] * ARITY))])
        wins = builder.and_(at_min, builder.icmp_signed("==", tbs, splat(tmin)))
        # never empty: tmin is the tiebreak of a lane that holds kmin
        first = builder.cttz(builder.bitcast(wins, ir.IntType(ARITY)), ir.Constant(ir.IntType(1), 1))
        winner = builder.zext(first, i64)
        return context.make_tuple(builder, signature.return_type, [winner, kmin, tmin])

    return sig, codegen


@njit(inline="always")
def _block_address(tree, b):
    return tree.ctypes.data + b * _BLOCK_BYTES


@njit(inline="always")
def _set_leaf(s: st.State, off, cap, i):
    b, lane = entry_of(first_leaf(cap) + s.srv[st.SV_SLOT, i])
    s.tree[off + b, K + lane] = s.srv[st.SV_KEY, i]
    s.tree[off + b, T + lane] = s.srv[st.SV_TB, i]


@njit(inline="always")
def _pull(tree, off, node):
    """Node ``node`` of the tree at ``off`` takes the best of its children
    (block ``node``) as its entry."""
    b = off + node
    w, key, tb = _block_best(_block_address(tree, b), 0, tree[b, K], tree[b, T])
    pb, lane = entry_of(node)
    tree[off + pb, K + lane] = key
    tree[off + pb, T + lane] = tb
    tree[off + pb, S + lane] = tree[b, S + w]
    tree[off + pb, L + lane] = tree[b, L + w]


@njit(cache=False)
def replay_path(h, i):
    """Recompute server i's key and replay its leaf-to-root path, stopping at
    the first entry that would come out unchanged (a server that was not winning
    there and still is not: typically a few levels when a session ends).

    Details: each level stores the child's new entry into its parent's block and
    takes the block's best (``_block_best``, which reads the block before the
    store and puts the new entry in its vectors) as the parent's new entry; the
    winner's key and tiebreak come out of the compare, its server and slot are
    read from the winning lane of the block, the child's lane included (just
    stored: the load takes it from the store buffer), so no branch asks which
    lane won."""
    s = st.unpack(h)
    key = selection_key(h, i)
    s.srv[st.SV_KEY, i] = key
    g = s.srv[st.SV_GROUP, i]
    if g < 0:
        return
    tb = s.srv[st.SV_TB, i]
    off = s.grp[st.GR_TREE_OFF, g]
    slot = s.srv[st.SV_SLOT, i]
    c = first_leaf(s.grp[st.GR_TREE_CAP, g]) + slot
    server = i
    tree = s.tree
    while True:
        b, lane = entry_of(c)  # c's entry: its parent's block
        b += off
        if tree[b, S + lane] == server and tree[b, K + lane] == key and tree[b, T + lane] == tb:
            break  # this entry is unchanged, so is every entry above it
        w, kmin, tmin = lane, key, tb
        if c > 1:  # the parent's block, read before the stores below (see _block_best)
            w, kmin, tmin = _block_best(_block_address(tree, b), lane, key, tb)
        tree[b, K + lane] = key
        tree[b, T + lane] = tb
        tree[b, S + lane] = server
        tree[b, L + lane] = slot
        if c == 1:
            break  # the root
        # the winner's server and slot, the child's own (just stored) when it won:
        # which lane wins is data, and a branch on it cost a batch decision 14 ns
        # at 400 servers (benchmarks/README.md, *Batch*)
        server = tree[b, S + w]
        slot = tree[b, L + w]
        key, tb = kmin, tmin
        c = b - off


@njit(inline="always")
def _better_root(tree, a, b):
    """Root block a or b, whichever root entry holds the smaller (key, tb); a on
    a full tie. Branch-free."""
    ka, kb = tree[a, K + ROOT_LANE], tree[b, K + ROOT_LANE]
    b_wins = (kb < ka) | ((kb == ka) & (tree[b, T + ROOT_LANE] < tree[a, T + ROOT_LANE]))
    return a + (b - a) * np.int64(b_wins)


@njit(inline="always")
def better_root(s: st.State, best, g, limit):
    """The pick across groups: ``best`` (a group's root block, or -1) or group
    g's root block, whichever root entry holds the better server (as ``better``)
    with a key below ``limit``. Compares the roots' own (key, tiebreak): no
    server record is read, so the pick does not wait on one per group."""
    row = s.grp[st.GR_TREE_OFF, g]
    if s.tree[row, S + ROOT_LANE] < 0 or s.tree[row, K + ROOT_LANE] >= limit:
        return best
    if best < 0:
        return row
    return _better_root(s.tree, best, row)


@njit(inline="always")
def root_server(s: st.State, row):
    """The server a root block (from better_root) names, or -1."""
    return -1 if row < 0 else s.tree[row, S + ROOT_LANE]


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
        _set_leaf(s, off, cap, leaf_server(tree, off, cap, leaf))
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
    its tree did (a path costs about log8(cap) block compares, a rebuild cap / 7
of them and a copy of every leaf). Groups
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
