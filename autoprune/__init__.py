"""autoprune: hardware-aware automated pruning search.

Public API: configs, tasks, plans, the pruner, latency measurement and the search driver.
Heavy submodules are imported lazily by the names below.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AutopruneError": "autoprune.errors", "ConfigError": "autoprune.errors", "PlanError": "autoprune.errors",
    "BackendUnavailable": "autoprune.errors",
    "HardwareProfile": "autoprune.config", "SearchSpace": "autoprune.config", "SearchConfig": "autoprune.config",
    "load_profile": "autoprune.config", "load_space": "autoprune.config",
    "Task": "autoprune.task", "FineTuneRecipe": "autoprune.task", "TASKS": "autoprune.registry",
    "resolve_task": "autoprune.task", "TaskSpec": "autoprune.task", "train_once": "autoprune.training",
    "GroupPlan": "autoprune.plan", "PruningPlan": "autoprune.plan", "PrunerSettings": "autoprune.plan",
    "apply_plan": "autoprune.pruning", "discover_groups": "autoprune.pruning", "model_stats": "autoprune.pruning",
    "discover": "autoprune.pruning", "rebuild": "autoprune.pruning.saving",
    "save_pruned": "autoprune.pruning.saving", "load_pruned": "autoprune.pruning.saving",
    "LatencyStats": "autoprune.latency", "measure_models": "autoprune.hardware.protocol",
    "TrialRecord": "autoprune.records", "TrialState": "autoprune.records", "DenseReference": "autoprune.records",
    "run_search": "autoprune.results.search",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'autoprune' has no attribute {name!r}")
