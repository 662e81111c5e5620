"""Fleet files: a scheduler's configuration in TOML, its servers in CSV or Parquet.

Design: the records are the layouts of ``usher.formats.specs`` (``PoolSpec``,
``AppSpec``, ``UserSpec``, ``ServerSpec``, ``SettingsSpec``), whose field names are the
keyword names of the ``usher.Scheduler`` methods and from which the trace format
derives its configuration operations, so the file formats and the trace cannot drift
apart. The TOML reader validates the whole document against them in one
``msgspec.convert`` call; each record is applied by ``usher.formats.dispatch.apply_op``,
the dispatcher of trace lines. A field left out is ``UNSET`` and is not passed on, so
the Scheduler's own defaults apply. Every error names the file, the line (TOML, CSV) or
row (Parquet), the field and the value (:class:`FleetFileError`); no other exception
leaves the readers for a file's content. The format is specified in docs/TRACE_FORMAT.md.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tomllib
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Struct

from usher.errors import InvalidArgument, UsherError
from usher.formats.dispatch import apply_op
from usher.formats.errors import FleetFileError
from usher.formats.specs import (
    INT64_MAX,
    INT64_MIN,
    AppSpec,
    LicencesSpec,
    PoolSpec,
    ServerSpec,
    SettingsSpec,
    UserSpec,
    spec_kwargs,
)

if TYPE_CHECKING:
    from usher.scheduler import Scheduler

__all__ = [
    "FleetFileError",
    "SettingsSpec",
    "PoolSpec",
    "AppSpec",
    "UserSpec",
    "ServerSpec",
    "SERVER_COLUMNS",
    "load_fleet",
    "save_fleet",
    "spec_kwargs",
]

#: columns of servers.csv / servers.parquet, in the order they are written
SERVER_COLUMNS = ("name", "zone", "pool", "tags", "max_sessions", "weight", "power",
                  "registered", "mode", "image")
_REQUIRED_COLUMNS = ("name", "zone", "pool")
TAG_SEPARATOR = ";"
# exceptions that mean "a value the scheduler cannot take" (reported as a FleetFileError)
_VALUE_ERRORS = (OverflowError, ValueError, TypeError)


class _FleetConfig(Struct, forbid_unknown_fields=True):
    settings: SettingsSpec = msgspec.field(default_factory=SettingsSpec)
    licences: LicencesSpec = msgspec.field(default_factory=LicencesSpec)
    pool: list[PoolSpec] = []
    app: list[AppSpec] = []
    user: list[UserSpec] = []
    server: list[ServerSpec] = []


# ---------------------------------------------------------------- TOML
_TABLES = {"settings": False, "licences": False, "pool": True, "app": True, "user": True, "server": True}


def _toml_line(text: str, table: str, index: int | None, field: str | None) -> int | None:
    """Best-effort line number (1-based) of ``field`` in the ``index``-th ``[[table]]``
    (or in ``[table]`` when ``index`` is None); the header's line when the field is not
    found there; None when the table is not written with a header (inline tables)."""
    header = re.compile(r"^\s*\[\[\s*%s\s*\]\]" % re.escape(table) if index is not None
                        else r"^\s*\[\s*%s\s*\]" % re.escape(table))
    lines = text.splitlines()
    seen = -1
    for n, line in enumerate(lines):
        if header.match(line):
            seen += 1
            if index is None or seen == index:
                if field is not None:
                    key = re.compile(r"^\s*[\"']?%s[\"']?\s*=" % re.escape(field))
                    for m in range(n + 1, len(lines)):
                        if re.match(r"^\s*\[", lines[m]):
                            break
                        if key.match(lines[m]):
                            return m + 1
                return n + 1
    return None


def _toml_error(path, text, table, index, name, field, value, detail):
    line = _toml_line(text, table, index, field) if table else None
    where = f"line {line}" if line is not None else None
    entry = None
    if table:
        entry = f"[{table}]" if index is None else f"[[{table}]] #{index + 1}"
        if name is not None:
            entry += f" ({name!r})"
    loc = where if entry is None else (f"{where}, {entry}" if where else entry)
    return FleetFileError(path, loc, field, value, detail)


_PATH = re.compile(r"at `\$\.(\w+)(?:\[(\d+)\])?(?:\.(\w+))?")
_FIELD = re.compile(r"field `(\w+)`")


def _read_toml(path) -> tuple[_FleetConfig, str]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise FleetFileError(path, None, None, None, f"cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
        doc = tomllib.loads(text)
    except RecursionError:
        raise FleetFileError(path, None, None, None, "not valid TOML: nested too deeply") from None
    except UnicodeDecodeError as e:
        raise FleetFileError(path, None, None, None, f"not UTF-8 text ({e.reason})") from None
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        loc = f"line {m.group(1)}, column {m.group(2)}" if m else None
        raise FleetFileError(path, loc, None, None, f"not valid TOML: {str(e).split(' (at line')[0]}") from None
    for key, value in doc.items():
        line = next((n + 1 for n, ln in enumerate(text.splitlines())
                     if re.match(r"^\s*\[*\s*[\"']?%s[\"']?\s*[\]=]" % re.escape(key), ln)), None)
        where = None if line is None else f"line {line}"
        if key not in _TABLES:
            raise FleetFileError(path, where, key, None, f"unknown table; expected {', '.join(_TABLES)}")
        if _TABLES[key] and not isinstance(value, list):
            raise FleetFileError(path, where, key, None, f"write [[{key}]] (an array of tables)")
    try:
        return msgspec.convert(doc, _FleetConfig), text
    except RecursionError:
        raise FleetFileError(path, None, None, None, "a value is nested too deeply") from None
    except msgspec.ValidationError as e:
        msg = str(e)
        table, index, field = None, None, None
        m = _PATH.search(msg)
        if m:
            table, field = m.group(1), m.group(3)
            index = None if m.group(2) is None else int(m.group(2))
            if field is None and index is None and not _TABLES.get(table, False):
                field = None
        named = _FIELD.search(msg)
        if named:
            field = named.group(1)
        name = None
        value = None
        if table is not None:
            entry = doc.get(table)
            if index is not None and isinstance(entry, list) and index < len(entry):
                entry = entry[index]
            if isinstance(entry, dict):
                name = entry.get("name", entry.get("id"))
                value = entry.get(field) if field else None
        detail = msg.split(" - at `")[0]
        if detail.startswith("Object contains unknown field"):
            detail = "unknown field"
        elif detail.startswith("Object missing required field"):
            detail = "required field is missing"
        elif detail.startswith(("Expected `int` <=", "Expected `int` >=")):
            detail = _INT_RANGE
        raise _toml_error(path, text, table, index, name, field, value, detail) from None


# ---------------------------------------------------------------- server tables
def _cell_str(field, v, required=False):
    if v is None or v == "":
        if required:
            raise InvalidArgument(field, v, "is required")
        return UNSET
    if not isinstance(v, str):
        raise InvalidArgument(field, v, "must be text")
    return v


_INT_RANGE = "must be an integer from -2**63 to 2**63-1"


def _cell_int(field, v):
    if v is None or v == "":
        return UNSET
    if isinstance(v, bool):
        raise InvalidArgument(field, v, "must be an integer")
    n = None
    if isinstance(v, int):
        n = v
    elif isinstance(v, float) and v.is_integer():
        n = int(v)
    elif isinstance(v, str):
        try:
            n = int(v.strip())
        except ValueError:
            pass
    if n is None:
        raise InvalidArgument(field, v, "must be an integer")
    if not INT64_MIN <= n <= INT64_MAX:
        raise InvalidArgument(field, v, _INT_RANGE)
    return n


_TRUE = {"true", "1", "yes", "y", "on", "t"}
_FALSE = {"false", "0", "no", "n", "off", "f"}


def _cell_bool(field, v):
    if v is None or v == "":
        return UNSET
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        low = v.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise InvalidArgument(field, v, "must be true or false")


def _cell_tags(field, v):
    if v is None or v == "":
        return UNSET
    if isinstance(v, str):
        return [t.strip() for t in v.split(TAG_SEPARATOR) if t.strip()]
    if isinstance(v, (list, tuple)) and all(isinstance(t, str) for t in v):
        return list(v)
    raise InvalidArgument(field, v, f"must be tags separated by {TAG_SEPARATOR!r}")


def _server_row(row: dict) -> ServerSpec:
    """A ServerSpec from one table row (CSV text cells or typed Parquet cells);
    an empty cell takes the default."""
    image = row.get("image")
    return ServerSpec(
        name=_cell_str("name", row.get("name"), True),
        zone=_cell_str("zone", row.get("zone"), True),
        pool=_cell_str("pool", row.get("pool"), True),
        tags=_cell_tags("tags", row.get("tags")),
        max_sessions=_cell_int("max_sessions", row.get("max_sessions")),
        weight=_cell_int("weight", row.get("weight")),
        power=_cell_str("power", row.get("power")),
        registered=_cell_bool("registered", row.get("registered")),
        mode=_cell_str("mode", row.get("mode")),
        image=UNSET if image is None or image == "" else _cell_str("image", image),
    )


def _check_columns(path, columns, where):
    seen = set()
    for c in columns:
        if c not in SERVER_COLUMNS:
            raise FleetFileError(path, where, "column", c, f"unknown column; expected {', '.join(SERVER_COLUMNS)}")
        if c in seen:
            raise FleetFileError(path, where, "column", c, "appears twice")
        seen.add(c)
    for c in _REQUIRED_COLUMNS:
        if c not in seen:
            raise FleetFileError(path, where, "column", c, "required column is missing")


def _read_csv(path):
    """Yield (location, raw row dict) for each server row of a CSV file."""
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise FleetFileError(path, None, None, None, f"cannot read: {e.strerror or e}") from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise FleetFileError(path, "line 1", None, None, "empty file: a header row is required")
            header = [h.strip() for h in header]
            _check_columns(path, header, "line 1")
            for cells in reader:
                where = f"line {reader.line_num}"
                if not cells or all(not c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    raise FleetFileError(path, where, None, None,
                                         f"{len(cells)} cells where the header has {len(header)}")
                yield where, {h: c.strip() for h, c in zip(header, cells)}
        except csv.Error as e:
            raise FleetFileError(path, f"line {reader.line_num}", None, None, f"not valid CSV: {e}") from None
        except UnicodeDecodeError as e:
            raise FleetFileError(path, None, None, None, f"not UTF-8 text ({e.reason})") from None


def _pyarrow(path):
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError:
        raise FleetFileError(path, None, None, None,
                             "reading or writing Parquet needs pyarrow: pip install pyarrow "
                             "(or use a .csv servers file)") from None
    return pq


def _read_parquet(path):
    pq = _pyarrow(path)
    try:
        with open(path, "rb"):  # the OS's reason, worded as for the other files
            pass
        table = pq.read_table(path)
    except OSError as e:
        raise FleetFileError(path, None, None, None, f"cannot read: {e.strerror or e}") from None
    except Exception as e:  # pyarrow's own error classes (ArrowInvalid ...)
        raise FleetFileError(path, None, None, None, f"not a valid Parquet file: {e}") from None
    _check_columns(path, table.column_names, "schema")
    for k, row in enumerate(table.to_pylist()):
        yield f"row {k + 1}", row


def _server_rows(path):
    lower = str(path).lower()
    if lower.endswith(".csv"):
        return _read_csv(path)
    if lower.endswith((".parquet", ".pq")):
        return _read_parquet(path)
    raise FleetFileError(path, None, None, None, "servers file must end in .csv or .parquet")


# ---------------------------------------------------------------- load / save
def _apply(scheduler, location_of, spec):
    """Apply the record ``spec``, turning an error into a FleetFileError at the
    record's place in the file."""
    try:
        return apply_op(scheduler, spec)
    except FleetFileError:
        raise
    except UsherError as e:
        raise location_of(e.field, e.value, e.detail or str(e)) from None
    except _VALUE_ERRORS as e:  # a value the scheduler let through but cannot take
        raise location_of(None, None, f"a value the scheduler cannot take ({type(e).__name__}: {e})") from None


