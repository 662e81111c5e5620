"""The exported kernels: numba ``@cfunc`` entry points with C signatures.

Design: each kernel is written once, in numba, and exported as a C function
pointer. The Cython binding (``bindings/_engine.pyx``) holds the header pointer
and calls these pointers directly without the GIL — about 0.1 µs per call,
against ~0.65 µs through numba's dispatcher with four array arguments. Rare,
configuration-time kernels are called from Python through ``cfunc.ctypes``.
Kernels never raise: they return a ``codes.Status`` and write results into
caller-provided buffers. numba's cache keeps a warm ``import usher`` fast: each
kernel compiles under ``compile_settings()`` and is loaded from the cache when it
holds it (``_kernel``). A cold cache says so on stderr (the compile takes about a
minute, once); a cache entry that cannot be read is dropped with a warning and
compiled again, rather than failing the import.

Every kernel validates what it needs (session ids, server presence, time) before
its first write, so a non-zero status means nothing changed.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import pickle
import sys
import tempfile
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import carray, njit, types
from numba.core import sigutils
from numba.core.ccallback import CFunc

from . import codes
from . import state as st
from .commit import (
    advance,
    app_in_session,
    check_time,
    close_server_sessions,
    close_session,
    leave_app,
    refresh_server,
    resolve_session,
    recount_pending,
    sinbin_server,
    unsinbin_server,
    stop_pending,
)
from .explain import N_FUNNEL, explain_launch
from .health import forget_logons, record_logon
from .eligibility import available
from .loadindex import load_index, selection_key
from .placement import place
from .tree import ROOT_LANE, build_all, entry_of, first_leaf, rebuild_trees, replay_path, update_moved



def cache_dir() -> str:
    """Where the compiled kernels are cached: a folder named after a digest of
    every ``core/`` source file and the numba version, under ``NUMBA_CACHE_DIR``
    (or ``~/.cache/usher``). numba alone keys its cache on the defining file
    only (this one), so an edit to another engine file — or a stale cache left
    in site-packages by an older install — could otherwise load old code."""
    digest = hashlib.sha1(numba.__version__.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "usher"
    )
    folder = os.path.join(base, f"usher-kernels-{digest.hexdigest()[:16]}")
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError:
        folder = os.path.join(tempfile.gettempdir(), f"usher-kernels-{digest.hexdigest()[:16]}")
        os.makedirs(folder, exist_ok=True)
    return folder


@contextmanager
def _numba_cache_in(folder: str):
    """numba reads its cache folder when a function is decorated; point it at
    ``folder`` for this module's kernels only."""
    old = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = folder
    try:
        yield
    finally:
        numba.config.CACHE_DIR = old


#: LLVM's inlining threshold while the kernels compile. At numba's default (-O3:
#: 250) LLVM keeps most engine functions out of line, so a launch makes a dozen
#: calls in numba's calling convention (status word, exception slot, spilled
#: registers). A high threshold inlines them at the LLVM level — cheap to compile
#: (unlike numba's ``inline="always"``, which re-types the function at every
#: call site) — and a launch compiles to three functions. 250 is restored afterwards.
INLINE_THRESHOLD = 30_000
_DEFAULT_INLINE_THRESHOLD = 250


@contextmanager
def _inline_threshold(value: int):
    """LLVM's ``-inline-threshold`` is process-wide: set it for this module's
    kernels only, then put back the value numba's -O3 pipeline uses anyway."""
    llvm.set_option("", f"-inline-threshold={value}")
    try:
        yield
    finally:
        llvm.set_option("", f"-inline-threshold={_DEFAULT_INLINE_THRESHOLD}")


#: This package's name as it appears in a mangled function name (``usher.core`` ->
#: ``5usher4core``, the Itanium C++ form numba uses).
_OWN_MANGLED = "".join(f"{len(part)}{part}" for part in __name__.split(".")[:-1])


