"""Executors: where the driver's trials run. In-process here; Ray in ``ray_executor``.

Call order (the driver's loop): ``dense_latency()`` once, then ``submit(number, plan, **extra)``
while fewer than ``slots`` trials are in flight, ``wait()`` for at least one finished record,
and ``close()`` at the end. Only plain data crosses an executor: a plan, a trial number and
keyword arguments that the runner's ``run`` accepts (JSON-able values), and a TrialRecord back.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from autoprune.config import ExecutionConfig, SearchConfig
    from autoprune.execution.record import TrialRecord
    from autoprune.execution.runner import TrialRunner
    from autoprune.hardware.predictor import LatencyPredictor
    from autoprune.hardware.protocol import LatencyStats
    from autoprune.plan import PruningPlan
    from autoprune.task import Task


class Executor(ABC):
    """Runs trials; at most ``slots`` at once."""

    slots: int = 1

    @abstractmethod
    def dense_latency(self) -> LatencyStats:
        """The dense model's latency, measured where candidates are measured."""

    @abstractmethod
    def submit(self, number: int, plan: PruningPlan, **extra: Any) -> None:
        """Start trial ``number`` on ``plan``; ``extra`` goes to ``TrialRunner.run`` unchanged."""

    @abstractmethod
    def wait(self) -> list[TrialRecord]:
        """Block until at least one submitted trial has finished; return every finished record."""

    @property
    @abstractmethod
    def in_flight(self) -> int:
        """Trials submitted and not yet returned by ``wait``."""

    def close(self) -> None:
        """Release workers and measurement resources (in-flight trials are abandoned)."""


class LocalExecutor(Executor):
    """Runs each trial in this process, one at a time, when ``wait`` is called (debugging, tests)."""

    slots = 1

    def __init__(self, runner: TrialRunner) -> None:
        self.runner = runner
        self._queue: deque[tuple[int, PruningPlan, dict[str, Any]]] = deque()

    def dense_latency(self) -> LatencyStats:
        return self.runner.meter.dense()

    def submit(self, number: int, plan: PruningPlan, **extra: Any) -> None:
        self._queue.append((number, plan, extra))

    def wait(self) -> list[TrialRecord]:
        number, plan, extra = self._queue.popleft()
        return [self.runner.run(number, plan, **extra)]

    @property
    def in_flight(self) -> int:
        return len(self._queue)


def trial_task(config: SearchConfig) -> Task:
    """The config's task with its fine-tune recipe overridden by ``config.finetune``."""
    import dataclasses

    from autoprune.task import resolve_task

    task = resolve_task(config.task)
    return dataclasses.replace(task, recipe=config.recipe_for(task.recipe))


def make_executor(execution: ExecutionConfig, config: SearchConfig, task: Task, dense: nn.Module,
                  trials_dir: Path, predictor: LatencyPredictor | None = None) -> Executor:
    """In-process for one local worker; Ray for more workers or a cluster address.

    ``predictor`` (bound to the profile) goes to the meter, wherever latency is measured, to screen candidates.
    """
    if execution.uses_ray:
        from autoprune.execution.ray_executor import RayExecutor

        return RayExecutor(execution, config, dense, task.example_input, trials_dir, predictor=predictor)
    from autoprune.execution.runner import TrialRunner
    from autoprune.hardware.protocol import LatencyMeter

    meter = LatencyMeter(config.profile, dense, task.example_input, predictor=predictor)
    return LocalExecutor(TrialRunner(task=task, config=config, dense=dense, meter=meter, trials_dir=trials_dir))
