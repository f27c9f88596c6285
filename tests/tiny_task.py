"""A tiny task for fast tests: digits at 8x8 on a two-stage residual CNN trained for 2 epochs.

Resolved as ``tests.tiny_task:tiny_task`` (the ``module:function`` path users take).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autoprune.task import FineTuneRecipe, Task
from autoprune.tasks.digits import BasicBlock, load_digits_tensors
from autoprune.training import fine_tune

_CACHE: dict[str, dict[str, torch.Tensor]] = {}


class TinyResNet(nn.Module):
    def __init__(self, widths: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.block1 = BasicBlock(widths[0], widths[0], 1)
        self.block2 = BasicBlock(widths[0], widths[1], 2)
        self.fc = nn.Linear(widths[1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def tiny_task() -> Task:
    train_set, val_set, test_set = load_digits_tensors(size=8)

    def build_model() -> nn.Module:
        torch.manual_seed(0)
        model = TinyResNet()
        if "dense" not in _CACHE:
            fine_tune(model, train_set, FineTuneRecipe(epochs=2, lr=1e-2, batch_size=64), seed=0)
            _CACHE["dense"] = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(_CACHE["dense"])
        return model.eval()

    return Task(name="tiny", build_model=build_model, example_input=val_set.tensors[0][:1], train_set=train_set,
                val_set=val_set, test_set=test_set, recipe=FineTuneRecipe(epochs=1, lr=3e-3, batch_size=64, threads=1))


def not_a_task() -> int:
    return 42


def tiny_task_without_training_data() -> Task:
    """The tiny task with an empty training split: nothing to calibrate int8 activation ranges on."""
    import dataclasses

    from torch.utils.data import Subset

    task = tiny_task()
    return dataclasses.replace(task, train_set=Subset(task.train_set, []))


class Overflowing(nn.Module):
    """Exports and runs in fp32 (its output is inf), but no int8 scale fits an infinite activation range."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1)
        return self.fc(y * 1e38 * 1e38)


def overflowing_task() -> Task:
    """The tiny task's data on a model whose activations no int8 range fits."""
    import dataclasses

    def build_model() -> nn.Module:
        torch.manual_seed(0)
        return Overflowing().eval()

    return dataclasses.replace(tiny_task(), build_model=build_model)