@contextmanager
def _no_negative_indices():
    """Compile array indexing as Cython's ``wraparound=False`` does: numba turns
    every signed index ``i`` into ``i + n if i < 0 else i`` (a compare, an add and
    a select, and the dimension ``n`` kept in a register), about sixty
    instructions per launch. No kernel indexes from the end: every index is a
    record number, a field number or a free-list position, checked for -1 where
    -1 can occur (``tests/test_engine.py`` checks that compiled kernels read with
    the index as given). numba's hook for this (``fix_integer_index``) is swapped
    while this module's kernels compile and put back afterwards. It changes only
    functions of this package (their mangled names carry ``_OWN_MANGLED``): numba's
    own implementations compiled meanwhile (sorting, array constructors), and any
    other code another thread compiles in that window, keep numba's indexing."""
    from numba.np import arrayobj

    original = arrayobj.fix_integer_index

    def fix_integer_index(context, builder, idxty, idx, size):
        if _OWN_MANGLED not in builder.function.name:
            return original(context, builder, idxty, idx, size)
        return context.cast(builder, idx, idxty, types.intp if idxty.signed else types.uintp)

    arrayobj.fix_integer_index = fix_integer_index
    try:
        yield
    finally:
        arrayobj.fix_integer_index = original


@contextmanager
def compile_settings():
    """The settings usher's numba code compiles under, set on entering and put
    back on leaving (also when a compile fails): numba's cache folder
    (``cache_dir()``), LLVM's inlining threshold (``INLINE_THRESHOLD``) and
    indexing without negative indices for ``usher.core``'s functions (see
    ``_no_negative_indices``). The kernels below compile inside it. Another
    package's ``@njit(cache=True)`` functions decorated inside it cache in the
    same folder (numba reads the folder when a function is decorated; the
    other two settings apply while something compiles, and the indexing one
    only to ``usher.core``)::

        with compile_settings():
            @njit(cache=True)
            def kth(values, k): ...
    """
    with ExitStack() as stack:
        stack.enter_context(_numba_cache_in(cache_dir()))
        stack.enter_context(_inline_threshold(INLINE_THRESHOLD))
        stack.enter_context(_no_negative_indices())
        yield


class _CompileNotice:
    """Says on stderr that the kernels compile (about a minute, once per
    install): a line when the first kernel misses the cache, a dot per kernel
    compiled, ``done`` at the end. Silent when every kernel comes from the cache.
    Never stdout: a command's output stays its own."""

    HEADLINE = "usher: compiling the engine's kernels, once (about a minute)…"

    def __init__(self):
        self.started = False
        self.mid_line = False  # the last thing written is this notice's unfinished line
        self.compiled = 0

    def _write(self, text):
        if sys.stderr is not None:
            sys.stderr.write(text)
            sys.stderr.flush()
        self.mid_line = not text.endswith("\n")

    def missed(self):
        if not self.started:
            self.started = True
            self._write(self.HEADLINE + " ")

    def saved(self):
        self.compiled += 1
        self._write("." if self.mid_line else "usher: compiling ." if self.started else "")

    def interrupt(self):
        """End the unfinished line, before something else writes to stderr."""
        if self.mid_line:
            self._write("\n")

    def finish(self, failed=False):
        if self.started:
            prefix = " " if self.mid_line else "usher: compiling "
            self._write(prefix + ("failed\n" if failed else f"done ({self.compiled} kernels)\n"))
        self.started = self.mid_line = False
        self.compiled = 0


_notice = _CompileNotice()


def _entry_files(cache):
    """The index file and the data files of one kernel's entry in numba's cache
    (``name-line.pyXY.nbi`` and ``name-line.pyXY.N.nbc``)."""
    index = cache._cache_file._index_path
    data = glob.glob(glob.escape(index[: -len(".nbi")]) + ".*.nbc")
    return index, sorted(data)


def _unreadable_file(cache):
    """Which file of a kernel's cache entry cannot be read: the index, else the
    first data file that does not unpickle, else (its code did not load) the
    data file, or the index when there is none."""
    index, data = _entry_files(cache)
    try:
        cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - any failure to read means this file
        return index
    for path in data:
        try:
            with open(path, "rb") as f:
                pickle.loads(f.read())
        except Exception:  # noqa: BLE001
            return path
    return data[0] if data else index


