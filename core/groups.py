"""Filter stage, laid out ahead of time: servers grouped by (pool, zone, tag set).

Design: everything a launch filters on that never changes while a server exists
(its pool, zone and tags) decides its *group*. Groups are numbered in
(pool, zone, tags) order, so the groups of a pool, and of a pool in one zone, are
contiguous ranges — a launch reads a few ranges instead of testing servers. The
layout is recomputed (O(n log n), numpy) only when servers, pools or zones are
added or removed; the binding does it lazily before the next kernel call.
"""

from __future__ import annotations

import numpy as np

from . import state as st


def aligned_rows(n: int, columns: int, fill) -> np.ndarray:
    """An (n, columns) int64 array filled with ``fill`` whose first row starts on
    a 64-byte boundary (numpy promises 16): with the tree's 32-column rows, each
    field of a block (eight children's keys, tiebreaks, servers, slots) is then
    one aligned cache line."""
    raw = np.full(n * columns + 8, fill, dtype=np.int64)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip: skip + n * columns].reshape(n, columns)


def layout(srv: np.ndarray, n_servers: int, n_pools: int, n_zones: int):
    """Group the present servers.

    Args:
        srv: the server int table, shape (N_SV, capacity); its ``group`` and
            ``slot`` rows are rewritten.
        n_servers: servers ever added.
        n_pools, n_zones: current counts.

    Returns:
        (grp, pz, tree, pool_g_start, pool_g_count): the group table of shape
        (N_GR, n_groups), the pool-zone table of shape (N_PZ, n_pools * n_zones),
        the tree table of shape (tree_len, 32) (blocks, see tree.py), 64-byte
        aligned, with leaf servers and slots filled (keys and inner nodes are
        built by the ``build_trees`` kernel), and each pool's group range.
    """
    idx = np.nonzero(srv[st.SV_PRESENT, :n_servers] != 0)[0]
    pool = srv[st.SV_POOL, idx]
    zone = srv[st.SV_ZONE, idx]
    tags = srv[st.SV_TAGS, idx]
    order = np.lexsort((idx, tags, zone, pool))
    idx, pool, zone, tags = idx[order], pool[order], zone[order], tags[order]
    srv[st.SV_GROUP, :n_servers] = st.NONE
    srv[st.SV_SLOT, :n_servers] = st.NONE

    if len(idx):
        boundary = np.ones(len(idx), dtype=bool)
        boundary[1:] = (pool[1:] != pool[:-1]) | (zone[1:] != zone[:-1]) | (tags[1:] != tags[:-1])
        starts = np.nonzero(boundary)[0]
    else:
        starts = np.zeros(0, dtype=np.int64)
    n_groups = len(starts)
    sizes = np.diff(np.append(starts, len(idx))).astype(np.int64)
    # 8-ary trees: leaves a power of eight; blocks 0 .. first_leaf - 1 (tree.py)
    caps = np.ones(n_groups, dtype=np.int64)
    nz = sizes > 1
    caps[nz] = 1 << (3 * ((np.ceil(np.log2(sizes[nz])).astype(np.int64) + 2) // 3))
    blocks = st.tree_first_leaf(caps)
    offsets = np.zeros(n_groups, dtype=np.int64)
    if n_groups:
        offsets[1:] = np.cumsum(blocks)[:-1]
    tree = aligned_rows(max(1, int(blocks.sum())), st.N_TREE_COLUMNS, st.INF_KEY)
    tree[:, st.TREE_SERVER:st.TREE_SERVER + st.TREE_ARITY] = st.NONE
    tree[:, st.TREE_SLOT:st.TREE_SLOT + st.TREE_ARITY] = st.NONE

    grp = st.new_table(st.GROUP_FIELDS, n_groups, np.int64, fill=0)
    group_of = np.repeat(np.arange(n_groups), sizes)
    slot = np.arange(len(idx)) - np.repeat(starts, sizes)
    if n_groups:
        grp[st.GR_POOL, :n_groups] = pool[starts]
        grp[st.GR_ZONE, :n_groups] = zone[starts]
        grp[st.GR_TAGS, :n_groups] = tags[starts]
        grp[st.GR_N_SERVERS, :n_groups] = sizes
        grp[st.GR_TREE_OFF, :n_groups] = offsets
        grp[st.GR_TREE_CAP, :n_groups] = caps
        srv[st.SV_GROUP, idx] = group_of
        srv[st.SV_SLOT, idx] = slot
        block, lane = st.tree_entry(st.tree_first_leaf(caps[group_of]) + slot)
        block += offsets[group_of]
        tree[block, st.TREE_SERVER + lane] = idx
        tree[block, st.TREE_SLOT + lane] = slot
        # GR_N_AVAILABLE stays 0: the build_trees kernel counts (eligibility.available)

    pz = st.new_table(st.PZ_FIELDS, max(1, n_pools * n_zones), np.int64, fill=0)
    pool_g_start = np.zeros(max(1, n_pools), dtype=np.int64)
    pool_g_count = np.zeros(max(1, n_pools), dtype=np.int64)
    if n_groups:
        gpool = grp[st.GR_POOL, :n_groups]
        gzone = grp[st.GR_ZONE, :n_groups]
        row = gpool * n_zones + gzone
        # groups are sorted by (pool, zone), so each row's groups are contiguous
        first = np.ones(n_groups, dtype=bool)
        first[1:] = row[1:] != row[:-1]
        fidx = np.nonzero(first)[0]
        counts = np.diff(np.append(fidx, n_groups))
        pz[st.PZ_G_START, row[fidx]] = fidx
        pz[st.PZ_G_COUNT, row[fidx]] = counts
        pfirst = np.ones(n_groups, dtype=bool)
        pfirst[1:] = gpool[1:] != gpool[:-1]
        pidx = np.nonzero(pfirst)[0]
        pool_g_start[gpool[pidx]] = pidx
        pool_g_count[gpool[pidx]] = np.diff(np.append(pidx, n_groups))
    return grp, pz, tree, pool_g_start, pool_g_count
