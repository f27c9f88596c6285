"""One registry pattern for every pluggable kind: agents, backends, importance criteria, tasks, export formats.

A plugin is known by the string name that YAML and the CLI use. The built-in plugins are the
tables below: one line per plugin, ``name: "module:attribute"``, imported only when that name
is looked up, so listing names (help texts, validation) imports nothing heavy. Code outside the
package (a user's plugin, a test double) adds one at run time with ``REGISTRY.register(name)``.
Looking up an unknown name raises a ConfigError listing the valid names.

This module is the ground floor's: it imports no plugin, and every layer may read it.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from autoprune.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> plugin table for one kind (e.g. ``AGENTS``).

    Args:
        kind: what a plugin of this registry is, for messages ("agent", "backend").
        builtins: ``name -> "module:attribute"`` of the built-in plugins, imported on first lookup.
    """

    def __init__(self, kind: str, builtins: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._builtins = dict(builtins or {})
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding a plugin at run time: ``@AGENTS.register("mine")`` over a class or factory."""

        def add(obj: T) -> T:
            if name in self._builtins or (name in self._items and self._items[name] is not obj):
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str, *, where: str = "") -> T:
        """The plugin registered as ``name``; ConfigError naming the valid names otherwise.

        Args:
            where: what named it (a file and field, a flag), prefixed to the error.
        """
        if name not in self._items and name in self._builtins:
            module, _, attribute = self._builtins[name].partition(":")
            self._items[name] = getattr(importlib.import_module(module), attribute)
        try:
            return self._items[name]
        except KeyError:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Every registered name, sorted (imports nothing)."""
        return sorted({*self._builtins, *self._items})

    def __contains__(self, name: object) -> bool:
        return name in self._builtins or name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


# The plugin tables. A registry holds classes or factories whose types live in the layers above
# (an agent is ``(AgentContext) -> optuna sampler``, a backend a ``LatencyBackend`` subclass...),
# so they are typed ``Any`` here; each layer's accessor (``make_agent``, ``get_backend``,
# ``make_importance``, ``resolve_task``, ``EXPORTERS`` users) returns the precise type.

#: search agents (``search/agent.py``): ``(AgentContext) -> optuna.samplers.BaseSampler``
AGENTS: Registry[Any] = Registry("agent", {
    "global": "autoprune.search.global_ranking:GlobalRankingAgent",
    "nsga2": "autoprune.search.optuna_agents:nsga2_agent",
    "random": "autoprune.search.optuna_agents:random_agent",
    "rl": "autoprune.search.rl:DDPGAgent",
    "tpe": "autoprune.search.optuna_agents:tpe_agent",
    "uniform": "autoprune.search.uniform:UniformAgent",
})

#: latency backends (``hardware/base.py``): ``LatencyBackend`` subclasses
BACKENDS: Registry[Any] = Registry("backend", {
    "onnxruntime": "autoprune.hardware.onnxruntime_backend:OnnxRuntimeBackend",
    "torch": "autoprune.hardware.torch_backend:TorchEagerBackend",
    "tvm": "autoprune.hardware.tvm_backend:TvmBackend",
})

#: importance criteria (``pruning/importance.py``): ``Importance`` subclasses
IMPORTANCES: Registry[Any] = Registry("importance", {
    "bn_scale": "autoprune.pruning.importance:BNScaleImportance",
    "l1": "autoprune.pruning.importance:L1Importance",
    "l2": "autoprune.pruning.importance:L2Importance",
    "random": "autoprune.pruning.importance:RandomImportance",
    "taylor": "autoprune.pruning.importance:TaylorImportance",
    "wanda": "autoprune.pruning.importance:WandaImportance",
})

#: embedded tasks (``task.py``): ``() -> Task``
TASKS: Registry[Any] = Registry("task", {
    "digits": "autoprune.tasks.digits:digits_task",
    "minilm": "autoprune.tasks.minilm:minilm_task",
})

#: task sources (``task.py``): ``(model, *, data=None, weights=None, input_size=None) -> Task`` for
#: ``--task SOURCE:MODEL``; these prefixes are never read as ``module:function``
TASK_SOURCES: Registry[Any] = Registry("task source", {
    "hf": "autoprune.tasks.text:hf_task",
    "timm": "autoprune.tasks.vision:timm_task",
    "torchvision": "autoprune.tasks.vision:torchvision_task",
})

#: export formats (``results/export.py``): ``Exporter`` subclasses
EXPORTERS: Registry[Any] = Registry("export format", {
    "onnx": "autoprune.results.export:OnnxExporter",
    "torch": "autoprune.results.export:TorchExporter",
    "tvm": "autoprune.results.export:TvmExporter",
})