class _CheckedCache:
    """numba's cache of one kernel, with what an import needs around it: an entry
    that cannot be read (a truncated, zeroed or overwritten file) is dropped —
    a warning names the file — and the kernel compiles again, where numba would
    raise on every import; a miss and each save are told to ``_notice``; a cache
    that cannot be written warns and the kernel runs compiled, uncached."""

    def __init__(self, cache):
        self._cache = cache

    def load_overload(self, sig, target_context):
        try:
            found = self._cache.load_overload(sig, target_context)
        except Exception as exc:  # noqa: BLE001 - whatever the damage, the cure is the same
            # one line, placed at the damaged file: "<file>:0: RuntimeWarning: usher: ..."
            _notice.interrupt()
            warnings.warn_explicit(
                f"usher: dropped an unreadable compiled kernel ({type(exc).__name__}: {exc}); compiling it again",
                RuntimeWarning, filename=_unreadable_file(self._cache), lineno=0, module=__name__)
            index, data = _entry_files(self._cache)
            for damaged in (index, *data):
                try:
                    os.remove(damaged)
                except OSError:
                    pass
            found = None
        if found is None:
            _notice.missed()
        return found

    def save_overload(self, sig, data):
        try:
            self._cache.save_overload(sig, data)
        except OSError as exc:
            _notice.interrupt()
            warnings.warn(f"usher: cannot cache a compiled kernel in {self._cache.cache_path} ({exc}); "
                          "the next import compiles it again", RuntimeWarning, stacklevel=2)
        _notice.saved()


def _kernel(sig):
    """Decorator: compile a function as an exported kernel with the C signature
    ``sig`` (a numba ``@cfunc``, nopython, nogil), under ``compile_settings()``,
    from numba's cache when it holds a readable entry (``_CheckedCache``)."""

    def compile_kernel(fn):
        with compile_settings():
            kernel = CFunc(fn, sigutils.normalize_signature(sig), locals={},
                           options={"nopython": True, "nogil": True})
            kernel.enable_caching()
            kernel._cache = _CheckedCache(kernel._cache)
            try:
                kernel.compile()
            except BaseException:
                _notice.finish(failed=True)
                raise
        return kernel

    return compile_kernel


_i64 = types.int64
_f64 = types.float64
_p64 = types.CPointer(types.int64)
_pf64 = types.CPointer(types.float64)

_OK = int(codes.Status.OK)
_BAD_SESSION_STATE = int(codes.Status.BAD_SESSION_STATE)
_APP_NOT_IN_SESSION = int(codes.Status.APP_NOT_IN_SESSION)
_UNKNOWN_SERVER = int(codes.Status.UNKNOWN_SERVER)
_INVALID_VALUE = int(codes.Status.INVALID_VALUE)
_TIME_WENT_BACKWARDS = int(codes.Status.TIME_WENT_BACKWARDS)
_LAUNCHING = int(codes.SessionState.LAUNCHING)
_ACTIVE = int(codes.SessionState.ACTIVE)
_DISCONNECTED = int(codes.SessionState.DISCONNECTED)
_OFF = int(codes.Power.OFF)

#: Session operations (``session_op``'s ``op`` argument): ``codes.SessionOp``.
OP_LOGON_COMPLETE = int(codes.SessionOp.LOGON_COMPLETE)
OP_DISCONNECT = int(codes.SessionOp.DISCONNECT)
OP_LOGOFF = int(codes.SessionOp.LOGOFF)
OP_LAUNCH_FAILED = int(codes.SessionOp.LAUNCH_FAILED)
OP_CLOSE_APP = int(codes.SessionOp.CLOSE_APP)

#: Server operations (``server_op``'s ``op`` argument): ``codes.ServerOp``.
OP_POWER = int(codes.ServerOp.POWER)
OP_REGISTERED = int(codes.ServerOp.REGISTERED)
OP_MODE = int(codes.ServerOp.MODE)
OP_EVICT = int(codes.ServerOp.EVICT)
OP_PLACE_LAST = int(codes.ServerMark.PLACE_LAST)

#: Telemetry fields present (``telemetry``'s ``mask`` argument): ``codes.TelemetryField``.
T_CPU = int(codes.TelemetryField.CPU)
T_MEM = int(codes.TelemetryField.MEM)
T_DISK_QUEUE = int(codes.TelemetryField.DISK_QUEUE)
T_CUSTOM = int(codes.TelemetryField.CUSTOM)
_RULE_CPU = 1 << int(codes.LoadRule.CPU)
_RULE_MEMORY = 1 << int(codes.LoadRule.MEMORY)
_RULE_DISK_QUEUE = 1 << int(codes.LoadRule.DISK_QUEUE)
_RULE_CUSTOM = 1 << int(codes.LoadRule.CUSTOM)

