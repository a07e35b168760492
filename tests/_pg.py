"""A real, temporary PostgreSQL cluster for tests: initdb + pg_ctl on a free loopback port.

PostgreSQL refuses to run as root, so under root the cluster runs as the ``postgres`` system user
(``runuser -u postgres --``) in a temporary folder owned by it. Torn down (stopped, folder removed)
after the session. Skips with the reason when the server binaries or the user are missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PgCluster", "find_pg_bin", "pg_cluster"]


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb and pg_ctl, if any."""
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").is_file()]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A PostgreSQL server in ``root`` listening on 127.0.0.1:``port`` (trust auth, user postgres)."""

    def __init__(self, bindir: Path, root: Path, port: int, user: str | None) -> None:
        self.bindir, self.root, self.port, self.user = bindir, root, port, user
        self.data = root / "data"
        self._log = str(root / "server.log")
        self._opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=100"

    def _cmd(self, tool: str, *args: str, timeout: float = 120) -> None:
        # output goes to a file, not a pipe: a server started by pg_ctl would hold a pipe open
        argv = [str(self.bindir / tool), *args]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        out = self.root / "ctl.out"
        with out.open("w") as fh:
            rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
        if rc.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({rc.returncode}): {out.read_text()[-2000:]}")

    def init(self) -> None:
        """Create the cluster (``initdb``)."""
        self._cmd("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._cmd("pg_ctl", "-D", str(self.data), "-l", self._log, "-o", self._opts, "-w", "start")

    def stop(self) -> None:
        """Stop the server (fast: open sessions are ended, committed data kept)."""
        self._cmd("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Restart the server: every open connection is cut."""
        self._cmd("pg_ctl", "-D", str(self.data), "-l", self._log, "-o", self._opts, "-m", "fast", "-w", "restart")

    def url(self, db: str = "postgres") -> str:
        """SQLAlchemy URL of database ``db``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        self._cmd("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One temporary PostgreSQL cluster for the whole test session."""
    bindir = find_pg_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; run scripts/install_system_deps.sh"
        )
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' system user to run the PostgreSQL server as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and `runuser` is missing to start PostgreSQL as 'postgres'")
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="dmo-pg-"))
    if user is not None:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    cluster = PgCluster(bindir, root, _free_port(), user)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
