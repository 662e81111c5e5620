"""The engine's state: struct-of-arrays tables, declared once.

Design: every table is one 2-D numpy array of shape ``(n_fields, capacity)``
(int64 or float64): row ``f`` is the array of field ``f`` over all records, so a
field is contiguous (struct of arrays) and the whole table is one pointer. The
field lists below are the single declaration; the ``SV_*``, ``SE_*`` ... index
constants and the header slots are derived from them, and numba freezes them into
the kernels as compile-time constants.

The compiled kernels receive one pointer: the *header*, an int64 array that holds
the address of every table, the capacities and the scalar counters
(``H_*`` slots). ``unpack(header_ptr)`` rebuilds numpy views from it inside a
kernel at no cost, so a kernel call passes one pointer instead of twenty arrays.
When a table grows, the binding reallocates it and rewrites its header slot.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from llvmlite import ir
from numba.extending import intrinsic

from . import config

# ---------------------------------------------------------------- field lists
SERVER_INT_FIELDS = (
    "present",  # 1 while the server exists (0 after remove_server)
    "zone",  # zone index
    "pool",  # pool index
    "group",  # group index (pool, zone, tag set), -1 until laid out
    "slot",  # leaf position inside its group's tree
    "tags",  # tag bitmask
    "max_sessions",
    "weight",
    "power",  # codes.Power
    "registered",  # 0/1
    "mode",  # codes.Mode
    "sessions",  # sessions not ended (launching, active, disconnected)
    "pending",  # sessions still counting as pending logons
    "load_index",  # 0..10000, recomputed on every change
    "tb",  # tiebreak: < 0 = seeded initial order, else pick sequence number
    "key",  # selection key, see loadindex.selection_key
    "sinbin",  # 1 while sin-binned
    "sb_prev",  # sin-bin list links
    "sb_next",
    "v_head",  # the server's sessions (doubly linked through SE_V_*)
    "v_tail",
    "picks",  # sessions placed on this server since it was added
)
SERVER_FLOAT_FIELDS = ("cpu", "mem", "disk_queue", "custom", "sinbin_until")

SESSION_INT_FIELDS = (
    "state",  # codes.SessionState (FREE when the slot is unused)
    "gen",  # generation of the slot; session id = gen << 32 | slot
    "user",
    "server",
    "pool",
    "endpoint",  # endpoint index, -1 = none
    "u_prev",  # the user's sessions, in creation order
    "u_next",
    "v_prev",  # the server's sessions
    "v_next",
    "p_prev",  # pending-logon list, ordered by launch time
    "p_next",
    "pending",  # 1 while counting as a pending logon
    "inst_head",  # first app instance of the session
    "n_apps",
)
SESSION_FLOAT_FIELDS = ("t_launch", "t_state")

INSTANCE_FIELDS = ("app", "next")

USER_FIELDS = ("home_zone", "n_sessions", "s_head", "s_tail")

APP_FIELDS = (
    "home_zone",
    "tags",  # tag restriction mask (0 = none)
    "max_total",  # -1 = unlimited
    "max_per_user",  # -1 = unlimited
    "instances",  # sessions running the app
    "pools_start",  # into the app_pools array
    "pools_count",
)

POOL_INT_FIELDS = (
    "load_balancing",
    "failover",
    "reconnection",
    "reconnect_in_maintenance",
    "external",
    "tolerance",
    "tolerance_hard",
    "max_per_user",  # -1 = unlimited
    "rules",  # bitmask over codes.LoadRule
    "n_zpref",
    "zpref0",
    "zpref1",
    "zpref2",
    "g_start",  # groups of the pool: [g_start, g_start + g_count)
    "g_count",
)
POOL_FLOAT_FIELDS = ("cpu_full", "memory_full", "disk_queue_full")

GROUP_FIELDS = (
    "pool",
    "zone",
    "tags",
    "n_servers",
    "n_available",  # servers on, registered and enabled (full or not)
    "tree_off",  # the group's first block (row) in the tree table
    "tree_cap",  # leaves (a power of eight); node 1 is the root (see tree.py)
)

PZ_FIELDS = ("g_start", "g_count")  # per (pool, zone): groups of that pool in that zone

#: Fields of a tree entry. The tree table is (tree_len, 32): one row per *block*,
#: the eight entries of one node's children stored field by field — their eight
#: keys, then their eight tiebreaks, servers and leaf slots, each field one aligned
#: 64-byte line — so a level of the tree is one vector compare (see tree.py).
#: ``slot`` is the entry's server's leaf position in its group (so an entry names
#: its server's whole path without reading the server record).
TREE_FIELDS = ("key", "tb", "server", "slot")
TREE_ARITY = 8  # children per node: entries per block, lanes per field

CLOCK_FIELDS = ("now", "sinbin_seconds", "pending_timeout")

#: What a launch kernel writes for each decision (one int64 row per launch).
DECISION_FIELDS = (
    "outcome",  # codes.Outcome
    "reason",  # codes.Reason (NONE unless rejected)
    "server",  # server index or -1
    "session",  # session id or -1
    "zone",  # zone index of the server or -1
    "load_index",  # the server's load index after the decision, or -1
    "pool",  # pool index of the session or -1
    "zone_choice",  # codes.ZoneChoice for a PLACED decision, else -1
)

# Header: table addresses, then capacities and counters.
TABLES = (
    "server_i",
    "server_f",
    "session_i",
    "session_f",
    "instance",
    "user",
    "app",
    "app_pools",
    "pool_i",
    "pool_f",
    "group",
    "pz",
    "tree",
    "ent",
    "session_free",
    "instance_free",
    "clock",
)
HEADER_SCALARS = (
    "server_cap",
    "session_cap",
    "instance_cap",
    "user_cap",
    "app_cap",
    "pool_cap",
    "group_cap",
    "pz_cap",
    "tree_len",
    "app_pools_len",
    "ent_words",
    "n_servers",  # servers ever added (indices 0 .. n_servers-1)
    "n_zones",
    "session_free_top",
    "instance_free_top",
    "pick_seq",
    "holders",  # users holding a licence
    "licence_cap",  # -1 = unlimited
    "enforce_entitlement",
    "live_sessions",
    "pend_head",
    "pend_tail",
    "sb_head",
    "sb_tail",
    "likely_pick",  # a hint: the server the next placement will most likely take, or -1
)


def _export(prefix: str, names, namespace=globals()):
    for i, name in enumerate(names):
        namespace[f"{prefix}_{name.upper()}"] = i
    namespace[f"N_{prefix}"] = len(names)


_export("SV", SERVER_INT_FIELDS)
_export("SF", SERVER_FLOAT_FIELDS)
_export("SE", SESSION_INT_FIELDS)
_export("SEF", SESSION_FLOAT_FIELDS)
_export("IN", INSTANCE_FIELDS)
_export("US", USER_FIELDS)
_export("AP", APP_FIELDS)
_export("PO", POOL_INT_FIELDS)
_export("POF", POOL_FLOAT_FIELDS)
_export("GR", GROUP_FIELDS)
_export("PZ", PZ_FIELDS)
_export("CK", CLOCK_FIELDS)
_export("D", DECISION_FIELDS)
N_TREE_COLUMNS = len(TREE_FIELDS) * TREE_ARITY
# the column of lane 0 of each field: entry ``lane`` of a block is column FIELD + lane
TREE_KEY, TREE_TB, TREE_SERVER, TREE_SLOT = (k * TREE_ARITY for k in range(len(TREE_FIELDS)))
_export("A", TABLES)
_export("H", tuple(f"{t}_addr" for t in TABLES) + HEADER_SCALARS)
HEADER_LEN = N_H  # noqa: F821  (defined by _export)

NONE = -1  # "no index" in every int field
INF_KEY = np.iinfo(np.int64).max
SINBIN_BIT = 1 << 62
OVERTOL_BIT = 1 << 61
FULL_LOAD = config.FULL_LOAD

# ---------------------------------------------------------------- kernel view
State = namedtuple(
    "State",
    [
        "hdr",  # (HEADER_LEN, 1) view of the header, so lists can live in it
        "srv",
        "srvf",
        "ses",
        "sesf",
        "inst",
        "usr",
        "app",
        "app_pools",
        "pool",
        "poolf",
        "grp",
        "pz",
        "tree",
        "ent",
        "ses_free",
        "inst_free",
        "clock",
    ],
)


@intrinsic
def _address_as_pointer(typingctx, address):
    """Turn an int64 address (from the header) into a void pointer."""
    sig = types.voidptr(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


@intrinsic
def prefetch(typingctx, address):
    """Ask the CPU to bring the cache line at ``address`` (int64) in, for writing,
    without waiting for it (``llvm.prefetch``; a hint: no fault, no effect on
    results). A batch kernel issues these for rows a few decisions ahead, so the
    random record reads of a logon storm overlap instead of queueing."""
    sig = types.void(types.int64)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        # rw = 1 (write), locality = 3 (keep in every cache level), cache = 1 (data)
        builder.call(fn, [builder.inttoptr(args[0], i8p), i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _fixed(typingctx, header_ptr, slot):
    """``header[slot]`` for a slot that no kernel writes (a table's address or
    capacity: only the binding changes those, between kernel calls). The load is
    marked ``!invariant.load``, so LLVM may read it once per kernel call and keep
    it: without the mark every store into an int64 table could have changed the
    header (same type, no aliasing information), and each inlined ``unpack`` reads
    the addresses again after the last store."""
    sig = types.int64(header_ptr, slot)

    def codegen(context, builder, signature, args):
        ptr, k = args
        value = builder.load(builder.gep(ptr, [k]))
        value.set_metadata("invariant.load", builder.module.add_metadata([]))
        return value

    return sig, codegen


@njit(inline="always")
def _table_i(h, addr_slot, rows, cols):
    """A plain (rows, cols) int64 table (the tree, the entitlement bits)."""
    return carray(_address_as_pointer(_fixed(h, addr_slot)), (rows, cols), np.int64)


@njit(inline="always")
def _records_i(h, addr_slot, fields, cap):
    """A record table indexed [field, record], stored record-major: memory is a
    (cap, fields) array, so one record's fields share a cache line or two."""
    return carray(_address_as_pointer(_fixed(h, addr_slot)), (cap, fields), np.int64).T


