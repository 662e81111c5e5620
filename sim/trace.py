"""The simulated day as a replay trace (JSON Lines, docs/TRACE_FORMAT.md).

A path ending in ``.gz`` is written gzip-compressed (``usher replay`` reads both).
"""

from __future__ import annotations

import gzip
import os

__all__ = ["TraceWriter"]


class TraceWriter:
    """Writes the simulated day as a replay trace (JSON Lines, docs/TRACE_FORMAT.md).

    ``path_or_file``: a path (a name ending in ``.gz`` is written with gzip) or an
    open binary or text file (written as is; the caller closes it).
    ``telemetry``: ``"rules"`` writes telemetry only for servers whose pool's load
    rules read cpu or memory (the only telemetry that can change a decision; the
    file stays ~10x smaller), ``"all"`` for every powered server.
    """

    def __init__(self, path_or_file, telemetry: str = "rules"):
        import msgspec

        if telemetry not in ("rules", "all"):
            raise ValueError("telemetry must be 'rules' or 'all'")
        self.telemetry = telemetry
        self._own = isinstance(path_or_file, (str, bytes)) or hasattr(path_or_file, "__fspath__")
        if self._own:
            name = os.fsdecode(os.fspath(path_or_file))
            # mtime=0: the same day gives the same bytes
            self._fh = gzip.GzipFile(name, "wb", mtime=0) if name.endswith(".gz") else open(name, "wb")
        else:
            self._fh = path_or_file
        self._enc = msgspec.json.Encoder()
        self._buf: list = []
        self.lines = 0
        self.append = self._buf.append

    def flush(self):
        if self._buf:
            data = self._enc.encode_lines(self._buf)
            if hasattr(self._fh, "encoding"):  # a text file
                self._fh.write(data.decode())
            else:
                self._fh.write(data)
            self.lines += len(self._buf)
            self._buf.clear()

    def maybe_flush(self):
        if len(self._buf) >= 65_536:
            self.flush()

    def close(self):
        self.flush()
        if self._own:
            self._fh.close()
