"""The codes and layout indices are declared once, in usher.core, and the compiled
binding holds the same values (setup.py writes them into ``_codes.pxi``)."""

from __future__ import annotations

import enum

import pytest

from usher import _engine
from usher.core import codes, kernels, layout, state


def test_the_compiled_engine_holds_core_s_codes_and_layout():
    expected = codes.binding_constants()
    assert _engine.COMPILED_CONSTANTS == expected
    assert _engine._stale_constants() == []


def test_binding_constants_name_every_enum_member_and_layout_index():
    table = codes.binding_constants()
    assert table["OUTCOME_REJECTED"] == codes.Outcome.REJECTED
    assert table["STATUS_APP_NOT_IN_SESSION"] == codes.Status.APP_NOT_IN_SESSION
    assert table["SESSION_OP_CLOSE_APP"] == codes.SessionOp.CLOSE_APP
    assert table["TELEMETRY_FIELD_DISK_QUEUE"] == codes.TelemetryField.DISK_QUEUE
    assert table["D_SESSION"] == state.D_SESSION
    assert table["H_ENFORCE_ENTITLEMENT"] == state.H_ENFORCE_ENTITLEMENT
    assert table["N_D"] == len(state.DECISION_FIELDS)
    n_members = sum(
        len(obj) for obj in vars(codes).values()
        if isinstance(obj, type) and issubclass(obj, enum.IntEnum | enum.IntFlag) and obj.__module__ == codes.__name__
    )
    n_layout = sum(1 for k, v in vars(layout).items() if k.isupper() and type(v) is int)
    assert len(table) == n_members + n_layout


def test_a_stale_build_is_detected(monkeypatch):
    changed = dict(codes.binding_constants(), STATUS_NO_CAPACITY=99, NEW_CODE=1)
    monkeypatch.setattr(_engine, "_binding_constants", lambda: changed)
    assert _engine._stale_constants() == ["NEW_CODE", "STATUS_NO_CAPACITY"]


@pytest.mark.parametrize("name", ["OP_LOGON_COMPLETE", "OP_DISCONNECT", "OP_LOGOFF", "OP_LAUNCH_FAILED",
                                  "OP_CLOSE_APP"])
def test_the_kernels_session_ops_are_core_s(name):
    assert getattr(kernels, name) == codes.SessionOp[name[3:]]


def test_the_kernels_server_ops_and_telemetry_fields_are_core_s():
    assert [kernels.OP_POWER, kernels.OP_REGISTERED, kernels.OP_MODE, kernels.OP_EVICT] == list(codes.ServerOp)
    assert [kernels.T_CPU, kernels.T_MEM, kernels.T_DISK_QUEUE, kernels.T_CUSTOM] == list(codes.TelemetryField)


@pytest.mark.parametrize("method, args", [("_relayout", ()), ("_reserve", (1,)), ("_add_user_unlocked", ("u", None, ())),
                                          ("_explain", (0, 0, -1, 0)), ("_server_index", ("s",))])
def test_the_engine_declares_what_its_subclass_provides(method, args):
    import usher

    assert getattr(usher.Scheduler, method) is not getattr(_engine.Engine, method)
    with pytest.raises(NotImplementedError, match=method):
        getattr(_engine.Engine(), method)(*args)