def load_fleet(config_path: str | os.PathLike[str], servers_path: str | os.PathLike[str] | None = None,
               scheduler_cls: type[Scheduler] | None = None, **kwargs: Any) -> Scheduler:
    """A scheduler built from fleet files.

    Args:
        config_path: TOML with ``[settings]``, ``[licences]``, ``[[pool]]``, ``[[app]]``,
            ``[[user]]`` and optionally ``[[server]]``.
        servers_path: ``.csv`` or ``.parquet`` table of servers (one row per server,
            columns ``SERVER_COLUMNS``), or None.
        scheduler_cls: the class to build (default ``usher.Scheduler``).
        kwargs: constructor arguments; they win over ``[settings]`` and ``[licences]``.

    Raises:
        FleetFileError: naming the file, line/row, field and value.
    """
    if scheduler_cls is None:
        from usher.scheduler import Scheduler as scheduler_cls  # type: ignore[assignment]
    cfg, text = _read_toml(config_path)

    def at(table, index, name):
        def location_of(field, value, detail):
            return _toml_error(config_path, text, table, index, name, field, value, detail)
        return location_of

    init = spec_kwargs(cfg.settings)
    if cfg.licences.cap is not None:
        init["licences"] = cfg.licences.cap
    init.update(kwargs)
    try:
        s = scheduler_cls(**init)  # type: ignore[misc]  # set above
    except UsherError as e:
        if e.field in kwargs:
            raise
        table = "licences" if e.field == "licences" else "settings"
        field = "cap" if e.field == "licences" else e.field
        raise at(table, None, None)(field, e.value, e.detail or str(e)) from None
    except _VALUE_ERRORS as e:  # a value the scheduler let through but cannot take
        raise at("settings", None, None)(None, None, f"a value the scheduler cannot take ({e})") from None
    for table, records in (("pool", cfg.pool), ("app", cfg.app), ("user", cfg.user), ("server", cfg.server)):
        for k, record in enumerate(records):
            _apply(s, at(table, k, record.id if table == "user" else record.name), record)  # type: ignore[attr-defined]
    if servers_path is not None:
        for where, row in _server_rows(servers_path):
            def location_of(field, value, detail, where=where):
                return FleetFileError(servers_path, where, field, value, detail)
            try:
                spec = _server_row(row)
            except UsherError as e:
                raise location_of(e.field, e.value, e.detail) from None
            _apply(s, location_of, spec)
    return s


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _pool_document(config: dict) -> dict:
    """A pool's table: its settings, less those left at None and a
    ``slow_min_samples`` left at its default (a fleet without the slow rule
    reads as before it existed)."""
    from usher.core.config import DEFAULT_SLOW_MIN_SAMPLES

    doc = _drop_none(config)
    if doc.get("slow_min_samples") == DEFAULT_SLOW_MIN_SAMPLES:
        del doc["slow_min_samples"]
    return doc


