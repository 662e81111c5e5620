# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled edge of usher: holds the state pointers and calls the numba
kernels through their C function pointers.

Design: the kernels (``usher.core.kernels``) are numba ``@cfunc``s — one source
of truth. This class keeps the header pointer and the function pointers, so a
launch is: a probe of the user and endpoint tables (``KeyTable``) and a few dict
lookups, one C call under a lock (the GIL kept: see NOGIL_ROWS), and one
small ``Decision`` object. The Python subclass ``usher.Scheduler`` holds configuration
and validation of the rare operations; the hot ones live here.
A kernel's non-zero status becomes an exception in ``usher.errors.raise_for_status``.
"""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t, uintptr_t
from libc.math cimport isinf, isnan
from libc.stdlib cimport calloc, malloc, realloc, free
from libc.string cimport memcmp, memcpy, memset
from cpython.object cimport PyObject, PyObject_Hash, PyObject_RichCompareBool, Py_EQ
from cpython.dict cimport PyDict_GetItemWithError, PyDict_Next
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.pystate cimport PyInterpreterState, PyInterpreterState_ThreadHead, PyThreadState_Next
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.exc cimport PyErr_Clear
from cpython.pycapsule cimport PyCapsule_New

cdef extern from "Python.h":
    # PyObject_Hash without Cython's error check: the caller clears the error itself
    Py_hash_t hash_or_minus_one "PyObject_Hash"(object o)
cimport numpy as cnp

cnp.import_array()


# One slot of a KeyTable: 32 bytes, two to a cache line.
ctypedef struct KeySlot:
    PyObject* key  # a key of the mirrored dict (a reference), or NULL
    uint32_t hash  # the low 32 bits of its hash
    int32_t index  # its value
    uint8_t n_text  # length of text when the key is a short ASCII str (see KeyTable), else NO_TEXT
    char text[15]  # that str's characters


cdef extern from *:
    """
    /* o is an exact str of at least one character. */
    static inline int usher_nonempty_exact_str(PyObject* o) {
        return PyUnicode_CheckExact(o) && PyUnicode_GET_LENGTH(o) > 0;
    }
    /* o is an exact str in the compact form (every str the interpreter builds). */
    static inline int usher_compact_exact_str(PyObject* o) {
        return PyUnicode_CheckExact(o) && PyUnicode_IS_COMPACT(o);
    }
    """
    bint usher_nonempty_exact_str(PyObject* o) noexcept
    bint usher_compact_exact_str "usher_compact_exact_str"(PyObject* o) noexcept
    PyObject** PySequence_Fast_ITEMS(object o)


cdef extern from *:
    """
    /* The length of o when it is an exact str of at most max ASCII characters
       held in the compact form (every ASCII str built by the interpreter is),
       with its characters in *data; else -1. Two such strs are equal iff their
       bytes are. */
    static inline Py_ssize_t usher_inline_text(PyObject* o, const char** data, Py_ssize_t max) {
        if (!PyUnicode_CheckExact(o) || !PyUnicode_IS_COMPACT_ASCII(o)
                || PyUnicode_GET_LENGTH(o) > max)
            return -1;
        *data = (const char*)PyUnicode_DATA(o);
        return PyUnicode_GET_LENGTH(o);
    }
    """
    Py_ssize_t usher_inline_text(PyObject* o, const char** data, Py_ssize_t max)


cdef extern from *:
    """
    /* The hash of o, an exact str: the one the str keeps once computed (every
       key of a dict and every str hashed before has it), without the call
       through its type; computed and kept otherwise. Runs no Python code. */
    static inline Py_hash_t usher_str_hash(PyObject* o) {
        Py_hash_t h = ((PyASCIIObject*)o)->hash;
        return h != -1 ? h : PyObject_Hash(o);
    }
    /* The memo slot of the object at p (NAME_MEMO slots): pymalloc places
       objects 16 bytes apart at least, so the bits above the fourth vary. */
    static inline Py_ssize_t usher_memo_slot(const void* p, Py_ssize_t mask) {
        uintptr_t a = (uintptr_t)p;
        return (Py_ssize_t)(((a >> 4) ^ (a >> 11)) & (uintptr_t)mask);
    }
    """
    Py_hash_t usher_str_hash(PyObject* o) noexcept


cdef extern from *:
    """
    /* The n characters (1 to 15) at s, the data of a compact ASCII str, as two
       words: w[0] the first 8 (zero-padded), w[1] the rest (zero-padded) with n
       in its top byte; two such strs are equal iff their words are. Each word is
       one 8-byte load ending inside the str object: under 8 characters, the one
       that ends at the last character starts in the object's header, whose
       bytes are shifted out. */
    static inline void usher_text_words(const char* s, Py_ssize_t n, uint64_t* w) {
        uint64_t a = 0, b = 0;
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (n <= 8) {
            memcpy(&a, s + n - 8, 8);
            a >>= (8 - n) * 8;
        } else {
            memcpy(&a, s, 8);
            memcpy(&b, s + n - 8, 8);
            b >>= (16 - n) * 8;
        }
    #else  /* the same words, a character at a time */
        Py_ssize_t k;
        for (k = 0; k < n; k++) {
            if (k < 8) a |= (uint64_t)(unsigned char)s[k] << (8 * k);
            else b |= (uint64_t)(unsigned char)s[k] << (8 * (k - 8));
        }
    #endif
        w[0] = a;
        w[1] = b | ((uint64_t)n << 56);
    }
    /* A hash of the two words of usher_text_words (NameIndex). */
    static inline uint64_t usher_words_hash(const uint64_t* w) {
        uint64_t h = w[0] * 0x9E3779B97F4A7C15ull ^ w[1] * 0xC2B2AE3D27D4EB4Full;
        h ^= h >> 29;
        h *= 0xBF58476D1CE4E5B9ull;
        return h ^ (h >> 32);
    }
    """
    void usher_text_words(const char* s, Py_ssize_t n, uint64_t* w) noexcept
    uint64_t usher_words_hash(const uint64_t* w) noexcept
    Py_ssize_t usher_memo_slot(const void* p, Py_ssize_t mask) noexcept

cdef enum:
    INLINE_TEXT = 15  # KeySlot.text
    NO_TEXT = 255
    NAME_MEMO = 64  # slots of _rows_of_names' memo (a power of two)


# One slot of a NameIndex: 24 bytes.
ctypedef struct NameSlot:
    uint64_t words[2]  # a short ASCII name (usher_text_words); words[1] == 0: empty
    int64_t index  # the name's value in the dict


# One slot of _rows_of_names' memo: a name object of a batch column and its row.
ctypedef struct NameMemo:
    PyObject* key
    int64_t row


cdef extern from "usher_alloc.h":  # bindings/usher_alloc.h: zeroed, huge-page-hinted table memory
    void* usher_table_alloc(size_t nbytes) nogil


cdef extern from *:
    """
    /* A hint to bring the cache line at p in (no fault, no effect on results). */
    #if defined(__GNUC__) || defined(__clang__)
    #define usher_prefetch(p) __builtin_prefetch((const void*)(p))
    #else
    #define usher_prefetch(p) ((void)(p))
    #endif
    """
    void usher_prefetch(const void* p) nogil


cdef extern from "<pthread.h>" nogil:
    # the scheduler lock: a plain mutex (an uncontended try-lock is a few ns;
    # Python's lock object reads the monotonic clock on every acquire)
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t*, void*)
    int pthread_mutex_destroy(pthread_mutex_t*)
    int pthread_mutex_lock(pthread_mutex_t*)
    int pthread_mutex_trylock(pthread_mutex_t*)
    int pthread_mutex_unlock(pthread_mutex_t*)

from usher.core.codes import Outcome, Reason, SessionState, ZoneChoice, binding_constants as _binding_constants
from usher.errors import (
    InvalidArgument, TimeWentBackwards, UnknownApp, raise_for_status, session_text,
)

ctypedef int64_t (*launch_fn)(int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t, double, int64_t*) noexcept nogil
ctypedef int64_t (*launch_many_fn)(int64_t*, int64_t, int64_t*, int64_t*, int64_t*, int64_t*, int64_t*, double*, int64_t*) noexcept nogil
ctypedef int64_t (*op_fn)(int64_t*, int64_t, int64_t, int64_t, double, int64_t*) noexcept nogil
ctypedef int64_t (*ops_many_fn)(int64_t*, int64_t, int64_t*, int64_t*, double*, int64_t*, int64_t*) noexcept nogil
ctypedef int64_t (*telemetry_fn)(int64_t*, int64_t, int64_t*, double*, double*, double*, double*, int64_t, double, int64_t*) noexcept nogil
ctypedef int64_t (*advance_fn)(int64_t*, double) noexcept nogil

# the engine's codes and layout indices as C constants (OUTCOME_*, STATUS_*,
# SESSION_OP_*, D_*, H_* ...), generated by setup.py from usher.core: see
# usher.core.codes.binding_constants
include "_codes.pxi"

cdef Py_ssize_t KEY_AHEAD = 8  # batch rows whose key-table slot is requested ahead
cdef Py_ssize_t SOP_RUN = 1024  # longest run of session items of one Engine.session_run call


def _stale_constants():
    """Names whose compiled value differs from usher.core's (or that only one side
    has): empty unless this module was built from other engine sources."""
    expected = _binding_constants()
    return sorted(k for k in expected.keys() | COMPILED_CONSTANTS.keys()
                  if expected.get(k) != COMPILED_CONSTANTS.get(k))


if _stale_constants():
    raise ImportError(
        "usher._engine was built from other engine codes than usher.core's "
        f"({', '.join(_stale_constants()[:5])}, ...): rebuild it (pip install -e .)")

from numpy import empty as _np_empty, int64 as _np_int64, ndarray as _ndarray

cdef tuple OUTCOMES = tuple(Outcome)
cdef tuple REASONS = tuple(Reason)
cdef tuple ZONE_CHOICES = tuple(ZoneChoice)


from usher import validate as _v

cdef double MAX_TIME = _v.MAX_TIME
cdef int64_t MAX_SESSION_ID = _v.MAX_SESSION_ID
cdef double NAN_TIME = float("nan")
# what a user index holds (Engine._user_kind)
cdef uint8_t USER_DIRECTORY = 0  # added by add_user(s): kept until remove_user
cdef uint8_t USER_IMPLICIT = 1  # created by a launch: forgotten with its last session
cdef uint8_t USER_FREE = 2  # nobody: the index is free for the next user  # "read the clock under the lock" (_given_time)
cdef frozenset NO_APPS = frozenset()  # the apps of an implicit user (Scheduler._user_apps)
# a sweep (Engine._sweep_now) runs once this many implicit users and endpoints were
# added, or as many as the last one kept, or a SWEEP_SHARE-th of the records it read
SWEEP_FLOOR = 4096
cdef Py_ssize_t _SWEEP_FLOOR = SWEEP_FLOOR
cdef Py_ssize_t SWEEP_SHARE = 4
# an endpoint no live session names is forgotten once it went unused over this many
# sweeps (Engine._sweep_endpoints)
ENDPOINT_IDLE_SWEEPS = 3
cdef uint8_t _ENDPOINT_IDLE_SWEEPS = ENDPOINT_IDLE_SWEEPS

cdef bytes _EMPTY = b"\0" * 8  # what an empty array's pointer points at (never read)


cdef void* _array_data(object a, int typenum, Py_ssize_t min_len, str name) except NULL:
    """Data pointer of ``a``, a C-contiguous 1-D ndarray of ``typenum`` holding at
    least ``min_len`` items (a pointer to a static zero for an empty array)."""
    if (not cnp.PyArray_Check(a) or cnp.PyArray_TYPE(<cnp.ndarray>a) != typenum
            or cnp.PyArray_NDIM(<cnp.ndarray>a) != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)
            or cnp.PyArray_DIM(<cnp.ndarray>a, 0) < min_len):
        raise InvalidArgument(name, type(a).__name__, f"must be a contiguous 1-D array of {min_len} or more items")
    if cnp.PyArray_DIM(<cnp.ndarray>a, 0) == 0:
        return <void*><char*>_EMPTY
    return cnp.PyArray_DATA(<cnp.ndarray>a)


@cython.freelist(64)  # a launch makes one: recycled memory instead of an allocation
@cython.no_gc  # see the note at the end of the docstring
cdef class Decision:
    """The answer to one launch.

    Attributes:
        outcome: :class:`usher.Outcome`.
        reason: :class:`usher.Reason`, or None unless the outcome is REJECTED.
        server: name of the server (None when rejected); ``server_index`` its index.
        zone: zone of that server (None when rejected).
        session: id of the session placed, reconnected or shared into (None when
            rejected): an int, opaque, to pass back to ``logon_complete``,
            ``logoff`` and the other session calls. It is ``generation << 32 |
            slot`` (slot: the session's record; generation: how many sessions
            that record has held), so an id is never reused; ``repr`` and error
            messages show it in hex with the halves apart, ``0x1_00000003``.
        load_index: the server's load index after the decision (None when rejected).
        pool: the pool of the session (None when rejected).
        zone_choice: :class:`usher.ZoneChoice` — why the zone was chosen (PLACED only).
        explanation: an :class:`usher.Explanation` when the launch asked for one.

    A decision is not tracked by Python's cycle collector: it refers only to the
    scheduler's name lists and to its explanation, neither of which refers back,
    so it can never be part of a cycle — and a broker that keeps millions of
    them does not make the collector walk them (nor run more often).
    """

    cdef readonly int64_t outcome_code, reason_code, server_index, session_id
    cdef readonly int64_t zone_index, load_index_value, pool_index, zone_choice_code
    cdef readonly object explanation
    cdef object _names  # the scheduler's append-only name lists

    @property
    def outcome(self):
        return OUTCOMES[self.outcome_code]

    @property
    def reason(self):
        return None if self.reason_code == 0 else REASONS[self.reason_code]

    @property
    def server(self):
        return None if self.server_index < 0 else self._names[0][self.server_index]

    @property
    def zone(self):
        return None if self.zone_index < 0 else self._names[1][self.zone_index]

    @property
    def pool(self):
        return None if self.pool_index < 0 else self._names[2][self.pool_index]

    @property
    def session(self):
        return None if self.session_id < 0 else self.session_id

    @property
    def load_index(self):
        return None if self.load_index_value < 0 else self.load_index_value

    @property
    def zone_choice(self):
        return None if self.zone_choice_code < 0 else ZONE_CHOICES[self.zone_choice_code]

    @property
    def placed(self):
        """True when a session runs the app after this decision (not rejected)."""
        return self.outcome_code != OUTCOME_REJECTED

    def to_dict(self):
        d = {
            "outcome": str(self.outcome),
            "reason": None if self.reason is None else str(self.reason),
            "server": self.server,
            "zone": self.zone,
            "session": self.session,
            "load_index": self.load_index,
        }
        if self.explanation is not None:
            d["explanation"] = self.explanation.to_dict()
        return d

    def __eq__(self, other):
        if not isinstance(other, Decision):
            return NotImplemented
        return self._key() == (<Decision>other)._key()

    def __hash__(self):
        return hash(self._key())

    cdef tuple _key(self):
        return (self.outcome_code, self.reason_code, self.server_index, self.session_id,
                self.zone_index, self.load_index_value)

    def __repr__(self):
        if self.outcome_code == OUTCOME_REJECTED:
            return f"Decision(rejected, reason={self.reason!s})"
        return (f"Decision({self.outcome!s}, server={self.server!r}, zone={self.zone!r}, "
                f"session={session_text(self.session_id)}, load_index={self.load_index})")


cdef Decision make_decision(const int64_t* row, object names, object explanation):
    cdef Decision d = Decision.__new__(Decision)
    d.outcome_code = row[D_OUTCOME]
    d.reason_code = row[D_REASON]
    d.server_index = row[D_SERVER]
    d.session_id = row[D_SESSION]
    d.zone_index = row[D_ZONE]
    d.load_index_value = row[D_LOAD_INDEX]
    d.pool_index = row[D_POOL]
    d.zone_choice_code = row[D_ZONE_CHOICE]
    d._names = names
    d.explanation = explanation
    return d


def first_outside(const int64_t[::1] idx, int64_t hi):
    """Row of the first index outside ``[0, hi)``, or -1 (batch validation)."""
    cdef Py_ssize_t k
    for k in range(idx.shape[0]):
        if idx[k] < 0 or idx[k] >= hi:
            return k
    return -1


def first_unhashable(values):
    """Row of the first value that cannot be a dict key, or -1 (batch validation,
    before anything is added)."""
    cdef Py_ssize_t k = 0
    for v in values:
        try:
            PyObject_Hash(v)
        except TypeError:
            return k
        k += 1
    return -1


def first_not_id(values, bint allow_none=False):
    """Row of the first value that is not a non-empty str (None passes with
    ``allow_none``), or -1: the id rule of ``usher.validate`` over a batch of
    Python objects, one type test per row (batch validation, before anything is
    added)."""
    cdef Py_ssize_t k = 0
    for v in values:
        if v is None:
            if not allow_none:
                return k
        elif not isinstance(v, str) or len(<str>v) == 0:
            return k
        k += 1
    return -1


cdef inline bint _native_vector(values, int typenum, Py_ssize_t n):
    """``values`` is a C-contiguous 1-D ndarray of ``typenum`` in the machine's
    byte order, of n items (any length for n < 0): its data read as C values."""
    return (type(values) is _ndarray and cnp.PyArray_TYPE(<cnp.ndarray>values) == typenum
            and cnp.PyArray_NDIM(<cnp.ndarray>values) == 1
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>values)
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>values)
            and (n < 0 or cnp.PyArray_DIM(<cnp.ndarray>values, 0) == n))


cdef inline bint _object_vector(values):
    """``values`` is a 1-D ndarray of objects (a batch's names, read as a list)."""
    return (type(values) is _ndarray and cnp.PyArray_TYPE(<cnp.ndarray>values) == cnp.NPY_OBJECT
            and cnp.PyArray_NDIM(<cnp.ndarray>values) == 1)


cdef inline bint _int64_vector(values):
    """``values`` is a C-contiguous 1-D int64 ndarray (a batch's indices)."""
    return _native_vector(values, cnp.NPY_INT64, -1)


cdef bint _telemetry_columns(tuple columns, Py_ssize_t n, double** cols, int64_t* mask):
    """The four telemetry columns (cpu, mem, disk_queue, custom) of a run of n rows
    as data pointers and their mask: each None (not reported, never read) or a
    native float64 vector of n values. False for any other shape."""
    cdef Py_ssize_t f
    cdef tuple bits = (TELEMETRY_FIELD_CPU, TELEMETRY_FIELD_MEM, TELEMETRY_FIELD_DISK_QUEUE,
                       TELEMETRY_FIELD_CUSTOM)
    mask[0] = 0
    for f in range(4):
        column = columns[f]
        if column is None:
            cols[f] = <double*><char*>_EMPTY
        elif _native_vector(column, cnp.NPY_FLOAT64, n):
            cols[f] = <double*>cnp.PyArray_DATA(<cnp.ndarray>column)
            mask[0] |= <int64_t>bits[f]
        else:
            return False
    return True


cdef Py_ssize_t _first_not_str(values, bint allow_none):
    """Row of the first value of a list or tuple that is not a non-empty exact
    str (None passes with ``allow_none``), or -1. Stricter than first_not_id (a
    str subclass fails here: its hash and == may run Python code, so the batch
    takes the general path); one type test per row, no Python code run."""
    return _first_not_str_of(PySequence_Fast_ITEMS(values), len(values), allow_none)


cdef Py_ssize_t _first_not_str_of(PyObject** items, Py_ssize_t n, bint allow_none) noexcept:
    """_first_not_str over n item pointers (a NULL item fails)."""
    cdef Py_ssize_t k
    cdef PyObject* v
    cdef PyObject* none = <PyObject*>None
    for k in range(n):
        v = items[k]
        if v == none:
            if not allow_none:
                return k
        elif v == NULL or not usher_nonempty_exact_str(v):
            return k
    return -1


cdef object _name_column(object values, PyObject*** items, Py_ssize_t* n):
    """A batch column of names read in place: for a list, a tuple or a 1-D object
    ndarray, sets ``*items`` to its n item pointers and ``*n``, and returns the
    object that holds them (the column itself, or the list of a non-contiguous
    array's items), to keep while they are read; returns None for any other
    column (``*items`` NULL)."""
    if type(values) is list or type(values) is tuple:
        items[0] = PySequence_Fast_ITEMS(values)
        n[0] = len(values)
        return values
    if _object_vector(values):
        if not (cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>values)
                and cnp.PyArray_ISALIGNED(<cnp.ndarray>values)):
            return _name_column((<cnp.ndarray>values).tolist(), items, n)
        items[0] = <PyObject**>cnp.PyArray_DATA(<cnp.ndarray>values)
        n[0] = cnp.PyArray_DIM(<cnp.ndarray>values, 0)
        return values
    items[0] = NULL
    return None