LAUNCH_SIG = _i64(_p64, _i64, _i64, _i64, _i64, _i64, _f64, _p64)
LAUNCH_MANY_SIG = _i64(_p64, _i64, _p64, _p64, _p64, _p64, _p64, _pf64, _p64)
SESSION_OP_SIG = _i64(_p64, _i64, _i64, _i64, _f64, _p64)
SESSION_OPS_MANY_SIG = _i64(_p64, _i64, _p64, _p64, _pf64, _p64, _p64)
SERVER_OP_SIG = _i64(_p64, _i64, _i64, _i64, _f64, _p64)
TELEMETRY_SIG = _i64(_p64, _i64, _p64, _pf64, _pf64, _pf64, _pf64, _i64, _f64, _p64)
ADVANCE_SIG = _i64(_p64, _f64)
BUILD_SIG = _i64(_p64, _i64)


_AHEAD = 8  # rows of a batch whose records are requested before their turn


@njit(inline="always")
def _record_address(table, r):
    """Address of record r of a record-major table (see state._records_i)."""
    return table.ctypes.data + r * table.strides[1]


@njit(inline="always")
def _prefetch_record(table, r):
    """Prefetch every cache line of record r of a record-major table: a record
    that does not start on a line boundary spans one line more than its size
    (a 176-byte server record: three or four lines)."""
    a = _record_address(table, r)
    size = table.strides[1]
    for b in range(0, size, 64):
        st.prefetch(a + b)
    st.prefetch(a + size - 1)


@njit(inline="always")
def _prefetch_row(s, u, app, ahead):
    """Prefetch what the launch ``ahead`` rows from now will most likely touch at
    random places: its user's record and entitlement word, and the session and
    instance slots it takes if every row before it places (the free lists are
    stacks). A guess that turns out wrong costs a wasted cache line, nothing else."""
    if u >= 0:
        st.prefetch(_record_address(s.usr, u))
        st.prefetch(s.ent.ctypes.data + (u * s.ent.shape[1] + (app >> 6)) * 8)
    _prefetch_free_slots(s, ahead)


@njit(inline="always")
def _prefetch_free_slots(s, ahead):
    """Prefetch the session slot (both records) and the instance slot that the
    placement ``ahead`` placements from now takes (the free lists are stacks).
    A slot was freed by the session that last held it, whose end does not
    touch the slot's float record (launch and state times): on a large fleet that
    line is in memory, and the commit writes it."""
    top = s.hdr[st.H_SESSION_FREE_TOP, 0] - 1 - ahead
    if top >= 0:
        slot = s.ses_free[top]
        _prefetch_record(s.ses, slot)
        _prefetch_record(s.sesf, slot)
    top = s.hdr[st.H_INSTANCE_FREE_TOP, 0] - 1 - ahead
    if top >= 0:
        st.prefetch(_record_address(s.inst, s.inst_free[top]))


_PATH_LEVELS = 3  # bottom levels of a path to prefetch (the ones above stay cached)


@njit(inline="always")
def _prefetch_next_pick(s, i):
    """After a placement on server i: prefetch what the next placement in i's
    group will most likely touch — the group's new best server (its record) and
    that server's leaf-to-root path (the blocks of its lowest levels) — and name
    that server in ``H_LIKELY_PICK`` for ``_prefetch_server_tail``. A hint only."""
    if i < 0:
        return
    g = s.srv[st.SV_GROUP, i]
    if g < 0:
        return
    off = s.grp[st.GR_TREE_OFF, g]
    r = s.tree[off, st.TREE_SERVER + ROOT_LANE]
    s.hdr[st.H_LIKELY_PICK, 0] = r
    if r < 0:
        return
    _prefetch_record(s.srv, r)
    # the root entry names the leaf too: no wait for the server record
    node = first_leaf(s.grp[st.GR_TREE_CAP, g]) + s.tree[off, st.TREE_SLOT + ROOT_LANE]
    base = s.tree.ctypes.data + off * st.N_TREE_COLUMNS * 8
    for _ in range(_PATH_LEVELS):
        if node <= 1:
            break
        node = entry_of(node)[0]  # the parent: its block holds the node's entry
        a = base + node * st.N_TREE_COLUMNS * 8
        for line in range(0, st.N_TREE_COLUMNS * 8, 64):  # keys, tiebreaks, servers, slots
            st.prefetch(a + line)


