"""Task: everything a user supplies for a search, and how a task is found by its spec.

A task is selected by a :class:`TaskSpec`: a name and, for tasks built from a model library and
a user's data, ``data``, ``weights`` and ``input_size``. The name is one of

- a registered task (``digits``);
- ``SOURCE:MODEL`` with a registered task source (``torchvision:resnet50``, ``timm:efficientnet_b0``,
  ``hf:PATH_OR_NAME``): the source builds the task from the model library and ``data``;
- ``module:function``: the function returns a :class:`Task`. The module is imported with the
  current folder on ``sys.path`` (appended, as the last place looked), so a ``mymodule.py`` next
  to where ``autoprune`` runs is found; ``data``/``weights``/``input_size``, when given, are passed
  to the function as keyword arguments.

The spec is plain data (``SearchConfig`` carries its fields; a run's ``config.json`` records
them), so resume, report, export and Ray workers rebuild the same task from it.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autoprune.errors import ConfigError
from autoprune.inputs import Inputs
from autoprune.registry import TASK_SOURCES, TASKS

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


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """What rebuilds a task anywhere: its name and the options of a bring-your-own task.

    Attributes:
        name: a registered task, ``SOURCE:MODEL`` (``torchvision:resnet50``) or ``module:function``.
        data: the data (a folder or file; absolute once it came through ``SearchConfig``).
        weights: a checkpoint file, a library's weights name, or ``none`` (random init, trained once).
        input_size: image side in pixels or text length in tokens (default: the source's rule).
    """

    name: str
    data: str | None = None
    weights: str | None = None
    input_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"--task must be a non-empty string, got {self.name!r}")
        for field_name in ("data", "weights"):
            value = getattr(self, field_name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"--{field_name} must be a non-empty string, got {value!r}")
        if self.input_size is not None and (isinstance(self.input_size, bool) or not isinstance(self.input_size, int)
                                            or self.input_size < 1):
            raise ConfigError(f"--input-size must be an integer >= 1, got {self.input_size!r}")

    def options(self) -> dict[str, Any]:
        """The options that are set (``data``, ``weights``, ``input_size``)."""
        return {k: v for k, v in (("data", self.data), ("weights", self.weights), ("input_size", self.input_size))
                if v is not None}


#: task sources whose model may be a local path (``hf:./my-model``): made absolute at the edge
PATH_SOURCES = ("hf",)


def absolute_task_name(name: str) -> str:
    """``name`` with a local model path of a ``PATH_SOURCES`` task made absolute (a worker elsewhere finds it)."""
    prefix, _, rest = name.partition(":")
    if prefix in PATH_SOURCES and rest and os.path.exists(os.path.expanduser(rest)):
        return f"{prefix}:{os.path.abspath(os.path.expanduser(rest))}"
    return name


def _import_user_module(spec: str, module_name: str) -> Any:
    """Import a user's task module, the current folder on ``sys.path`` (appended: never shadowing a library)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's module
        raise ConfigError(f"--task {spec}: cannot import module {module_name!r} (looked in the current folder {cwd} "
                          f"and on sys.path): {type(err).__name__}: {err}") from None


def resolve_task(spec: str | TaskSpec) -> Task:
    """Resolve a task spec (see the module docstring) to a Task.

    Raises:
        ConfigError: unknown name or source, a module that does not import, a missing function, a
            function that does not return a Task, options a task does not take, or bad data/weights.
    """
    if isinstance(spec, str):
        spec = TaskSpec(name=spec)
    name, options = spec.name, spec.options()
    prefix, _, rest = name.partition(":")
    if ":" in name and prefix in TASK_SOURCES:
        if not rest:
            raise ConfigError(f"--task {name}: name the model after `{prefix}:` (e.g. {prefix}:MODEL)")
        task = TASK_SOURCES.get(prefix, where="--task")(rest, **options)
    else:
        if ":" not in name:
            factory = TASKS.get(name, where="--task")
        else:
            module = _import_user_module(name, prefix)
            factory = getattr(module, rest, None)
            if not callable(factory):
                where = getattr(module, "__file__", None) or "a namespace package"
                raise ConfigError(f"--task {name}: module {prefix!r} ({where}) has no callable {rest!r}")
        if options:
            try:
                inspect.signature(factory).bind(**options)
            except (TypeError, ValueError):
                flags = ", ".join(f"--{k.replace('_', '-')}" for k in options)
                raise ConfigError(f"--task {name}: this task takes no {flags} (only `SOURCE:MODEL` tasks "
                                  f"({', '.join(TASK_SOURCES.names())}) and functions with such keyword "
                                  "arguments do)") from None
        task = factory(**options)
    if not isinstance(task, Task):
        raise ConfigError(f"--task {name}: the factory returned {type(task).__name__}, expected autoprune.Task")
    return task
