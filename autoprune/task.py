"""Task: everything a user supplies for a search, and how a task is found by name.

A task is selected by a registered name (``digits``) or a ``module:function`` path whose
function returns a :class:`Task`. Workers receive the same string and rebuild the task, so
only the name crosses process boundaries.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autoprune.errors import ConfigError
from autoprune.inputs import Inputs
from autoprune.registry import TASKS

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")


@dataclass(frozen=True, kw_only=True)
class FineTuneRecipe:
    """How a pruned candidate is fine-tuned (and optionally distilled from the dense model)."""

    epochs: int = 2
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 5e-4
    optimizer: str = "adam"
    schedule: str = "onecycle"
    distill_weight: float = 0.0
    temperature: float = 4.0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0 or self.threads < 1:
            raise ConfigError(f"fine-tune recipe: epochs >= 0, batch_size >= 1, lr > 0, threads >= 1 expected, got {self}")
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES:
            raise ConfigError(f"fine-tune recipe: optimizer in {OPTIMIZERS}, schedule in {SCHEDULES}, got "
                              f"{self.optimizer!r}, {self.schedule!r}")
        if not 0.0 <= self.distill_weight <= 1.0 or self.temperature <= 0:
            raise ConfigError("fine-tune recipe: distill_weight in [0, 1] and temperature > 0 expected")


def top1_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of samples whose arg-max class is the target (0..1)."""
    return float((logits.argmax(dim=1) == targets).float().mean())


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The default training loss: classification cross-entropy over logits."""
    import torch.nn.functional as F

    return F.cross_entropy(logits, targets)


@dataclass(frozen=True, kw_only=True)
class Task:
    """A model to prune and the data to judge it.

    The search selects on ``val_set``; ``test_set`` is held out and only reported (the Pareto
    table, ``pareto.json``, the report and the model card show it), so nobody ships a number the
    search was tuned on.

    Attributes:
        name: the spec the task was resolved from (registered name or ``module:function``).
        build_model: returns a fresh copy of the *trained* dense model, in eval mode (pruning
            searches compress a model that already works; it is not trained here).
        example_input: one input batch (batch 1) that fixes shapes for tracing, export and
            latency: a tensor, a tuple of tensors or a dict of tensors (see :mod:`autoprune.inputs`).
        train_set, val_set, test_set: datasets of (input, target) pairs, the input shaped like
            ``example_input`` without its batch dimension; ``test_set`` is optional.
        metric: higher-is-better score of the model's (primary) outputs against the targets,
            computed once over a whole split (so it may compare samples with each other).
        loss: the fine-tune loss of (primary) outputs against targets (default cross-entropy).
        recipe: the fine-tune recipe for candidates.
        extra_metrics: more scores of the same outputs against the targets, by name, reported beside the
            metric in a model card (dense and pruned, validation and test); never selected on.
    """

    name: str
    build_model: Callable[[], nn.Module]
    example_input: Inputs
    train_set: Dataset
    val_set: Dataset
    test_set: Dataset | None = None
    metric: Callable[[torch.Tensor, torch.Tensor], float] = top1_accuracy
    metric_name: str = "accuracy"
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy
    recipe: FineTuneRecipe = FineTuneRecipe()
    extra_metrics: Mapping[str, Callable[[torch.Tensor, torch.Tensor], float]] = field(default_factory=dict)
    ignored_layers: Callable[[nn.Module], list[nn.Module]] | None = None


def resolve_task(spec: str) -> Task:
    """Resolve a registered task name or a ``module:function`` path to a Task.

    Raises:
        ConfigError: unknown name, a module that does not import, a missing function, or a
            function that does not return a Task.
    """
    if ":" not in spec:
        factory = TASKS.get(spec, where="--task")
    else:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # noqa: BLE001 - any import failure is the user's module
            raise ConfigError(f"--task {spec}: cannot import module {module_name!r}: {type(err).__name__}: {err}") from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise ConfigError(f"--task {spec}: module {module_name!r} has no callable {attr!r}")
    task = factory()
    if not isinstance(task, Task):
        raise ConfigError(f"--task {spec}: the factory returned {type(task).__name__}, expected autoprune.Task")
    return task