cdef Py_ssize_t _rows_of_names(PyObject** items, Py_ssize_t n, dict table, int64_t* out,
                               bint allow_none, int64_t if_missing) except -2:
    """``out[k] = table[items[k]]`` for a batch column of n names (apps, zones),
    each checked as it is read, as _first_not_str does:
    -1 for a None (with ``allow_none``), ``if_missing`` for a name not in
    ``table``. Returns the row of the first item refused — not a non-empty exact
    str nor an allowed None, or not in the table when ``if_missing`` is -1 — with
    the rows after it not read, or -1.

    A batch names a few apps and zones thousands of times, by the same objects
    (a broker's interned names, an array's items): a memo of NAME_MEMO slots
    keyed by the object's address answers a repeat without the type test, the
    hash and the dict probe. The answer is the same: the object is the same one
    (the column holds it for the whole pass) and nothing changes the table
    meanwhile (the lock held, no Python code run: exact strs hash and compare
    in C)."""
    cdef NameMemo memo[NAME_MEMO]
    cdef NameMemo* m
    cdef PyObject* v
    cdef PyObject* none = <PyObject*>None
    cdef PyObject* found
    cdef Py_ssize_t k
    cdef int64_t row
    for k in range(NAME_MEMO):  # an address no item has: no slot answers before it is filled
        memo[k].key = <PyObject*>memo
    for k in range(n):
        v = items[k]
        m = &memo[usher_memo_slot(v, NAME_MEMO - 1)]
        if m.key == v:
            out[k] = m.row
            continue
        if v == none:
            if not allow_none:
                return k
            row = -1
        elif v == NULL or not usher_nonempty_exact_str(v):
            return k
        else:
            found = PyDict_GetItemWithError(table, <object>v)
            if found != NULL:
                row = <object>found
            elif if_missing == -1:
                return k
            else:
                row = if_missing
        m.key = v
        m.row = row
        out[k] = row
    return -1


cdef object _PY_TRUE = True, _PY_FALSE = False  # the bool objects (a bare True is C's 1 here)


cdef bint _flag_column(object values, Py_ssize_t n, int64_t* out) except -1:
    """A batch's external column as 0/1 into ``out``: a list or tuple of n items each
    ``True`` or ``False`` itself, or a C-contiguous 1-D bool ndarray of n items.
    False for anything else (the general path, which reads any bool array, decides)."""
    cdef Py_ssize_t k
    cdef PyObject** items
    cdef PyObject* v
    cdef const uint8_t* b
    if type(values) is list or type(values) is tuple:
        if len(values) != n:
            return False
        items = PySequence_Fast_ITEMS(values)
        for k in range(n):
            v = items[k]
            if v == <PyObject*>_PY_TRUE:
                out[k] = 1
            elif v == <PyObject*>_PY_FALSE:
                out[k] = 0
            else:
                return False
        return True
    if _native_vector(values, cnp.NPY_BOOL, n):
        b = <const uint8_t*>cnp.PyArray_DATA(<cnp.ndarray>values)
        for k in range(n):
            out[k] = b[k] != 0
        return True
    return False


cdef inline bint _all_below(const int64_t* x, Py_ssize_t n, int64_t hi) noexcept:
    """Every ``x[k]`` in ``[0, hi)`` (branch-free: an all-good batch runs to the end)."""
    cdef bint ok = True
    cdef Py_ssize_t k
    for k in range(n):
        ok &= (x[k] >= 0) & (x[k] < hi)
    return ok


cdef extern from "Python.h":
    PyInterpreterState* PyInterpreterState_Get()


# A kernel call releases the GIL only for a batch of at least NOGIL_ROWS rows, and
# only when another Python thread exists (other_threads). Handing the GIL over
# wakes the thread waiting for it (a futex wake-up and a context switch, several
# microseconds on a loaded machine) and this thread then waits for it to come back:
# for a single decision's kernel (~0.1 us, a third of the call) two threads
# handing the GIL to each other at every call were slower together than one
# thread alone. Kept over a short kernel, the GIL changes hands at the
# interpreter's switch interval instead, and two threads go as fast as one. No
# deadlock: a thread waits for the scheduler's mutex without the GIL (_acquire),
# and one holding the mutex never waits for anything but the GIL.
cdef Py_ssize_t NOGIL_ROWS = 256


cdef inline bint other_threads():
    """Another Python thread exists in this interpreter (the GIL held): a long
    kernel releases the GIL only then, since with none the hand-off is pure cost."""
    return PyThreadState_Next(PyInterpreterState_ThreadHead(PyInterpreterState_Get())) != NULL


def _other_threads():
    """other_threads(), for tests."""
    return other_threads()


def rows_from_names(values, dict table, int64_t[::1] out, int64_t if_none, int64_t if_missing):
    """``out[k] = table[values[k]]`` for a batch of names: ``if_none`` for a None,
    ``if_missing`` for a name not in the table. Returns the row of the first
    missing name, or -1; an unhashable name raises TypeError (with ``out``
    partly written)."""
    if len(values) > out.shape[0]:
        raise ValueError("more names than rows")
    if out.shape[0] == 0:
        return -1
    return _rows_from_names(values, table, &out[0], if_none, if_missing)


cdef Py_ssize_t _rows_from_names(values, dict table, int64_t* out, int64_t if_none,
                                 int64_t if_missing) except -2:
    """rows_from_names into ``out`` (room for every value)."""
    cdef Py_ssize_t k = 0
    cdef Py_ssize_t first_missing = -1
    cdef PyObject* found
    for v in values:
        if v is None:
            out[k] = if_none
        else:
            found = PyDict_GetItemWithError(table, v)  # raises what the lookup raised
            if found == NULL:
                out[k] = if_missing
                if first_missing < 0:
                    first_missing = k
            else:
                out[k] = <object>found
        k += 1
    return first_missing


def first_bad_time(const double[::1] t):
    """Row of the first time that is not finite or earlier than the row before,
    or -1 (batch validation)."""
    cdef Py_ssize_t k
    for k in range(t.shape[0]):
        if isnan(t[k]) or isinf(t[k]) or (k > 0 and t[k] < t[k - 1]):
            return k
    return -1


def decision_from_row(const int64_t[::1] row, names, explanation=None):
    """A Decision from one row of a batch result (DECISION_FIELDS)."""
    return make_decision(&row[0], names, explanation)


