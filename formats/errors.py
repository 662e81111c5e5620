"""Errors of the file formats. Each is an ``usher.InvalidArgument`` (so an
``UsherError``) that names the file, the place in it, the field and the value.

- :class:`TraceError`: one trace line that is not an operation; it becomes that
  line's error line and the replay goes on.
- :class:`FleetFileError`: a fleet file (TOML, CSV, Parquet) that cannot be used.
- :class:`TraceFileError`: a trace that cannot be read at all, or not to its end
  (missing file, a directory, a truncated or corrupt ``.gz``).
"""

from __future__ import annotations

from usher.errors import InvalidArgument

__all__ = ["TraceError", "InputFileError", "FleetFileError", "TraceFileError", "short_repr"]

_VALUE_CHARS = 200  # a value shown in a message is cut to this many characters


def short_repr(value) -> str:
    """``repr(value)``, cut to ``_VALUE_CHARS`` characters (a message stays one line of reasonable length)."""
    text = repr(value)
    return text if len(text) <= _VALUE_CHARS else text[:_VALUE_CHARS - 3] + "..."


class TraceError(InvalidArgument):
    """A trace line that is not a valid operation: malformed JSON, not an object,
    unknown ``op``, unknown or missing field, a value of the wrong type or out of
    range (an integer beyond 64 bits, a number beyond a float), or nested too deeply."""

    def __str__(self):
        if self.value is None:
            return f"{self.field}: {self.detail}"
        return f"{self.field}={short_repr(self.value)}: {self.detail}"


class InputFileError(InvalidArgument):
    """A file that cannot be used: names the file, the place in it, the field and
    the value.

    Attributes:
        path: the file.
        location: ``"line 12"`` (TOML, CSV, a trace), ``"row 3"`` (Parquet) or None
            when the place is unknown or the whole file is at fault.
        field, value: as for every :class:`usher.UsherError` (None when no field is
            at fault).
    """

    def __init__(self, path, location, field, value, detail):
        self.path = str(path)
        self.location = location
        super().__init__(field, value, detail)

    def __str__(self):
        where = self.path if self.location is None else f"{self.path}, {self.location}"
        if self.field is None:
            return f"{where}: {self.detail}"
        return f"{where}, field {self.field}={short_repr(self.value)}: {self.detail}"

    def __reduce__(self):
        return (type(self), (self.path, self.location, self.field, self.value, self.detail))


class FleetFileError(InputFileError):
    """A fleet file (TOML configuration, CSV or Parquet servers table) that cannot be loaded."""


class TraceFileError(InputFileError):
    """A trace file that cannot be read: missing, a directory, not readable, or a
    compressed file that is corrupt or truncated (``location`` then says after
    which line)."""
