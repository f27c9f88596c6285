"""Apply a PruningPlan: physically remove channels/heads, or mask weights (unstructured, N:M).

Per group, the structure decides what happens:

* ``channel``: units (channels, or whole heads for attention groups) are ranked by the
  importance criterion and removed through torch-pruning, so every coupled layer shrinks.
  The kept width is a multiple of ``round_to`` and of the group's channel grouping (grouped
  convs, equal splits, heads) and never falls below ``min_channels`` nor empties a layer; a
  planned group that no allowed width can shrink is reported in ``PruneResult.unshrinkable``.
  Attributes a model keeps about its widths (``num_heads``, ``all_head_size``, ``hidden_dim``...)
  are updated, and ``nn.MultiheadAttention`` keeps its dense softmax scale.
* ``unstructured`` / ``nm``: the Conv/Linear layers producing the group's channels get a
  magnitude (or N:M) mask; the ratio is the share of weights removed (N:M fixes it at 1 - N/M).
* ``drop``: the group is a droppable block (``pruning/blocks.py``), removed from its layer stack
  whole; a Hugging Face config's depth follows. Layers are named as in the dense model in the
  plan; the result's masks are named as in the pruned model (later blocks renumbered).
* ``none`` or ratio 0: untouched.

The pruned model is checked with one forward pass: every output tensor (tensor, tuple, dict or
Hugging Face ``ModelOutput``) must keep its shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from autoprune.errors import PlanError
from autoprune.inputs import Inputs, call, output_signature
from autoprune.plan import PrunerSettings, PruningPlan
from autoprune.pruning import heads as head_attrs
from autoprune.pruning.blocks import BlockInfo, drop_blocks, find_blocks
from autoprune.pruning.graph import (
    ROOT_TYPES,
    GroupInfo,
    analyse,
    cannot_shrink,
    graph_is_out,
    shrink_step,
    trace,
    user_ignored,
)
from autoprune.pruning.importance import Batch, Importance, make_importance
from autoprune.pruning.masks import apply_masks, layer_sparsity, magnitude_masks, mask_reapplier, nm_applicable, nm_mask

#: attribute names under which models store a width that pruning changes
WIDTH_ATTRS = ("hidden_dim", "embed_dim", "hidden_size", "d_model", "dim", "width")


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
        unshrinkable: per planned group that keeps its width, why no allowed width is smaller.
        dropped: the blocks removed by ``drop`` (dense module names).
    """

    model: nn.Module
    channels: dict[str, tuple[int, int]]
    heads: dict[str, tuple[int, int]] = field(default_factory=dict)
    removed: dict[str, list[int]] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    sparsity: dict[str, float] = field(default_factory=dict)
    masked_groups: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    unshrinkable: dict[str, str] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()

    def reapply_masks(self, model: nn.Module) -> None:
        """Re-zero the masked weights of ``model`` (pass as ``fine_tune(after_step=...)``)."""
        mask_reapplier(self.masks)(model)


