"""Outcome, reason and status codes shared by the kernels and the public API.

Design: kernels never raise. A kernel returns a ``Status`` (0 = ok) and writes a
decision's ``Outcome`` and ``Reason`` as small integers into a result buffer. The
binding layer turns a non-zero status into an exception in exactly one place
(``usher.errors.raise_for_status``) and turns outcome/reason integers into these
enums only when somebody reads them.
"""

from __future__ import annotations

import enum
import re


class Outcome(enum.IntEnum):
    """What a launch request resulted in."""

    #: A new session was created on a server (state ``launching``).
    PLACED = 0
    #: The user's disconnected session (or, under ``always``, an active session
    #: open on another endpoint) was resumed at the request's endpoint.
    RECONNECTED = 1
    #: The app joined the user's active or launching session (session sharing).
    SHARED = 2
    #: Nothing was placed; ``Decision.reason`` says why.
    REJECTED = 3

    def __str__(self) -> str:  # "placed", as in the decision files
        return self.name.lower()


class Reason(enum.IntEnum):
    """Why a launch was rejected. When several apply, the lowest value wins:
    the values follow the order of the placement steps."""

    #: No rejection (the outcome is not REJECTED).
    NONE = 0
    #: Entitlement is enforced and the user is unknown or not entitled to the app.
    NOT_ENTITLED = 1
    #: The request came through the external gateway and no pool publishing the
    #: app allows external access.
    EXTERNAL_DENIED = 2
    #: The user holds no licence and every concurrent licence is taken.
    LICENCE_EXHAUSTED = 3
    #: The user reached ``max_instances_per_user`` for the app, or
    #: ``max_sessions_per_user`` in every pool that could take the launch.
    USER_LIMIT = 4
    #: The app reached ``max_instances_total``.
    APP_LIMIT = 5
    #: No powered, registered, enabled server matching the app's tag restriction
    #: is in reach (pools publishing the app, zones allowed by the preference).
    NO_SERVER = 6
    #: Servers are in reach but every one is at max_sessions or load index 10000.
    FULL = 7
    #: The pool's logon tolerance is hard and every server in the chosen zone
    #: already has that many logons in progress.
    LOGON_TOLERANCE = 8

    def __str__(self) -> str:
        return self.name.lower()


class Status(enum.IntEnum):
    """Kernel return codes. 0 is success; anything else is turned into an
    exception by ``usher.errors.raise_for_status``. A kernel that returns a
    non-zero status has changed nothing."""

    OK = 0
    #: The session id never existed.
    UNKNOWN_SESSION = 1
    #: The session existed but has ended.
    SESSION_ENDED = 2
    #: The operation does not apply to the session's state
    #: (e.g. ``logon_complete`` on an active session).
    BAD_SESSION_STATE = 3
    #: The app is not running in the session (``close_app``).
    APP_NOT_IN_SESSION = 4
    #: ``now`` is earlier than the previous operation's time.
    TIME_WENT_BACKWARDS = 5
    #: A table is full; the binding grows it and retries (never reaches users).
    NO_CAPACITY = 6
    #: Unknown server index (removed or never added).
    UNKNOWN_SERVER = 7
    #: A telemetry value is NaN or out of its range (the kernel reports the row
    #: and the field).
    INVALID_VALUE = 8


class SessionState(enum.IntEnum):
    """Life cycle of a session: launching -> active <-> disconnected -> ended."""

    FREE = 0  # slot not in use (never visible through the API)
    LAUNCHING = 1
    ACTIVE = 2
    DISCONNECTED = 3
    ENDED = 4

    def __str__(self) -> str:
        return self.name.lower()


class Power(enum.IntEnum):
    OFF = 0
    BOOTING = 1
    ON = 2
    SHUTTING_DOWN = 3

    def __str__(self) -> str:
        return self.name.lower()


class Mode(enum.IntEnum):
    ENABLED = 0
    DRAIN = 1
    MAINTENANCE = 2

    def __str__(self) -> str:
        return self.name.lower()


