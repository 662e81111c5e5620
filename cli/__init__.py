"""The ``usher`` command line: the click group in ``usher.cli.group``, one module per command.

The command line is an extra (``pip install "usher[cli]"``): without click or rich, ``main``
is a stand-in that says what to install, in one line, and exits with status 1.
"""

from __future__ import annotations

import importlib.util

_MISSING = next((m for m in ("click", "rich") if importlib.util.find_spec(m) is None), None)

if _MISSING is None:
    from usher.cli.group import main
else:
    def main() -> None:  # type: ignore[misc]  # the stand-in
        """``usher`` installed without its command line: one line naming the install."""
        raise SystemExit(f'usher: the command line needs {_MISSING}, not installed: pip install "usher[cli]"')

__all__ = ["main"]
