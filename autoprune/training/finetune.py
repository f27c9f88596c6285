"""Fine-tune a (pruned) model with a recipe, optionally distilling from the dense model.

Also used to train the dense model of an embedded task. A NaN/inf loss stops training at
once with :class:`TrainingDiverged`, so the trial is recorded failed instead of wasting time.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from autoprune.errors import AutopruneError
from autoprune.inputs import call, primary_output
from autoprune.task import FineTuneRecipe, Task, cross_entropy, top1_accuracy


class TrainingDiverged(AutopruneError):
    """The loss became NaN or infinite."""


def _optimizer(model: nn.Module, recipe: FineTuneRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9,
                               weight_decay=recipe.weight_decay, nesterov=True)
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, recipe: FineTuneRecipe, total_steps: int):
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=max(total_steps, 1))
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft-target KL loss, scaled by T^2 so its gradient size does not depend on T."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1),
                    reduction="batchmean") * t * t


def fine_tune(
    model: nn.Module,
    train_set: Dataset,
    recipe: FineTuneRecipe,
    *,
    seed: int = 0,
    teacher: nn.Module | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    step_guard: Callable[[], AbstractContextManager[Any]] | None = None,
) -> nn.Module:
    """Train ``model`` in place for ``recipe.epochs`` epochs and return it in eval mode.

    Args:
        teacher: the dense model; used when ``recipe.distill_weight > 0``.
        loss_fn: the task's loss of the model's primary output against the targets.
        after_step: called after every optimizer step (e.g. to re-apply sparsity masks).
        step_guard: every step (forward to optimizer step) runs inside ``with step_guard():``; on Ray it
            pauses training while latency is measured on the same machine (``execution/core_gate.py``).

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
    """
    if recipe.epochs == 0:
        return model.eval()
    torch.set_num_threads(recipe.threads)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    loader = DataLoader(train_set, batch_size=recipe.batch_size, shuffle=True, generator=generator, drop_last=True)
    opt = _optimizer(model, recipe)
    sched = _scheduler(opt, recipe, recipe.epochs * len(loader))
    distill = teacher is not None and recipe.distill_weight > 0
    if distill:
        teacher.eval()
    model.train()
    guard = step_guard or nullcontext
    for _ in range(recipe.epochs):
        for inputs, targets in loader:
            with guard():
                logits = primary_output(call(model, inputs))
                loss = loss_fn(logits, targets)
                if distill:
                    with torch.no_grad():
                        soft = primary_output(call(teacher, inputs))
                    w = recipe.distill_weight
                    loss = (1 - w) * loss + w * distillation_loss(logits, soft, recipe.temperature)
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingDiverged(f"fine-tune diverged: loss is {value}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if after_step is not None:
                    after_step(model)
    return model.eval()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    metric: Callable[[torch.Tensor, torch.Tensor], float] = top1_accuracy,
    batch_size: int = 512,
) -> float:
    """The metric over the whole dataset (primary outputs gathered, then scored once)."""
    return float(metric(*gather_outputs(model, dataset, batch_size)))


@torch.no_grad()
def gather_outputs(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """``model``'s primary outputs over the whole dataset and the targets, each concatenated in order."""
    model.eval()
    outputs, targets = [], []
    for inputs, target in DataLoader(dataset, batch_size=batch_size):
        outputs.append(primary_output(call(model, inputs)))
        targets.append(target)
    return torch.cat(outputs), torch.cat(targets)


def test_score(task: Task, model: nn.Module) -> float | None:
    """``model``'s metric on the task's held-out test split, or None when the task has none."""
    return None if task.test_set is None else evaluate(model, task.test_set, task.metric)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset: Dataset, batches: int = 8, batch_size: int = 64) -> nn.Module:
    """Re-estimate BatchNorm running statistics after pruning (no weight update)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    for i, (inputs, _) in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False)):
        if i >= batches:
            break
        call(model, inputs)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()