@cython.final
cdef class KeyTable:
    """The index of a list of keys (user ids, endpoints: any hashable): ``names``,
    the key of each index ``0 .. n-1`` (``None`` at a free index). For the user
    ids and the endpoints it is their only index (no dict beside it).

    A dict probe reads its index array, its entry and the int object of the
    value: three random reads, each a cache miss when a logon storm draws users
    from tens of thousands; and a dict that keys come and go in (users a launch
    creates and a sweep forgets) fills with deleted entries that every insertion
    of a new key probes past. This table, open addressing with linear probing
    over 32-byte (key, hash, index, text) slots, at most half full and with
    backward-shift deletion (no deleted entries), reads one. A key that is a str
    of at most 15 ASCII characters (a user id as the broker decodes it from a
    request: a new object, equal to the stored one but not it) also keeps its
    characters in its slot, so matching it compares them there instead of
    reading the stored key object, a second random read. It never disagrees with
    ``names``: the owner calls ``add`` / ``remove`` as it writes a key at an
    index (appended or free) or frees one; ``find`` first brings the table up to date — the
    keys appended to ``names`` since (a bulk ``add_users``), or, when anything
    else happened that the table did not follow (the list replaced, an ``add``
    or ``remove`` while behind, more than half full), the whole list again. A
    key matches as in a dict: the same object, or an equal hash and ``==`` (for
    two exact ASCII strs, equal characters: the same test); the keys of
    ``names`` are distinct by the owner's checks. Used with the scheduler's lock
    held."""

    cdef KeySlot* slots
    cdef Py_ssize_t size, used
    cdef Py_ssize_t names_seen  # len(names) when the table last matched it
    cdef bint stale  # a change the table did not follow: rebuild at the next find
    cdef object source  # the list mirrored

    def __dealloc__(self):
        self.clear()

    cdef void clear(self) noexcept:
        cdef Py_ssize_t k
        if self.slots != NULL:
            for k in range(self.size):
                Py_XDECREF(self.slots[k].key)
            free(self.slots)
        self.slots = NULL
        self.size = 0
        self.used = 0
        self.names_seen = 0
        self.stale = False
        self.source = None

    cdef void prefetch(self, object key) noexcept:
        """Start reading the slot where ``find(key)`` will look first, so that the
        work done before ``find`` overlaps the cache miss. A hint: it takes no
        lock (a stale table only wastes the read) and never raises (an
        unhashable key is left for ``find`` to report). The key's hash is cached
        by str objects, so ``find`` does not compute it twice."""
        cdef Py_hash_t h
        if self.slots == NULL:
            return
        h = hash_or_minus_one(key)
        if h == -1:
            PyErr_Clear()  # unhashable (or a raising __hash__): find() reports it
            return
        usher_prefetch(&self.slots[<size_t>h & <size_t>(self.size - 1)])

    cdef void prefetch_ahead(self, list names, const Py_ssize_t* victims, Py_ssize_t k,
                             Py_ssize_t m) noexcept:
        """A sweep forgets ``names[victims[0:m]]``, thousands of keys at random places
        of memory: before it forgets ``victims[k]``, the key object 2 * KEY_AHEAD
        further on and the slot of the one KEY_AHEAD further on are requested (for
        k = -1, the first ones), so their cache misses overlap."""
        cdef Py_ssize_t j
        if k < 0:
            for j in range(min(2 * KEY_AHEAD, m)):
                usher_prefetch(PyList_GET_ITEM(names, victims[j]))
            for j in range(min(KEY_AHEAD, m)):
                self.prefetch(<object>PyList_GET_ITEM(names, victims[j]))
            return
        if k + 2 * KEY_AHEAD < m:
            usher_prefetch(PyList_GET_ITEM(names, victims[k + 2 * KEY_AHEAD]))
        if k + KEY_AHEAD < m:
            self.prefetch(<object>PyList_GET_ITEM(names, victims[k + KEY_AHEAD]))

    cdef inline bint _current(self, list names) noexcept:
        """The table matches ``names`` as it is now (no sync needed)."""
        return self.source is names and not self.stale and self.names_seen == PyList_GET_SIZE(names)

    cdef int64_t find(self, object key, list names) except -2:
        """The index of ``key`` in ``names``, or -1 when it is not there."""
        # an exact str keeps its hash once computed (prefetch did): read in place
        cdef Py_hash_t h = usher_str_hash(<PyObject*>key) if type(key) is str else PyObject_Hash(key)
        cdef const char* text = NULL
        # -1: the key is not a short ASCII str
        cdef Py_ssize_t n_text = usher_inline_text(<PyObject*>key, &text, INLINE_TEXT)
        if not self._current(names):
            self._sync(names)
        return self._probe(<PyObject*>key, h, text, n_text)

    cdef inline int64_t _probe(self, PyObject* key, Py_hash_t h, const char* text,
                               Py_ssize_t n_text) except -2:
        """The index of ``key`` (hash ``h``; ``text`` and ``n_text`` as
        usher_inline_text gives them) in the table, which matches its list, or -1."""
        cdef Py_ssize_t mask = self.size - 1
        cdef Py_ssize_t k = <Py_ssize_t>(<size_t>h & <size_t>mask)
        cdef KeySlot* slot
        cdef PyObject* other
        while True:
            slot = &self.slots[k]
            other = slot.key
            if other == NULL:
                return -1
            if other == key:
                return slot.index
            if slot.hash == <uint32_t>h:
                if slot.n_text != NO_TEXT and n_text >= 0:
                    # two short ASCII strs: equal iff their characters are, and the
                    # slot holds the stored key's, so the key object is not read
                    if slot.n_text == n_text and memcmp(slot.text, text, n_text) == 0:
                        return slot.index
                elif PyObject_Hash(<object>other) == h and \
                        PyObject_RichCompareBool(<object>other, <object>key, Py_EQ):  # a dict's test
                    return slot.index
            k = (k + 1) & mask

    cdef Py_ssize_t find_rows(self, PyObject** items, Py_ssize_t n, int64_t* out,
                              list names) except -2:
        """``find`` for a batch column of n ids, each checked to be a non-empty
        exact str as it is read: the index of each into ``out`` (-1 for one not
        in ``names``). Returns how many were not, or -1 when an item is not such
        a str (the rows after it not read). The table is brought up to date once,
        and the slots of the rows KEY_AHEAD further on are requested before their
        turn, so the cache misses of a column of ids drawn from tens of thousands
        overlap; no Python code runs (an exact str hashes and compares in C)."""
        cdef Py_ssize_t k, missing = 0, n_text
        cdef Py_ssize_t mask
        cdef PyObject* v
        cdef const char* text = NULL
        cdef int64_t idx
        if not self._current(names):
            self._sync(names)
        mask = self.size - 1
        for k in range(min(2 * KEY_AHEAD, n)):
            usher_prefetch(items[k])
        for k in range(min(KEY_AHEAD, n)):
            v = items[k]
            if v != NULL and usher_nonempty_exact_str(v):
                usher_prefetch(&self.slots[<size_t>usher_str_hash(v) & <size_t>mask])
        for k in range(n):
            # the id objects 2 * KEY_AHEAD further on (their type, length and hash
            # are read KEY_AHEAD rows before their turn), then their slots
            if k + 2 * KEY_AHEAD < n:
                usher_prefetch(items[k + 2 * KEY_AHEAD])
            if k + KEY_AHEAD < n:
                v = items[k + KEY_AHEAD]
                if v != NULL and usher_nonempty_exact_str(v):
                    usher_prefetch(&self.slots[<size_t>usher_str_hash(v) & <size_t>mask])
            v = items[k]
            if v == NULL or not usher_nonempty_exact_str(v):
                return -1
            n_text = usher_inline_text(v, &text, INLINE_TEXT)
            idx = self._probe(v, usher_str_hash(v), text, n_text)
            out[k] = idx
            missing += idx < 0
        return missing

    cdef bint _follows(self, list names, Py_ssize_t d_names):
        """The table matched ``names`` before a change that moved its length by
        ``d_names`` (so it can follow it)."""
        return (self.slots != NULL and not self.stale and self.source is names
                and self.names_seen + d_names == PyList_GET_SIZE(names))

    cdef int add(self, object key, int64_t index, list names, bint appended) except -1:
        """Record ``key``, just written into ``names`` at ``index`` (``appended``:
        at its end, else at a free index)."""
        if self._follows(names, appended) and 2 * (self.used + 1) <= self.size:
            self._insert(key, PyObject_Hash(key), index)
            self.names_seen += appended
        elif self.slots != NULL:
            self.stale = True
        return 0

    cdef int remove(self, object key, list names) except -1:
        """Forget ``key``, whose index of ``names`` is being freed: the slot is
        emptied and the slots after it in its run moved back (backward-shift
        deletion, so probes need no tombstones)."""
        cdef Py_hash_t h = PyObject_Hash(key)
        cdef Py_ssize_t mask, k, j, home
        cdef KeySlot* slot
        cdef PyObject* other
        if not self._follows(names, 0):
            if self.slots != NULL:
                self.stale = True
            return 0
        mask = self.size - 1
        k = <Py_ssize_t>(<size_t>h & <size_t>mask)
        while True:
            other = self.slots[k].key
            if other == NULL:  # not there: the table and the list disagree
                self.stale = True
                return 0
            if other == <PyObject*>key or (self.slots[k].hash == <uint32_t>h
                                            and PyObject_RichCompareBool(<object>other, key, Py_EQ)):
                break
            k = (k + 1) & mask
        Py_XDECREF(other)
        self.slots[k].key = NULL
        self.used -= 1
        j = k
        while True:  # move back every later slot of the run whose home is not in (k, j]
            j = (j + 1) & mask
            other = self.slots[j].key
            if other == NULL:
                return 0
            # the slot's low 32 hash bits name its home in a table of up to 2**32
            # slots, so the key object, a random read, is not touched
            if mask <= 0xFFFFFFFF:
                home = <Py_ssize_t>(<size_t>self.slots[j].hash & <size_t>mask)
            else:
                home = <Py_ssize_t>(<size_t>PyObject_Hash(<object>other) & <size_t>mask)
            if (j > k and (home <= k or home > j)) or (j < k and (home <= k and home > j)):
                self.slots[k] = self.slots[j]
                self.slots[j].key = NULL
                k = j

    cdef int _insert(self, object key, Py_hash_t h, int64_t index) except -1:
        cdef Py_ssize_t mask = self.size - 1
        cdef Py_ssize_t k = <Py_ssize_t>(<size_t>h & <size_t>mask)
        cdef KeySlot* slot
        cdef const char* text = NULL
        cdef Py_ssize_t n_text = usher_inline_text(<PyObject*>key, &text, INLINE_TEXT)
        while self.slots[k].key != NULL:
            k = (k + 1) & mask
        slot = &self.slots[k]
        Py_INCREF(key)
        slot.key = <PyObject*>key
        slot.hash = <uint32_t>h
        slot.index = <int32_t>index
        if n_text >= 0:
            slot.n_text = <uint8_t>n_text
            memcpy(slot.text, text, n_text)
        else:
            slot.n_text = NO_TEXT
        self.used += 1
        return 0

    cdef int _sync(self, list names) except -1:
        """Bring the table up to ``names``: the keys appended to it since the table
        last matched it, when nothing else changed and they fit, else every key
        again (into a table at least 2.5 times their number)."""
        cdef Py_ssize_t size = 1024
        cdef Py_ssize_t j, n_names = PyList_GET_SIZE(names), n_keys = 0
        cdef bint appends = (not self.stale and self.slots != NULL and self.source is names
                             and self.names_seen <= n_names
                             and 2 * (self.used + n_names - self.names_seen) <= self.size)
        if not appends:
            self.clear()
            if n_names >= 0x7FFFFFFF:  # indices are kept as int32
                raise MemoryError(f"too many keys for a key table: {n_names}")
            for j in range(n_names):
                n_keys += PyList_GET_ITEM(names, j) != <PyObject*>None
            while 2 * size < 5 * n_keys:
                size <<= 1
            self.slots = <KeySlot*>usher_table_alloc(size * sizeof(KeySlot))
            if self.slots == NULL:
                raise MemoryError(f"cannot allocate a key table of {size} slots")
            self.size = size
            self.source = names
            self.names_seen = 0
        for j in range(self.names_seen, n_names):  # names[j] is the key of index j
            key = names[j]
            if key is not None:
                self._insert(key, PyObject_Hash(key), j)
        self.names_seen = n_names
        return 0