@njit(inline="always")
def _prefetch_server_tail(s, r):
    """Prefetch the one line a placement on server ``r`` (a likely pick, or -1)
    writes outside the records a launch reads: r's last session, whose
    ``v_next`` link the new session joins (commit.open_session). That session
    was opened long ago, so on a large fleet its line is in memory and the
    store would wait on it. r's own record must be in cache already (it was
    prefetched a launch or two before), or reading its ``v_tail`` here would
    wait instead. A hint: a wrong guess costs one line."""
    if r < 0:
        return
    t = s.srv[st.SV_V_TAIL, r]
    if t >= 0:
        st.prefetch(_record_address(s.ses, t) + st.SE_V_NEXT * 8)


@_kernel(LAUNCH_SIG)
def launch(header, user, app, location, endpoint, external, now, out_ptr):
    """Decide and commit one launch; the decision goes to out[0:N_D]."""
    h = header
    s = st.unpack(h)
    out = carray(out_ptr, (st.N_D,))
    # what a placement writes outside the user's and the server's records: the
    # session and instance slots it takes, and the likely pick's last session
    # (named after the previous placement, whose record was prefetched then)
    _prefetch_free_slots(s, 0)
    _prefetch_server_tail(s, s.hdr[st.H_LIKELY_PICK, 0])
    status = place(h, user, app, location, endpoint, external, now, out)
    if status == _OK:
        _prefetch_next_pick(s, out[st.D_SERVER])
    return status


@_kernel(LAUNCH_MANY_SIG)
def launch_many(header, n, users, apps, locations, endpoints, externals, nows, out_ptr):
    """Decide and commit n launches in order, exactly as n calls to ``launch``.
    The binding has checked times and capacity, so no row can fail half-way."""
    h = header
    s = st.unpack(h)
    u = carray(users, (n,))
    a = carray(apps, (n,))
    loc = carray(locations, (n,))
    ep = carray(endpoints, (n,))
    ext = carray(externals, (n,))
    t = carray(nows, (n,))
    out = carray(out_ptr, (n, st.N_D))
    # the likely picks named after the last two placements: a row is too short
    # for the record of the latest to arrive, so its server tail is requested
    # one row later (the pick of the next row is another group's more often)
    hint_1 = hint_2 = -1
    for k in range(n):
        if k + _AHEAD < n:
            _prefetch_row(s, u[k + _AHEAD], a[k + _AHEAD], _AHEAD)
        _prefetch_server_tail(s, hint_2)
        status = place(h, u[k], a[k], loc[k], ep[k], ext[k], t[k], out[k])
        if status != _OK:
            return status
        _prefetch_next_pick(s, out[k, st.D_SERVER])
        hint_2, hint_1 = hint_1, s.hdr[st.H_LIKELY_PICK, 0]
    return _OK


@njit(inline="always")
def _session_state_ok(state, op):
    """Whether a session in ``state`` can take ``op`` (close_app: any live state)."""
    if op == OP_LOGON_COMPLETE or op == OP_LAUNCH_FAILED:
        return state == _LAUNCHING
    if op == OP_DISCONNECT:
        return state == _ACTIVE or state == _LAUNCHING
    return True


@njit(inline="always")
def _apply_session_op(h, slot, op, arg, now):
    """Apply a checked session op to live session ``slot`` at checked ``now``;
    returns 1 when the session ended."""
    s = st.unpack(h)
    advance(h, now)
    i = s.ses[st.SE_SERVER, slot]
    if op == OP_LOGON_COMPLETE:
        s.ses[st.SE_STATE, slot] = _ACTIVE
        s.sesf[st.SEF_T_STATE, slot] = now
        stop_pending(h, slot)
        replay_path(h, i)
        record_logon(h, i, now - s.sesf[st.SEF_T_LAUNCH, slot])
    elif op == OP_DISCONNECT:
        s.ses[st.SE_STATE, slot] = _DISCONNECTED
        s.sesf[st.SEF_T_STATE, slot] = now
        stop_pending(h, slot)
        replay_path(h, i)
    elif op == OP_LOGOFF:
        close_session(h, slot)
        return 1
    elif op == OP_LAUNCH_FAILED:
        close_session(h, slot)
        until = now + s.clock[st.CK_SINBIN_SECONDS]
        if until > now:
            sinbin_server(h, i, until)
        else:  # a zero-length sin-bin ends any earlier one, as a later expiry would
            unsinbin_server(h, i)
        return 1
    else:
        leave_app(h, slot, arg)
        if s.ses[st.SE_N_APPS, slot] == 0:
            close_session(h, slot)
            return 1
    return 0


