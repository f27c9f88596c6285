"""Importance of every prunable unit of a dense model, per group: the input of a global ranking.

A group's *units* are what the pruner removes together: for a channel group, one channel
position (the same position in every channel group of a grouped conv or split); for an attention
group, one head. Scores are the search space's criterion, reduced exactly as
:func:`~autoprune.pruning.structured.apply_plan` reduces them when it picks what to drop, so
removing the ``k`` lowest-scored units of a group is what a plan with that group's ratio prunes.
Each group's scores are divided by their mean (Torch-Pruning's ``mean`` normaliser), so scores of
different groups can be ranked against each other.
"""
from __future__ import annotations

from torch import nn

from autoprune.inputs import Inputs
from autoprune.plan import PrunerSettings
from autoprune.pruning.graph import analyse, trace, user_ignored
from autoprune.pruning.importance import Batch, calibration_batches, make_importance
from autoprune.pruning.structured import _root_scores
from autoprune.task import Task


def unit_scores(model: nn.Module, example_input: Inputs, settings: PrunerSettings = PrunerSettings(), *,
                calibration: list[Batch] | None = None) -> dict[str, tuple[float, ...]]:
    """Mean-normalised importance of each unit of each prunable group (by group name, units in order).

    Args:
        calibration: batches for data-driven criteria (the example input when None).

    Raises:
        PlanError: the model cannot be traced.
        ConfigError: an unknown importance criterion.
    """
    imp = make_importance(settings.importance)
    traced = trace(model, example_input)
    infos = analyse(model, traced, user_ignored(model, settings.ignore)).infos
    if imp.needs_data:
        imp.calibrate(model, calibration if calibration is not None else [(example_input, None)])
    out: dict[str, tuple[float, ...]] = {}
    for info in infos:
        scores = _root_scores(imp, traced.guarded, info)
        if info.is_attention:
            assert info.units is not None
            per_unit = [float(scores[unit].mean()) for unit in info.units]
        else:
            per_unit = scores.view(info.channel_groups, -1).mean(dim=0).tolist()
        mean = sum(per_unit) / len(per_unit) if per_unit else 0.0
        out[info.name] = tuple(s / mean if mean > 0 else 1.0 for s in per_unit)
    model.zero_grad(set_to_none=True)  # calibration gradients must not leak
    return out


def task_unit_scores(task: Task, settings: PrunerSettings,
                     model: nn.Module | None = None) -> dict[str, tuple[float, ...]]:
    """:func:`unit_scores` of the task's dense model, calibrated on its training data as the pruner is."""
    import copy

    dense = copy.deepcopy(model) if model is not None else task.build_model()
    calibration = calibration_batches(task.train_set) if make_importance(settings.importance).needs_data else None
    return unit_scores(dense, task.example_input, settings, calibration=calibration)
