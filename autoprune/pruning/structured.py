"""Apply a PruningPlan: physically remove channels/heads, or mask weights (unstructured, N:M).

Per group, the structure decides what happens:

* ``channel``: units (channels, or whole heads for attention groups) are ranked by the
  importance criterion and removed through torch-pruning, so every coupled layer shrinks.
  The kept width is rounded to a multiple of ``round_to`` (and of the group's channel grouping:
  grouped convs, equal splits, heads) and never falls below ``min_channels`` nor empties a layer.
  Attributes a model keeps about its widths (``num_heads``, ``hidden_dim``...) are updated.
* ``unstructured`` / ``nm``: the Conv/Linear layers producing the group's channels get a
  magnitude (or N:M) mask; the ratio is the share of weights removed (N:M fixes it at 1 - N/M).
* ``none`` or ratio 0: untouched.

The pruned model is checked with one forward pass: its output shape must not change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from autoprune.errors import PlanError
from autoprune.plan import PrunerSettings, PruningPlan
from autoprune.pruning.graph import ROOT_TYPES, GroupInfo, analyse, graph_is_out, trace, user_ignored
from autoprune.pruning.importance import Batch, Importance, make_importance
from autoprune.pruning.masks import apply_masks, layer_sparsity, magnitude_masks, mask_reapplier, nm_applicable, nm_mask

#: attribute names under which models store a width that pruning changes
WIDTH_ATTRS = ("hidden_dim", "embed_dim", "hidden_size", "d_model", "dim", "width", "all_head_size")


@dataclass(frozen=True, kw_only=True)
class PruneResult:
    """The pruned model and what happened to it.

    Attributes:
        model: the pruned model (the same object that was passed in).
        channels: per group, (channels before, channels after) of its root layer.
        heads: per attention group pruned by heads, (heads before, heads after).
        removed: per group pruned by channel, the indices of the root layer's channels removed.
        masks: per masked layer, its boolean keep-mask (already applied to the weight).
        sparsity: per masked layer, the achieved share of zero weights.
        masked_groups: per masked layer, the group whose plan masked it.
        skipped: per layer of a masked group that could not take the structure, why.
    """

    model: nn.Module
    channels: dict[str, tuple[int, int]]
    heads: dict[str, tuple[int, int]] = field(default_factory=dict)
    removed: dict[str, list[int]] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    sparsity: dict[str, float] = field(default_factory=dict)
    masked_groups: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def reapply_masks(self, model: nn.Module) -> None:
        """Re-zero the masked weights of ``model`` (pass as ``fine_tune(after_step=...)``)."""
        mask_reapplier(self.masks)(model)


def kept_channels(channels: int, ratio: float, round_to: int, min_channels: int) -> int:
    """How many of ``channels`` survive removing ``ratio`` of them, rounded to ``round_to``."""
    if ratio <= 0.0:
        return channels
    floor = min(channels, max(min_channels, round_to))
    keep = round((1.0 - ratio) * channels / round_to) * round_to
    return int(min(channels, max(floor, keep)))


def kept_units(info: GroupInfo, ratio: float, round_to: int, min_channels: int) -> int:
    """Channels the group keeps: a multiple of lcm(round_to, channel groups) when it fits, never empty."""
    groups = info.channel_groups
    step = math.lcm(round_to, groups)
    if step > info.channels:
        step = groups
    keep = kept_channels(info.channels, ratio, step, min_channels)
    return max(groups, keep - keep % groups)


def _fresh_group(graph, info: GroupInfo, idxs: list[int]):
    return graph.get_pruning_group(info.root, info.group[0].dep.handler, idxs)


def _channel_scores(imp: Importance, graph, info: GroupInfo) -> torch.Tensor:
    scores = imp(_fresh_group(graph, info, list(range(info.channels))))
    if scores is None:  # nothing with weights to judge: keep the first channels
        scores = torch.arange(info.channels, 0, -1, dtype=torch.float32)
    return scores.float()


def _prune_heads(imp: Importance, graph, info: GroupInfo, ratio: float) -> tuple[int, int, list[int]]:
    """Remove whole heads; returns heads before, heads after and the removed root channels."""
    heads, hd = info.heads, info.head_dim
    keep = max(1, round((1.0 - ratio) * heads))
    idxs: list[int] = []
    if keep < heads:
        slices = info.channels // (heads * hd)  # e.g. 3 for a fused qkv projection laid out (3, heads, head_dim)
        per_head = _channel_scores(imp, graph, info).view(slices, heads, hd).mean(dim=(0, 2))
        drop = torch.argsort(per_head)[: heads - keep].tolist()
        idxs = sorted(s * heads * hd + h * hd + j for s in range(slices) for h in drop for j in range(hd))
        _fresh_group(graph, info, idxs).prune()
        setattr(info.owner, info.head_attr, keep)
    return heads, keep, idxs


def _prune_channels(imp: Importance, graph, info: GroupInfo, ratio: float, round_to: int,
                    min_channels: int) -> tuple[int, list[int]]:
    """Remove the least important channels; returns the kept width and the removed root channels."""
    keep = kept_units(info, ratio, round_to, min_channels)
    idxs: list[int] = []
    if keep < info.channels:
        groups = info.channel_groups
        per_group = info.channels // groups
        # grouped layers must lose the same positions in every group: rank positions by mean score
        position = _channel_scores(imp, graph, info).view(groups, per_group).mean(dim=0)
        drop = torch.argsort(position)[: (info.channels - keep) // groups].tolist()
        idxs = sorted(p + g * per_group for g in range(groups) for p in drop)
        _fresh_group(graph, info, idxs).prune()
    return keep, idxs


def _update_width_attrs(model: nn.Module, changed: list[tuple[int, int, set[nn.Module]]]) -> None:
    """Set width attributes (``hidden_dim``...) to the new width of the group they describe.

    A module's attribute equal to a pruned group's old width is taken to describe the group
    with that width that has the most layers inside the module (the residual stream of a ViT).
    """
    for module in model.modules():
        inside = set(module.modules())
        for attr in WIDTH_ATTRS:
            value = getattr(module, attr, None)
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            candidates = [(len(layers & inside), new) for old, new,
                          layers in changed if old == value and layers & inside]
            if candidates:
                setattr(module, attr, max(candidates)[1])


def _group_producers(model: nn.Module, info: GroupInfo) -> dict[str, nn.Module]:
    """The Conv/Linear layers whose output channels make up the group (the layers a mask goes on)."""
    names = {m: n for n, m in model.named_modules()}
    return {names[d.target.module]: d.target.module for d, _ in info.group
            if graph_is_out(d.handler) and isinstance(d.target.module, ROOT_TYPES)}


def _mask_group(model: nn.Module, info: GroupInfo, structure: str, ratio: float, imp: Importance, nm: tuple[int, int],
                scope: str, skipped: dict[str, str]) -> dict[str, torch.Tensor]:
    layers = _group_producers(model, info)
    if structure == "nm":
        n, m = nm
        for name, layer in list(layers.items()):
            why = nm_applicable(layer, m)
            if why:
                skipped[name] = f"{n}:{m} not applicable: {why}"
                del layers[name]
        if not layers:
            raise PlanError(f"group {info.name!r}: no layer can take {n}:{m} sparsity "
                            f"({'; '.join(f'{k}: {v}' for k, v in skipped.items())})")
        return {name: nm_mask(imp.weight_scores(layer), n, m) for name, layer in layers.items()}
    return magnitude_masks({name: imp.weight_scores(layer) for name, layer in layers.items()}, ratio, scope)


def apply_plan(
    model: nn.Module,
    example_input: torch.Tensor,
    plan: PruningPlan,
    settings: PrunerSettings = PrunerSettings(),
    *,
    calibration: list[Batch] | None = None,
) -> PruneResult:
    """Prune ``model`` in place according to ``plan``, as ``settings`` say.

    Args:
        settings: rounding and minimum widths, the importance criterion, ignored layers, the
            N:M pattern and the mask scope (``PrunerSettings``).
        calibration: a few batches (inputs or (inputs, targets)) for data-driven criteria;
            the example input is used when none are given.

    Raises:
        PlanError: an unknown group, a structure no layer of the group can take, a model that
            cannot be traced, or a pruned model that no longer runs.
        ConfigError: an unknown importance criterion.
    """
    imp = make_importance(settings.importance)
    round_to, min_channels = settings.round_to, settings.min_channels
    wanted = plan.as_dict()
    traced = trace(model, example_input)
    graph = traced.graph
    infos = {info.name: info for info in analyse(model, graph, traced.outputs + user_ignored(model,
                                                                                             settings.ignore))[0]}
    unknown = sorted(set(wanted) - set(infos))
    if unknown:
        raise PlanError(f"group {unknown[0]!r} is not a prunable group of {type(model).__name__}; "
                        f"groups: {', '.join(infos)}")
    active = {name: spec for name, spec in wanted.items() if not spec.is_noop}
    if active and (imp.needs_data or any(s.structure in ("unstructured", "nm") for s in active.values())):
        imp.calibrate(model, calibration if calibration is not None else [example_input])

    channels = {name: (info.channels, info.channels) for name, info in infos.items()}
    heads: dict[str, tuple[int, int]] = {}
    removed: dict[str, list[int]] = {}
    changed: list[tuple[int, int, set[nn.Module]]] = []
    for name, info in infos.items():
        spec = active.get(name)
        if spec is None or spec.structure != "channel":
            continue
        if info.is_attention:
            before, after, removed[name] = _prune_heads(imp, graph, info, spec.ratio)
            heads[name] = (before, after)
            keep = info.channels * after // before
        else:
            keep, removed[name] = _prune_channels(imp, graph, info, spec.ratio, round_to, min_channels)
            changed.append((info.channels, keep, set(info.layers)))
        channels[name] = (info.channels, keep)
    _update_width_attrs(model, [c for c in changed if c[0] != c[1]])

    masks: dict[str, torch.Tensor] = {}
    masked_groups: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name, info in infos.items():
        spec = active.get(name)
        if spec is not None and spec.structure in ("unstructured", "nm"):
            group_masks = _mask_group(model, info, spec.structure, spec.ratio, imp, settings.nm,
                                      settings.mask_scope, skipped)
            masks.update(group_masks)
            masked_groups.update(dict.fromkeys(group_masks, name))
    apply_masks(model, masks)
    model.zero_grad(set_to_none=True)  # calibration gradients must not leak into fine-tuning
    _check_runs(model, example_input, traced.output_shape, active)
    return PruneResult(model=model, channels=channels, heads=heads, removed=removed, masks=masks,
                       sparsity=layer_sparsity(model, list(masks)), masked_groups=masked_groups,
                       skipped=skipped)


def _check_runs(model: nn.Module, example_input: torch.Tensor, shape: tuple[int, ...] | None, active: dict) -> None:
    try:
        with torch.no_grad():
            out = model(example_input)
    except Exception as err:  # noqa: BLE001 - the user's forward meets a shape it did not expect
        raise PlanError(f"after pruning groups {', '.join(sorted(active))} the model no longer runs: "
                        f"{type(err).__name__}: {str(err).splitlines()[0]}") from None
    if isinstance(out, torch.Tensor) and tuple(out.shape) != shape:
        raise PlanError(f"pruning changed the output shape from {shape} to {tuple(out.shape)}")