class LoadBalancing(enum.IntEnum):
    HORIZONTAL = 0
    VERTICAL = 1

    def __str__(self) -> str:
        return self.name.lower()


class Reconnection(enum.IntEnum):
    ALWAYS = 0
    DISCONNECTED_ONLY = 1
    SAME_ENDPOINT = 2

    def __str__(self) -> str:
        return self.name.lower()


class ZonePreference(enum.IntEnum):
    USER_LOCATION = 0
    USER_HOME = 1
    APP_HOME = 2

    def __str__(self) -> str:
        return self.name.lower()


class LoadRule(enum.IntEnum):
    """Sub-indexes of the load index; a pool enables a subset (bit 1 << value)."""

    SESSIONS = 0
    CPU = 1
    MEMORY = 2
    DISK_QUEUE = 3
    CUSTOM = 4

    def __str__(self) -> str:
        return self.name.lower()


class ZoneChoice(enum.IntEnum):
    """Why the decision's zone was chosen (explanations)."""

    USER_LOCATION = 0
    USER_HOME = 1
    APP_HOME = 2
    FAILOVER = 3  # no preferred zone had a candidate; any zone was allowed
    ANY = 4  # the preference resolved to no zone, so every zone is in reach

    def __str__(self) -> str:
        return self.name.lower()


class SessionOp(enum.IntEnum):
    """What ``kernels.session_op`` does to a session (its ``op`` argument)."""

    LOGON_COMPLETE = 0
    DISCONNECT = 1
    LOGOFF = 2
    LAUNCH_FAILED = 3
    CLOSE_APP = 4  # the op's argument is the app


class ServerOp(enum.IntEnum):
    """What ``kernels.server_op`` changes on a server (its ``op`` argument)."""

    POWER = 0
    REGISTERED = 1
    MODE = 2
    EVICT = 3  # end every session and take the server out (remove_server)


class ServerMark(enum.IntEnum):
    """``kernels.server_op``'s ops that set a placement preference on a server
    (numbered after ``ServerOp``; the value: 1 = set, 0 = clear)."""

    PLACE_LAST = 4  # the server takes new sessions after every unmarked candidate


class TelemetryField(enum.IntFlag):
    """The columns a telemetry batch carries (``kernels.telemetry``'s ``mask``);
    also the field a rejected value is reported in."""

    CPU = 1
    MEM = 2
    DISK_QUEUE = 4
    CUSTOM = 8


def parse_enum(enum_cls, field: str, value):
    """Turn ``"drain"`` / ``Mode.DRAIN`` / ``1`` into the enum member, or raise
    ``InvalidArgument`` naming the field and the value."""
    from usher.errors import InvalidArgument

    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        try:
            return enum_cls[value.upper()]
        except KeyError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return enum_cls(value)
        except ValueError:
            pass
    allowed = ", ".join(str(m) for m in enum_cls if m.name != "FREE")
    raise InvalidArgument(field, value, f"must be one of: {allowed}")


def binding_constants() -> dict[str, int]:
    """Every code and layout index the compiled binding (``usher._engine``) uses,
    under the name it has there: each member of an enum of this module as
    ``ENUM_MEMBER`` (``OUTCOME_REJECTED``, ``STATUS_NO_CAPACITY``,
    ``SESSION_OP_LOGOFF``) and each index constant of ``layout`` (``D_SESSION``,
    ``H_ENT_ADDR``, ``N_D``). The build writes them into the binding as C
    constants (setup.py: ``_codes.pxi``); the binding checks at import that its
    compiled values are these, so a build older than the engine's codes fails
    loudly instead of misreading them. Reads no numba (the build has none)."""
    from . import layout

    out = {}
    for name, obj in sorted(globals().items()):
        if isinstance(obj, type) and issubclass(obj, enum.IntEnum | enum.IntFlag) and obj.__module__ == __name__:
            prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()
            for member in obj:
                out[f"{prefix}_{member.name}"] = int(member)
    for name, value in vars(layout).items():
        if re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", name) and type(value) is int:
            out[name] = value
    return out
