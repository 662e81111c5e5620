"""What users read: explanations, decision reprs, session ids and error messages;
and the compile settings put back after a failed compile."""

from __future__ import annotations

import pickle
import re

import numba
import pytest

import usher
from usher import InvalidState, TimeWentBackwards, UnknownSession
from usher.core import kernels
from usher.errors import session_text


def _fleet():
    s = usher.Scheduler(seed=2)
    s.add_pool("P", zone_preference=())
    s.add_app("a", ["P"], tag_restriction=["gpu"])
    s.add_server("s0", "Z", "P", tags=["gpu"], max_sessions=2)
    s.add_server("s1", "Z", "P", tags=["gpu"], max_sessions=2, power="off")
    s.add_server("s2", "Z", "P")  # lacks the app's tag
    return s


def test_the_explanation_counts_what_each_filter_removed_without_a_sign():
    d = _fleet().launch("u", "a", now=1.0, explain=True)
    text = str(d.explanation)
    assert "removed: power 1, tags 1," in text
    assert not re.search(r"[a-z] -\d", text), text
    assert text.splitlines()[0] == "decision: placed server=s0 zone=Z (any)"


def test_a_rejection_s_explanation_names_no_missing_parts():
    s = _fleet()
    s.set_mode("s0", "drain", now=0.5)
    d = s.launch("u", "a", now=1.0, explain=True)
    assert d.outcome == usher.Outcome.REJECTED
    text = str(d.explanation)
    assert text.splitlines()[0] == f"decision: rejected reason={d.reason}"
    assert "None" not in text


def test_a_session_id_reads_as_generation_and_slot_and_evaluates_to_itself():
    d = _fleet().launch("u", "a", now=1.0)
    assert isinstance(d.session, int)
    shown = session_text(d.session)
    assert re.fullmatch(r"0x[0-9a-f]+_[0-9a-f]{8}", shown)
    assert eval(shown) == d.session  # noqa: S307 - a literal we wrote
    assert f"session={shown}" in repr(d)
    assert session_text(-3) == "-3" and session_text("s") == "'s'"


def test_an_unknown_session_is_named_in_hex_and_keeps_its_value():
    s = _fleet()
    d = s.launch("u", "a", now=1.0)
    s.logoff(d.session, now=2.0)
    with pytest.raises(usher.SessionEnded) as ended:
        s.logoff(d.session, now=3.0)
    assert str(ended.value).startswith(f"session={session_text(d.session)}: ")
    assert ended.value.value == d.session
    unknown = d.session + (5 << 32)
    with pytest.raises(UnknownSession) as err:
        s.logoff(unknown, now=3.0)
    assert str(err.value) == f"session={session_text(unknown)}: no such session"
    again = pickle.loads(pickle.dumps(err.value))
    assert type(again) is UnknownSession and str(again) == str(err.value) and again.value == unknown


@pytest.mark.parametrize("op, state, needs", [
    ("logon_complete", "active", "logon_complete applies to a launching session"),
    ("launch_failed", "disconnected", "launch_failed applies to a launching session"),
    ("disconnect", "disconnected", "disconnect applies to an active or launching session"),
])
def test_an_operation_refused_in_a_state_names_the_state(op, state, needs):
    s = _fleet()
    sid = s.launch("u", "a", now=1.0).session
    s.logon_complete(sid, now=2.0)
    if state == "disconnected":
        s.disconnect(sid, now=3.0)
    with pytest.raises(InvalidState) as err:
        getattr(s, op)(sid, now=4.0)
    assert str(err.value) == f"session={session_text(sid)}: the session is {state}; {needs}"
    assert s.session(sid)["state"] == state  # unchanged


def test_a_clock_that_went_back_is_reported_with_its_reading():
    readings = iter([10.0, 4.0])
    s = usher.Scheduler(clock=lambda: next(readings))
    s.add_pool("P")
    s.add_app("a", ["P"])
    s.add_server("s0", "Z", "P")
    s.launch("u", "a")
    with pytest.raises(TimeWentBackwards) as err:
        s.launch("u", "a")
    assert err.value.value == 4.0
    assert "None" not in str(err.value)


def test_compile_settings_are_put_back_when_a_compile_fails(monkeypatch):
    from numba.np import arrayobj

    calls = []
    monkeypatch.setattr(kernels.llvm, "set_option", lambda name, opt: calls.append(opt))
    cache, indexing = numba.config.CACHE_DIR, arrayobj.fix_integer_index
    with pytest.raises(RuntimeError):
        with kernels.compile_settings():
            assert numba.config.CACHE_DIR == kernels.cache_dir()
            assert arrayobj.fix_integer_index is not indexing
            raise RuntimeError("compile failed")
    assert numba.config.CACHE_DIR == cache
    assert arrayobj.fix_integer_index is indexing
    assert calls == [f"-inline-threshold={kernels.INLINE_THRESHOLD}", "-inline-threshold=250"]