@cython.final
cdef class NameIndex:
    """The apps or the zones by name, for the two name lookups of a single
    launch: ``dict.get`` without the str's hash. A broker decodes each request's
    app and location into new strs, whose hash is not computed yet, so a dict
    lookup runs siphash on each; this table, open addressing over the characters
    of the dict's short ASCII keys (as ``KeyTable.text``, held as two words:
    usher_text_words), hashes them with a few multiplications and compares two
    words.

    Its answer is the dict's: it holds every exact str key of at most
    INLINE_TEXT ASCII characters, a query is such a str (else the dict answers),
    and two such strs are equal iff their characters are, while no other key can
    equal one — unless the dict holds a key that is not an exact str (a str
    subclass can define ``==``) or an exact ASCII str not in the compact form
    (then the dict answers every query). The dicts it mirrors (apps, zones) only
    grow, so a table built from a dict of as many keys, the same object, is
    current; the build runs no Python code and replaces the table at once, so a
    reader under the GIL never sees half of one."""

    cdef NameSlot* slots
    cdef Py_ssize_t mask
    cdef Py_ssize_t n_keys  # len(source) when built
    cdef object source  # the dict mirrored
    cdef bint answers  # False: the dict holds a key the table cannot speak for

    def __dealloc__(self):
        free(self.slots)

    cdef int64_t find(self, object name, dict source) except -3:
        """``source.get(name)`` as an int64 when ``name`` is a short ASCII exact
        str: its value, or -1 when it is not a key; -2 when the dict must answer."""
        cdef const char* text = NULL
        cdef Py_ssize_t n_text = usher_inline_text(<PyObject*>name, &text, INLINE_TEXT)
        cdef Py_ssize_t k
        cdef NameSlot* slot
        cdef uint64_t w[2]
        if n_text <= 0:
            return -2
        if source is not self.source or len(source) != self.n_keys:
            self._build(source)
        if not self.answers:
            return -2
        usher_text_words(text, n_text, w)
        k = <Py_ssize_t>(usher_words_hash(w) & <uint64_t>self.mask)
        while True:
            slot = &self.slots[k]
            if slot.words[0] == w[0] and slot.words[1] == w[1]:
                return slot.index
            if slot.words[1] == 0:
                return -1
            k = (k + 1) & self.mask

    cdef int _build(self, dict source) except -1:
        cdef Py_ssize_t size = 16, pos = 0, k, n_text
        cdef PyObject* key
        cdef PyObject* value
        cdef const char* text = NULL
        cdef NameSlot* slots
        cdef bint answers = True
        cdef int64_t v
        cdef uint64_t w[2]
        while size < 4 * len(source):
            size <<= 1
        slots = <NameSlot*>calloc(size, sizeof(NameSlot))
        if slots == NULL:
            raise MemoryError("cannot allocate a name index")
        while PyDict_Next(source, &pos, &key, &value):
            n_text = usher_inline_text(key, &text, INLINE_TEXT)
            if n_text > 0 and type(<object>value) is int:
                v = <object>value
                usher_text_words(text, n_text, w)
                k = <Py_ssize_t>(usher_words_hash(w) & <uint64_t>(size - 1))
                while slots[k].words[1] != 0:
                    k = (k + 1) & (size - 1)
                slots[k].words[0] = w[0]
                slots[k].words[1] = w[1]
                slots[k].index = v
            elif n_text > 0 or not usher_compact_exact_str(key):
                # a value not an int, or a key not an exact str or not in the
                # compact form (which may be ASCII); an exact compact str that is
                # long or not ASCII equals no query the table answers
                answers = False
        free(self.slots)
        self.slots = slots
        self.mask = size - 1
        self.n_keys = len(source)
        self.source = source
        self.answers = answers
        return 0


cdef dict _OP_NEEDS = {
    SESSION_OP_LOGON_COMPLETE: ("logon_complete", "a launching session"),
    SESSION_OP_LAUNCH_FAILED: ("launch_failed", "a launching session"),
    SESSION_OP_DISCONNECT: ("disconnect", "an active or launching session"),
}


cdef str _state_detail(int64_t op, int64_t state):
    """The message of a session operation refused in ``state`` (BAD_SESSION_STATE)."""
    name, needs = _OP_NEEDS.get(op, ("the operation", "another state"))
    return f"the session is {SessionState(state)}; {name} applies to {needs}"


