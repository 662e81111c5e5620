"""The engine's state: struct-of-arrays tables, declared once.

Design: every table is one 2-D numpy array of shape ``(n_fields, capacity)``
(int64 or float64): row ``f`` is the array of field ``f`` over all records, so a
field is contiguous (struct of arrays) and the whole table is one pointer. The
field lists in ``layout.py`` are the single declaration; the ``SV_*``, ``SE_*`` ...
index constants and the header slots are derived from them there (and re-exported
here), numba freezes them into the kernels as compile-time constants, and the build
writes the ones the Cython binding reads into its generated ``_codes.pxi``.

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

from .layout import *  # noqa: F401,F403  (the field lists and their index constants)
from .layout import HEADER_LEN, N_CK, N_TREE_COLUMNS  # noqa: F401  (named here for the readers below)

NONE = -1  # "no index" in every int field
INF_KEY = np.iinfo(np.int64).max
SINBIN_BIT = 1 << 62
SLOW_BIT = 1 << 61
OVERTOL_BIT = 1 << 60
PLACE_LAST_BIT = 1 << 59
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
