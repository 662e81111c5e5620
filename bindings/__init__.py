"""usher: the placement engine of a connection broker for virtual apps and desktops.

The public API is :class:`usher.Scheduler`; see docs/SEMANTICS.md for the exact rules.
"""

from usher.core.codes import (
    LoadBalancing,
    LoadRule,
    Mode,
    Outcome,
    Power,
    Reason,
    Reconnection,
    SessionState,
    ZoneChoice,
    ZonePreference,
)
from usher.errors import (
    DuplicateName,
    InvalidArgument,
    InvalidState,
    ServerBusy,
    SessionEnded,
    TimeWentBackwards,
    UnknownApp,
    UnknownName,
    UnknownPool,
    UnknownServer,
    UnknownSession,
    UnknownUser,
    UsherError,
)
from usher.scheduler import Decision, Decisions, Explanation, Scheduler

__version__ = "0.1.0"

__all__ = [
    "Scheduler",
    "Decision",
    "Decisions",
    "Explanation",
    "Outcome",
    "Reason",
    "SessionState",
    "Power",
    "Mode",
    "LoadBalancing",
    "LoadRule",
    "Reconnection",
    "ZonePreference",
    "ZoneChoice",
    "UsherError",
    "InvalidArgument",
    "TimeWentBackwards",
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
    "__version__",
]