@_kernel(SESSION_OP_SIG)
def session_op(header, sid, op, arg, now, out_ptr):
    """logon_complete / disconnect / logoff / launch_failed / close_app(arg=app).
    out[0] = 1 when the session ended; with BAD_SESSION_STATE, out[0] = the
    session's state (codes.SessionState), for the message."""
    h = header
    s = st.unpack(h)
    out = carray(out_ptr, (1,))
    slot = resolve_session(h, sid)
    if slot < 0:
        return -slot
    state = s.ses[st.SE_STATE, slot]
    if not _session_state_ok(state, op):
        out[0] = state
        return _BAD_SESSION_STATE
    if op == OP_CLOSE_APP and not app_in_session(h, slot, arg):
        return _APP_NOT_IN_SESSION
    status = check_time(h, now)
    if status != _OK:
        return status
    out[0] = _apply_session_op(h, slot, op, arg, now)
    return _OK


@njit(cache=False)
def _check_session_ops(h, n, op, sid, t, saved, bad):
    """The status ``session_op`` would return for the first row of a batch that
    fails, applied in order (OK when none does; ``bad`` = [row, state]). Each row's
    state change is made on the session records and undone before returning, so
    a later row sees its session as the rows before it leave it (``saved``: two
    words a row)."""
    s = st.unpack(h)
    status = _OK
    clock = s.clock[st.CK_NOW]
    done = 0
    for k in range(n):
        o = op[k]
        state = 0
        slot = resolve_session(h, sid[k])
        # in the order of the single calls: the time (the binding's check), the
        # session, its state
        if t[k] < clock:
            status = _TIME_WENT_BACKWARDS
        elif slot < 0:
            status = -slot
        else:
            state = s.ses[st.SE_STATE, slot]
            if (o != OP_LOGON_COMPLETE and o != OP_DISCONNECT and o != OP_LOGOFF
                    and o != OP_LAUNCH_FAILED):
                status = _INVALID_VALUE
            elif not _session_state_ok(state, o):
                bad[1] = state
                status = _BAD_SESSION_STATE
        if status != _OK:
            bad[0] = k
            break
        clock = t[k]
        saved[2 * k] = slot
        saved[2 * k + 1] = state
        if o == OP_LOGON_COMPLETE:
            s.ses[st.SE_STATE, slot] = _ACTIVE
        elif o == OP_DISCONNECT:
            s.ses[st.SE_STATE, slot] = _DISCONNECTED
        else:  # ended: its id now names an ended session
            s.ses[st.SE_GEN, slot] += 1
        done = k + 1
    for k in range(done - 1, -1, -1):
        slot = saved[2 * k]
        o = op[k]
        if o == OP_LOGOFF or o == OP_LAUNCH_FAILED:
            s.ses[st.SE_GEN, slot] -= 1
        else:
            s.ses[st.SE_STATE, slot] = saved[2 * k + 1]
    return status


@_kernel(SESSION_OPS_MANY_SIG)
def session_ops_many(header, n, ops, sids, nows, saved_ptr, bad_ptr):
    """n session ops (logon_complete / disconnect / logoff / launch_failed) in
    order, all or nothing: exactly as n calls to ``session_op`` when every one
    succeeds; otherwise nothing changes and the status is the first failing
    row's (``bad`` = [row, state for BAD_SESSION_STATE]). An op code that is none
    of the four is INVALID_VALUE. ``saved``: 2n words of scratch."""
    h = header
    s = st.unpack(h)
    op = carray(ops, (n,))
    sid = carray(sids, (n,))
    t = carray(nows, (n,))
    saved = carray(saved_ptr, (2 * n,))
    bad = carray(bad_ptr, (2,))
    status = _check_session_ops(h, n, op, sid, t, saved, bad)
    if status != _OK:
        return status
    for k in range(n):
        _apply_session_op(h, saved[2 * k], op[k], 0, t[k])
    return _OK