def fleet_document(scheduler) -> dict:
    """The TOML document of a scheduler's configuration (without servers)."""
    s = scheduler
    doc: dict[str, Any] = {
        "settings": {
            "enforce_entitlement": s.enforce_entitlement,
            "seed": s.seed,
            "sinbin_seconds": s.sinbin_seconds,
            "pending_timeout": s.pending_timeout,
        }
    }
    if s.licence_cap is not None:
        doc["licences"] = {"cap": s.licence_cap}
    doc["pool"] = [_pool_document(s.pool_config(p)) for p in s.pool_names]
    doc["app"] = [_drop_none(s.app_config(a)) for a in s.app_names]
    doc["user"] = [_drop_none(s.user_config(u)) for u in s.user_ids]
    return doc


def server_records(scheduler) -> list[dict]:
    """One dict per present server (index order), with the ``SERVER_COLUMNS``."""
    out = []
    for row in scheduler.servers():
        out.append(dict(
            name=row["name"], zone=row["zone"], pool=row["pool"], tags=sorted(row["tags"]),
            max_sessions=int(row["max_sessions"]), weight=int(row["weight"]), power=str(row["power"]),
            registered=bool(row["registered"]), mode=str(row["mode"]), image=row["image"],
        ))
    return out


def _write_csv(path, records):
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SERVER_COLUMNS)
    for r in records:
        w.writerow([TAG_SEPARATOR.join(r["tags"]) if c == "tags" else
                    ("" if r[c] is None else str(r[c]).lower() if c == "registered" else r[c])
                    for c in SERVER_COLUMNS])
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(buf.getvalue())


