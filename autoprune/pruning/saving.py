"""Save a pruned model as plan + state_dict, and rebuild it anywhere from the task's model factory.

A folder holds ``plan.json`` (the plan, the pruning settings that fix the architecture and the
channel counts they produced) and ``model.pt`` (a plain state_dict). Loading builds the dense
architecture, replays the plan's structural part (which channels are dropped does not matter:
the saved weights replace them; masks are already zeros in the weights), checks that the widths
match what was saved and loads the weights with ``torch.load(..., weights_only=True)``. No
module is ever pickled, so loading runs no code from the file.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.errors import PlanError
from autoprune.inputs import Inputs
from autoprune.plan import PruningPlan
from autoprune.pruning.structured import PruneResult, apply_plan
from autoprune.results.files import atomic_torch_save, atomic_write_json

FORMAT = 1
PLAN_FILE = "plan.json"
WEIGHTS_FILE = "model.pt"


@dataclass(frozen=True, kw_only=True)
class PruneSettings:
    """The apply_plan settings that decide a pruned architecture."""

    round_to: int = 1
    min_channels: int = 1
    ignore: tuple[str, ...] = ()


def save_pruned(folder: str | Path, plan: PruningPlan, state_dict: Mapping[str, torch.Tensor], *,
                settings: PruneSettings, result: PruneResult | None = None) -> Path:
    """Write ``folder/plan.json`` and ``folder/model.pt`` atomically; returns the weights' path.

    Args:
        result: the PruneResult of the pruning, whose channel counts are saved for checking.
    """
    folder = Path(folder)
    meta: dict[str, Any] = {"format": FORMAT, "plan": plan.to_dict(), "settings": asdict(settings)}
    if result is not None:
        meta["channels"] = {k: list(v) for k, v in result.channels.items()}
        meta["sparsity"] = result.sparsity
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


def load_pruned(folder: str | Path, build_model: Callable[[], nn.Module], example_input: Inputs) -> nn.Module:
    """Rebuild a saved pruned model: dense architecture + the plan's structure + the saved weights.

    Raises:
        PlanError: missing files, or the rebuilt widths differ from the saved ones (another model).
    """
    folder = Path(folder)
    meta = read_meta(folder)
    plan = PruningPlan.from_dict(meta["plan"])
    structural = PruningPlan.of({n: g for n, g in plan.as_dict().items() if g.structure == "channel"})
    s = meta["settings"]
    model = build_model()
    result = apply_plan(model, example_input, structural, round_to=int(s["round_to"]),
                        min_channels=int(s["min_channels"]), importance="l1", ignore=tuple(s["ignore"]))
    saved = meta.get("channels")
    if saved is not None:
        for name, (before, after) in saved.items():
            if list(result.channels.get(name, (before, before))) != [before, after]:
                raise PlanError(f"{folder}: group {name!r} rebuilt with {result.channels.get(name)} channels but was "
                                f"saved with {(before, after)}; is this the model the plan was made for?")
    state = torch.load(folder / WEIGHTS_FILE, weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise PlanError(f"{folder / WEIGHTS_FILE}: weights do not fit the rebuilt model: {' '.join(str(err).split())[:300]}") from None
    return model.eval()
