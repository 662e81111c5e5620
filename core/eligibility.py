"""Eligibility: which servers may take a session, written once.

Design: the server-side conditions of docs/SEMANTICS.md are written here and
nowhere else; every stage that asks them calls these functions:

- the selection key (``loadindex.selection_key``): a server with a finite key is
  ``eligible`` for a new session;
- a group's count of available servers (``GR_N_AVAILABLE``: rejection reason
  ``full`` against ``no_server``, kept by ``kernels.build_trees`` and
  ``kernels.server_op``): ``available``;
- reconnection and sharing (``placement.reusable``): ``takes_running_session``;
- the explanation funnel (``explain.explain_launch``): ``availability`` and
  ``room`` say which filter removed a server, in the funnel's order.

A server is *available* when it is present, powered on, registered and in mode
``enabled``; it is *eligible* when, besides, it has room: fewer sessions than
``max_sessions`` and a load index below 10000. Tags and zones are properties of
a server's group, filtered by choosing groups (``groups.py``, ``placement.py``);
``has_tags`` is the one test of a tag restriction, for servers and groups.

The functions are ``inline="always"``: each is a few loads and compares in its
caller, as the conditions were when they were written out in place (the launch
path compiles to the same instructions).
"""

from __future__ import annotations

from numba import njit

from . import codes
from . import state as st

_ON = int(codes.Power.ON)
_ENABLED = int(codes.Mode.ENABLED)
_DRAIN = int(codes.Mode.DRAIN)
_MAINTENANCE = int(codes.Mode.MAINTENANCE)
_FULL_LOAD = st.FULL_LOAD

#: What ``availability`` and ``room`` return: 0 when the condition holds, else the
#: first filter that fails, in the order the explanation funnel counts them.
OK = 0
NOT_POWERED = 1  # power is not on
UNREGISTERED = 2
NOT_ENABLED = 3  # mode drain or maintenance
AT_MAX_SESSIONS = 4  # sessions >= max_sessions
LOAD_FULL = 5  # load index 10000


@njit(inline="always")
def has_tags(tags, need):
    """A server (or group) with tag mask ``tags`` meets an app's tag restriction
    ``need`` (every bit of ``need`` set; 0 = no restriction)."""
    return tags & need == need


@njit(inline="always")
def availability(srv, i):
    """OK when server ``i`` (present) is powered on, registered and enabled, else
    the first of NOT_POWERED, UNREGISTERED, NOT_ENABLED that applies. ``srv`` is
    the server int table, shape (N_SV, capacity)."""
    if srv[st.SV_POWER, i] != _ON:
        return NOT_POWERED
    if srv[st.SV_REGISTERED, i] == 0:
        return UNREGISTERED
    if srv[st.SV_MODE, i] != _ENABLED:
        return NOT_ENABLED
    return OK


@njit(inline="always")
def room(srv, i):
    """OK when server ``i`` can take one more session: sessions < max_sessions
    and load index < 10000; else AT_MAX_SESSIONS or LOAD_FULL (first that applies)."""
    if srv[st.SV_SESSIONS, i] >= srv[st.SV_MAX_SESSIONS, i]:
        return AT_MAX_SESSIONS
    if srv[st.SV_LOAD_INDEX, i] >= _FULL_LOAD:
        return LOAD_FULL
    return OK


@njit(inline="always")
def available(srv, i):
    """Server ``i`` is present, powered on, registered and enabled (full or not)."""
    return srv[st.SV_PRESENT, i] != 0 and availability(srv, i) == OK


@njit(inline="always")
def eligible(srv, i):
    """Server ``i`` may take a new session: available, with room."""
    return available(srv, i) and room(srv, i) == OK


@njit(inline="always")
def takes_running_session(s: st.State, i, p):
    """Server ``i`` may take an app into a session that already runs on it, of
    pool ``p`` (reconnect, share): powered on, registered, and mode enabled or
    drain — or maintenance when the pool allows reconnection in maintenance.
    Capacity and load do not apply (the session is there already)."""
    srv = s.srv
    a = availability(srv, i)
    if a == NOT_ENABLED:
        mode = srv[st.SV_MODE, i]
        if mode == _DRAIN:
            return True
        return mode == _MAINTENANCE and s.pool[st.PO_RECONNECT_IN_MAINTENANCE, p] != 0
    return a == OK
