# cython: language_level=3
"""The replay's hot loop, compiled: :func:`process` is the loop of
``usher.formats.replay.Replayer`` (its plain-Python reference, checked against it on
random traces, is tests/replay_reference.py), and :class:`DecisionMaker` is the one place a
decision line is made.

Design: a broker day is two thirds launch and session lines, each a few hundred
nanoseconds of engine work; in the interpreter, the loop that dispatches them, reads
their fields and builds their decision lines costs as much again. Here the loop is C:

- an op's class is compared by pointer, and its fields are read at their offsets in
  the op Struct (msgspec keeps each field in a slot described by a member descriptor:
  its offset is read once, at import; a class whose fields are not plain object slots
  is read with ``getattr``, the same values);
- the time of the last line applied is kept in a local, written back to
  ``Replayer.last_t`` before any call into the Python part of the replay; two float
  times are compared in C, any other as Python compares them;
- a telemetry run's value columns are float64 arrays filled from the lines' slots
  (a run holding a value or a time that is not a float is left to the Python
  method); a launch's fresh id is found and taken in ``names`` by one probe
  (``PyDict_SetDefault``), given back if the launch fails;
- a launch, a run of session lines and a run of telemetry lines reach the engine
  through its C entries (``usher._engine.LAUNCH_ROW``, ``SESSION_ROWS`` and
  ``TELEMETRY_ROWS``, capsules of C function pointers taken once at import): the launch writes its decision into a row of
  ``DECISION_FIELDS`` (the row a ``usher.Decision`` is made from) and the decision
  line is made from the row, with no Decision object; the session run's ops, ids and
  times go as C arrays, with no list or int per line. Each is the public call to its
  last check (a run the kernel refuses goes to ``session_ops_many`` itself, which
  raises the row's error; a telemetry run the kernel refuses goes to ``telemetry_many``
  the same way), and each is used only when the scheduler's ``launch`` /
  ``session_ops_many`` / ``telemetry_many`` is its own (a subclass's own method is
  called as is);
- every other call into the scheduler and every cold path (a failed line, a batch)
  is the Python loop's own call, in the same order, so the two loops give the same
  lines, the same errors and the same state (tests/test_replay_loop.py checks them
  against each other on random traces).

The engine's entries are capsules rather than a ``cimport`` of ``Engine``: a shared
``.pxd`` would move every C declaration of the engine's classes out of
``_engine.pyx`` and make this module's build depend on them; a capsule holds one
function pointer whose signature is declared on both sides (below and at the end of
``bindings/_engine.pyx``), and the decision row's field indices are read from
``usher.core.layout`` at import, the one place they are declared.
"""

from cpython.object cimport PyObject, PyObject_Hash
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.dict cimport PyDict_GetItem, PyDict_SetDefault
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcmp, memcpy, memset

import types

import numpy as np

from usher import _engine, _servers
from usher.core import layout
from usher.formats import dispatch
from usher.formats.trace import (
    BLANK,
    OUTCOME_NAMES as _OUTCOME_NAMES,
    REASON_NAMES as _REASON_NAMES,
    LaunchDecision,
    LaunchOp,
    TelemetryOp,
    UserOp,
)
from usher.validate import MAX_TIME as _MAX_TIME

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
        int flags
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member

cdef extern from *:
    """
    /* The length of o when it is an exact str of at most max ASCII characters held
       in the compact form (every ASCII str the decoder builds is), its characters in
       *data; else -1. Two such strs are equal iff their bytes are. */
    static inline Py_ssize_t replay_inline_text(PyObject* o, const char** data, Py_ssize_t max) {
        if (!PyUnicode_CheckExact(o) || !PyUnicode_IS_COMPACT_ASCII(o)
                || PyUnicode_GET_LENGTH(o) > max)
            return -1;
        *data = (const char*)PyUnicode_DATA(o);
        return PyUnicode_GET_LENGTH(o);
    }
    """
    Py_ssize_t replay_inline_text(PyObject* o, const char** data, Py_ssize_t max)

