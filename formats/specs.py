"""Record layouts of the fleet files and the trace: one msgspec Struct per
configuration method of ``usher.Scheduler``.

Design: each layout is written once, here, with the method's keyword names as its
field names. The fleet reader (``usher.formats.fleet``) validates a whole TOML
document against them; the trace format (``usher.formats.trace``) derives its
``settings``/``pool``/``app``/``user``/``server`` operations from them by adding ``t``;
``usher.formats.dispatch`` turns either into the method call. A field left out is
``UNSET`` and is not passed on, so the Scheduler's own defaults apply.

Integers are 64-bit (:data:`Int64`): a larger value is refused where it is read, with
the field named, instead of overflowing in the engine.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Struct, UnsetType

__all__ = [
    "INT64_MIN",
    "INT64_MAX",
    "Int64",
    "SettingsSpec",
    "LicencesSpec",
    "PoolSpec",
    "AppSpec",
    "UserSpec",
    "ServerSpec",
    "spec_kwargs",
]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
#: an integer of the formats: a signed 64-bit value
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]


class SettingsSpec(Struct, kw_only=True, forbid_unknown_fields=True):
    """``Scheduler.settings`` (TOML table ``[settings]``; trace op ``settings``)."""

    enforce_entitlement: bool | UnsetType = UNSET
    seed: Int64 | UnsetType = UNSET
    sinbin_seconds: float | UnsetType = UNSET
    pending_timeout: float | UnsetType = UNSET


class LicencesSpec(Struct, kw_only=True, forbid_unknown_fields=True):
    """``Scheduler.set_licences`` (TOML table ``[licences]``; no ``cap`` = unlimited)."""

    cap: Int64 | None = None


class PoolSpec(Struct, kw_only=True, forbid_unknown_fields=True):
    """``Scheduler.add_pool`` (TOML ``[[pool]]``; trace op ``pool``)."""

    name: str
    load_balancing: str | UnsetType = UNSET
    zone_preference: list[str] | UnsetType = UNSET
    failover: bool | UnsetType = UNSET
    session_reconnection: str | UnsetType = UNSET
    reconnect_in_maintenance: bool | UnsetType = UNSET
    external_access: bool | UnsetType = UNSET
    logon_tolerance: Int64 | UnsetType = UNSET
    tolerance_is_hard: bool | UnsetType = UNSET
    max_sessions_per_user: Int64 | None | UnsetType = UNSET
    load_rules: list[str] | UnsetType = UNSET
    cpu_full: float | UnsetType = UNSET
    memory_full: float | UnsetType = UNSET
    disk_queue_full: float | UnsetType = UNSET
    slow_logon_factor: float | None | UnsetType = UNSET
    slow_min_samples: Int64 | UnsetType = UNSET


class AppSpec(Struct, kw_only=True, forbid_unknown_fields=True):
    """``Scheduler.add_app`` (TOML ``[[app]]``; trace op ``app``)."""

    name: str
    pools: list[str]
    home_zone: str | None | UnsetType = UNSET
    tag_restriction: str | list[str] | None | UnsetType = UNSET
    max_instances_total: Int64 | None | UnsetType = UNSET
    max_instances_per_user: Int64 | None | UnsetType = UNSET


class UserSpec(Struct, kw_only=True, forbid_unknown_fields=True):
    """``Scheduler.add_user`` (TOML ``[[user]]``; trace op ``user``)."""

    id: str
    home_zone: str | None | UnsetType = UNSET
    apps: list[str] | UnsetType = UNSET


class ServerSpec(Struct, kw_only=True, forbid_unknown_fields=True):
    """``Scheduler.add_server`` (a row of servers.csv, TOML ``[[server]]``; trace op ``server``)."""

    name: str
    zone: str
    pool: str
    tags: list[str] | UnsetType = UNSET
    max_sessions: Int64 | UnsetType = UNSET
    weight: Int64 | UnsetType = UNSET
    power: str | UnsetType = UNSET
    registered: bool | UnsetType = UNSET
    mode: str | UnsetType = UNSET
    image: str | None | UnsetType = UNSET


def spec_kwargs(spec: Struct, skip=()) -> dict:
    """The fields of ``spec`` that were given, as keyword arguments."""
    return {f: v for f in spec.__struct_fields__ if f not in skip and (v := getattr(spec, f)) is not UNSET}
