"""Typed decoding of a ``POST /v1/ops`` body: the fast path of the common case.

A body of well-formed operations is decoded by msgspec straight from the JSON text
into ``t``-optional twins of the trace format's op Structs (generated from
``usher.formats.trace.OP_CLASSES``, so they cannot drift), the server's time is
written into those without ``t``, and the result is re-read as the real op Structs
by the trace format's own typed decoder: the same validation as ``usher replay``, at
a fraction of a microsecond per op instead of converting dicts one by one. A body
with anything wrong in it (bad JSON, an unknown op or field, a wrong type) is not
decoded here (:func:`decode` returns None) and goes the general way, which names
the bad line and field.

The common body (compact JSON, each op's first key ``"op"``, as brokers and
``json.dumps(separators=(",", ":"))`` write it) is decoded in one pass: the server's
time is written into the text in front of each op (``{"t":<now>,"op":...``), and the
trace format's decoder reads it. A JSON string cannot hold ``{"op":`` (its quotes
would be escaped), and no op has a field that holds an object, so exactly the ops
are stamped; an op that gives its own ``t`` keeps it (a later key wins). Whatever
that pass refuses goes the two-pass way above, which decides as before.
"""

from __future__ import annotations

import msgspec
from msgspec import NODEFAULT, UNSET, UnsetType

__all__ = ["decode"]


def _twin(cls):
    """``cls`` with ``t`` optional (absent: the server's clock)."""
    fields = []
    for f in msgspec.structs.fields(cls):
        if f.name == "t":
            fields.append(("t", float | UnsetType, UNSET))  # an explicit null stays an error
        elif f.default is not NODEFAULT:
            fields.append((f.name, f.type, f.default))
        elif f.default_factory is not NODEFAULT:
            fields.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, f.type))
    cfg = cls.__struct_config__
    # gc=False as the real op Structs: decoded from JSON they hold no cycle, and a
    # thousand tracked objects per body would start collections on the request path
    return msgspec.defstruct(cls.__name__, fields, kw_only=True, forbid_unknown_fields=True,
                             tag_field=cfg.tag_field, tag=cfg.tag, gc=False)


def _build():
    from usher.formats.trace import OP_CLASSES, Op

    twins = tuple(_twin(c) for c in OP_CLASSES)
    for real, twin in zip(OP_CLASSES, twins):
        assert [f.encode_name for f in msgspec.structs.fields(real)] == \
            [f.encode_name for f in msgspec.structs.fields(twin)], real
    union = twins[0]
    for t in twins[1:]:
        union = union | t
    return (msgspec.json.Decoder(union | list[union]), msgspec.json.Decoder(list[Op]), msgspec.json.Encoder(),
            msgspec.json.Decoder(Op))


_DECODERS = None
_OP_FIRST = b'{"op":'  # an object whose first key is "op": an op (no op field holds an object)


def decode(body: bytes, now):
    """``(ops, single)``: the op Structs of a body of well-formed ops (``t`` filled in
    with ``now()`` where absent, called once) and whether the body was a single op;
    None when the body is anything else (the general path then answers it)."""
    global _DECODERS
    if _DECODERS is None:
        _DECODERS = _build()
    loose_decoder, real_decoder, encoder, one_decoder = _DECODERS
    if _OP_FIRST in body:  # the usual body: each op's first key is "op"
        stamped = body.replace(_OP_FIRST, b'{"t":%s,"op":' % encoder.encode(now()))
        single = body.lstrip()[:1] == b"{"
        try:
            return ([one_decoder.decode(stamped)] if single else real_decoder.decode(stamped)), single
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            pass  # anything else: the twins say what it is
    try:
        loose = loose_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    single = not isinstance(loose, list)
    items = [loose] if single else loose
    t = None
    for op in items:
        if op.t is UNSET:
            if t is None:
                t = now()
            op.t = t
    try:
        return real_decoder.decode(encoder.encode(items)), single
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