def _write_parquet(path, records):
    pq = _pyarrow(path)
    import pyarrow as pa

    schema = pa.schema([("name", pa.string()), ("zone", pa.string()), ("pool", pa.string()),
                        ("tags", pa.string()), ("max_sessions", pa.int64()), ("weight", pa.int64()),
                        ("power", pa.string()), ("registered", pa.bool_()), ("mode", pa.string()),
                        ("image", pa.string())])
    cols = {c: [TAG_SEPARATOR.join(r["tags"]) if c == "tags" else r[c] for r in records] for c in SERVER_COLUMNS}
    pq.write_table(pa.table(cols, schema=schema), path)


def save_fleet(scheduler: Scheduler, config_path: str | os.PathLike[str],
               servers_path: str | os.PathLike[str] | None = None) -> None:
    """Write ``scheduler``'s configuration to ``config_path`` (TOML) and its servers
    to ``servers_path`` (.csv or .parquet), or into the TOML as ``[[server]]`` when
    ``servers_path`` is None. ``load_fleet`` of the result gives the same pools, apps,
    users, settings, licence cap and servers (configuration and power/registered/mode;
    not sessions, telemetry or tie-break history)."""
    try:
        import tomli_w
    except ImportError:
        raise FleetFileError(config_path, None, None, None,
                             "writing TOML needs tomli-w: pip install tomli-w") from None
    doc = fleet_document(scheduler)
    records = server_records(scheduler)
    for r in records:
        for t in r["tags"]:
            if TAG_SEPARATOR in t:
                raise InvalidArgument("tags", t, f"a tag holding {TAG_SEPARATOR!r} cannot be written to a servers table")
        if r["image"] == "":
            raise InvalidArgument("image", "", "an empty image name cannot be written (it reads back as None)")
    for p in doc["pool"]:
        for k in ("cpu_full", "memory_full", "disk_queue_full"):
            if not math.isfinite(p[k]):
                raise InvalidArgument(k, p[k], "must be finite")
    if servers_path is None:
        doc["server"] = [_drop_none(r) for r in records]
    else:
        lower = str(servers_path).lower()
        if lower.endswith(".csv"):
            _write_csv(servers_path, records)
        elif lower.endswith((".parquet", ".pq")):
            _write_parquet(servers_path, records)
        else:
            raise FleetFileError(servers_path, None, None, None, "servers file must end in .csv or .parquet")
    text = tomli_w.dumps(doc)
    tmp = f"{config_path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, config_path)
