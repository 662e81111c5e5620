# cython: language_level=3
"""The replay's hot loop, compiled: :func:`process` is ``Replayer._process_python``
(usher.formats.replay) line for line, and :class:`DecisionMaker` is the one place a
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
- every call into the scheduler and every cold path (a failed line, a batch) is the
  Python loop's own call, in the same order, so the two loops give the same lines,
  the same errors and the same state (tests/test_replay_loop.py checks them against
  each other on random traces).
"""

from cpython.object cimport PyObject
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.dict cimport PyDict_GetItem, PyDict_SetDefault
from cpython.list cimport PyList_Append, PyList_GET_SIZE, PyList_GET_ITEM
from libc.stdint cimport int64_t

import types

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

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
        int flags
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member

cdef enum:
    T_OBJECT_EX = 16  # a member descriptor's slot of an object reference (structmember.h)
    REASON_BITS = 4  # the outcome tally: (outcome << 4) + reason -> count
    TALLY_SLOTS = 64

cdef int PLACED = 0
cdef int REJECTED = 3
cdef tuple OUTCOME_NAMES = tuple(_OUTCOME_NAMES)
cdef tuple REASON_NAMES = tuple(_REASON_NAMES)
cdef object DECISION = LaunchDecision
cdef object LAUNCH = LaunchOp
cdef object TELEMETRY = TelemetryOp
cdef object USER = UserOp
cdef dict SESSION_CLASSES = dict(dispatch.SESSION_OPS)


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


cdef inline bint _in_order(object last, object t) except -1:
    """``last <= t`` as Python decides it (a C compare for two floats)."""
    if type(t) is float and type(last) is float:
        return PyFloat_AS_DOUBLE(last) <= PyFloat_AS_DOUBLE(t)
    return bool(last <= t)


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
    """

    cdef dict names, creator
    cdef list keep, emit
    cdef int64_t tally[TALLY_SLOTS]

    def __init__(self, dict names, dict creator, list keep, list emit):
        self.names = names
        self.creator = creator
        self.keep = keep
        self.emit = emit

    def __call__(self, t, rid, int oc, int rc, sid, server, zone, load_index):
        return self.decide(t, rid, oc, rc, sid, server, zone, load_index)

    def counts(self):
        """The outcome tally: ``[(outcome << 4) + reason] -> launches``."""
        return [self.tally[k] for k in range(len(OUTCOME_NAMES) << REASON_BITS)]

    cdef object decide(self, object t, object rid, int oc, int rc, object sid, object server,
                       object zone, object load_index):
        if not (0 <= oc < len(OUTCOME_NAMES) and 0 <= rc < (1 << REASON_BITS)):
            raise IndexError(f"outcome {oc} / reason {rc} out of range")
        if oc == REJECTED:
            self.names[rid] = None
            self.tally[(REJECTED << REASON_BITS) + rc] += 1
            rec = DECISION(t, rid, OUTCOME_NAMES[oc], None, None, None, REASON_NAMES[rc], None)
        else:
            self.names[rid] = sid
            self.tally[oc << REASON_BITS] += 1
            if oc == PLACED:
                self.creator[sid] = rid
                sname = rid
            else:
                sname = <object>PyDict_SetDefault(self.creator, sid, rid)
            rec = DECISION(t, rid, OUTCOME_NAMES[oc], server, zone, sname, None, load_index)
        if self.keep is not None:
            self.keep.append(rec)
        if self.emit is not None:
            self.emit.append(rec)
        return rec


def process(r, Py_ssize_t first, list ops, Py_ssize_t min_launch_run, Py_ssize_t max_run,
            Py_ssize_t flush):
    """``Replayer._process_python(first, ops)`` compiled (see the module doc), with
    the replay module's ``_MIN_LAUNCH_RUN``, ``_MAX_RUN`` and ``_FLUSH``."""
    s = r.scheduler
    cdef dict names = r.names
    cdef bint batch = r.batch
    one = r._one
    cdef DecisionMaker decide = r._decide
    launch = None if r.explain else s.launch
    calls = r._session_calls
    if calls is None or calls[0] is not s:  # the scheduler's session methods, bound once
        calls = r._session_calls = (s, {cls: getattr(s, name)
                                        for cls, name in dispatch.SESSION_METHODS.items()}.get)
    session_call = calls[1]
    session_codes = dispatch.SESSION_OPS
    session_run = s.session_run
    writer = r._writer
    cdef list pending = writer.pending if writer is not None else None
    cdef Py_ssize_t n = len(ops), i = 0, j, end
    cdef Py_ssize_t scanned = 0  # ops before this index were found to be in a run too short to batch
    last = r.last_t
    cdef _Slots slots
    cdef PyObject* found
    cdef _Slots ls = LAUNCH_SLOTS
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
            if launch is not None and _in_order(last, t) and rid not in names:
                try:
                    d = launch(_field(op, ls.user, "user"), _field(op, ls.app, "app"),
                               _field(op, ls.location, "location"), _field(op, ls.endpoint, "endpoint"),
                               _field(op, ls.external, "external"), t)
                except Exception:
                    pass
                else:
                    decide.decide(t, rid, d.outcome_code, d.reason_code, d.session_id, d.server, d.zone,
                                  d.load_index)
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
                    end = session_run(ops, i, names, session_codes, last)
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
                    end, scanned = r._telemetry_run(first, ops, i)
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