cdef extern from *:
    """
    /* A hint to bring the cache line at p in (no fault, no effect on results). */
    #if defined(__GNUC__) || defined(__clang__)
    #define replay_prefetch(p) __builtin_prefetch((const void*)(p))
    #else
    #define replay_prefetch(p) ((void)(p))
    #endif
    """
    void replay_prefetch(const void* p)


cdef extern from "usher_alloc.h":  # bindings/usher_alloc.h: zeroed, huge-page-hinted table memory
    void* usher_table_alloc(size_t nbytes)

cdef enum:
    INLINE_TEXT = 15  # NameSlot.text
    CACHE_SLOTS = 1 << 17  # NameCache: 4 MiB
    SESSION_RUN = 1024  # longest run of session lines given to one session_ops_many
    T_OBJECT_EX = 16  # a member descriptor's slot of an object reference (structmember.h)
    REASON_BITS = 4  # the outcome tally: (outcome << 4) + reason -> count
    TALLY_SLOTS = 64

NAME_CACHE_SLOTS = CACHE_SLOTS
cdef double MAX_TIME = _MAX_TIME
cdef double INF = float("inf")
cdef object FRESH = object()  # names[rid] while launch rid is being placed
cdef object EMPTY = np.empty
cdef int PLACED = 0
cdef int REJECTED = 3
cdef tuple OUTCOME_NAMES = tuple(_OUTCOME_NAMES)
cdef tuple REASON_NAMES = tuple(_REASON_NAMES)
cdef object DECISION = LaunchDecision
cdef object LAUNCH = LaunchOp
cdef object TELEMETRY = TelemetryOp
cdef object USER = UserOp
cdef dict SESSION_CLASSES = dict(dispatch.SESSION_OPS)

# The engine's launch that writes its decision into a row (DECISION_FIELDS) instead of
# a Decision: ``launch_row(s, user, app, location, endpoint, external, now, row)`` is
# ``s.launch(...)`` (usher._engine.LAUNCH_ROW), used when ``s.launch`` is the engine's own.
ctypedef int (*launch_row_fn)(object, object, object, object, object, object, object,
                              int64_t*) except -1
cdef launch_row_fn launch_row = <launch_row_fn>PyCapsule_GetPointer(
    _engine.LAUNCH_ROW, b"usher._engine.launch_row")
# and its session_ops_many of C rows: ``session_rows(s, n, ops, sessions, times)``
# (usher._engine.SESSION_ROWS), used when ``s.session_ops_many`` is the engine's own
ctypedef int (*session_rows_fn)(object, Py_ssize_t, const int64_t*, const int64_t*,
                                const double*) except -1
cdef session_rows_fn session_rows = <session_rows_fn>PyCapsule_GetPointer(
    _engine.SESSION_ROWS, b"usher._engine.session_rows")
# and its telemetry_many of a run's name list and float64 columns: ``telemetry_rows(s,
# servers, cpu, mem, disk_queue, custom, now)`` (usher._engine.TELEMETRY_ROWS), used when
# ``s.telemetry_many`` is the scheduler's own
ctypedef int (*telemetry_rows_fn)(object, list, object, object, object, object, object) except -1
cdef telemetry_rows_fn telemetry_rows = <telemetry_rows_fn>PyCapsule_GetPointer(
    _engine.TELEMETRY_ROWS, b"usher._engine.telemetry_rows")
cdef object ENGINE = _engine.Engine
cdef object MAX_SESSION_ID = 2**63 - 1  # an engine session id: an int64 >= 0
cdef object ENGINE_LAUNCH = _engine.Engine.launch
cdef object ENGINE_SESSION_OPS = _engine.Engine.session_ops_many
cdef object SCHEDULER_TELEMETRY_MANY = _servers._Servers.telemetry_many
cdef enum:
    ROW_MAX = 16  # room for a decision row
