"""Where a search's jobs run: in this process for one local worker, on Ray for more or for a cluster."""
from __future__ import annotations

from typing import TYPE_CHECKING

from autoprune.config import ExecutionConfig, SearchConfig
from autoprune.execution.executor import Executor, LocalExecutor
from autoprune.execution.runner import TrialRunner
from autoprune.hardware.meter import LatencyMeter

if TYPE_CHECKING:
    from torch import nn

    from autoprune.hardware.predictor import LatencyPredictor
    from autoprune.task import Task


def make_executor(execution: ExecutionConfig, config: SearchConfig, task: Task, dense: nn.Module,
                  predictor: LatencyPredictor | None = None) -> Executor:
    """In-process for one local worker; Ray for more workers or a cluster address.

    ``predictor`` (bound to the profile) goes to the meter, wherever latency is measured, to screen candidates.
    """
    if execution.uses_ray:
        from autoprune.execution.ray_executor import RayExecutor

        return RayExecutor(execution, config, dense, task.example_input, predictor=predictor)
    meter = LatencyMeter(config.profile, dense, task.example_input, predictor=predictor)
    return LocalExecutor(TrialRunner(task=task, config=config, dense=dense, meter=meter))