cdef class Engine:
    """State pointers, kernel pointers and the hot operations (see module doc)."""

    cdef int64_t* _hdr
    cdef double* _clk
    cdef object _header_array, _clock_array
    cdef launch_fn _launch
    cdef launch_many_fn _launch_many
    cdef op_fn _session_op
    cdef ops_many_fn _session_ops_many
    cdef op_fn _server_op
    cdef telemetry_fn _telemetry
    cdef advance_fn _advance
    cdef pthread_mutex_t* _lock
    cdef KeyTable _user_keys  # the user ids: their only index (of _user_names)
    cdef KeyTable _endpoint_keys  # the endpoints: their only index (of _endpoint_names)
    cdef NameIndex _app_index, _zone_index  # the app and zone dicts, by characters
    cdef public dict _apps, _zones, _servers, _pools
    cdef public list _server_names, _zone_names, _pool_names, _app_names, _user_names
    cdef public list _endpoint_names, _user_free, _endpoint_free  # by index (None: free); free indices
    cdef public list _user_apps  # by user index: the frozenset of app names it is entitled to
    cdef public object _user_kind  # uint8 per user index: USER_DIRECTORY, USER_IMPLICIT, USER_FREE
    cdef public Py_ssize_t _added_since_sweep, _sweep_every  # implicit users and endpoints (see _sweep)
    cdef Py_ssize_t _endpoints_kept  # endpoints the last sweep kept (-1: none yet in this object)
    cdef Py_ssize_t _endpoints_named  # endpoints a live session named at the last sweep
    cdef uint8_t* _endpoint_idle  # by endpoint index: sweeps since it was last looked up or named
    cdef Py_ssize_t _endpoint_idle_cap
    cdef public object _names
    cdef public bint _dirty
    cdef public object _clock
    cdef int64_t* _minus_ones  # columns of _launch_compiled, one block (see _fill_rows)
    cdef int64_t* _zeros
    cdef int64_t* _locations
    cdef int64_t* _user_rows
    cdef int64_t* _app_rows
    cdef int64_t* _endpoint_rows
    cdef int64_t* _external_rows
    cdef double* _times
    cdef Py_ssize_t _fill_cap
    cdef int64_t* _sop_rows  # session_ops_many's columns, one block (see _sop_room)
    cdef Py_ssize_t _sop_cap

    def __cinit__(self, *args, **kwargs):
        self._lock = <pthread_mutex_t*>malloc(sizeof(pthread_mutex_t))
        if self._lock == NULL or pthread_mutex_init(self._lock, NULL) != 0:
            free(self._lock)
            self._lock = NULL
            raise MemoryError("cannot allocate the scheduler lock")
        self._user_keys = KeyTable()
        self._endpoint_keys = KeyTable()
        self._app_index = NameIndex()
        self._zone_index = NameIndex()
        self._endpoints_kept = -1

    def __dealloc__(self):
        if self._lock != NULL:
            pthread_mutex_destroy(self._lock)
            free(self._lock)
        free(self._minus_ones)  # the fill columns' block (see _fill_rows)
        free(self._sop_rows)
        free(self._endpoint_idle)

    def _bind(self, header_array, clock_array, kernels):
        """Attach the header and clock arrays (never reallocated) and the
        kernels' C function pointers."""
        cdef int64_t[::1] h = header_array
        cdef double[::1] c = clock_array
        self._header_array = header_array
        self._clock_array = clock_array
        self._hdr = &h[0]
        self._clk = &c[0]
        self._launch = <launch_fn><uintptr_t>kernels.launch.address
        self._launch_many = <launch_many_fn><uintptr_t>kernels.launch_many.address
        self._session_op = <op_fn><uintptr_t>kernels.session_op.address
        self._session_ops_many = <ops_many_fn><uintptr_t>kernels.session_ops_many.address
        self._server_op = <op_fn><uintptr_t>kernels.server_op.address
        self._telemetry = <telemetry_fn><uintptr_t>kernels.telemetry.address
        self._advance = <advance_fn><uintptr_t>kernels.advance_clock.address

    # ------------------------------------------------------------- the subclass's part
    # The configuration side of the state lives in Python (usher.Scheduler): this
    # class calls these five methods of it, which a subclass must define. Each is
    # called with the lock held, and raises an UsherError (state unchanged) on a bad
    # argument.

    def _relayout(self):
        """Group the servers anew and rebuild every tree (the fleet changed)."""
        raise NotImplementedError("Engine._relayout: defined by usher.Scheduler")

    def _reserve(self, rows):
        """Make room for ``rows`` more sessions and app instances."""
        raise NotImplementedError("Engine._reserve: defined by usher.Scheduler")

    def _add_user_unlocked(self, id, home_zone, app_names):
        """Add user ``id`` (entitled to ``app_names``); returns its index."""
        raise NotImplementedError("Engine._add_user_unlocked: defined by usher.Scheduler")

    def _explain(self, u, a, loc, ext):
        """The :class:`usher.Explanation` of the launch about to be decided."""
        raise NotImplementedError("Engine._explain: defined by usher.Scheduler")

    def _server_index(self, server, field="server"):
        """Index of ``server`` (a name or an index); UnknownServer otherwise."""
        raise NotImplementedError("Engine._server_index: defined by usher.Scheduler")

    # ------------------------------------------------------------- locking
    cdef inline void _acquire(self):
        if pthread_mutex_trylock(self._lock) != 0:
            with nogil:  # wait without holding the GIL the owner may need
                pthread_mutex_lock(self._lock)

    cdef inline void _release(self):
        pthread_mutex_unlock(self._lock)

    def _lock_acquire(self):
        self._acquire()

    def _lock_release(self):
        self._release()

    # ------------------------------------------------------------- helpers
    cdef double _time(self, object now) except? -1.0:
        """``now`` as a float, checked (``validate.time``) and against the clock,
        before any change; None reads the clock, so a caller passing None holds
        the lock (see ``_given_time``)."""
        cdef double t
        if now is None:
            return self._clock_time()
        if type(now) is float:
            t = now
            if not (-MAX_TIME <= t <= MAX_TIME):  # NaN fails both compares
                t = _v.time("now", now)
        else:
            t = _v.time("now", now)
        if t < self._clk[CK_NOW]:
            if now is None:  # the clock's reading is the value that is wrong
                raise TimeWentBackwards("now", t, f"the clock read earlier than the previous operation ({self._clk[CK_NOW]})")
            raise TimeWentBackwards("now", now, f"earlier than the previous operation ({self._clk[CK_NOW]})")
        return t

    cdef double _given_time(self, object now) except? -1.0:
        """``_time(now)`` for a caller that does not hold the lock yet: NaN for
        None (the clock is read under the lock, ``_clock_time``: read before it,
        two threads could take their times in one order and the lock in the
        other, and the second would go back in time)."""
        if now is None:
            return NAN_TIME
        return self._time(now)

    cdef double _clock_time(self) except? -1.0:
        """The clock's time, checked like a given ``now``. Lock held."""
        reading = self._clock()
        cdef double t = _v.time("now", reading)
        if t < self._clk[CK_NOW]:
            raise TimeWentBackwards("now", reading, f"the clock went back from {self._clk[CK_NOW]}")
        return t

    cdef int _prepare(self, int64_t rows) except -1:
        """Lay groups out again if the fleet changed; make room for ``rows``
        new sessions and app instances. Called with the lock held."""
        if self._dirty:
            self._relayout()
        if self._hdr[H_SESSION_FREE_TOP] < rows or self._hdr[H_INSTANCE_FREE_TOP] < rows:
            self._reserve(rows)
        return 0

    cpdef int64_t _user_index(self, object user) except -2:
        """Index of ``user``; an unknown user is created (implicit: forgotten once
        it has no live session, see ``Scheduler._sweep``) when entitlement is not
        enforced, and is -1 (refused as not_entitled) when it is."""
        cdef int64_t u = self._user_keys.find(user, self._user_names)
        return u if u >= 0 else self._unknown_user(user)

    cpdef int64_t _find_user(self, object user) except -2:
        """Index of the user with id ``user`` (hashable), or -1 when there is none
        (lock held). The key table is the only index of the user ids."""
        return self._user_keys.find(user, self._user_names)

    def _find_users(self, ids):
        """``_find_user`` of each id of ``ids`` (a sequence of hashables) as an int64
        array: one compiled pass over the key table for a list, tuple or object
        array of non-empty exact strs (``KeyTable.find_rows``), else one lookup an
        id. Nothing is created. Lock held."""
        cdef PyObject** items = NULL
        cdef Py_ssize_t n = len(ids), m = 0, k
        cdef cnp.ndarray out = _np_empty(n, dtype=_np_int64)
        cdef int64_t* o = <int64_t*>cnp.PyArray_DATA(out)
        col = _name_column(ids, &items, &m)
        if col is not None and m == n and self._user_keys.find_rows(items, n, o, self._user_names) >= 0:
            return out
        k = 0
        for uid in ids:
            o[k] = self._user_keys.find(uid, self._user_names)
            k += 1
        return out

    cdef int64_t _unknown_user(self, object user) except -2:
        """The index of ``user``, not in the key table (lock held): a new
        implicit user, or -1 when entitlement is enforced."""
        if self._hdr[H_ENFORCE_ENTITLEMENT]:
            return -1
        if type(user) is str:
            return self._new_implicit_user(<str>user)
        return self._add_user_unlocked(user, None, (), True)

    cdef int64_t _new_implicit_user(self, str user) except -2:
        """Add ``user`` (a new non-empty str) as a user a launch created: no home
        zone, no apps, forgotten with its last session. What
        ``Scheduler._add_user_unlocked(user, None, (), True)`` does, written on the
        tables through the header (the user record, its entitlement words when
        its index is reused, its kind) instead of through numpy, so a launch by a
        user the scheduler has not seen costs a key-table insertion and a few list
        operations more than one by a known user. Lock held."""
        cdef int64_t u, words
        cdef int64_t* rec
        cdef int64_t* ent
        cdef Py_ssize_t f
        cdef bint appended = not self._user_free
        cdef list names = self._user_names
        if appended:
            u = len(names)
            if u >= self._hdr[H_USER_CAP]:
                self._user_room(u + 1)  # the tables (and _user_kind) reallocated
            names.append(user)
            self._user_apps.append(NO_APPS)
        else:
            u = self._user_free.pop()
            names[u] = user
            self._user_apps[u] = NO_APPS
            words = self._hdr[H_ENT_WORDS]
            ent = <int64_t*><uintptr_t>self._hdr[H_ENT_ADDR] + u * words
            for f in range(words):
                ent[f] = 0
        rec = <int64_t*><uintptr_t>self._hdr[H_USER_ADDR] + u * N_US
        for f in range(N_US):
            rec[f] = -1  # state.NONE
        rec[US_N_SESSIONS] = 0
        (<uint8_t*>cnp.PyArray_DATA(<cnp.ndarray>self._user_kind))[u] = USER_IMPLICIT
        self._user_keys.add(user, u, names, appended)
        self._added_since_sweep += 1
        return u

    cpdef int64_t _endpoint_index(self, object endpoint) except -2:
        """Index of ``endpoint`` (a str), added when new (at a free index when
        there is one). Lock held."""
        cdef int64_t idx
        if endpoint is None:
            return -1
        idx = self._endpoint_keys.find(endpoint, self._endpoint_names)
        if idx < 0:
            return self._add_endpoint(endpoint)
        self._mark_endpoint(idx)
        return idx

    cpdef int64_t _find_endpoint(self, object endpoint) except -2:
        """Index of ``endpoint`` (hashable), or -1 when it is not known; nothing
        added or marked (lock held)."""
        return self._endpoint_keys.find(endpoint, self._endpoint_names)

    cdef int64_t _add_endpoint(self, object endpoint) except -2:
        """Add ``endpoint`` (a str the key table does not hold) at a free index, or
        at the end, marked as just looked up; its index. Lock held."""
        cdef bint appended = not self._endpoint_free
        cdef int64_t idx
        cdef list names = self._endpoint_names
        if appended:
            idx = len(names)
            names.append(endpoint)
        else:
            idx = self._endpoint_free.pop()
            names[idx] = endpoint
        self._endpoint_keys.add(endpoint, idx, names, appended)
        self._added_since_sweep += 1
        self._mark_endpoint(idx)
        return idx

    cdef inline Py_ssize_t _n_endpoints(self):
        """How many endpoints are known (a name at their index)."""
        return len(self._endpoint_names) - len(self._endpoint_free)

    cdef inline int _mark_endpoint(self, int64_t e) except -1:
        """Endpoint index ``e`` was looked up: not idle (lock held)."""
        if e < self._endpoint_idle_cap:
            self._endpoint_idle[e] = 0
            return 0
        return self._endpoint_idle_room(e)

    cdef int _endpoint_idle_room(self, int64_t e) except -1:
        """Grow the endpoints' idle counts to hold index ``e`` (every new one 0)."""
        cdef Py_ssize_t cap = max(2 * self._endpoint_idle_cap, e + 1, 1024)
        cdef uint8_t* idle = <uint8_t*>realloc(self._endpoint_idle, cap)
        if idle == NULL:
            raise MemoryError("cannot allocate the endpoints' idle counts")
        memset(idle + self._endpoint_idle_cap, 0, cap - self._endpoint_idle_cap)
        self._endpoint_idle, self._endpoint_idle_cap = idle, cap
        return 0

    def _user_key_added(self, key, int64_t index, bint appended):
        """The user key table follows ``_user_names[index] = key`` (lock held)."""
        self._user_keys.add(key, index, self._user_names, appended)

    cdef inline int _forget_user_at(self, Py_ssize_t u, uint8_t* kind) except -1:
        """Free user index ``u`` (a user holding no live session): its id leaves the
        key table and the name list, its index goes to the free list. Lock held;
        ``kind`` is ``_user_kind``'s data."""
        cdef list names = self._user_names
        cdef list apps = self._user_apps
        key = names[u]
        self._user_keys.remove(key, names)
        names[u] = None
        if <PyObject*>PyList_GET_ITEM(apps, u) != <PyObject*>NO_APPS:  # an implicit user's already
            apps[u] = NO_APPS
        kind[u] = USER_FREE
        self._user_free.append(u)
        return 0

    def _forget_user(self, Py_ssize_t u):
        """``remove_user``'s part: free user index ``u`` (it holds no live
        session; lock held)."""
        self._forget_user_at(u, <uint8_t*>cnp.PyArray_DATA(<cnp.ndarray>self._user_kind))

    def _sweep(self):
        self._sweep_now()

    cdef int _sweep_now(self) except -1:
        """Forget what no live session needs: implicit users (created by a launch)
        without a live session, and endpoints no live session names. Their
        indices go to the free lists, in increasing order, and are reused by the
        next users and endpoints. Runs (lock held, before an operation looks any
        id up: ``_maybe_sweep``) once ``_sweep_every`` implicit users and
        endpoints were added since the last sweep: at least SWEEP_FLOOR, as many
        as the sweep kept, and a SWEEP_SHARE-th of the records it read, so each
        addition pays for a bounded part of a sweep (amortised O(1)), and the
        tables and dicts stay within a constant factor of what live sessions
        and the directory need."""
        cdef Py_ssize_t n = len(self._user_names), u, k, m = 0, kept = 0, scanned = n
        cdef uint8_t* kind = <uint8_t*>cnp.PyArray_DATA(<cnp.ndarray>self._user_kind)
        cdef const int64_t* users = <const int64_t*><uintptr_t>self._hdr[H_USER_ADDR]
        cdef Py_ssize_t* victims = <Py_ssize_t*>malloc(max(n, 1) * sizeof(Py_ssize_t))
        cdef list names = self._user_names
        if victims == NULL:
            raise MemoryError("cannot allocate the sweep's list of users")
        try:
            for u in range(n):  # the kind bytes, and the record of an implicit user only
                if kind[u] == USER_IMPLICIT:
                    if users[u * N_US + US_N_SESSIONS] == 0:
                        victims[m] = u
                        m += 1
                    else:
                        kept += 1
            self._user_keys.prefetch_ahead(names, victims, -1, m)
            for k in range(m):
                self._user_keys.prefetch_ahead(names, victims, k, m)
                self._forget_user_at(victims[k], kind)
        finally:
            free(victims)
        if self._n_endpoints() != self._endpoints_kept:  # endpoints were added since
            scanned += self._hdr[H_SESSION_CAP]
            self._endpoints_named = self._sweep_endpoints()
            self._endpoints_kept = self._n_endpoints()
        self._added_since_sweep = 0
        # the endpoints kept for being used lately are not counted: each sweep would
        # wait for more additions than the last, and one-off endpoints pile up
        # (kept: at most ENDPOINT_IDLE_SWEEPS + 1 sweeps' additions beyond the named)
        self._sweep_every = max(_SWEEP_FLOOR, kept + self._endpoints_named, scanned // SWEEP_SHARE)
        return 0

    cdef Py_ssize_t _sweep_endpoints(self) except -1:
        """Forget the endpoints no live session names and no operation looked up
        over the last ENDPOINT_IDLE_SWEEPS sweeps (``_sweep_now``'s part): one
        pass over the session records, reading the state and endpoint fields of
        each (lock held); each endpoint's idle count (set to 0 when it is looked
        up, ``_mark_endpoint``) goes up by one, or to 0 when a live session names
        it. An endpoint a user comes back from (a broker's day: the same desk
        after a logoff, hours later) keeps its index instead of being forgotten
        and added again; a one-off endpoint goes at the ENDPOINT_IDLE_SWEEPS + 1-th
        sweep after its last use. Decisions
        compare endpoint indices only for equality between an endpoint and the
        ones live sessions name, which keep theirs either way, so which endpoints
        are kept changes no decision. Returns how many endpoints live sessions
        name."""
        cdef list names = self._endpoint_names
        cdef Py_ssize_t n = len(names), cap = self._hdr[H_SESSION_CAP], i, e, n_named = 0
        cdef const int64_t* rec = <const int64_t*><uintptr_t>self._hdr[H_SESSION_I_ADDR]
        cdef Py_ssize_t m = 0, k
        cdef uint8_t* named
        cdef uint8_t* idle
        cdef Py_ssize_t* victims
        if n == 0:
            return 0
        if n > self._endpoint_idle_cap:
            self._endpoint_idle_room(n - 1)
        idle = self._endpoint_idle
        named = <uint8_t*>calloc(n, 1)
        victims = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
        if named == NULL or victims == NULL:
            free(named)
            free(victims)
            raise MemoryError("cannot allocate the sweep's endpoint marks")
        try:
            for i in range(cap):
                e = rec[SE_ENDPOINT]
                if rec[SE_STATE] != SESSION_STATE_FREE and 0 <= e < n:
                    named[e] = 1
                rec += N_SE
            for e in range(n):
                if named[e]:
                    n_named += 1
                    idle[e] = 0
                elif idle[e] < _ENDPOINT_IDLE_SWEEPS:
                    idle[e] += 1
                else:
                    if PyList_GET_ITEM(names, e) != <PyObject*>None:
                        victims[m] = e
                        m += 1
                    idle[e] = 0
            self._endpoint_keys.prefetch_ahead(names, victims, -1, m)
            for k in range(m):
                self._endpoint_keys.prefetch_ahead(names, victims, k, m)
                e = victims[k]
                self._endpoint_keys.remove(names[e], names)
                names[e] = None
                self._endpoint_free.append(e)
        finally:
            free(named)
            free(victims)
        return n_named

    cdef inline int _maybe_sweep(self) except -1:
        """Forget implicit users and endpoints no live session needs, once as
        many were added since the last time as were kept then (amortised O(1)
        per addition). Lock held; called before an operation looks any id up."""
        if self._added_since_sweep >= self._sweep_every:
            self._sweep_now()
        return 0

    def _maybe_sweep_py(self):
        self._maybe_sweep()

    cdef bint _all_users_live(self, const int64_t* u, Py_ssize_t n):
        """No index of ``u`` (each in range) is a free user index."""
        cdef const uint8_t* kind = <const uint8_t*>cnp.PyArray_DATA(<cnp.ndarray>self._user_kind)
        cdef bint ok = True
        cdef Py_ssize_t k
        for k in range(n):
            ok &= kind[u[k]] != USER_FREE
        return ok

    def _user_rows_into(self, users, int64_t[::1] out):
        """The user index of each id of ``users`` (all hashable: see
        first_unhashable) into ``out``: known users from the key table, unknown
        ones added (entitlement not enforced) or -1. Called with the lock held."""
        cdef Py_ssize_t k, n = out.shape[0]
        cdef int64_t ui
        cdef KeyTable keys = self._user_keys
        rows = users if type(users) is list or type(users) is tuple else list(users)
        # the slots of the rows KEY_AHEAD further on are requested before their
        # turn, so the table's cache misses overlap instead of queueing
        for k in range(min(KEY_AHEAD, n)):
            keys.prefetch(rows[k])
        for k in range(n):
            if k + KEY_AHEAD < n:
                keys.prefetch(rows[k + KEY_AHEAD])
            user = rows[k]
            ui = keys.find(user, self._user_names)
            out[k] = self._unknown_user(user) if ui < 0 else ui

    def _endpoint_rows_into(self, endpoints, int64_t[::1] out):
        """The endpoint index of each entry of ``endpoints`` (None: -1; all
        hashable) into ``out``, new endpoints added. Called with the lock held."""
        cdef Py_ssize_t k = 0
        cdef int64_t e
        for endpoint in endpoints:
            out[k] = self._endpoint_index(endpoint)
            k += 1

    # ------------------------------------------------------------- launch
    def launch(self, user, app, location=None, endpoint=None, external=False, now=None,
               explain=False):
        """Place one launch. See docs/SEMANTICS.md for the rules.

        Args:
            user: user id (str or any hashable).
            app: app name; an unknown app raises :class:`usher.UnknownApp`.
            location: zone the request comes from (``user_location``), or None.
            endpoint: client endpoint (for reconnection rules), or None.
            external: True when the request comes through the external gateway.
            now: logical time in seconds (monotonic); None reads the clock.
            explain: attach an :class:`usher.Explanation` to the decision.

        Returns:
            :class:`usher.Decision`.
        """
        cdef double t = self._given_time(now)
        # the user's key-table slot is most likely a cache miss (a storm draws users
        # from tens of thousands): start reading it now, so the app and location
        # lookups below overlap it
        self._user_keys.prefetch(user)
        return self._launch_one(user, -1, app, location, endpoint, external, t, explain)

    def launch_by_index(self, user_index, app, location=None, endpoint=None, external=False,
                        now=None, explain=False):
        """:meth:`launch` for a user named by its index (:meth:`user_indices`, the
        order users were added in) instead of its id: for a broker that keeps the
        indices of its directory, a launch without the user-id lookup. The user
        must exist (an index is never created here).

        Raises:
            InvalidArgument: ``user_index`` is not an integer index of a user.
        """
        cdef double t = self._given_time(now)
        cdef int64_t ui = -1
        if isinstance(user_index, bool) or not isinstance(user_index, (int, cnp.integer)):
            raise InvalidArgument("user_index", user_index, "must be an integer user index")
        try:
            ui = user_index
        except OverflowError:
            pass
        if not 0 <= ui < len(self._user_names):  # a free index is refused under the lock
            raise InvalidArgument("user_index", user_index, "no such user index")
        return self._launch_one(None, ui, app, location, endpoint, external, t, explain)

    cdef object _launch_one(self, object user, int64_t ui, object app, object location,
                            object endpoint, object external, double t, object explain):
        """The body of launch (``ui`` = -1: look ``user`` up, adding a new one) and
        launch_by_index (``ui`` checked): ``_launch_row``'s row made a Decision."""
        cdef int64_t out[N_D]  # this call's decision row: nothing shared once the lock is gone
        explanation = self._launch_row(user, ui, app, location, endpoint, external, t, explain, out)
        d = make_decision(out, self._names, explanation)
        if explanation is not None:
            explanation._attach(d)
        return d

    cdef object _launch_row(self, object user, int64_t ui, object app, object location,
                            object endpoint, object external, double t, object explain,
                            int64_t* out):
        """The decision of a launch written into ``out[N_D]`` (the one row a Decision
        is made from); returns its explanation (None unless ``explain``). ``t`` is
        NaN for "read the clock" (under the lock). Every argument is checked by the
        rules of ``usher.validate`` before the lock: ids are strs (a type test each;
        emptiness only matters for an id about to be added, as no empty id is ever
        known), ``external`` and ``explain`` are bools."""
        if ui < 0 and not isinstance(user, str):
            raise InvalidArgument("user", user, "must be a non-empty string")
        if not isinstance(app, str):
            raise InvalidArgument("app", app, "must be a non-empty string")
        cdef int64_t ai = self._app_index.find(app, self._apps)  # -2: the dict answers
        if ai == -2:
            a = self._apps.get(app)
            ai = -1 if a is None else a
        if ai == -1:
            raise UnknownApp("app", app, "no such app")
        cdef int64_t loc = -1
        if location is not None:
            loc = self._zone_index.find(location, self._zones)  # -2: the dict answers
            if loc == -2:
                loc = self._zones.get(location, -3) if isinstance(location, str) else -3
            elif loc == -1:
                loc = -3
            if loc == -3:  # not a known zone: a str names one no server is in (-2)
                if not isinstance(location, str) or len(<str>location) == 0:
                    raise InvalidArgument("location", location, "must be a non-empty string or None")
                loc = -2
        if endpoint is not None and not isinstance(endpoint, str):
            raise InvalidArgument("endpoint", endpoint, "must be a string or None")
        cdef int64_t ext
        if external is False:
            ext = 0
        elif external is True:
            ext = 1
        else:
            ext = _v.flag("external", external)
        cdef bint explain_it = explain is True or (explain is not False and _v.flag("explain", explain))
        cdef int64_t ep, status
        cdef bint by_id = ui < 0
        explanation = None
        self._acquire()
        try:
            if isnan(t):  # now=None: the clock is read under the lock
                t = self._clock_time()
            if by_id:
                self._maybe_sweep()
            elif self._user_names[ui] is None:  # forgotten since the caller looked
                raise InvalidArgument("user_index", ui, "no such user index")
            # known user and endpoint: one probe each of the mirror tables; a new
            # user or endpoint is added only once both ids are known to be valid,
            # so a bad one changes nothing
            if by_id:
                ui = self._user_keys.find(user, self._user_names)
            if ui >= 0:
                # the kernel's first reads: the user's record and entitlement word,
                # requested now so the endpoint probe and the call overlap them
                usher_prefetch(<const char*><uintptr_t>self._hdr[H_USER_ADDR] + ui * N_US * 8)
                usher_prefetch(<const char*><uintptr_t>self._hdr[H_ENT_ADDR]
                               + (ui * self._hdr[H_ENT_WORDS] + (ai >> 6)) * 8)
            ep = -1
            if endpoint is not None:
                ep = self._endpoint_keys.find(endpoint, self._endpoint_names)
                if ep < 0 and len(<str>endpoint) == 0:
                    raise InvalidArgument("endpoint", endpoint, "must be a non-empty string or None")
            if ui < 0:
                if len(<str>user) == 0:
                    raise InvalidArgument("user", user, "must be a non-empty string")
                ui = self._unknown_user(user)  # find() looked in the key table
            if ep < 0 and endpoint is not None:
                ep = self._add_endpoint(endpoint)
            elif ep >= 0:
                self._mark_endpoint(ep)
            if self._dirty or self._hdr[H_SESSION_FREE_TOP] < 1 or self._hdr[H_INSTANCE_FREE_TOP] < 1:
                self._prepare(1)
            if explain_it:
                self._advance(self._hdr, t)
                explanation = self._explain(ui, ai, loc, ext)
        except BaseException:
            self._release()
            raise
        # the GIL is kept over a single decision's kernel (see NOGIL_ROWS)
        status = self._launch(self._hdr, ui, ai, loc, ep, ext, t, out)
        pthread_mutex_unlock(self._lock)
        if status != 0:
            raise_for_status(status, "now", t)
        return explanation

    def _launch_arrays(self, const int64_t[::1] users, const int64_t[::1] apps,
                       const int64_t[::1] locations, const int64_t[::1] endpoints,
                       const int64_t[::1] externals, const double[::1] nows,
                       int64_t[:, ::1] out):
        """Batch kernel call on validated arrays (see Scheduler.launch_many);
        the caller holds the lock and has prepared capacity."""
        cdef int64_t n = users.shape[0], status
        if n == 0:
            return
        if n >= NOGIL_ROWS and other_threads():
            with nogil:
                status = self._launch_many(self._hdr, n, <int64_t*>&users[0], <int64_t*>&apps[0],
                                           <int64_t*>&locations[0], <int64_t*>&endpoints[0],
                                           <int64_t*>&externals[0], <double*>&nows[0], &out[0, 0])
        else:
            status = self._launch_many(self._hdr, n, <int64_t*>&users[0], <int64_t*>&apps[0],
                                       <int64_t*>&locations[0], <int64_t*>&endpoints[0],
                                       <int64_t*>&externals[0], <double*>&nows[0], &out[0, 0])
        if status != 0:
            raise_for_status(status, "now", nows[0])

    def _launch_compiled(self, users, apps, now, locations=None, endpoints=None, external=None):
        """(Lock held: the caller, ``Scheduler.launch_many``, holds it over both
        paths and reads the clock under it.) ``launch_many`` for the batch shape of
        a storm replayed by a broker or a simulator: ``users`` as a C-contiguous 1-D
        int64 ndarray of indices (``user_indices``) or a list, tuple or 1-D object
        ndarray of user ids (exact strs), ``apps`` as such an array of app indices
        (``app_indices``) or a list, tuple or object ndarray of app names,
        locations and endpoints each as None or such a sequence of n names (None
        entries allowed), external flags as None, a list or tuple of n bools (``True``
        / ``False`` themselves) or a C-contiguous 1-D bool ndarray, one time for every
        row (a float or an int). Returns the (n, N_D) decision rows, or None when the batch has
        another shape or holds any value that would be refused: the caller then
        takes the general path, which checks everything again and raises the
        error (naming the field and the row). So this path holds no rule of its
        own: it checks that the general path would take the batch as is, then
        does what it does — the sweep, users not seen yet created (as
        ``_user_rows_into`` does, in row order), then endpoints not seen yet (as
        ``_endpoint_rows_into`` does, in row order), the same kernel on the same
        rows — without its Python-level work (a dozen calls, fill arrays, a
        float array of times). Names are read in place (a list's or an object
        array's item pointers), each checked as it is looked up
        (``_rows_of_names``, ``KeyTable.find_rows``), and nothing changes before
        every column passed: the sweep, which the general path runs after its
        checks too, only once every id was checked."""
        cdef PyObject** user_items = NULL
        cdef PyObject** app_items = NULL
        cdef PyObject** loc_items = NULL
        cdef PyObject** ep_items = NULL
        cdef Py_ssize_t n = 0, n_apps = 0, n_locs = 0, n_eps = 0
        cdef double t
        cdef int64_t* loc
        cdef int64_t* ep
        cdef int64_t* ext
        user_col = _name_column(users, &user_items, &n)
        app_col = _name_column(apps, &app_items, &n_apps)
        if (user_col is None and not _int64_vector(users)) or (app_col is None and not _int64_vector(apps)):
            return None
        if user_col is None:
            n = cnp.PyArray_DIM(<cnp.ndarray>users, 0)
        if app_col is None:
            n_apps = cnp.PyArray_DIM(<cnp.ndarray>apps, 0)
        if n == 0 or n_apps != n:
            return None
        if locations is not None:
            loc_col = _name_column(locations, &loc_items, &n_locs)
            if loc_col is None or n_locs != n:
                return None
        if endpoints is not None:  # each None or a non-empty exact str
            ep_col = _name_column(endpoints, &ep_items, &n_eps)
            if ep_col is None or n_eps != n or _first_not_str_of(ep_items, n, True) >= 0:
                return None
        if type(now) is float or type(now) is int:  # the caller has read the clock for None
            try:
                t = now
            except OverflowError:
                return None
        else:
            return None
        if not (-MAX_TIME <= t <= MAX_TIME):  # not finite, or outside the time rule
            return None
        if t < self._clk[CK_NOW]:  # the general path raises TimeWentBackwards
            return None
        self._fill_rows(n, t)
        loc = ep = self._minus_ones  # (the columns may have moved)
        ext = self._zeros
        if external is not None:
            ext = self._external_rows
            if not _flag_column(external, n, ext):
                return None
        if app_col is not None:  # each a known app
            if _rows_of_names(app_items, n, self._apps, self._app_rows, False, -1) >= 0:
                return None
        else:
            memcpy(self._app_rows, cnp.PyArray_DATA(<cnp.ndarray>apps), n * sizeof(int64_t))
        if not _all_below(self._app_rows, n, len(self._app_names)):
            return None
        if loc_items != NULL:
            # as the general path reads them: a zone name no server uses is -2 (no
            # candidates there)
            loc = self._locations
            if _rows_of_names(loc_items, n, self._zones, loc, True, -2) >= 0:
                return None
        if user_col is not None:
            if not self._user_rows_of(users, user_col, user_items, n, self._user_rows):
                return None
        else:
            # copied, then checked: the kernel may run without the GIL, and another
            # thread could write the caller's array between the check and the kernel
            memcpy(self._user_rows, cnp.PyArray_DATA(<cnp.ndarray>users), n * sizeof(int64_t))
            if not _all_below(self._user_rows, n, len(self._user_names)) or (
                    self._user_free and not self._all_users_live(self._user_rows, n)):
                return None  # not a user index, or one forgotten: the general path names it
        if ep_items != NULL:  # checked above: from here on nothing is refused
            ep = self._endpoint_rows
            self._endpoint_rows_of(ep_items, n, ep)
        self._prepare(n)
        return self._launch_rows(n, self._user_rows, loc, ep, ext, t)

    cdef int _endpoint_rows_of(self, PyObject** items, Py_ssize_t n, int64_t* out) except -1:
        """The index of each endpoint of a batch's column (its n ``items`` read in
        place, each None or a non-empty exact str; the caller keeps the column) into
        ``out``, as ``_endpoint_rows_into`` finds them: -1 for None, a known one marked as
        looked up, a new one added in row order. The slots of the rows KEY_AHEAD
        further on are requested before their turn. Adding an endpoint runs no
        Python code that could change the column. Lock held."""
        cdef Py_ssize_t k
        cdef KeyTable keys = self._endpoint_keys
        cdef PyObject* none = <PyObject*>None
        for k in range(min(KEY_AHEAD, n)):
            if items[k] != none:
                keys.prefetch(<object>items[k])
        for k in range(n):
            if k + KEY_AHEAD < n and items[k + KEY_AHEAD] != none:
                keys.prefetch(<object>items[k + KEY_AHEAD])
            out[k] = self._endpoint_index(<object>items[k])
        return 0

    cdef object _launch_rows(self, Py_ssize_t n, const int64_t* u, int64_t* loc, int64_t* ep,
                             int64_t* ext, double t):
        """The kernel over the rows of a compiled batch (lock held, capacity
        prepared): ``u``, ``loc``, ``ep`` and ``ext`` given, the apps in
        ``_app_rows``."""
        cdef int64_t status
        out = _np_empty((n, N_D), dtype=_np_int64)
        cdef int64_t* o = <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>out)
        if n >= NOGIL_ROWS and other_threads():
            with nogil:
                status = self._launch_many(self._hdr, n, <int64_t*>u, self._app_rows, loc,
                                           ep, ext, self._times, o)
        else:
            status = self._launch_many(self._hdr, n, <int64_t*>u, self._app_rows, loc,
                                       ep, ext, self._times, o)
        if status != 0:
            raise_for_status(status, "now", t)
        return out

    cdef bint _user_rows_of(self, users, user_col, PyObject** items, Py_ssize_t n,
                            int64_t* out) except -1:
        """The index of each id of a batch's user column (``users``, read in place
        through ``user_col`` and its n ``items``) into ``out``, as
        ``_user_rows_into`` finds them: the sweep when one is due, one pass over
        the key table (``KeyTable.find_rows``), then the ids not found created in
        row order (an id twice in the batch is created once), or -1 when
        entitlement is enforced. False, with nothing changed, when an id is not a
        non-empty exact str (the general path names it). Lock held."""
        cdef Py_ssize_t k, missing
        cdef int64_t ui
        cdef KeyTable keys = self._user_keys
        cdef list names = self._user_names
        if self._added_since_sweep >= self._sweep_every:
            # every id checked before the sweep, as on the general path; then the
            # column read again (the sweep frees objects)
            if _first_not_str_of(items, n, False) >= 0:
                return False
            self._sweep_now()
            user_col = _name_column(users, &items, &k)
            if user_col is None or k != n:
                return False
        missing = keys.find_rows(items, n, out, names)
        if missing < 0:
            return False
        if missing == 0:
            return True
        for k in range(n):  # creating a user may run Python code (a table grown): read again
            if out[k] < 0:
                user = user_col[k]
                ui = keys.find(user, names)  # an earlier row may have created it
                out[k] = self._unknown_user(user) if ui < 0 else ui
        return True

    cdef int _fill_rows(self, Py_ssize_t n, double t) except -1:
        """The columns of a compiled batch: n locations and endpoints of -1 (none),
        n external flags of 0, n copies of ``t``, room for n location, user, app,
        endpoint and external rows. Kept between calls (lock held); only the times are
        written again."""
        cdef Py_ssize_t k, cap = self._fill_cap
        cdef void* p
        if n > cap:
            cap = max(n, 2 * cap)
            p = malloc(8 * cap * 8)  # one block, eight columns
            if p == NULL:
                raise MemoryError("cannot allocate a batch's fill columns")
            free(self._minus_ones)  # the block's start
            self._minus_ones = <int64_t*>p
            self._zeros = self._minus_ones + cap
            self._locations = self._minus_ones + 2 * cap
            self._user_rows = self._minus_ones + 3 * cap
            self._times = <double*>(self._minus_ones + 4 * cap)
            self._app_rows = self._minus_ones + 5 * cap
            self._endpoint_rows = self._minus_ones + 6 * cap
            self._external_rows = self._minus_ones + 7 * cap
            self._fill_cap = cap
            for k in range(cap):
                self._minus_ones[k] = -1
                self._zeros[k] = 0
        for k in range(n):
            self._times[k] = t
        return 0

    # ------------------------------------------------------------- sessions
    cdef object _session_call(self, object session, int64_t op, int64_t arg, object now):
        cdef double t = self._given_time(now)
        cdef int64_t sid, status
        sid = -1
        if type(session) is int:
            try:
                sid = session
            except OverflowError:
                pass
        if sid < 0:  # not an exact int, or outside [0, 2**63 - 1]: the rule names it
            sid = _v.session_id("session", session)
        cdef int64_t out[1]
        self._acquire()
        try:
            if isnan(t):  # now=None: the clock is read under the lock
                t = self._clock_time()
            if self._dirty:
                self._relayout()
        except BaseException:
            self._release()
            raise
        status = self._session_op(self._hdr, sid, op, arg, t, out)  # GIL kept (NOGIL_ROWS)
        pthread_mutex_unlock(self._lock)
        ended = out[0] == 1
        if status == STATUS_APP_NOT_IN_SESSION:  # the app is the bad value
            raise_for_status(status, "app", self._app_names[arg], f"not running in session {session_text(session)}")
        if status == STATUS_BAD_SESSION_STATE:  # the kernel wrote the session's state
            raise_for_status(status, "session", session, _state_detail(op, out[0]))
        if status != 0:
            raise_for_status(status, "session", session)
        return ended

    def logon_complete(self, session, now=None):
        """The session's logon finished: launching -> active."""
        self._session_call(session, SESSION_OP_LOGON_COMPLETE, 0, now)

    def disconnect(self, session, now=None):
        """The user disconnected: active (or launching) -> disconnected."""
        self._session_call(session, SESSION_OP_DISCONNECT, 0, now)

    def logoff(self, session, now=None):
        """The session ends."""
        self._session_call(session, SESSION_OP_LOGOFF, 0, now)

    def launch_failed(self, session, now=None):
        """The launch did not come up: the session is removed and its server
        sin-binned for ``sinbin_seconds``."""
        self._session_call(session, SESSION_OP_LAUNCH_FAILED, 0, now)

    def close_app(self, session, app, now=None):
        """The app closes in the session; returns True when that ended the session."""
        a = self._apps.get(_v.name("app", app))
        if a is None:
            raise UnknownApp("app", app, "no such app")
        return self._session_call(session, SESSION_OP_CLOSE_APP, a, now)

    def session_ops_many(self, ops, sessions, now=None):
        """Apply session operations in order, all or nothing: row k is
        ``ops[k]`` (a ``SessionOp``: LOGON_COMPLETE, DISCONNECT, LOGOFF or
        LAUNCH_FAILED) on session ``sessions[k]`` at ``now[k]``. The same as
        :meth:`logon_complete`, :meth:`disconnect`, :meth:`logoff` and
        :meth:`launch_failed` one by one when every row succeeds; when a row
        would fail, nothing is applied and the error names that row.

        Args:
            ops: sequence (or 1-D int64 array) of ``SessionOp`` codes.
            sessions: sequence (or 1-D int64 array) of session ids, as long.
            now: a time for every row, one time per row (non-decreasing), or
                None to read the clock.

        Raises:
            InvalidArgument: a row's op, session id or time breaks its rule
                (``ops[k]``, ``sessions[k]``, ``now[k]``).
            UnknownSession, SessionEnded, BadSessionState, TimeWentBackwards:
                row k's operation would fail (field ``sessions[k]`` or ``now[k]``).
        """
        if type(ops) is not list:
            ops = _v.sequence("ops", ops)
        if type(sessions) is not list:
            sessions = _v.sequence("sessions", sessions)
        cdef Py_ssize_t n = len(ops), k
        if len(sessions) != n:
            raise InvalidArgument("sessions", len(sessions), f"must have one entry per op ({n})")
        cdef bint per_row = type(now) is list or (
            now is not None and not isinstance(now, (int, float, cnp.integer, cnp.floating)))
        cdef double t = NAN_TIME
        if per_row:
            if type(now) is not list:
                now = _v.sequence("now", now)
            if len(now) != n:
                raise InvalidArgument("now", len(now), f"must have one entry per op ({n})")
        elif now is not None:
            t = _v.time("now", now)
        if n == 0:
            return
        cdef int64_t* o
        cdef int64_t* sid
        cdef double* times
        cdef int64_t v
        cdef double x
        cdef int64_t bad[2]
        self._acquire()
        try:  # the rows are read into the block under the lock (another thread's call uses it too)
            self._sop_room(n)
            o = self._sop_rows
            sid = o + self._sop_cap
            times = <double*>(o + 2 * self._sop_cap)
            for k in range(n):  # each value by its rule (usher.validate), exact types first
                item = ops[k]
                v = -1
                if type(item) is int:
                    try:
                        v = item
                    except OverflowError:
                        pass
                if not 0 <= v <= SESSION_OP_LAUNCH_FAILED:
                    v = _v.integer(f"ops[{k}]", item, 0, SESSION_OP_LAUNCH_FAILED)
                o[k] = v
                item = sessions[k]
                v = -1
                if type(item) is int:
                    try:
                        v = item
                    except OverflowError:
                        pass
                sid[k] = v if v >= 0 else _v.session_id(f"sessions[{k}]", item)
                if per_row:
                    item = now[k]
                    x = item if type(item) is float else NAN_TIME
                    times[k] = x if -MAX_TIME <= x <= MAX_TIME else _v.time(f"now[{k}]", item)
            if not per_row:
                if isnan(t):  # now=None: the clock is read under the lock
                    t = self._clock_time()
                for k in range(n):
                    times[k] = t
        except BaseException:
            self._release()
            raise
        status = self._session_rows(n, bad)
        if status != 0:
            self._raise_session_row(status, bad[0], bad[1], ops, sessions, now, per_row, n)

    cdef int64_t _session_rows(self, Py_ssize_t n, int64_t* bad) except -1:
        """The kernel call of the block's first n session rows (lock held:
        released here); returns its status."""
        cdef int64_t status
        cdef int64_t* o = self._sop_rows
        cdef Py_ssize_t cap = self._sop_cap
        try:
            if self._dirty:
                self._relayout()
        except BaseException:
            self._release()
            raise
        if n >= NOGIL_ROWS and other_threads():
            with nogil:
                status = self._session_ops_many(self._hdr, n, o, o + cap, <double*>(o + 2 * cap),
                                                o + 3 * cap, bad)
                # released before the GIL is taken back: a thread waiting for the
                # scheduler goes on at once instead of queueing behind this one's GIL
                pthread_mutex_unlock(self._lock)
        else:
            status = self._session_ops_many(self._hdr, n, o, o + cap, <double*>(o + 2 * cap), o + 3 * cap, bad)
            pthread_mutex_unlock(self._lock)
        return status

    def session_run(self, list items, Py_ssize_t i, dict names, dict codes, double last):
        """For a replay: apply the session operations ``items[i:j]`` with one
        kernel call, all or nothing, where ``j`` ends the run at the first item
        whose class is not in ``codes`` (class -> ``SessionOp`` code), whose
        ``session`` is not a str key of ``names`` with an int value (an engine
        session id), or whose ``t`` is not a float in time order from ``last``
        and within the time rule; those are left to the caller, one by one (a
        run is cut at ``SOP_RUN`` items). Returns ``j``, or ``-j`` when the run
        would fail (nothing applied: the caller replays it line by line, which
        reports the bad item)."""
        cdef Py_ssize_t n = len(items), j = i, k = 0
        cdef int64_t v, sid
        cdef double x
        cdef int64_t bad[2]
        cdef PyObject* found
        self._acquire()
        try:  # the block is written under the lock (see session_ops_many)
            self._sop_room(SOP_RUN)
            while j < n and k < SOP_RUN:
                item = items[j]
                found = PyDict_GetItemWithError(codes, type(item))
                if found == NULL or type(<object>found) is not int:
                    break
                v = <object>found
                if not 0 <= v <= SESSION_OP_LAUNCH_FAILED:
                    break
                t = item.t
                x = t if type(t) is float else NAN_TIME
                if not (last <= x <= MAX_TIME):  # NaN fails
                    break
                name = item.session
                if type(name) is not str:
                    break
                found = PyDict_GetItemWithError(names, name)
                if found == NULL or type(<object>found) is not int:
                    break
                try:
                    sid = <object>found
                except OverflowError:
                    break
                if sid < 0:
                    break
                self._sop_rows[k] = v
                self._sop_rows[self._sop_cap + k] = sid
                (<double*>(self._sop_rows + 2 * self._sop_cap))[k] = x
                last = x
                j += 1
                k += 1
        except BaseException:
            self._release()
            raise
        if k == 0:
            self._release()
            return i
        return j if self._session_rows(k, bad) == 0 else -j

    cdef int _sop_room(self, Py_ssize_t n) except -1:
        """Room for n rows in the block of session rows: ops, ids, times and two
        words of kernel scratch a row (lock held)."""
        cdef void* p
        if n <= self._sop_cap:
            return 0
        cap = max(n, 2 * self._sop_cap, 64)
        p = malloc(5 * cap * 8)
        if p == NULL:
            raise MemoryError("cannot allocate a batch's session rows")
        free(self._sop_rows)
        self._sop_rows = <int64_t*>p
        self._sop_cap = cap
        return 0

    cdef int _raise_session_row(self, int64_t status, int64_t k, int64_t state, ops, sessions, now,
                                bint per_row, Py_ssize_t n) except -1:
        """Raise the error of row k of session_ops_many (the kernel's status)."""
        field = f"sessions[{k}]" if n > 1 else "session"
        if status == STATUS_INVALID_VALUE:
            raise InvalidArgument(f"ops[{k}]" if n > 1 else "op", ops[k],
                                  "must be logon_complete, disconnect, logoff or launch_failed")
        if status == STATUS_BAD_SESSION_STATE:
            raise_for_status(status, field, sessions[k], _state_detail(int(ops[k]), state))
        if status == STATUS_TIME_WENT_BACKWARDS:
            raise_for_status(status, f"now[{k}]" if per_row else "now", now[k] if per_row else now)
        raise_for_status(status, field, sessions[k])
        return -1

    # ------------------------------------------------------------- servers
    def _server_call(self, int64_t server, int64_t op, int64_t value, object now, int64_t sessions):
        """Kernel call for power/registered/mode/place-last/evict on one server;
        returns the ids of the sessions it ended (a list, empty when none).
        ``sessions``: the server's session count when the call may end them
        (power off, evict; sizes the buffer of their ids), else 0. The caller
        holds the lock."""
        cdef double t = self._time(now)
        cdef int64_t one[1]
        cdef int64_t* out = one
        cdef int64_t status, k
        if not (SERVER_OP_POWER <= op <= SERVER_MARK_PLACE_LAST):  # the buffer is sized by op
            raise InvalidArgument("op", op, "must be a server operation")
        cdef Py_ssize_t room = self._ended_room(server, op, value, sessions)
        if room > 1:
            out = <int64_t*>malloc(room * sizeof(int64_t))
            if out == NULL:
                raise MemoryError("cannot allocate the ids of a server's sessions")
        try:
            out[0] = 0
            status = self._server_op(self._hdr, server, op, value, t, out)  # GIL kept (NOGIL_ROWS)
            if status != 0:
                raise_for_status(status, "server", self._server_names[server] if 0 <= server < len(self._server_names) else server)
            return [out[k] for k in range(1, 1 + out[0])]
        finally:
            if out != one:
                free(out)

    cdef Py_ssize_t _ended_room(self, int64_t server, int64_t op, int64_t value, int64_t sessions):
        """Words of the buffer a server call writes: 1 (the count), plus one id a
        session it may end (power off, evict: at least the server's own count,
        read from its record, so a caller's stale count cannot overrun it)."""
        cdef const int64_t* rec
        if not (op == SERVER_OP_EVICT or (op == SERVER_OP_POWER and value == POWER_OFF)):
            return 1
        if 0 <= server < self._hdr[H_N_SERVERS]:
            rec = <const int64_t*><uintptr_t>self._hdr[H_SERVER_I_ADDR] + server * N_SV
            if rec[SV_SESSIONS] > sessions:
                sessions = rec[SV_SESSIONS]
        return 1 + max(sessions, 0)

    def _server_calls(self, const int64_t[::1] idx, int64_t op, int64_t value, object now):
        """``_server_call(i, op, value, now, 0)`` for each index of ``idx``, in
        order, under one reading of the time: all or nothing. Every index is
        checked (a present server) and the time (not before the clock) before any
        change; an empty ``idx`` moves the clock only. ``op`` is one that ends no
        session (place-last, mode, registered, power other than off). Raises
        naming ``servers[k]`` (``server`` for one) or ``now``. The caller holds
        the lock and has laid the servers out."""
        cdef Py_ssize_t n = idx.shape[0], k
        cdef int64_t one[1]
        cdef int64_t status = 0, i, n_servers = self._hdr[H_N_SERVERS]
        cdef const int64_t* srv = <const int64_t*><uintptr_t>self._hdr[H_SERVER_I_ADDR]
        if op == SERVER_OP_EVICT or (op == SERVER_OP_POWER and value == POWER_OFF) or not (
                SERVER_OP_POWER <= op <= SERVER_MARK_PLACE_LAST):
            raise InvalidArgument("op", op, "must be a server operation that ends no session")
        for k in range(n):  # the servers first (the first bad one is the error), then the time
            i = idx[k]
            if i < 0 or i >= n_servers or srv[i * N_SV + SV_PRESENT] == 0:
                raise_for_status(STATUS_UNKNOWN_SERVER, f"servers[{k}]" if n > 1 else "server", i)
        cdef double t = self._time(now)
        if n == 0:
            status = self._advance(self._hdr, t)
        k = 0
        while status == 0 and k < n:
            status = self._server_op(self._hdr, idx[k], op, value, t, one)  # GIL kept (NOGIL_ROWS)
            k += 1
        if status == 0:
            return
        # the checks above leave the kernel nothing to refuse (k: the row after the refused one)
        if status == STATUS_TIME_WENT_BACKWARDS or n == 0:
            raise_for_status(status, "now", now)
        raise_for_status(status, f"servers[{k - 1}]" if n > 1 else "server", idx[k - 1])

    def _telemetry_arrays(self, servers, cpu, mem, disk_queue, custom, int64_t mask, now,
                          str field="servers"):
        """Kernel call on contiguous 1-D arrays: int64 ``servers``, float64 columns
        at least as long (a column not in ``mask`` is never read); the kernel checks
        every row before writing. The caller holds the lock. Raises naming
        ``field[row]`` (or the telemetry field) and the bad value. The arrays are
        read through their data pointers (a typed memoryview per array costs more
        than the kernel's work on a small batch)."""
        cdef double t = self._time(now)
        cdef int64_t* p_servers = <int64_t*>_array_data(servers, cnp.NPY_INT64, 0, "servers")
        cdef int64_t n = cnp.PyArray_DIM(servers, 0), status
        cdef double* p_cpu = <double*>_array_data(cpu, cnp.NPY_FLOAT64, n, "cpu")
        cdef double* p_mem = <double*>_array_data(mem, cnp.NPY_FLOAT64, n, "mem")
        cdef double* p_disk = <double*>_array_data(disk_queue, cnp.NPY_FLOAT64, n, "disk_queue")
        cdef double* p_custom = <double*>_array_data(custom, cnp.NPY_FLOAT64, n, "custom")
        cdef int64_t bad[2]
        if n == 0:
            status = self._advance(self._hdr, t)
            return
        status = self._telemetry_rows(n, p_servers, p_cpu, p_mem, p_disk, p_custom, mask, t, bad)
        if status == 0:
            return
        k = bad[0]
        if status == STATUS_UNKNOWN_SERVER:
            raise_for_status(status, f"{field}[{k}]" if n > 1 else "server", servers[k])
        if status == STATUS_INVALID_VALUE:
            name, column = {TELEMETRY_FIELD_CPU: ("cpu", cpu), TELEMETRY_FIELD_MEM: ("mem", mem),
                            TELEMETRY_FIELD_DISK_QUEUE: ("disk_queue", disk_queue),
                            TELEMETRY_FIELD_CUSTOM: ("custom", custom)}[bad[1]]
            raise_for_status(status, f"{name}[{k}]" if n > 1 else name, column[k])
        raise_for_status(status, "now", now)

    def _telemetry_indexed(self, servers, cpu, mem, disk_queue, custom, now):
        """``telemetry_many`` for the shape of a caller that keeps server indices
        (``server_indices``): ``servers`` a C-contiguous 1-D int64 ndarray of n > 0
        rows, each column None or a C-contiguous 1-D float64 ndarray of n values,
        ``now`` None or a float. Applies the rows and returns True; returns False,
        with nothing changed, for any other shape or for rows the kernel refuses
        (it checks every row before it writes any), so that the general path
        raises the error it names."""
        cdef int64_t n, mask = 0, status
        cdef int64_t bad[2]
        cdef double* cols[4]
        cdef double t
        if not _native_vector(servers, cnp.NPY_INT64, -1) or (now is not None and type(now) is not float):
            return False
        n = cnp.PyArray_DIM(<cnp.ndarray>servers, 0)
        if n == 0 or not _telemetry_columns((cpu, mem, disk_queue, custom), n, cols, &mask):
            return False
        self._acquire()
        try:
            t = self._time(now)  # the general path's checks of now: InvalidArgument, TimeWentBackwards
            if self._dirty:
                self._relayout()
            status = self._telemetry_rows(n, <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>servers), cols[0], cols[1],
                                          cols[2], cols[3], mask, t, bad)
        finally:
            self._release()
        return status == 0

    cdef inline int64_t _telemetry_rows(self, int64_t n, int64_t* servers, double* cpu, double* mem,
                                        double* disk, double* custom, int64_t mask, double t,
                                        int64_t* bad) noexcept:
        """The telemetry kernel on ``n`` rows (n > 0; lock held, layout current):
        every row checked before any is written; its status (``bad``: the refused
        row and field). The GIL is released for a long batch when another thread
        exists."""
        cdef int64_t status
        if n >= NOGIL_ROWS and other_threads():
            with nogil:
                status = self._telemetry(self._hdr, n, servers, cpu, mem, disk, custom, mask, t, bad)
        else:
            status = self._telemetry(self._hdr, n, servers, cpu, mem, disk, custom, mask, t, bad)
        return status

    def telemetry(self, server, cpu=None, mem=None, disk_queue=None, custom=None, now=None):
        """Report a server's load inputs (cpu, mem in %, disk queue length,
        custom load 0-10000); a value left None is unchanged."""
        cdef int64_t idx[1]
        cdef double c[1], m[1], d[1], x[1]
        cdef int64_t mask = 0, status, bad[2]
        c[0] = m[0] = d[0] = x[0] = 0.0
        # numbers by the rule of usher.validate.number; their ranges are the kernel's
        if cpu is not None:
            c[0] = cpu if type(cpu) is float else _v.number("cpu", cpu)
            mask |= TELEMETRY_FIELD_CPU
        if mem is not None:
            m[0] = mem if type(mem) is float else _v.number("mem", mem)
            mask |= TELEMETRY_FIELD_MEM
        if disk_queue is not None:
            d[0] = disk_queue if type(disk_queue) is float else _v.number("disk_queue", disk_queue)
            mask |= TELEMETRY_FIELD_DISK_QUEUE
        if custom is not None:
            x[0] = custom if type(custom) is float else _v.number("custom", custom)
            mask |= TELEMETRY_FIELD_CUSTOM
        cdef double t
        if now is not None:
            now = _v.time("now", now)
        self._acquire()
        try:
            idx[0] = self._server_index(server)  # an unknown server is the first error
            t = self._time(now)
            if self._dirty:
                self._relayout()
            status = self._telemetry(self._hdr, 1, idx, c, m, d, x, mask, t, bad)  # GIL kept (NOGIL_ROWS)
        finally:
            self._release()
        if status == STATUS_INVALID_VALUE:
            name, v = {TELEMETRY_FIELD_CPU: ("cpu", cpu), TELEMETRY_FIELD_MEM: ("mem", mem),
                       TELEMETRY_FIELD_DISK_QUEUE: ("disk_queue", disk_queue),
                       TELEMETRY_FIELD_CUSTOM: ("custom", custom)}[bad[1]]
            raise_for_status(status, name, v)
        if status != 0:
            raise_for_status(status, "server", server)

    def _advance_to(self, now):
        """Move the clock; the caller holds the lock."""
        cdef double t = self._time(now)
        cdef int64_t status = self._advance(self._hdr, t)
        if status != 0:
            raise_for_status(status, "now", now)