if layout.N_D > ROW_MAX:
    raise ImportError(f"a decision row has {layout.N_D} fields; the replay's row holds {ROW_MAX}")
cdef Py_ssize_t D_OUTCOME = layout.D_OUTCOME, D_REASON = layout.D_REASON
cdef Py_ssize_t D_SERVER = layout.D_SERVER, D_ZONE = layout.D_ZONE
cdef Py_ssize_t D_SESSION = layout.D_SESSION, D_LOAD_INDEX = layout.D_LOAD_INDEX


cdef Py_ssize_t _slot_offset(object cls, str field):
    """Offset of ``field``'s object slot in an instance of ``cls``, or -1 when it is
    not a plain member slot (then it is read with getattr)."""
    for klass in cls.__mro__:
        d = klass.__dict__.get(field)
        if d is not None:
            if type(d) is not types.MemberDescriptorType:
                return -1
            if (<PyMemberDescrObject*>d).d_member.type != T_OBJECT_EX:
                return -1
            return (<PyMemberDescrObject*>d).d_member.offset
    return -1


cdef class _Slots:
    """The slot offsets of an op class's fields (-1: read with getattr)."""
    cdef Py_ssize_t t, id, user, app, location, endpoint, external, session
    cdef object code  # a session op's SessionOp code (an int), else None
    cdef int64_t op_code  # that code, or -1

    def __init__(self, object cls):
        fields = cls.__struct_fields__
        self.t = _slot_offset(cls, "t")
        self.id = _slot_offset(cls, "id") if "id" in fields else -1
        self.user = _slot_offset(cls, "user") if "user" in fields else -1
        self.app = _slot_offset(cls, "app") if "app" in fields else -1
        self.location = _slot_offset(cls, "location") if "location" in fields else -1
        self.endpoint = _slot_offset(cls, "endpoint") if "endpoint" in fields else -1
        self.external = _slot_offset(cls, "external") if "external" in fields else -1
        self.session = _slot_offset(cls, "session") if "session" in fields else -1
        self.code = SESSION_CLASSES.get(cls)
        self.op_code = -1 if self.code is None else self.code


cdef inline object _field(object op, Py_ssize_t offset, str name):
    """``op.<name>``: read at its slot's offset when known and set."""
    cdef PyObject* value
    if offset >= 0:
        value = (<PyObject**>((<char*><PyObject*>op) + offset))[0]
        if value != NULL:
            return <object>value
    return getattr(op, name)


cdef _Slots LAUNCH_SLOTS = _Slots(LaunchOp)
cdef dict SESSION_SLOTS = {cls: _Slots(cls) for cls in SESSION_CLASSES}

# a telemetry line's value fields, in telemetry_many's order
cdef tuple TELEMETRY_FIELDS = ("cpu", "mem", "disk_queue", "custom")
cdef Py_ssize_t TELEMETRY_T = _slot_offset(TelemetryOp, "t")
cdef Py_ssize_t TELEMETRY_SERVER = _slot_offset(TelemetryOp, "server")
cdef Py_ssize_t[4] TELEMETRY_VALUE
for _k, _name in enumerate(TELEMETRY_FIELDS):
    TELEMETRY_VALUE[_k] = _slot_offset(TelemetryOp, _name)


cdef inline bint _in_order(object last, object t) except -1:
    """``last <= t`` as Python decides it (a C compare for two floats)."""
    if type(t) is float and type(last) is float:
        return PyFloat_AS_DOUBLE(last) <= PyFloat_AS_DOUBLE(t)
    return bool(last <= t)


# One slot of a NameCache: 32 bytes, two to a cache line.
ctypedef struct NameSlot:
    uint64_t hash  # the id's hash
    int64_t sid  # its engine session id; -1: rejected (None in names)
    uint8_t n_text  # the id's length (0: an empty slot; ids are never empty)
    char text[INLINE_TEXT]  # its characters


