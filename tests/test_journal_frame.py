"""The compiled record framing (usher.journal._frame) against the plain one: the
same bytes for any ops and decision lines, each record one that ``split`` reads
back, and bad arguments refused before a record is made."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, strategies as st

from usher.journal import _frame, records

# JSON text holds no raw tab or line feed; any other byte may appear
_line = st.binary(max_size=300).map(lambda b: b.replace(b"\t", b" ").replace(b"\n", b" "))


def _plain(ops, decisions):
    return [b"%08x\t%s\n" % (zlib.crc32(body), body) for body in map(b"\t".join, zip(ops, decisions))]


@given(st.lists(st.tuples(_line, _line | st.just(b"")), max_size=40), st.integers(0, 3))
def test_compiled_framing_equals_the_plain_one(pairs, extra):
    ops = [o for o, _ in pairs]
    decisions = [d for _, d in pairs] + [b""] * extra  # zip pairs as many as the shorter has
    got = records.encode_many(ops, decisions)
    assert got == _frame.encode_many(ops, decisions) == _plain(ops, decisions)
    assert got == records.encode_many(tuple(ops), tuple(decisions))  # the plain path of records
    for rec, (op, dec) in zip(got, pairs):
        assert records.split(rec[:-1]) == (op, dec)


@given(st.lists(st.tuples(_line, _line), max_size=40))
def test_framing_two_texts_equals_framing_their_lines(pairs):
    ops = b"".join(o + b"\n" for o, _ in pairs)
    decisions = b"".join(d + b"\n" for _, d in pairs)
    assert records.encode_texts(ops, decisions) == _plain([o for o, _ in pairs], [d for _, d in pairs])


@pytest.mark.parametrize("ops, decisions", [(b"a\n", b""), (b"a\nb\n", b"x\n"), (b"a", b"x"), (b"a\n", b"x")])
def test_texts_of_unequal_lines_are_refused(ops, decisions):
    with pytest.raises(ValueError):
        records.encode_texts(ops, decisions)


def test_known_crc():
    # CRC-32 of "123456789" is cbf43926; the record is "<crc> TAB op TAB decision LF"
    rec = _frame.encode_many([b"1234"], [b"6789"])[0]
    assert rec == b"%08x\t1234\t6789\n" % zlib.crc32(b"1234\t6789")
    assert _frame.encode_many([b"12345678"], [b""]) == [b"%08x\t12345678\t\n" % zlib.crc32(b"12345678\t")]


@pytest.mark.parametrize("ops, decisions", [
    ((b"a",), [b""]), ([b"a"], (b"",)), ([b"a", "b"], [b"", b""]), ([b"a", b"b"], [b"", bytearray(b"")]),
])
def test_not_lists_of_bytes_are_refused(ops, decisions):
    with pytest.raises(TypeError):
        _frame.encode_many(ops, decisions)