# ----------------------------------------------------------------- the replay's launch
# ``usher.formats._replayloop`` places a trace's launches through this C entry: the
# decision written into the caller's row (DECISION_FIELDS) instead of a Decision, the
# decision line made straight from it. Taken once through the capsule LAUNCH_ROW
# (no C declarations of Engine shared at build time); ``launch_row(s, ...)`` is
# ``s.launch(user, app, location, endpoint, external, now)`` to the last check, with
# the row in place of the Decision made from it.
ctypedef int (*launch_row_fn)(object, object, object, object, object, object, object,
                              int64_t*) except -1


cdef int launch_row(object engine, object user, object app, object location, object endpoint,
                    object external, object now, int64_t* out) except -1:
    cdef Engine s = <Engine?>engine
    cdef double t = s._given_time(now)
    s._user_keys.prefetch(user)  # as launch() does
    s._launch_row(user, -1, app, location, endpoint, external, t, False, out)
    return 0


LAUNCH_ROW = PyCapsule_New(<void*><launch_row_fn>launch_row, b"usher._engine.launch_row", NULL)


# ``session_rows(s, n, ops, sessions, times)``: ``s.session_ops_many(ops[:n],
# sessions[:n], times[:n])`` of C rows, for the replay's runs of session lines (no
# Python list or int per row). Rows that break a value's rule, or a run the kernel
# refuses (nothing applied), go to the public call, which raises the row's error.
ctypedef int (*session_rows_fn)(object, Py_ssize_t, const int64_t*, const int64_t*,
                                const double*) except -1