cdef class NameCache:
    """The session ids of the last launches, by launch id: a cache in front of
    ``Replayer.names`` for the session lines that name them (most name a launch of
    the last minutes, a few thousand ids among the day's hundreds of thousands).

    A dict probe reads its index, its entry and the stored key: three random reads
    into a table of every launch id of the trace. This cache is direct-mapped over
    32-byte slots holding the id's hash, its characters (ids of up to 15 ASCII
    characters) and its session id, so a hit is one read of a 4 MiB table; a miss
    (an id whose slot a later launch took, a longer id) asks the dict. Every write
    to ``names`` by the replay goes through :meth:`put`, so the cache never
    disagrees with it; a change of the dict's size made by anyone else between two
    blocks empties the cache (``Replayer.names`` is the replay's record: its
    entries are not rewritten from outside)."""

    cdef NameSlot* slots
    cdef uint64_t mask  # slots - 1 (a power of two minus one)
    cdef Py_ssize_t names_seen  # len(names) when the replay last wrote it

    def __cinit__(self, Py_ssize_t n_slots=CACHE_SLOTS):
        if n_slots < 1 or n_slots & (n_slots - 1):
            raise ValueError(f"the session-name cache's slots must be a power of two, not {n_slots}")
        self.slots = <NameSlot*>usher_table_alloc(n_slots * sizeof(NameSlot))
        if self.slots == NULL:
            raise MemoryError("cannot allocate the replay's session-name cache")
        self.mask = n_slots - 1
        self.names_seen = -1

    def __dealloc__(self):
        free(self.slots)

    cdef void clear(self) noexcept:
        memset(self.slots, 0, (self.mask + 1) * sizeof(NameSlot))

    cdef int put(self, object rid, object sid) except -1:
        """Record ``names[rid] = sid`` (just written)."""
        cdef const char* text = NULL
        cdef Py_ssize_t n_text = replay_inline_text(<PyObject*>rid, &text, INLINE_TEXT)
        cdef int64_t v
        cdef NameSlot* slot
        if n_text <= 0:
            return 0
        if sid is None:
            v = -1
        elif type(sid) is int and 0 <= sid < (1 << 62):
            v = sid
        else:
            return 0
        cdef uint64_t h = <uint64_t>hash(rid)
        slot = &self.slots[h & self.mask]
        slot.hash = h
        slot.sid = v
        slot.n_text = <uint8_t>n_text
        memcpy(slot.text, text, n_text)
        return 0

    cdef void prefetch(self, object name) noexcept:
        """Start reading the slot of ``name`` (its hash is computed and kept by the
        str), so that :meth:`get` a few lines later finds it in the CPU caches."""
        cdef const char* text = NULL
        cdef Py_hash_t h
        if replay_inline_text(<PyObject*>name, &text, INLINE_TEXT) > 0:
            h = PyObject_Hash(name)  # an exact str: never fails
            replay_prefetch(&self.slots[<uint64_t>h & self.mask])

    cdef int64_t session_of(self, object name, dict names) except -2:
        """``names.get(name)`` as an engine session id, or -1 when it is not one (a
        rejected launch, a name not in ``names``, a value not an int)."""
        cdef const char* text = NULL
        cdef Py_ssize_t n_text = replay_inline_text(<PyObject*>name, &text, INLINE_TEXT)
        cdef NameSlot* slot
        cdef uint64_t h
        if n_text > 0:
            h = <uint64_t>hash(name)
            slot = &self.slots[h & self.mask]
            if slot.hash == h and slot.n_text == n_text and memcmp(slot.text, text, n_text) == 0:
                return slot.sid
        sid = names.get(name)
        if type(sid) is not int or not 0 <= sid <= MAX_SESSION_ID:
            return -1
        return sid

    cdef int follow(self, dict names) except -1:
        """Empty the cache if ``names`` changed size since the replay last wrote it."""
        if len(names) != self.names_seen:
            self.clear()
            self.names_seen = len(names)
        return 0


