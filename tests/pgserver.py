"""A throw-away PostgreSQL server for the cluster tests.

``initdb`` makes a cluster in a temporary directory, ``pg_ctl`` starts it listening
only on a Unix socket in that directory (no TCP port), and :meth:`PgServer.stop`
stops it and removes the directory. As root (CI) the server runs as the ``postgres``
user (``runuser -u postgres --``), which owns the directory. Any failure to start
raises: the tests that need a database fail, they never skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

__all__ = ["PgServer"]


def _bindir() -> str:
    try:
        return subprocess.run(["pg_config", "--bindir"], check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.path.dirname(shutil.which("pg_ctl") or shutil.which("initdb") or "")


class PgServer:
    """A PostgreSQL server of this machine's installation, in a temporary directory.

    Attributes:
        dsn: the connection string (``host=<socket dir> port=5432 dbname=postgres user=...``).
    """

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="usher-pg-")
        self.data = os.path.join(self.root, "data")
        self.socket_dir = self.root
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else (os.environ.get("USER") or "postgres")
        self.bindir = _bindir()
        self.dsn = f"host={self.socket_dir} port=5432 dbname=postgres user={self.user}"
        self._started = False

    def _run(self, *args, check=True):
        tool = os.path.join(self.bindir, args[0]) if self.bindir else args[0]
        if not os.path.exists(tool):
            tool = args[0]
        command = [tool, *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def start(self) -> "PgServer":
        if self.as_root:
            shutil.chown(self.root, user="postgres", group="postgres")
        os.chmod(self.root, 0o700)
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", self.user, "--no-sync", "-E", "UTF8")
        options = f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' -c fsync=on -c max_connections=100"
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-o", options, "-w", "-t", "60",
                  "start")
        self._started = True
        deadline = time.monotonic() + 30
        while self._run("pg_isready", "-h", self.socket_dir, "-p", "5432", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not accept connections: {self.log()}")
            time.sleep(0.1)
        return self

    def restart(self) -> None:
        """Stop the server (fast shutdown: sessions are cut) and start it again."""
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-m", "fast", "-w", "restart")

    def log(self) -> str:
        try:
            with open(os.path.join(self.root, "log"), encoding="utf-8", errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self._started:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
            self._started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
