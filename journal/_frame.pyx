# cython: language_level=3
"""Journal records framed in bulk: :func:`encode_many` is
``usher.journal.records.encode_many`` compiled, byte for byte the same records.

Design: a request of 1,000 launches writes 1,000 records. Framed in the
interpreter, each costs a join, a call of ``zlib.crc32`` and a ``%`` format, about
three times the CRC itself. Here each record is one bytes object written in place:
the op, a tab, the decision line and the line feed copied behind the room for the
eight hex digits of the CRC, then zlib's ``crc32`` over the body (the same library
Python's ``zlib`` module calls) and the digits written in front. Still one record
per line and one CRC per record, so a torn write loses one record (records.py).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.string cimport memchr, memcpy


cdef extern from "zlib.h" nogil:
    unsigned long crc32(unsigned long crc, const unsigned char* buf, unsigned int length)


cdef const char* _HEX = b"0123456789abcdef"


cdef bytes _record(const char* op, Py_ssize_t lo, const char* decision, Py_ssize_t ld):
    """``%08x TAB op TAB decision LF`` with the CRC-32 of ``op TAB decision``."""
    cdef Py_ssize_t body = lo + 1 + ld
    rec = PyBytes_FromStringAndSize(NULL, 9 + body + 1)
    cdef char* p = PyBytes_AS_STRING(rec)
    cdef char* b = p + 9
    memcpy(b, op, lo)
    b[lo] = c'\t'
    memcpy(b + lo + 1, decision, ld)
    b[body] = c'\n'
    cdef unsigned long crc = crc32(0, <const unsigned char*>b, <unsigned int>body)
    cdef int i
    for i in range(7, -1, -1):
        p[i] = _HEX[crc & 15]
        crc >>= 4
    p[8] = c'\t'
    return <bytes>rec


def encode_many(ops, decisions):
    """The records of ``ops[k]`` and ``decisions[k]`` (lists of bytes, ``b""`` for
    no decision; as many as the shorter list holds, as ``zip`` pairs them), as
    ``records.encode_many`` makes them. Not lists, or an item that is not bytes:
    TypeError."""
    if type(ops) is not list or type(decisions) is not list:
        raise TypeError("encode_many: ops and decisions must be lists of bytes")
    cdef Py_ssize_t k, n = min(PyList_GET_SIZE(ops), PyList_GET_SIZE(decisions))
    for k in range(n):  # every item checked before any record is made
        if type(<object>PyList_GET_ITEM(ops, k)) is not bytes or \
                type(<object>PyList_GET_ITEM(decisions, k)) is not bytes:
            raise TypeError(f"encode_many: item {k} is not bytes")
        if PyBytes_GET_SIZE(<bytes>PyList_GET_ITEM(ops, k)) + \
                PyBytes_GET_SIZE(<bytes>PyList_GET_ITEM(decisions, k)) >= 0x7FFFFFF0:
            raise ValueError(f"encode_many: item {k} is too long for a record")
    cdef bytes op, decision
    out = []
    for k in range(n):
        op, decision = <bytes>PyList_GET_ITEM(ops, k), <bytes>PyList_GET_ITEM(decisions, k)
        out.append(_record(PyBytes_AS_STRING(op), PyBytes_GET_SIZE(op),
                           PyBytes_AS_STRING(decision), PyBytes_GET_SIZE(decision)))
    return out


def encode_texts(bytes ops, bytes decisions):
    """``encode_many(ops.split(b"\\n")[:-1], decisions.split(b"\\n")[:-1])`` without
    the lists: two texts of as many lines, each line ended by a line feed (the op
    lines of a request and their decision lines, as the trace encoder writes them).
    ValueError when they do not hold as many lines, or one does not end with a line
    feed."""
    cdef const char* a = ops
    cdef const char* b = decisions
    cdef const char* a_end = a + PyBytes_GET_SIZE(ops)
    cdef const char* b_end = b + PyBytes_GET_SIZE(decisions)
    cdef const char* ea
    cdef const char* eb
    if ops.count(b"\n") != decisions.count(b"\n") or (a != a_end and (a_end - 1)[0] != c'\n') or \
            (b != b_end and (b_end - 1)[0] != c'\n'):
        raise ValueError("encode_texts: the texts do not hold as many lines, each ended by a line feed")
    if PyBytes_GET_SIZE(ops) + PyBytes_GET_SIZE(decisions) >= 0x7FFFFFF0:
        raise ValueError("encode_texts: too long for records")
    out = []
    while a < a_end:
        ea = <const char*>memchr(a, c'\n', a_end - a)
        eb = <const char*>memchr(b, c'\n', b_end - b)
        out.append(_record(a, ea - a, b, eb - b))
        a, b = ea + 1, eb + 1
    return out
