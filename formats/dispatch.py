"""Trace operations to ``usher.Scheduler`` calls, written once.

Design: every way into a scheduler above the API - a replayed trace line
(``usher.formats.replay``), a fleet file record (``usher.formats.fleet``), the
simulator's configuration operations - goes through :func:`apply_op`, so each
operation's method, argument order and ``now`` are written in one place: the table
:data:`CALLS`, one small function per kind of operation. The batch forms
(:func:`launch_many`, :func:`telemetry_many`, :func:`add_users`) are the same calls
for a run of operations of one kind.

An operation is an op Struct of ``usher.formats.trace``; a plain dict in the trace
format (``{"t": 0.0, "op": "pool", "name": "P", ...}``), converted and checked as a
trace line is (a bad one raises :class:`~usher.formats.errors.TraceError`); or a
fleet record of ``usher.formats.specs`` (``PoolSpec`` ...), which makes the same call
without ``now``.

Session names: a trace names a session by the id of a launch. :func:`apply_op` takes
the map from launch ids to engine session ids as ``sessions`` (the replay keeps it);
without one, ``session`` is the engine's own session id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from msgspec import UNSET, Struct

from usher.core.codes import SessionOp
from usher.errors import InvalidArgument, UnknownSession, UsherError
from usher.formats.specs import AppSpec, LicencesSpec, PoolSpec, ServerSpec, SettingsSpec, UserSpec, spec_kwargs
if TYPE_CHECKING:
    from usher.scheduler import Scheduler
from usher.formats.trace import (
    AppOp,
    CloseAppOp,
    DisconnectOp,
    ImageOp,
    LaunchFailedOp,
    LaunchOp,
    LicencesOp,
    LogoffOp,
    LogonDoneOp,
    ModeOp,
    PlaceLastOp,
    PoolOp,
    PowerOp,
    RegisterOp,
    RemoveServerOp,
    ServerOp,
    SettingsOp,
    TelemetryOp,
    UserOp,
    as_op,
)

__all__ = [
    "apply_op",
    "apply_ops",
    "CALLS",
    "SESSION_METHODS",
    "SESSION_OPS",
    "session_ops_many",
    "launch",
    "launch_many",
    "telemetry_many",
    "add_users",
    "session_id",
]

_T = ("t",)
_MISSING = object()

#: op class -> the Scheduler method ``method(session, now)`` it calls
SESSION_METHODS = {LogonDoneOp: "logon_complete", DisconnectOp: "disconnect", LogoffOp: "logoff",
                   LaunchFailedOp: "launch_failed"}
#: op class -> its ``SessionOp`` code in ``Scheduler.session_ops_many`` (the same methods)
SESSION_OPS = {LogonDoneOp: int(SessionOp.LOGON_COMPLETE), DisconnectOp: int(SessionOp.DISCONNECT),
               LogoffOp: int(SessionOp.LOGOFF), LaunchFailedOp: int(SessionOp.LAUNCH_FAILED)}


# ---------------------------------------------------------------- configuration
def _settings(s, op, sessions):
    return s.settings(**spec_kwargs(op, skip=_T))


def _licences(s, op, sessions):
    return s.set_licences(op.cap)


def _pool(s, op, sessions):
    return s.add_pool(**spec_kwargs(op, skip=_T))


def _app(s, op, sessions):
    return s.add_app(**spec_kwargs(op, skip=_T))


def _user(s, op, sessions):
    return s.add_user(**spec_kwargs(op, skip=_T))


def _server(s, op, sessions):
    return s.add_server(**spec_kwargs(op, skip=_T), now=op.t)


def _server_record(s, spec, sessions):
    return s.add_server(**spec_kwargs(spec))


def _remove_server(s, op, sessions):
    return s.remove_server(op.server, op.force, now=op.t)


# ---------------------------------------------------------------- server state
def _power(s, op, sessions):
    return s.set_power(op.server, op.state, now=op.t)


def _register(s, op, sessions):
    return s.set_registered(op.server, op.registered, now=op.t)


def _mode(s, op, sessions):
    return s.set_mode(op.server, op.mode, now=op.t)


def _place_last(s, op, sessions):
    return s.set_place_last(op.servers, op.flag, now=op.t)


def _image(s, op, sessions):
    return s.set_image(op.server, op.image, now=op.t)


def _telemetry(s, op, sessions):
    return s.telemetry(op.server, op.cpu, op.mem, op.disk_queue, op.custom, now=op.t)


# ---------------------------------------------------------------- sessions
def launch(s, op, explain=False):
    """``Scheduler.launch`` for a launch op; returns the ``Decision``. (The id is the
    trace's own: recording it as a session name is the caller's part.)"""
    return s.launch(op.user, op.app, op.location, op.endpoint, op.external, op.t, explain)


def _launch(s, op, sessions):
    return launch(s, op)


def session_id(op, sessions):
    """The engine session id that ``op.session`` names: through ``sessions`` (launch id
    -> engine session id, None for a rejected launch) when given, else ``op.session``
    itself. Raises UnknownSession for a name that names no session."""
    name = op.session
    if sessions is None:
        return name
    sid = sessions.get(name, _MISSING)
    if sid is _MISSING:
        raise UnknownSession("session", name, "no launch of the trace has this id")
    if sid is None:
        raise UnknownSession("session", name, "that launch was rejected: it names no session")
    return sid


def _session_call(method, op, sessions, *args):
    sid = session_id(op, sessions)
    try:
        return method(sid, *args, op.t)
    except UsherError as e:
        if sessions is not None and e.field == "session" and e.value == sid:  # name it as the trace does
            raise type(e)("session", op.session, e.detail) from None
        raise


def _session_method(name):
    def call(s, op, sessions):
        return _session_call(getattr(s, name), op, sessions)

    call.__name__ = f"_{name}"
    return call


def _close_app(s, op, sessions):
    return _session_call(s.close_app, op, sessions, op.app)


#: op or record class -> ``call(scheduler, op, sessions)``
CALLS: dict[type, Callable[..., Any]] = {
    SettingsOp: _settings, LicencesOp: _licences, PoolOp: _pool, AppOp: _app, UserOp: _user,
    ServerOp: _server, RemoveServerOp: _remove_server, PowerOp: _power, RegisterOp: _register,
    ModeOp: _mode, TelemetryOp: _telemetry, LaunchOp: _launch, CloseAppOp: _close_app,
    PlaceLastOp: _place_last, ImageOp: _image,
    **{cls: _session_method(name) for cls, name in SESSION_METHODS.items()},
    # fleet records: the same calls, without a time
    SettingsSpec: _settings, LicencesSpec: _licences, PoolSpec: _pool, AppSpec: _app, UserSpec: _user,
    ServerSpec: _server_record,
}


def apply_op(scheduler: Scheduler, op: Struct | dict[str, Any], sessions: dict[str, int | None] | None = None) -> Any:
    """Apply one operation to ``scheduler``; returns what the Scheduler method returns
    (a ``Decision`` for a launch, None for most others).

    Args:
        scheduler: the ``usher.Scheduler`` (or anything with its methods).
        op: an op Struct, a dict in the trace format, or a fleet record (``PoolSpec``...).
        sessions: launch id -> engine session id, for the ``session`` of session ops
            (None: ``session`` is an engine session id).

    Raises:
        TraceError: a dict that is not an operation (the scheduler is unchanged).
        UsherError: whatever the Scheduler method raises (it changed nothing).
    """
    call = CALLS.get(op.__class__)
    if call is None:
        if not isinstance(op, dict):
            raise InvalidArgument("op", op, "must be a trace operation (a dict or an op Struct) or a fleet record")
        op = as_op(op)
        call = CALLS[op.__class__]
    return call(scheduler, op, sessions)


def apply_ops(scheduler: Scheduler, ops: Iterable[Struct | dict[str, Any]], sessions: dict[str, int | None] | None = None) -> Scheduler:
    """Apply operations in order, a run of consecutive ``user`` operations (a user
    directory) with one :func:`add_users`. Returns ``scheduler``. Stops at the first
    operation that raises (the operations before it stay applied)."""
    users: list = []
    for op in ops:
        if op.__class__ is dict:
            op = as_op(op)
        if op.__class__ is UserOp or op.__class__ is UserSpec:
            users.append(op)
            continue
        if users:
            add_users(scheduler, users)
            users = []
        apply_op(scheduler, op, sessions)
    if users:
        add_users(scheduler, users)
    return scheduler


# ---------------------------------------------------------------- batch forms
def launch_many(s, run):
    """``Scheduler.launch_many`` of a run of launch ops, each at its own ``t``; returns
    the decision batch (the same decisions as the launches one by one)."""
    return s.launch_many(
        [o.user for o in run], [o.app for o in run], [o.location for o in run],
        [o.endpoint for o in run], [o.external for o in run], now=[o.t for o in run],
    )


def session_ops_many(s, run, sessions, codes=SESSION_OPS):
    """``Scheduler.session_ops_many`` of a run of session ops (logon_done,
    disconnect, logoff, launch_failed), each at its own ``t``, on the engine
    session ids ``sessions``: all or nothing, the same as the ops one by one."""
    return s.session_ops_many([codes[o.__class__] for o in run], sessions, [o.t for o in run])


def telemetry_many(s, run, cpu=None, mem=None, disk_queue=None, custom=None):
    """``Scheduler.telemetry_many`` of a run of telemetry ops at the run's last ``t``,
    with the run's value columns (None for a field that no op of the run reports)."""
    return s.telemetry_many([o.server for o in run], cpu=cpu, mem=mem, disk_queue=disk_queue,
                            custom=custom, now=run[-1].t)


def add_users(s, run):
    """``Scheduler.add_users`` of a run of user ops or records: all or nothing."""
    return s.add_users(
        [o.id for o in run],
        home_zones=[None if o.home_zone is UNSET else o.home_zone for o in run],
        apps=[() if o.apps is UNSET else o.apps for o in run],
    )
