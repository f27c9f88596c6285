"""A private PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temp folder, loopback only, a free port.

Debian's ``postgresql`` package provides the binaries (``/usr/lib/postgresql/<version>/bin``; ``make test``
installs it where it can). ``initdb`` refuses to run as root, so as root the server runs as the
``postgres`` user the package creates. ``find_postgres`` returns None where no server can be started,
and the tests that need one skip.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def find_postgres() -> Path | None:
    """The folder holding ``initdb``/``pg_ctl`` (newest version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _run_as() -> list[str]:
    """The command prefix that runs the server's tools as a user ``initdb`` accepts."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root and there is no `postgres` user to run PostgreSQL as") from None
    return ["runuser", "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server(bin_dir: Path) -> Iterator[str]:
    """Start a throw-away server; yield its SQLAlchemy URL (database ``postgres``, trust auth); stop and remove it."""
    root = Path(tempfile.mkdtemp(prefix="autoprune-pg-"))
    prefix = _run_as()
    if prefix:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    data = root / "data"
    port = _free_port()
    subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                    "-o", f"-p {port} -k {root} -h 127.0.0.1", "start"], check=True, capture_output=True, timeout=90)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def server_or_skip() -> Iterator[str]:
    """A private server's URL, for a test or fixture; skips where PostgreSQL or its driver is not installed."""
    import pytest

    bin_dir = find_postgres()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; `make test` does it as root)")
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver is not installed: pip install 'autoprune[postgres]'")
    with postgres_server(bin_dir) as url:
        yield url
