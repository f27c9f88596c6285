"""Executors: where the driver's jobs run. ``LocalExecutor`` runs them in this process; Ray in ``ray_executor``.

Call order (the driver's loop): ``submit(job)`` while fewer than ``slots`` jobs are in flight,
``wait()`` for at least one finished job, ``close()`` at the end (or use the executor as a
context manager). Only jobs (plans and records) go in and results come back, so where a job
runs, and on which machine its latency is measured, is the executor's business alone.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING

from autoprune.execution.jobs import Done, Job

if TYPE_CHECKING:
    from autoprune.execution.runner import TrialRunner


class Executor(ABC):
    """Runs jobs; at most ``slots`` at once."""

    slots: int = 1

    @abstractmethod
    def submit(self, job: Job) -> None:
        """Start ``job``."""

    @abstractmethod
    def wait(self) -> list[Done]:
        """Block until at least one submitted job has finished; return every finished one."""

    @property
    @abstractmethod
    def in_flight(self) -> int:
        """Jobs submitted and not yet returned by ``wait``."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release workers and measurement resources (in-flight jobs are abandoned)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class LocalExecutor(Executor):
    """Runs each job in this process, one at a time, when ``wait`` is called."""

    slots = 1

    def __init__(self, runner: TrialRunner) -> None:
        self.runner = runner
        self._queue: deque[Job] = deque()

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def wait(self) -> list[Done]:
        job = self._queue.popleft()
        return [Done(job=job, result=job.run(self.runner))]

    @property
    def in_flight(self) -> int:
        return len(self._queue)