cdef int session_rows(object engine, Py_ssize_t n, const int64_t* ops, const int64_t* sessions,
                      const double* times) except -1:
    cdef Engine s = <Engine?>engine
    cdef Py_ssize_t k
    cdef int64_t* rows
    cdef int64_t bad[2]
    for k in range(n):
        if not (0 <= ops[k] <= SESSION_OP_LAUNCH_FAILED and sessions[k] >= 0
                and -MAX_TIME <= times[k] <= MAX_TIME):  # NaN fails
            return _session_rows_public(s, n, ops, sessions, times)
    if n == 0:
        return 0
    s._acquire()
    try:  # the rows are copied into the block under the lock (another thread's call uses it too)
        s._sop_room(n)
        rows = s._sop_rows
        memcpy(rows, ops, n * sizeof(int64_t))
        memcpy(rows + s._sop_cap, sessions, n * sizeof(int64_t))
        memcpy(rows + 2 * s._sop_cap, times, n * sizeof(double))
    except BaseException:
        s._release()
        raise
    if s._session_rows(n, bad) != 0:  # nothing was applied
        return _session_rows_public(s, n, ops, sessions, times)
    return 0


cdef int _session_rows_public(Engine s, Py_ssize_t n, const int64_t* ops, const int64_t* sessions,
                              const double* times) except -1:
    s.session_ops_many([ops[k] for k in range(n)], [sessions[k] for k in range(n)],
                       [times[k] for k in range(n)])
    return 0