def kept_channels(channels: int, ratio: float, round_to: int, min_channels: int) -> int:
    """How many of ``channels`` survive removing ``ratio`` of them: a multiple of ``round_to``, at least
    ``min_channels`` (rounded up to a multiple), never more than ``channels`` (then nothing is removed)."""
    if ratio <= 0.0:
        return channels
    floor = -(-max(min_channels, round_to) // round_to) * round_to
    keep = round((1.0 - ratio) * channels / round_to) * round_to
    return int(min(channels, max(floor, keep)))


def kept_units(info: GroupInfo, ratio: float, round_to: int, min_channels: int) -> int:
    """Root channels the group keeps: a multiple of :func:`~autoprune.pruning.graph.shrink_step`, or all of them."""
    step = shrink_step(info, round_to)
    if step >= info.channels:
        return info.channels
    if info.is_attention:  # whole heads; min_channels never removes the last head
        return kept_channels(info.channels, ratio, step, 1)
    return kept_channels(info.channels, ratio, step, min_channels)


def _root_scores(imp: Importance, graph, info: GroupInfo) -> torch.Tensor:
    scores = imp(graph.get_pruning_group(info.root, info.handler, list(range(info.channels))))
    if scores is None:  # nothing with weights to judge: keep the first channels
        scores = torch.arange(info.channels, 0, -1, dtype=torch.float32)
    return scores.float()


def _drop_heads(imp: Importance, graph, info: GroupInfo, keep: int) -> tuple[list[int], list[int]]:
    """The least important heads to drop (by mean root-channel score) and the root channels they hold."""
    heads = info.heads
    keep_heads = keep * heads // info.channels
    if keep_heads >= heads:
        return [], []
    scores = _root_scores(imp, graph, info)
    per_head = torch.stack([scores[unit].mean() for unit in info.units])
    drop = sorted(torch.argsort(per_head)[: heads - keep_heads].tolist())
    return drop, sorted(r for h in drop for r in info.units[h])


def _drop_channels(imp: Importance, graph, info: GroupInfo, keep: int) -> list[int]:
    """The least important channel positions, the same positions in every channel group."""
    if keep >= info.channels:
        return []
    groups = info.channel_groups
    per_group = info.channels // groups
    position = _root_scores(imp, graph, info).view(groups, per_group).mean(dim=0)
    drop = torch.argsort(position)[: (info.channels - keep) // groups].tolist()
    return sorted(p + g * per_group for g in range(groups) for p in drop)


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
    example_input: Inputs,
    plan: PruningPlan,
    settings: PrunerSettings = PrunerSettings(),
    *,
    calibration: list[Batch] | None = None,
) -> PruneResult:
    """Prune ``model`` in place according to ``plan``, as ``settings`` say.

    Args:
        example_input: a tensor, tuple or dict of tensors, passed as :func:`autoprune.inputs.call` does.
        settings: rounding and minimum widths, the importance criterion, ignored layers, the
            N:M pattern and the mask scope (``PrunerSettings``).
        calibration: a few batches ((inputs, targets) pairs, or inputs) for data-driven criteria;
            the example input is used when none are given.

    Raises:
        PlanError: an unknown group, a structure no layer of the group can take, a model that
            cannot be traced, or a pruned model that no longer runs or changed its outputs' shapes.
        ConfigError: an unknown importance criterion.
    """
    imp = make_importance(settings.importance)
    round_to, min_channels = settings.round_to, settings.min_channels
    wanted = plan.as_dict()
    traced = trace(model, example_input)
    infos = {info.name: info for info in analyse(model, traced, user_ignored(model, settings.ignore)).infos}
    blocks = _planned_blocks(model, example_input, wanted, infos)
    unknown = sorted(set(wanted) - set(infos) - set(blocks))
    if unknown:
        raise PlanError(f"group {unknown[0]!r} is not a prunable group of {type(model).__name__}; "
                        f"groups: {', '.join(infos)}")
    active = {name: spec for name, spec in wanted.items() if not spec.is_noop}
    if active and (imp.needs_data or any(s.structure in ("unstructured", "nm") for s in active.values())):
        imp.calibrate(model, calibration if calibration is not None else [(example_input, None)])

    shrunk = _prune_structures(model, traced.guarded, infos, active, imp, round_to, min_channels)
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
    dropped = _keep_one_per_stack(model, [blocks[name] for name, spec in active.items() if spec.structure == "drop"],
                                  shrunk.unshrinkable)
    if dropped:
        before = dict(model.named_modules())
        drop_blocks(model, dropped)
        after = {m: n for n, m in model.named_modules()}
        rename = {old: after[m] for old, m in before.items() if m in after}
        masks = {rename[k]: v for k, v in masks.items() if k in rename}
        masked_groups = {rename[k]: v for k, v in masked_groups.items() if k in rename}
        skipped = {rename.get(k, k): v for k, v in skipped.items()}
    _check_runs(model, example_input, traced.signature, active)
    shrunk.channels.update({b.name: (1, 0) for b in dropped})  # a block is one unit, and it is gone
    return PruneResult(model=model, channels=shrunk.channels, heads=shrunk.heads, removed=shrunk.removed, masks=masks,
                       sparsity=layer_sparsity(model, list(masks)), masked_groups=masked_groups, skipped=skipped,
                       unshrinkable=shrunk.unshrinkable, dropped=tuple(sorted(b.name for b in dropped)))


def _keep_one_per_stack(model: nn.Module, dropped: list[BlockInfo], unshrinkable: dict[str, str]) -> list[BlockInfo]:
    """``dropped`` less the last block of any stack it would empty (a model keeps some depth, as a layer keeps some
    width); the kept block is reported in ``unshrinkable``."""
    names = {m: n for n, m in model.named_modules()}
    keep = []
    for block in dropped:
        planned = [b for b in dropped if b.stack is block.stack]
        if len(planned) == len(block.stack) and block is planned[-1]:
            unshrinkable[block.name] = (f"kept: dropping every block of `{names[block.stack]}` would leave it empty "
                                        "(a stack keeps at least one block)")
            continue
        keep.append(block)
    return keep


def _planned_blocks(model: nn.Module, example_input: Inputs, wanted: dict, infos: dict) -> dict[str, BlockInfo]:
    """The droppable blocks the plan names (found only when it names a group that is not a channel group).

    Raises:
        PlanError: ``drop`` on something that is not a droppable block, or another structure on a block.
    """
    others = {name: spec for name, spec in wanted.items() if name not in infos or spec.structure == "drop"}
    if not others:
        return {}
    blocks = {b.name: b for b in find_blocks(model, example_input)}
    for name, spec in wanted.items():
        if spec.structure == "drop" and name not in blocks:
            raise PlanError(f"group {name!r}: `drop` removes a whole block whose input and output shapes match; "
                            f"droppable blocks of {type(model).__name__}: {', '.join(blocks) or 'none'}")
        if name in blocks and name not in infos and spec.structure not in ("drop", "none"):
            raise PlanError(f"group {name!r} is a block: its structure is `drop` or `none`, got {spec.structure!r}")
    return {name: blocks[name] for name in others if name in blocks}


@dataclass
class _Shrunk:
    channels: dict[str, tuple[int, int]]
    heads: dict[str, tuple[int, int]] = field(default_factory=dict)
    removed: dict[str, list[int]] = field(default_factory=dict)
    unshrinkable: dict[str, str] = field(default_factory=dict)


def _prune_structures(model: nn.Module, guarded, infos: dict[str, GroupInfo], active: dict, imp: Importance,
                      round_to: int, min_channels: int) -> _Shrunk:
    """Physically remove the planned channels and heads and update what the model records about its widths.

    Every group's channels are chosen and mapped onto its layers on the dense graph first; then
    each layer is cut once, with the union of its positions (:func:`_cut_layers`).
    """
    out = _Shrunk(channels={name: (info.channels, info.channels) for name, info in infos.items()})
    changed: list[tuple[int, int, set[nn.Module]]] = []
    heads: list[tuple[GroupInfo, list[int]]] = []
    cuts = []
    for name, info in infos.items():
        spec = active.get(name)
        if spec is None or spec.structure != "channel":
            continue
        keep = kept_units(info, spec.ratio, round_to, min_channels)
        if keep >= info.channels:
            out.unshrinkable[name] = cannot_shrink(info, round_to, min_channels) or (
                f"ratio {spec.ratio} keeps every unit after rounding to {shrink_step(info, round_to)} channels")
            continue
        if info.is_attention:
            dropped, idxs = _drop_heads(imp, guarded, info, keep)
            heads.append((info, dropped))
            out.heads[name] = (info.heads, info.heads - len(dropped))
        else:
            idxs = _drop_channels(imp, guarded, info, keep)
            changed.append((info.channels, keep, set(info.layers)))
        cuts.append(guarded.get_pruning_group(info.root, info.handler, idxs))
        out.removed[name] = idxs
        out.channels[name] = (info.channels, info.channels - len(idxs))
    mha_widths = head_attrs.head_widths(model)
    _cut_layers(guarded, cuts)
    _update_width_attrs(model, changed)
    dropped_heads = {}
    for info, dropped in heads:
        owner = head_attrs.owner(model, guarded.names, info.layers)
        head_attrs.update_head_attrs(owner, (info.heads, info.heads - len(dropped)),
                                     (info.heads * info.head_dim, (info.heads - len(dropped)) * info.head_dim))
        dropped_heads[owner] = dropped
    head_attrs.record_in_configs(model, dropped_heads)
    head_attrs.keep_attention_scale(mha_widths)
    return out


def _cut_layers(guarded, groups: list) -> None:
    """Apply torch-pruning's handlers once per (layer, handler) with the union of every group's positions.

    Positions are all in the dense layers' coordinates, so no index mapping has to be recomputed
    between groups (torch-pruning's group-by-group pruning recomputes every mapping after each).
    """
    merged: dict[tuple[int, object], tuple[object, set[int]]] = {}
    for group in groups:
        for dep, idxs in group:
            key = (id(dep.target.module), dep.handler)
            merged.setdefault(key, (dep, set()))[1].update(int(i) for i in idxs)
    param_names = guarded.graph._param_to_name
    for dep, idxs in merged.values():
        target = dep.target.module
        if isinstance(target, nn.Parameter):  # torch-pruning returns a new Parameter: put it where the old one was
            name = param_names[target]
            parent, _, attr = name.rpartition(".")
            setattr(guarded.model.get_submodule(parent) if parent else guarded.model, attr, dep(sorted(idxs)))
        else:
            dep(sorted(idxs))
    guarded.mark_pruned()


def _check_runs(model: nn.Module, example_input: Inputs, signature: tuple, active: dict) -> None:
    """One forward pass: the pruned model must run and return outputs of the dense shapes."""
    try:
        with torch.no_grad():
            out = call(model, example_input)
    except Exception as err:  # noqa: BLE001 - the user's forward meets a shape it did not expect
        raise PlanError(f"after pruning groups {', '.join(sorted(active))} the model no longer runs: "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    now = output_signature(out)
    if now != signature:
        diff = next(((a, b) for a, b in zip(signature, now, strict=False) if a != b), (signature, now))
        raise PlanError(f"pruning changed the output shape from {diff[0]} to {diff[1]}")