@njit(inline="always")
def _records_f(h, addr_slot, fields, cap):
    return carray(_address_as_pointer(_fixed(h, addr_slot)), (cap, fields), np.float64).T


@njit(inline="always")
def _vector_i(h, addr_slot, n):
    return carray(_address_as_pointer(_fixed(h, addr_slot)), (n,), np.int64)


@njit(inline="always")
def unpack(header_ptr):
    """Views of every table, from the header pointer a kernel receives. Table
    addresses and capacities are read with ``_fixed`` (no kernel changes them);
    the counters are read and written through ``hdr``."""
    hdr = carray(header_ptr, (HEADER_LEN, 1))
    h = header_ptr
    sc = _fixed(h, H_SERVER_CAP)  # noqa: F821
    ses_cap = _fixed(h, H_SESSION_CAP)  # noqa: F821
    user_cap = _fixed(h, H_USER_CAP)  # noqa: F821
    pool_cap = _fixed(h, H_POOL_CAP)  # noqa: F821
    return State(
        hdr,
        _records_i(h, H_SERVER_I_ADDR, N_SV, sc),  # noqa: F821
        _records_f(h, H_SERVER_F_ADDR, N_SF, sc),  # noqa: F821
        _records_i(h, H_SESSION_I_ADDR, N_SE, ses_cap),  # noqa: F821
        _records_f(h, H_SESSION_F_ADDR, N_SEF, ses_cap),  # noqa: F821
        _records_i(h, H_INSTANCE_ADDR, N_IN, _fixed(h, H_INSTANCE_CAP)),  # noqa: F821
        _records_i(h, H_USER_ADDR, N_US, user_cap),  # noqa: F821
        _records_i(h, H_APP_ADDR, N_AP, _fixed(h, H_APP_CAP)),  # noqa: F821
        _vector_i(h, H_APP_POOLS_ADDR, _fixed(h, H_APP_POOLS_LEN)),  # noqa: F821
        _records_i(h, H_POOL_I_ADDR, N_PO, pool_cap),  # noqa: F821
        _records_f(h, H_POOL_F_ADDR, N_POF, pool_cap),  # noqa: F821
        _records_i(h, H_GROUP_ADDR, N_GR, _fixed(h, H_GROUP_CAP)),  # noqa: F821
        _records_i(h, H_PZ_ADDR, N_PZ, _fixed(h, H_PZ_CAP)),  # noqa: F821
        _table_i(h, H_TREE_ADDR, _fixed(h, H_TREE_LEN), N_TREE_COLUMNS),  # noqa: F821
        _table_i(h, H_ENT_ADDR, user_cap, _fixed(h, H_ENT_WORDS)),  # noqa: F821
        _vector_i(h, H_SESSION_FREE_ADDR, ses_cap),  # noqa: F821
        _vector_i(h, H_INSTANCE_FREE_ADDR, _fixed(h, H_INSTANCE_CAP)),  # noqa: F821
        carray(_address_as_pointer(_fixed(h, H_CLOCK_ADDR)), (N_CK,), np.float64),  # noqa: F821
    )


