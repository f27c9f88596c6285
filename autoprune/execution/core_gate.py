"""Keeps fine-tune steps off a machine's cores while a latency is being measured on that machine.

On a local Ray (or a cluster node that both measures and trains) the measurement actor and the
fine-tune workers share the CPU cores; a training step running beside a timed run inflates and
scatters the figure. The measurement station holds the gate while it times (``measuring``), and a
fine-tune runs each step inside ``step``: a step waits while a measurement is in progress, and a
measurement waits for the steps already running to end (one step each, milliseconds), so no step
overlaps a timed run. Screens (prune, proxy) are short and not gated.

Mechanism: two ``fcntl.flock`` files per user in the machine's temp folder, so every process on
the machine (any Ray node started there, any search) sees the same gate, and a process that dies
releases what it held. ``measuring`` takes *gate* then *steps* exclusively; ``step`` takes *gate*
shared just long enough to take *steps* shared, so once a measurement is waiting no new step
starts (it cannot be starved by steps of several workers taking turns).

``AUTOPRUNE_MEASURE_TRACE``: a file to which the measuring process appends each measurement's
wall-clock interval as a JSON line (``{"pid", "start", "end"}``), to check from outside that
nothing else ran meanwhile.
"""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TRACE_ENV = "AUTOPRUNE_MEASURE_TRACE"


def default_folder() -> Path:
    """This user's gate folder in the machine's temp folder (shared by every process of the user here)."""
    return Path(tempfile.gettempdir()) / f"autoprune-{os.getuid()}"


class CoreGate:
    """The machine's measure/fine-tune gate; files are opened on first use (one set per process)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or default_folder()
        self._files: tuple[IO[bytes], IO[bytes]] | None = None

    def _open(self) -> tuple[IO[bytes], IO[bytes]]:
        if self._files is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._files = (open(self.folder / "measure.gate", "ab"),  # noqa: SIM115 - held for the process' life
                           open(self.folder / "measure.steps", "ab"))  # noqa: SIM115
        return self._files

    @contextmanager
    def measuring(self) -> Iterator[None]:
        """Hold the machine's cores for a measurement: wait for running steps to end, start none until done."""
        gate, steps = self._open()
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(steps, fcntl.LOCK_EX)
            start = time.time()
            try:
                yield
            finally:
                _trace(start, time.time())
                fcntl.flock(steps, fcntl.LOCK_UN)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)

    @contextmanager
    def step(self) -> Iterator[None]:
        """Run one training step: not while a measurement is in progress or waiting for its turn."""
        gate, steps = self._open()
        fcntl.flock(gate, fcntl.LOCK_SH)
        try:
            fcntl.flock(steps, fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(steps, fcntl.LOCK_UN)

    def close(self) -> None:
        for f in self._files or ():
            f.close()
        self._files = None


def _trace(start: float, end: float) -> None:
    path = os.environ.get(TRACE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), "start": start, "end": end}) + "\n")