@_kernel(SERVER_OP_SIG)
def server_op(header, i, op, value, now, out_ptr):
    """power / registered / mode / place-last / evict. Sessions ended by power-off or
    eviction: out[0] = how many, out[1:] their ids (the binding sizes out to
    the server's session count + 1)."""
    h = header
    s = st.unpack(h)
    if i < 0 or i >= s.hdr[st.H_N_SERVERS, 0] or s.srv[st.SV_PRESENT, i] == 0:
        return _UNKNOWN_SERVER
    status = check_time(h, now)
    if status != _OK:
        return status
    advance(h, now)
    out = carray(out_ptr, (s.srv[st.SV_SESSIONS, i] + 1,))
    out[0] = 0
    was_available = available(s.srv, i)
    if op == OP_POWER:
        if value == _OFF:
            out[0] = close_server_sessions(h, i, out, 1)
            forget_logons(h, i)
        s.srv[st.SV_POWER, i] = value
    elif op == OP_REGISTERED:
        s.srv[st.SV_REGISTERED, i] = value
    elif op == OP_MODE:
        s.srv[st.SV_MODE, i] = value
    elif op == OP_PLACE_LAST:
        if value != 0:
            s.srv[st.SV_KEY_BITS, i] |= st.PLACE_LAST_BIT
        else:
            s.srv[st.SV_KEY_BITS, i] &= ~st.PLACE_LAST_BIT
    else:
        out[0] = close_server_sessions(h, i, out, 1)
        s.srv[st.SV_PRESENT, i] = 0
    g = s.srv[st.SV_GROUP, i]
    if g >= 0:
        s.grp[st.GR_N_AVAILABLE, g] += int(available(s.srv, i)) - int(was_available)
    refresh_server(h, i)
    return _OK


@njit(inline="always")
def _column_ok(v, n, lo, hi, hi_open):
    """lo <= v[k] <= hi (or < hi) for every row; NaN fails. Branch-free, so the
    loop vectorises: the common all-good batch costs a fraction of a row-by-row
    check that stops early."""
    ok = True
    if hi_open:
        for k in range(n):
            ok &= (v[k] >= lo) & (v[k] < hi)
    else:
        for k in range(n):
            ok &= (v[k] >= lo) & (v[k] <= hi)
    return ok


@njit(inline="always")
def _telemetry_ok(s, n, idx, c, m, d, x, mask, n_servers):
    """Every row of the batch is valid (known server, values in range)."""
    ok = True
    for k in range(n):
        i = idx[k]
        ok &= (i >= 0) & (i < n_servers)
    if not ok:
        return False
    for k in range(n):
        ok &= s.srv[st.SV_PRESENT, idx[k]] != 0
    if mask & T_CPU:
        ok &= _column_ok(c, n, 0.0, 100.0, False)
    if mask & T_MEM:
        ok &= _column_ok(m, n, 0.0, 100.0, False)
    if mask & T_DISK_QUEUE:
        ok &= _column_ok(d, n, 0.0, math.inf, True)
    if mask & T_CUSTOM:
        ok &= _column_ok(x, n, 0.0, 10000.0, False)
    return ok


@njit(cache=False)
def _apply_telemetry(h, n, idx, c, m, d, x, mask, now):
    """The writes of a checked telemetry batch (see telemetry)."""
    s = st.unpack(h)
    status = check_time(h, now)
    if status != _OK:
        return status
    advance(h, now)
    # load rules that read a field of this batch: a server whose pool reads none
    # keeps its load index, hence its key and its place in the tree
    reads = 0
    if mask & T_CPU:
        reads |= _RULE_CPU
    if mask & T_MEM:
        reads |= _RULE_MEMORY
    if mask & T_DISK_QUEUE:
        reads |= _RULE_DISK_QUEUE
    if mask & T_CUSTOM:
        reads |= _RULE_CUSTOM
    moved = np.empty(n, np.int64)
    n_moved = 0
    for k in range(n):
        i = idx[k]
        if mask & T_CPU:
            s.srvf[st.SF_CPU, i] = c[k]
        if mask & T_MEM:
            s.srvf[st.SF_MEM, i] = m[k]
        if mask & T_DISK_QUEUE:
            s.srvf[st.SF_DISK_QUEUE, i] = d[k]
        if mask & T_CUSTOM:
            s.srvf[st.SF_CUSTOM, i] = x[k]
        if s.pool[st.PO_RULES, s.srv[st.SV_POOL, i]] & reads == 0:
            continue
        li = load_index(h, i)
        if li == s.srv[st.SV_LOAD_INDEX, i]:
            continue
        s.srv[st.SV_LOAD_INDEX, i] = li
        key = selection_key(h, i)
        if key != s.srv[st.SV_KEY, i]:
            s.srv[st.SV_KEY, i] = key
            moved[n_moved] = i
            n_moved += 1
    update_moved(h, moved, n_moved)
    return _OK