cdef inline object _name_at(list names, int64_t k):
    """``names[k]`` (None for -1), as ``usher.Decision`` reads a name."""
    if k < 0:
        return None
    if k >= PyList_GET_SIZE(names):
        raise IndexError(f"name index {k} out of range")
    return <object>PyList_GET_ITEM(names, k)


cdef class DecisionMaker:
    """``decide(t, rid, oc, rc, sid, server, zone, load_index)``: make, count and
    emit the decision line of launch ``rid`` at ``t`` (outcome code ``oc``, reason
    code ``rc``, engine session ``sid``) and take ``rid`` as a name of its session;
    returns the line. The one place a decision line is made, for the compiled loop
    and the Python one alike.

    Args:
        names: launch id -> engine session id (None: rejected), written here.
        creator: engine session id -> id of the launch that created the session.
        keep: a list that keeps every line, or None.
        emit: the list of lines waiting to be encoded, or None.
        cache_slots: the slots of the session-name cache (a power of two; a tiny
            cache makes launch ids share slots, for tests).
    """

    cdef dict names, creator
    cdef list keep, emit
    cdef int64_t tally[TALLY_SLOTS]
    cdef NameCache cache  # in front of names, for the session lines

    def __init__(self, dict names, dict creator, list keep, list emit,
                 Py_ssize_t cache_slots=CACHE_SLOTS):
        self.names = names
        self.creator = creator
        self.keep = keep
        self.emit = emit
        self.cache = NameCache(cache_slots)

    def __call__(self, t, rid, int oc, int rc, sid, server, zone, load_index):
        return self.decide(t, rid, oc, rc, sid, server, zone, load_index)

    def counts(self):
        """The outcome tally: ``[(outcome << 4) + reason] -> launches``."""
        return [self.tally[k] for k in range(len(OUTCOME_NAMES) << REASON_BITS)]

    cdef object decide_row(self, object t, object rid, const int64_t* row, list servers, list zones):
        """:meth:`decide` of the decision in ``row`` (DECISION_FIELDS: what a
        ``usher.Decision`` reads), its server and zone named from the scheduler's
        name lists ``servers`` and ``zones``."""
        return self.decide(t, rid, row[D_OUTCOME], row[D_REASON],
                           None if row[D_SESSION] < 0 else row[D_SESSION],
                           _name_at(servers, row[D_SERVER]), _name_at(zones, row[D_ZONE]),
                           None if row[D_LOAD_INDEX] < 0 else row[D_LOAD_INDEX])

    cdef object decide(self, object t, object rid, int oc, int rc, object sid, object server,
                       object zone, object load_index):
        if not (0 <= oc < len(OUTCOME_NAMES) and 0 <= rc < (1 << REASON_BITS)):
            raise IndexError(f"outcome {oc} / reason {rc} out of range")
        if oc == REJECTED:
            self.names[rid] = None
            self.cache.put(rid, None)
            self.tally[(REJECTED << REASON_BITS) + rc] += 1
            rec = DECISION(t, rid, OUTCOME_NAMES[oc], None, None, None, REASON_NAMES[rc], None)
        else:
            self.names[rid] = sid
            self.cache.put(rid, sid)
            self.tally[oc << REASON_BITS] += 1
            if oc == PLACED:
                self.creator[sid] = rid
                sname = rid
            else:
                sname = <object>PyDict_SetDefault(self.creator, sid, rid)
            rec = DECISION(t, rid, OUTCOME_NAMES[oc], server, zone, sname, None, load_index)
        self.cache.names_seen = len(self.names)
        if self.keep is not None:
            self.keep.append(rec)
        if self.emit is not None:
            self.emit.append(rec)
        return rec


