"""The server conditions of docs/SEMANTICS.md, written once in usher.core.eligibility,
against their plain statement, over every combination of the fields they read."""

from __future__ import annotations

import itertools
from collections import namedtuple

import numpy as np
from numba import njit

from usher import Mode, Power
from usher.core import eligibility as el
from usher.core import state as st

FULL = st.FULL_LOAD

# every combination: present, power, registered, mode, sessions vs max_sessions, load index
COMBOS = list(itertools.product((0, 1), list(Power), (0, 1), list(Mode), (0, 1), (0, 9999, FULL)))


def _servers():
    srv = st.new_table(st.SERVER_INT_FIELDS, len(COMBOS), np.int64)
    for i, (present, power, registered, mode, at_max, li) in enumerate(COMBOS):
        srv[st.SV_PRESENT, i] = present
        srv[st.SV_POWER, i] = power
        srv[st.SV_REGISTERED, i] = registered
        srv[st.SV_MODE, i] = mode
        srv[st.SV_MAX_SESSIONS, i] = 3
        srv[st.SV_SESSIONS, i] = 3 if at_max else 2
        srv[st.SV_LOAD_INDEX, i] = li
    return srv


@njit
def _compiled(srv, n):
    out = np.empty((n, 4), np.int64)
    for i in range(n):
        out[i, 0] = el.availability(srv, i)
        out[i, 1] = el.room(srv, i)
        out[i, 2] = el.available(srv, i)
        out[i, 3] = el.eligible(srv, i)
    return out


def test_availability_room_and_eligibility_follow_the_rules():
    got = _compiled(_servers(), len(COMBOS))
    for i, (present, power, registered, mode, at_max, li) in enumerate(COMBOS):
        available = power == Power.ON and registered == 1 and mode == Mode.ENABLED
        has_room = not at_max and li < FULL
        first = (el.NOT_POWERED if power != Power.ON else el.UNREGISTERED if not registered
                 else el.NOT_ENABLED if mode != Mode.ENABLED else el.OK)
        first_room = el.AT_MAX_SESSIONS if at_max else el.LOAD_FULL if li >= FULL else el.OK
        assert list(got[i]) == [first, first_room, int(present and available),
                                int(present and available and has_room)], COMBOS[i]


_State = namedtuple("_State", ["srv", "pool"])


@njit
def _running(hdr_pool, srv, n):
    # a minimal State: only the fields takes_running_session reads
    out = np.empty((2, n), np.int64)
    for flag in range(2):
        hdr_pool[st.PO_RECONNECT_IN_MAINTENANCE, 0] = flag
        s = _State(srv, hdr_pool)
        for i in range(n):
            out[flag, i] = el.takes_running_session(s, i, 0)
    return out


def test_a_running_session_survives_drain_and_maintenance_when_the_pool_allows():
    pool = st.new_table(st.POOL_INT_FIELDS, 1, np.int64)
    got = _running(pool, _servers(), len(COMBOS))
    for flag in (0, 1):
        for i, (_present, power, registered, mode, _at_max, _li) in enumerate(COMBOS):
            mode_ok = mode in (Mode.ENABLED, Mode.DRAIN) or (mode == Mode.MAINTENANCE and flag == 1)
            assert got[flag, i] == int(power == Power.ON and registered == 1 and mode_ok), (flag, COMBOS[i])


def test_a_tag_restriction_needs_every_tag():
    f = njit(lambda tags, need: el.has_tags(tags, need))
    for tags, need in itertools.product(range(8), range(8)):
        assert f(tags, need) == (tags & need == need)