@_kernel(TELEMETRY_SIG)
def telemetry(header, n, servers, cpu, mem, disk_queue, custom, mask, now, bad_ptr):
    """Set load inputs of n servers; ``mask`` says which of the four arrays are
    given. Every row is checked before the first write: an unknown server gives
    UNKNOWN_SERVER, a NaN or out-of-range value INVALID_VALUE, with bad[0] = the
    row and bad[1] = the field's mask bit. Only servers whose pool's load
    rules read a field of the batch get a new load index; the trees of the
    groups whose keys moved are brought up to date (tree.update_moved: path
    replays, or a rebuild of a group where much of it moved)."""
    h = header
    s = st.unpack(h)
    bad = carray(bad_ptr, (2,))
    idx = carray(servers, (n,))
    c = carray(cpu, (n,))
    m = carray(mem, (n,))
    d = carray(disk_queue, (n,))
    x = carray(custom, (n,))
    n_servers = s.hdr[st.H_N_SERVERS, 0]
    if not _telemetry_ok(s, n, idx, c, m, d, x, mask, n_servers):
        for k in range(n):  # something is wrong: find the first bad row, say why
            i = idx[k]
            bad[0] = k
            if i < 0 or i >= n_servers or s.srv[st.SV_PRESENT, i] == 0:
                bad[1] = 0
                return _UNKNOWN_SERVER
            if mask & T_CPU and not (c[k] >= 0.0 and c[k] <= 100.0):
                bad[1] = T_CPU
                return _INVALID_VALUE
            if mask & T_MEM and not (m[k] >= 0.0 and m[k] <= 100.0):
                bad[1] = T_MEM
                return _INVALID_VALUE
            if mask & T_DISK_QUEUE and not (d[k] >= 0.0 and d[k] < math.inf):
                bad[1] = T_DISK_QUEUE
                return _INVALID_VALUE
            if mask & T_CUSTOM and not (x[k] >= 0.0 and x[k] <= 10000.0):
                bad[1] = T_CUSTOM
                return _INVALID_VALUE
    return _apply_telemetry(h, n, idx, c, m, d, x, mask, now)


@_kernel(ADVANCE_SIG)
def advance_clock(header, now):
    """Move the clock (pending-logon timeouts, sin-bin expiry) without a request."""
    h = header
    s = st.unpack(h)
    status = check_time(h, now)
    if status != _OK:
        return status
    advance(h, now)
    return _OK


@_kernel(BUILD_SIG)
def retime(header, n_groups):
    """The pending timeout changed: recount the pending logons from their
    launch times at the current clock, expire what has run out, and recompute
    every key and tree (a sin-bin keeps the expiry it was given)."""
    h = header
    s = st.unpack(h)
    recount_pending(h)
    advance(h, s.clock[st.CK_NOW])
    for i in range(s.hdr[st.H_N_SERVERS, 0]):
        if s.srv[st.SV_PRESENT, i] != 0:
            s.srv[st.SV_KEY, i] = selection_key(h, i)
    rebuild_trees(h, n_groups)
    return _OK


@_kernel(BUILD_SIG)
def build_trees(header, n_groups):
    """Recompute every load index and key, count each group's available servers
    and rebuild every group tree (after the binding laid the groups out anew)."""
    h = header
    s = st.unpack(h)
    for i in range(s.hdr[st.H_N_SERVERS, 0]):
        s.srv[st.SV_LOAD_INDEX, i] = 0 if s.srv[st.SV_PRESENT, i] == 0 else load_index(h, i)
        g = s.srv[st.SV_GROUP, i]
        if g >= 0 and available(s.srv, i):
            s.grp[st.GR_N_AVAILABLE, g] += 1
    build_all(h, n_groups)
    return _OK



EXPLAIN_SIG = _i64(_p64, _i64, _i64, _i64, _i64, _p64, _p64, _i64, _i64)


@_kernel(EXPLAIN_SIG)
def explain(header, user, app, location, external, counts_ptr, top_ptr, n_pools, k_top):
    """Funnel counts and top candidates per pool of the app (see explain.py);
    reads the state, changes nothing."""
    h = header
    s = st.unpack(h)
    counts = carray(counts_ptr, (n_pools, N_FUNNEL))
    top = carray(top_ptr, (n_pools, k_top))
    explain_launch(h, user, app, location, external, counts, top)
    return _OK


_notice.finish()
