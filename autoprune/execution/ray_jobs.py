"""Sweeps as Ray Jobs: submit to a cluster's job server, then follow status and logs.

Uses Ray's Job Submission SDK (``ray[default]``). Clusters with Ray token authentication
(on by default in Ray 2.60) are joined with the token in ``~/.ray/auth_token`` or
``RAY_AUTH_TOKEN``, as the ``ray job`` CLI does.
"""
from __future__ import annotations

import os
import shlex
import socket
from pathlib import Path
from urllib.parse import urlparse

from autoprune.errors import BackendUnavailable

#: not uploaded with the job's working directory
EXCLUDES = [".git", ".venv", "results", "__pycache__", "*.pyc", ".pytest_cache"]


def _client(address: str, timeout_s: float = 10.0):
    url = urlparse(address)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise BackendUnavailable(f"--address {address}: expected the job server's URL, e.g. http://HOST:8265")
    try:
        socket.create_connection((url.hostname, url.port or 8265), timeout=timeout_s).close()
    except OSError as err:
        raise BackendUnavailable(f"--address {address}: cannot reach the Ray job server within {timeout_s:g} s "
                                 f"({err.strerror or err})") from None
    if os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").is_file():
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as err:  # noqa: BLE001 - the SDK raises several kinds (auth, HTTP, version)
        raise BackendUnavailable(f"--address {address}: {type(err).__name__}: {str(err).splitlines()[0]}") from None


def submit_sweep(address: str, sweep_file: str, *, out: str, until: str | None = None, python: str = "python",
                 working_dir: str = ".", storage: str | None = None) -> str:
    """Submit ``autoprune sweep run`` as a Ray Job uploading ``working_dir``; return the job id."""
    command = [python, "-m", "autoprune", "sweep", "run", sweep_file, "--out", out]
    if until:
        command += ["--until", until]
    if storage:
        command += ["--storage", storage]
    return _client(address).submit_job(entrypoint=shlex.join(command),
                                       runtime_env={"working_dir": working_dir, "excludes": EXCLUDES})


def job_status(address: str, job_id: str) -> str:
    return str(_client(address).get_job_status(job_id))


def job_logs(address: str, job_id: str) -> str:
    return _client(address).get_job_logs(job_id)