cdef Py_ssize_t _session_run(object s, bint by_rows, list ops, Py_ssize_t i, Py_ssize_t n,
                             NameCache cache, dict names, object last) except? -1:
    """Apply the run of session lines (logon_done, disconnect, logoff, launch_failed)
    from ``ops[i]`` with one ``session_ops_many``, all or nothing: the run ends at the
    first line that is not one, whose ``t`` is not a float in time order from ``last``
    and within the time rule, or whose session is not a launch that placed (those go
    the one-by-one way), or after SESSION_RUN lines. Returns where the run ends, or
    minus that when it would fail (nothing applied: the caller replays it line by
    line, which reports the bad line). ``by_rows``: the run goes to the engine as C
    rows (``session_rows``), else as lists to ``s.session_ops_many``."""
    cdef Py_ssize_t j = i
    cdef double before = PyFloat_AS_DOUBLE(last) if type(last) is float else last
    cdef double x
    cdef PyObject* found
    cdef _Slots slots
    cdef int64_t codes[SESSION_RUN]
    cdef int64_t sids[SESSION_RUN]
    cdef double times[SESSION_RUN]
    cdef int64_t sid
    cdef Py_ssize_t k
    while j < n and j - i < SESSION_RUN:  # the run's cache slots requested first
        op = <object>PyList_GET_ITEM(ops, j)
        found = PyDict_GetItem(SESSION_SLOTS, type(op))
        if found == NULL:
            break
        cache.prefetch(_field(op, (<_Slots>found).session, "session"))
        j += 1
    j = i
    while j < n and j - i < SESSION_RUN:
        op = <object>PyList_GET_ITEM(ops, j)
        found = PyDict_GetItem(SESSION_SLOTS, type(op))
        if found == NULL:
            break
        slots = <_Slots>found
        t = _field(op, slots.t, "t")
        if type(t) is not float:
            break
        x = PyFloat_AS_DOUBLE(t)
        if not (before <= x <= MAX_TIME):  # NaN fails
            break
        sid = cache.session_of(_field(op, slots.session, "session"), names)
        if sid < 0:
            break
        codes[j - i] = slots.op_code
        sids[j - i] = sid
        times[j - i] = x
        before = x
        j += 1
    if j == i:
        return i
    try:
        if by_rows:
            session_rows(s, j - i, codes, sids, times)
        else:
            s.session_ops_many([codes[k] for k in range(j - i)], [sids[k] for k in range(j - i)],
                               [times[k] for k in range(j - i)])
    except Exception:
        return -j
    return j


cdef int _telemetry_mask(object op) except -2:
    """The fields a telemetry line reports (bit k: ``TELEMETRY_FIELDS[k]`` is not
    None), or -1 when one of them is not a float."""
    cdef int mask = 0, k
    for k in range(4):
        v = _field(op, TELEMETRY_VALUE[k], TELEMETRY_FIELDS[k])
        if v is not None:
            if type(v) is not float:
                return -1
            mask |= 1 << k
    return mask


