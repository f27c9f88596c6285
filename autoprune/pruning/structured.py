"""Apply a PruningPlan by physically removing channels (torch-pruning groups).

Channels are ranked by an importance criterion, and the number kept is rounded to a multiple
the backend runs fast (``round_to``) and never falls below ``min_channels``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from autoprune.errors import PlanError
from autoprune.plan import PruningPlan
from autoprune.pruning.graph import build_graph, ignored_modules, iter_groups


@dataclass(frozen=True, kw_only=True)
class PruneResult:
    """The pruned model and, per group, (channels before, channels after)."""

    model: nn.Module
    channels: dict[str, tuple[int, int]]


def kept_channels(channels: int, ratio: float, round_to: int, min_channels: int) -> int:
    """How many of ``channels`` survive removing ``ratio`` of them, rounded to ``round_to``."""
    if ratio <= 0.0:
        return channels
    floor = min(channels, max(min_channels, round_to))
    keep = round((1.0 - ratio) * channels / round_to) * round_to
    return int(min(channels, max(floor, keep)))


def _magnitude_scores(group, p: int) -> torch.Tensor:
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=p)(group)


def apply_plan(
    model: nn.Module,
    example_input: torch.Tensor,
    plan: PruningPlan,
    *,
    round_to: int = 1,
    min_channels: int = 1,
    importance: str = "l2",
    ignore: tuple[str, ...] = (),
) -> PruneResult:
    """Prune ``model`` in place according to ``plan``.

    Raises:
        PlanError: a group in the plan is not in the model, or its structure is unsupported.
    """
    if importance not in ("l1", "l2"):
        raise PlanError(f"importance {importance!r} is not one of l1, l2")
    graph = build_graph(model, example_input)
    wanted = plan.as_dict()
    found = {}
    for name, root, group in iter_groups(model, graph, ignored_modules(model, example_input, ignore)):
        found[name] = (root, group)
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        raise PlanError(f"group {unknown[0]!r} is not a prunable group of {type(model).__name__}; "
                        f"groups: {', '.join(found)}")
    channels: dict[str, tuple[int, int]] = {}
    for name, (root, group) in found.items():
        before = int(graph.get_out_channels(root))
        spec = wanted.get(name)
        if spec is None or spec.is_noop:
            channels[name] = (before, before)
            continue
        if spec.structure != "channel":
            raise PlanError(f"group {name!r}: structure {spec.structure!r} is not supported by the channel pruner")
        keep = kept_channels(before, spec.ratio, round_to, min_channels)
        if keep < before:
            scores = _magnitude_scores(group, p=1 if importance == "l1" else 2)
            drop = torch.argsort(scores)[: before - keep].tolist()
            graph.get_pruning_group(root, group[0].dep.handler, drop).prune()
        channels[name] = (before, keep)
    return PruneResult(model=model, channels=channels)