def tree_first_leaf(cap):
    """Node number of the first leaf of an 8-ary tree with ``cap`` leaves (a power
    of eight): (cap + 6) // 7 (the inner nodes are 1 .. (cap - 1) / 7). It is also
    the tree's number of blocks (rows): block k holds the children of node k, and
    block 0 the root. Ints or numpy arrays; the kernels call it compiled, as
    ``tree.first_leaf``."""
    return (cap + 6) // 7


def tree_entry(c):
    """(block, lane) of node c's entry — its parent's block ``(c + 6) >> 3``, lane
    ``(c + 6) & 7`` — the block relative to the tree's offset. Ints or numpy
    arrays; the kernels call it compiled, as ``tree.entry_of``."""
    return (c + 6) >> 3, (c + 6) & 7


# ---------------------------------------------------------------- allocation
def new_table(fields, capacity: int, dtype, fill=NONE) -> np.ndarray:
    """A record table of ``capacity`` records filled with ``fill``, indexed
    ``[field, record]`` (shape ``(len(fields), capacity)``) and stored
    record-major (Fortran order): a transposed view of a (capacity, fields)
    array, as the kernels read it (``_records_i``)."""
    return np.full((max(1, capacity), len(fields)), fill, dtype=dtype).T


def grow_table(table: np.ndarray, capacity: int, fill=NONE) -> np.ndarray:
    """A copy of ``table`` (1-D, or a record table of ``new_table``) with room
    for ``capacity`` records."""
    if table.ndim == 1:
        out = np.full(capacity, fill, dtype=table.dtype)
        out[: table.shape[0]] = table
        return out
    out = np.full((capacity, table.shape[0]), fill, dtype=table.dtype).T
    out[:, : table.shape[1]] = table
    return out


#: tables indexed [field, record] and stored record-major (see new_table)
RECORD_TABLES = ("server_i", "server_f", "session_i", "session_f", "instance", "user", "app",
                 "pool_i", "pool_f", "group", "pz")


def splitmix64(x: int) -> int:
    """The splitmix64 finaliser (Steele et al.), on Python ints mod 2**64."""
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def initial_tiebreak(seed: int, index: int) -> int:
    """Seeded initial tiebreak of server ``index``: a negative int64, so a server
    never picked comes before every picked one (see docs/SEMANTICS.md)."""
    x = ((seed << 32) ^ index) & ((1 << 64) - 1)
    return (splitmix64(x) >> 3) - (1 << 61)