cdef object _telemetry_run(r, object s, Py_ssize_t first, list ops, Py_ssize_t i, Py_ssize_t n,
                           object last, Py_ssize_t max_run, Py_ssize_t min_run):
    """``Replayer._telemetry_run(first, ops, i)`` with its columns made here: the run
    of telemetry lines from ``ops[i]`` that report the same fields, applied with one
    ``telemetry_many`` at the run's last ``t`` when its prefix in time order from
    ``last`` has at least ``min_run`` lines (the columns are float64 arrays filled
    from the lines' slots), else that prefix line by line.

    Returns (where to go on, end of the run, the time of the last line applied), or
    None when a line of the run holds a ``t`` or a value that is not a float (then
    ``Replayer._telemetry_run`` decides, the same way)."""
    cdef Py_ssize_t j = i, k = -1, end, m, f
    cdef int mask = -1, row_mask
    cdef double before, x
    cdef double[::1] column
    if type(last) is not float:
        return None
    before = PyFloat_AS_DOUBLE(last)
    n = min(n, i + max_run)
    while j < n:  # the run's end; k: the end of its prefix in time order
        op = <object>PyList_GET_ITEM(ops, j)
        if type(op) is not TELEMETRY:
            break
        row_mask = _telemetry_mask(op)
        if row_mask < 0:
            return None
        if j == i:
            mask = row_mask
        elif row_mask != mask:  # a field goes from reported to not, or back
            break
        t = _field(op, TELEMETRY_T, "t")
        if type(t) is not float:
            return None
        if k < 0:
            x = PyFloat_AS_DOUBLE(t)
            if before <= x < INF:  # NaN fails
                before = x
            else:
                k = j
        j += 1
    end = j
    if k < 0:
        k = end
    if end - i < min_run:
        return i, end, last
    if k - i >= min_run:
        servers = [_field(<object>PyList_GET_ITEM(ops, m), TELEMETRY_SERVER, "server") for m in range(i, k)]
        columns = [None, None, None, None]
        for f in range(4):
            if mask & (1 << f):
                columns[f] = EMPTY(k - i)
                column = columns[f]
                for m in range(i, k):
                    column[m - i] = PyFloat_AS_DOUBLE(
                        _field(<object>PyList_GET_ITEM(ops, m), TELEMETRY_VALUE[f], TELEMETRY_FIELDS[f]))
        t = _field(<object>PyList_GET_ITEM(ops, k - 1), TELEMETRY_T, "t")
        try:
            if (isinstance(s, ENGINE)
                    and getattr(type(s), "telemetry_many", None) is SCHEDULER_TELEMETRY_MANY):
                telemetry_rows(s, servers, columns[0], columns[1], columns[2], columns[3], t)
            else:
                s.telemetry_many(servers, cpu=columns[0], mem=columns[1], disk_queue=columns[2],
                                 custom=columns[3], now=t)
        except Exception:  # nothing was applied: the run goes line by line
            pass
        else:
            return k, k, t
    r.last_t = last
    end = r._by_line(first, ops, i, max(k, i + 1))
    return end, end, r.last_t


