"""The exception hierarchy of usher, and the one place where a kernel's status
code becomes an exception.

Every error a caller can see derives from :class:`UsherError` and names the
field and the value that were wrong. After any error the scheduler's state is
exactly what it was before the call.

Session ids are ints, opaque to the caller: ``generation << 32 | slot``, where
``slot`` is the session's record and ``generation`` counts the sessions that
record has held, so an id is never reused and the id of an ended session is
told apart from one that never existed. Messages show them in hex with the two
halves apart (``0x1_00000003``: generation 1, slot 3), which Python reads back
as the same int.
"""

from __future__ import annotations

from typing import Any, NoReturn

from usher.core.codes import Status

__all__ = [
    "UsherError",
    "InvalidArgument",
    "UnknownName",
    "UnknownServer",
    "UnknownPool",
    "UnknownApp",
    "UnknownUser",
    "UnknownSession",
    "DuplicateName",
    "InvalidState",
    "SessionEnded",
    "ServerBusy",
    "TimeWentBackwards",
    "raise_for_status",
    "session_text",
]


def session_text(session: object) -> str:
    """How messages show a session id: ``0x<generation>_<slot, 8 hex digits>``
    (``0x1_00000003``), a valid Python int literal equal to the id; anything
    that is not a session id (a negative int, a str) as its ``repr``."""
    if isinstance(session, int) and not isinstance(session, bool) and 0 <= session < 1 << 63:
        return f"{session >> 32:#x}_{session & 0xFFFFFFFF:08x}"
    return repr(session)


class UsherError(Exception):
    """Base class of every error raised by usher.

    Attributes:
        field: the name of the argument or record field that was wrong.
        value: the offending value.
    """

    def __init__(self, field: str, value: Any, message: str | None = None, *, shown: str | None = None) -> None:
        self.field = field
        self.value = value
        self.detail = message
        self.shown = shown
        text = f"{field}={repr(value) if shown is None else shown}"
        if message:
            text += f": {message}"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:  # keep field/value through pickling (multiprocessing)
        return (_rebuild, (type(self), self.field, self.value, self.detail, self.shown))


def _rebuild(cls, field, value, detail, shown):
    return cls(field, value, detail, shown=shown)


class InvalidArgument(UsherError, ValueError):
    """A value is out of range, of the wrong type, NaN, or not a valid enum name."""


class TimeWentBackwards(InvalidArgument):
    """``now`` is earlier than the time of a previous operation."""


class UnknownName(UsherError, KeyError):
    """A name or id that the scheduler does not know."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return Exception.__str__(self)


class UnknownServer(UnknownName):
    pass


class UnknownPool(UnknownName):
    pass


class UnknownApp(UnknownName):
    pass


class UnknownUser(UnknownName):
    pass


class UnknownSession(UnknownName):
    """No session has this id (see the module docstring for what ids are)."""


class DuplicateName(UsherError, ValueError):
    """A server, pool, app or user with this name already exists."""


class InvalidState(UsherError):
    """The operation does not apply in the current state (e.g. completing the
    logon of a session that is already active: ``session=0x1_00000003: the
    session is active; logon_complete applies to a launching session``)."""


class SessionEnded(InvalidState):
    """The session has ended; no operation applies to it any more."""


class ServerBusy(InvalidState):
    """The server still holds sessions (``remove_server`` without ``force``)."""


_STATUS_ERRORS = {
    Status.UNKNOWN_SESSION: (UnknownSession, "no such session"),
    Status.SESSION_ENDED: (SessionEnded, "the session has ended"),
    Status.BAD_SESSION_STATE: (InvalidState, "the operation does not apply in the session's state"),
    Status.APP_NOT_IN_SESSION: (InvalidArgument, "the app is not running in the session"),
    Status.TIME_WENT_BACKWARDS: (TimeWentBackwards, "earlier than the previous operation"),
    Status.UNKNOWN_SERVER: (UnknownServer, "no such server"),
    Status.INVALID_VALUE: (InvalidArgument, "NaN or out of range (cpu, mem 0-100; disk_queue >= 0; custom 0-10000)"),
}


def raise_for_status(status: int, field: str, value: Any, detail: str | None = None) -> NoReturn:
    """Raise the exception for a kernel's non-zero ``status``.

    This is the only place where kernel codes become exceptions. A session id
    (``field`` "session") is shown as :func:`session_text` writes it.
    """
    shown = session_text(value) if field == "session" else None
    try:
        cls, text = _STATUS_ERRORS[Status(status)]
    except (KeyError, ValueError):
        raise UsherError(field, value, f"internal status {status}", shown=shown) from None
    raise cls(field, value, detail or text, shown=shown)