SESSION_ROWS = PyCapsule_New(<void*><session_rows_fn>session_rows, b"usher._engine.session_rows", NULL)


# ``telemetry_rows(s, servers, cpu, mem, disk_queue, custom, now)``: ``s.telemetry_many(
# servers, cpu, mem, disk_queue, custom, now)`` for the replay's runs of telemetry lines:
# ``servers`` a list of names, each column None (not reported) or a C-contiguous float64
# ndarray of one value per server, ``now`` a float. The names are looked up in one pass
# and the kernel checks every row before it writes any (the public call's rules); a run
# with a name that is not a known server's exact str, a column or a time outside the
# fast path's shape, or a row the kernel refuses (nothing applied) goes to the public
# call, which raises the row's error.
ctypedef int (*telemetry_rows_fn)(object, list, object, object, object, object, object) except -1


cdef int telemetry_rows(object engine, list servers, object cpu, object mem, object disk_queue,
                        object custom, object now) except -1:
    cdef Engine s = <Engine?>engine
    cdef Py_ssize_t n = len(servers), f
    cdef int64_t mask = 0, status = 0
    cdef int64_t bad[2]
    cdef int64_t* idx
    cdef double* cols[4]
    cdef double t
    cdef tuple columns = (cpu, mem, disk_queue, custom)
    if (n == 0 or type(now) is not float or _first_not_str(servers, False) >= 0
            or not _telemetry_columns(columns, n, cols, &mask)):
        return _telemetry_rows_public(s, servers, columns, now)
    idx = <int64_t*>malloc(n * sizeof(int64_t))
    if idx == NULL:
        raise MemoryError("cannot allocate a telemetry run's server indices")
    try:
        s._acquire()
        try:  # an unknown server (index -1) is refused by the kernel, as the time that went back
            # every item an exact str (checked above); an unknown server -2, which the
            # kernel refuses as any index that is not a server's
            _rows_of_names(PySequence_Fast_ITEMS(servers), n, s._servers, idx, False, -2)
            t = PyFloat_AS_DOUBLE(now)
            if -MAX_TIME <= t <= MAX_TIME and t >= s._clk[CK_NOW]:  # NaN fails
                if s._dirty:
                    s._relayout()
                status = s._telemetry_rows(n, idx, cols[0], cols[1], cols[2], cols[3], mask, t, bad)
            else:
                status = -1
        finally:
            s._release()
    finally:
        free(idx)
    if status != 0:  # nothing was applied: the public call raises the row's error
        return _telemetry_rows_public(s, servers, columns, now)
    return 0


cdef int _telemetry_rows_public(Engine s, list servers, tuple columns, object now) except -1:
    s.telemetry_many(servers, cpu=columns[0], mem=columns[1], disk_queue=columns[2],
                     custom=columns[3], now=now)
    return 0


TELEMETRY_ROWS = PyCapsule_New(<void*><telemetry_rows_fn>telemetry_rows, b"usher._engine.telemetry_rows",
                               NULL)
