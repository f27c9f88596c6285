"""One way to build a candidate from its plan (``rebuild``), and a pruned model saved as plan + state_dict.

``rebuild`` is the only path from (task, plan, settings[, weights]) to a pruned model: the trial
runner, sensitivity analysis, latency-predictor calibration, reloading a saved candidate and
export all use it, so a candidate is always rebuilt exactly as it was pruned.

A saved folder holds ``plan.json`` (the plan, the pruner settings and the channel counts they
produced) and ``model.pt`` (a plain state_dict). Loading rebuilds the architecture, checks that
the widths match what was saved and loads the weights with ``torch.load(..., weights_only=True)``.
No module is ever pickled, so loading runs no code from the file.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.errors import PlanError
from autoprune.files import atomic_torch_save, atomic_write_json
from autoprune.plan import PrunerSettings, PruningPlan
from autoprune.pruning.importance import calibration_batches, make_importance
from autoprune.pruning.structured import PruneResult, apply_plan
from autoprune.task import Task

FORMAT = 1
PLAN_FILE = "plan.json"
WEIGHTS_FILE = "model.pt"
#: the criterion used when saved weights replace whatever channels it keeps: data-free and cheap
STRUCTURE_ONLY_IMPORTANCE = "l1"


def rebuild(task: Task, plan: PruningPlan, settings: PrunerSettings,
            state_dict: Mapping[str, torch.Tensor] | None = None, *, dense: nn.Module | None = None) -> PruneResult:
    """The candidate of ``plan``: the task's dense model pruned as ``settings`` say.

    Args:
        task: gives the dense model (``build_model``), the example input and calibration data.
        state_dict: the candidate's trained weights. Without them the importance criterion
            chooses what goes (calibrated on the task's training data when it needs data) and
            masks are applied: a fresh candidate. With them only the architecture matters: masked
            groups keep their zeros in the weights, so only channel structure is replayed, with a
            data-free criterion, and the weights are loaded.
        dense: a dense model to copy instead of calling ``task.build_model()`` (a runner keeps one).

    Raises:
        PlanError: the plan does not fit the model, or the weights do not fit the rebuilt model.
    """
    model = copy.deepcopy(dense) if dense is not None else task.build_model()
    if state_dict is None:
        calibration = (calibration_batches(task.train_set) if make_importance(settings.importance).needs_data
                       else None)
        return apply_plan(model, task.example_input, plan, settings, calibration=calibration)
    structural = PruningPlan.of({n: g for n, g in plan.as_dict().items() if g.structure in ("channel", "drop")})
    result = apply_plan(model, task.example_input, structural,
                        dataclasses.replace(settings, importance=STRUCTURE_ONLY_IMPORTANCE))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise PlanError(f"weights do not fit the rebuilt model: {' '.join(str(err).split())[:300]}") from None
    model.eval()
    return result


def save_pruned(folder: str | Path, plan: PruningPlan, state_dict: Mapping[str, torch.Tensor], *,
                settings: PrunerSettings, channels: Mapping[str, Sequence[int]] | None = None,
                sparsity: Mapping[str, float] | None = None) -> Path:
    """Write ``folder/plan.json`` and ``folder/model.pt`` atomically; returns the weights' path.

    Args:
        channels: (before, after) channels per group the pruning produced, checked on reload.
        sparsity: achieved sparsity per masked layer, for the record.
    """
    folder = Path(folder)
    meta: dict[str, Any] = {"format": FORMAT, "plan": plan.to_dict(), "settings": settings.to_dict()}
    if channels is not None:
        meta["channels"] = {k: list(v) for k, v in channels.items()}
    if sparsity is not None:
        meta["sparsity"] = dict(sparsity)
    weights = atomic_torch_save({k: v.detach().cpu().clone() for k, v in state_dict.items()}, folder / WEIGHTS_FILE)
    atomic_write_json(folder / PLAN_FILE, meta)
    return weights


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The saved plan.json (PlanError when missing or of an unknown format)."""
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        raise PlanError(f"{path}: not found; a pruned model folder holds {PLAN_FILE} and {WEIGHTS_FILE}")
    meta = json.loads(path.read_text())
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PlanError(f"{path}: unknown format {meta.get('format') if isinstance(meta, dict) else meta!r}; "
                        f"expected {FORMAT}")
    return meta


def load_pruned(folder: str | Path, task: Task) -> nn.Module:
    """Rebuild a saved pruned model of ``task``: its dense model + the plan's structure + the saved weights.

    Raises:
        PlanError: missing files, weights that do not fit, or rebuilt widths that differ from the
            saved ones (another model).
    """
    folder = Path(folder)
    meta = read_meta(folder)
    state = torch.load(folder / WEIGHTS_FILE, weights_only=True)
    try:
        result = rebuild(task, PruningPlan.from_dict(meta["plan"]), PrunerSettings.from_dict(meta["settings"]), state)
    except PlanError as err:
        raise PlanError(f"{folder}: {err}") from None
    for name, (before, after) in meta.get("channels", {}).items():
        if list(result.channels.get(name, (before, before))) != [before, after]:
            raise PlanError(f"{folder}: group {name!r} rebuilt with {result.channels.get(name)} channels but was "
                            f"saved with {(before, after)}; is this the model the plan was made for?")
    return result.model