def process(r, Py_ssize_t first, list ops, Py_ssize_t min_launch_run, Py_ssize_t max_run,
            Py_ssize_t flush, Py_ssize_t min_telemetry_run):
    """``Replayer._process(first, ops)``: the block's ops applied (see the module doc), with
    the replay module's ``_MIN_LAUNCH_RUN``, ``_MAX_RUN``, ``_FLUSH`` and
    ``_MIN_TELEMETRY_RUN``."""
    s = r.scheduler
    cdef dict names = r.names
    cdef bint batch = r.batch
    one = r._one
    cdef DecisionMaker decide = r._decide
    launch = None if r.explain else s.launch
    # the engine's own launch: its decision written into a row, the line made from it
    cdef bint by_row = (launch is not None and isinstance(s, ENGINE)
                        and getattr(type(s), "launch", None) is ENGINE_LAUNCH)
    cdef list servers = None, zones = None
    cdef int64_t row[ROW_MAX]
    if by_row:
        servers, zones = s._names[0], s._names[1]
    cdef bint by_rows = (isinstance(s, ENGINE)
                         and getattr(type(s), "session_ops_many", None) is ENGINE_SESSION_OPS)
    calls = r._session_calls
    if calls is None or calls[0] is not s:  # the scheduler's session methods, bound once
        calls = r._session_calls = (s, {cls: getattr(s, name)
                                        for cls, name in dispatch.SESSION_METHODS.items()}.get)
    session_call = calls[1]
    writer = r._writer
    cdef list pending = writer.pending if writer is not None else None
    cdef Py_ssize_t n = len(ops), i = 0, j, end
    cdef Py_ssize_t scanned = 0  # ops before this index were found to be in a run too short to batch
    last = r.last_t
    cdef _Slots slots
    cdef PyObject* found
    cdef _Slots ls = LAUNCH_SLOTS
    decide.cache.follow(names)
    while i < n:
        op = <object>PyList_GET_ITEM(ops, i)
        cls = type(op)
        if cls is LAUNCH:
            if batch and i >= scanned:
                j = i + 1
                while j < n and type(<object>PyList_GET_ITEM(ops, j)) is LAUNCH:
                    j += 1
                if j - i >= min_launch_run:
                    r.last_t = last
                    i = r._launch_run(first, ops, i, min(j, i + max_run))
                    last = r.last_t
                    continue
                scanned = j  # a short run: its launches go one by one
            t = _field(op, ls.t, "t")
            rid = _field(op, ls.id, "id")
            # a fresh launch id is taken in names by the probe that finds it fresh
            # (decide writes its session id over FRESH; a failed launch gives it back)
            if (launch is not None and _in_order(last, t)
                    and <object>PyDict_SetDefault(names, rid, FRESH) is FRESH):
                try:
                    if by_row:
                        launch_row(s, _field(op, ls.user, "user"), _field(op, ls.app, "app"),
                                   _field(op, ls.location, "location"), _field(op, ls.endpoint, "endpoint"),
                                   _field(op, ls.external, "external"), t, row)
                    else:
                        d = launch(_field(op, ls.user, "user"), _field(op, ls.app, "app"),
                                   _field(op, ls.location, "location"), _field(op, ls.endpoint, "endpoint"),
                                   _field(op, ls.external, "external"), t)
                except BaseException as exc:
                    del names[rid]
                    if not isinstance(exc, Exception):
                        raise
                else:
                    if by_row:
                        decide.decide_row(t, rid, row, servers, zones)
                    else:
                        decide.decide(t, rid, d.outcome_code, d.reason_code, d.session_id, d.server,
                                      d.zone, d.load_index)
                    if pending is not None and PyList_GET_SIZE(pending) >= flush:
                        writer.write(False)
                    last = t
                    i += 1
                    continue
        else:
            found = PyDict_GetItem(SESSION_SLOTS, cls)
            if found != NULL:
                slots = <_Slots>found
                if batch:
                    # the run of session lines from here, up to the first that names
                    # no session or goes back in time, applied with one compiled call
                    end = _session_run(s, by_rows, ops, i, n, decide.cache, names, last)
                    if end < 0:  # nothing was applied: the run goes line by line
                        r.last_t = last
                        i = r._by_line(first, ops, i, -end)
                        last = r.last_t
                        continue
                    if end > i:
                        last = _field(<object>PyList_GET_ITEM(ops, end - 1), -1, "t")
                        i = end
                        continue
                t = _field(op, slots.t, "t")
                sid = names.get(_field(op, slots.session, "session"))
                if sid is not None and _in_order(last, t):
                    try:
                        session_call(cls)(sid, t)
                    except Exception:
                        pass
                    else:
                        last = t
                        i += 1
                        continue
            elif batch and i >= scanned and (cls is TELEMETRY or cls is USER):
                r.last_t = last
                if cls is TELEMETRY:
                    run = _telemetry_run(r, s, first, ops, i, n, last, max_run, min_telemetry_run)
                    if run is None:  # a value that is not a float: the Python method's columns
                        end, scanned = r._telemetry_run(first, ops, i)
                    else:
                        end, scanned, r.last_t = run
                else:
                    end, scanned = r._user_run(first, ops, i)
                last = r.last_t
                if end > i:  # the run was applied (or replayed line by line)
                    i = end
                    continue
        r.last_t = last
        one(first + i, op)
        last = r.last_t
        i += 1
    r.last_t = last
    if pending is not None and PyList_GET_SIZE(pending) >= flush:
        writer.write(False)
