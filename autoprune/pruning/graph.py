"""Discover prunable groups: sets of layers whose channels must be removed together.

torch-pruning's DependencyGraph traces the model once and couples layers across residual
adds, concatenations, splits, depthwise/grouped convolutions, norms and attention
projections (:mod:`autoprune.pruning.depgraph` isolates its failures). Each group is named after
its root layer (a module name such as ``blocks.1.conv1.0``); that name is the key of a
PruningPlan. Before a group is offered, its coupling is checked numerically
(:mod:`autoprune.pruning.probe`): dropping some of its channels must remove exactly what
torch-pruning says it removes, so a channel shuffle or a channel-last reshape it maps wrongly
is left out instead of pruned wrongly. The same check finds attention heads by dataflow: where
the q/k/v projections of a group meet in a dot product, one channel reaches a whole head of
the output projection, and the group is pruned in *units* of whole heads.

A group whose channels reach the model's output (logits, ``last_hidden_state``, an embedding)
is left out: pruning it would change the output's shape. Every weighted layer that no group
prunes is reported with its reason: nothing is skipped silently.
"""
from __future__ import annotations

import fnmatch
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from autoprune.errors import PlanError
from autoprune.inputs import Inputs, describe, flatten_outputs, named_tensors, output_signature
from autoprune.pruning.depgraph import GuardedGraph
from autoprune.pruning.probe import Member, Probe, check_drops, find_units, members
from autoprune.pruning.stats import count_macs

ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True, kw_only=True)
class PrunableGroup:
    """One prunable group as users and agents see it.

    Attributes:
        name: the root layer's module name; the key of a PruningPlan.
        channels: width of the root layer's output (what a ratio removes a share of).
        layers: module names of every coupled layer.
        root_type: class name of the root layer.
        unit: ``channel``, ``head`` for attention groups (a ratio removes whole heads), or ``block`` for a
            droppable block (structures ``drop``/``none``; ``layers`` are its weighted layers).
        heads: head count of an attention group, else None.
        channel_groups: channels are pruned alike in this many groups (grouped convs, splits, heads).
        couplings: why the layers are coupled (residual add, concat, depthwise conv, ...).
        macs_share, params_share: share of the model's MACs and parameters in the layers the group
            touches (a layer whose inputs and outputs belong to two groups counts in both).
        structures: the structures the group can take (``nm`` only when a layer fits the N:M blocks).
    """

    name: str
    channels: int
    layers: tuple[str, ...]
    root_type: str
    unit: str = "channel"
    heads: int | None = None
    channel_groups: int = 1
    couplings: tuple[str, ...] = ()
    macs_share: float = 0.0
    params_share: float = 0.0
    structures: tuple[str, ...] = ("channel", "unstructured", "nm", "none")


@dataclass(frozen=True, kw_only=True)
class LeftOut:
    """A weighted layer no group prunes (or prunes only partly), and why."""

    layer: str
    type: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Discovery:
    """The discovery report: prunable groups, left-out layers, model totals, and the droppable blocks (depth
    pruning: ``blocks``, unit ``block``; a search space offers them only where it allows ``drop``)."""

    model: str
    groups: tuple[PrunableGroup, ...]
    left_out: tuple[LeftOut, ...]
    macs: int
    params: int
    blocks: tuple[PrunableGroup, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class GroupInfo:
    """Internal: one torch-pruning group with what apply needs (root, members, units).

    Attributes:
        units: for an attention group, the root channels of each head (removed together), else None.
        head_dim: for an attention group, a head's width at the output projection's input.
    """

    name: str
    root: nn.Module
    group: Any
    channels: int
    channel_groups: int = 1
    units: list[list[int]] | None = None
    head_dim: int = 0
    layers: list[nn.Module] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)

    @property
    def is_attention(self) -> bool:
        return self.units is not None

    @property
    def heads(self) -> int:
        return len(self.units) if self.units is not None else 0

    @property
    def handler(self):
        """The torch-pruning function that prunes the root's output channels."""
        return self.group[0].dep.handler


def user_ignored(model: nn.Module, ignore: tuple[str, ...]) -> list[nn.Module]:
    """Modules whose name matches one of the ``ignore`` glob patterns."""
    return [m for n, m in model.named_modules() if n and any(fnmatch.fnmatch(n, p) for p in ignore)]


@dataclass(frozen=True, kw_only=True)
class Traced:
    """A traced model: its guarded torch-pruning graph, the inputs it was traced on, its output signature."""

    guarded: GuardedGraph
    inputs: Any
    signature: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def graph(self):
        return self.guarded.graph


def trace(model: nn.Module, example_input: Inputs) -> Traced:
    """Trace ``model`` once into a torch-pruning DependencyGraph (inputs passed as :func:`autoprune.inputs.call` does).

    Raises:
        PlanError: the model fails on its example input or cannot be traced.
    """
    import warnings

    try:
        # torch-pruning traces through autograd: tracing must work even when called under no_grad()
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")  # torch-pruning's recursion-depth notes: its failures are handled here
            guarded = GuardedGraph(model, example_input)
    except Exception as err:  # noqa: BLE001 - tracing failures of user models are user-facing
        raise PlanError(f"model {type(model).__name__} cannot be traced for pruning at input "
                        f"{describe(example_input)}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                        ) from None
    return Traced(guarded=guarded, inputs=example_input, signature=output_signature(guarded.output))


# ---------------------------------------------------------------------- analysis
@dataclass(kw_only=True)
class Analysis:
    """The groups that can be pruned, and every root/producer layer left out with its reason."""

    infos: list[GroupInfo]
    #: root and producer layers (and parameters) of the groups left out, with the reason
    rejected: dict[nn.Module | nn.Parameter, str]


def analyse(model: nn.Module, traced: Traced, ignored: list[nn.Module]) -> Analysis:
    """Every prunable group in graph order, with its channel grouping and attention heads, each checked numerically."""
    import torch_pruning as tp

    guarded, graph = traced.guarded, traced.graph
    names = guarded.names
    ignored_set = set(ignored) | {m for i in ignored for m in i.modules()}
    outputs = {t.grad_fn: name for name, t in flatten_outputs(guarded.output) if t.grad_fn is not None}
    infos: list[GroupInfo] = []
    rejected: dict[nn.Module | nn.Parameter, str] = {}

    def reject(group, root: nn.Module, why: str) -> None:
        rejected.setdefault(root, why)
        for dep, _ in group or ():
            target = dep.target.module
            if isinstance(target, nn.Parameter) or (graph.is_out_channel_pruning_fn(dep.handler)
                                                    and isinstance(target, (*ROOT_TYPES, nn.Embedding))):
                rejected.setdefault(target, why)

    for root, group, why in guarded.groups(ROOT_TYPES, ignored_set):
        why = why or _reaches_output(graph, group, outputs) or _index_error(graph, group, names)
        if why:
            reject(group, root, why)
            continue
        info = GroupInfo(name=names[root], root=root, group=group, channels=int(graph.get_out_channels(root)),
                         members=members(graph, group, names))
        info.layers = [d.target.module for d, _ in group if d.target.module in names]
        info.channel_groups = _channel_groups(tp, group)
        infos.append(info)
    if infos:
        key = _structure_key(model, traced.inputs, ignored)
        verdicts = _VERDICTS.get(key)
        if verdicts is None:
            verdicts = _probe(model, traced, infos)
            _VERDICTS[key] = verdicts
            while len(_VERDICTS) > 32:
                _VERDICTS.popitem(last=False)
        infos = _apply_verdicts(infos, verdicts, reject)
    return Analysis(infos=infos, rejected=rejected)


#: probe verdicts per model structure (see :func:`_structure_key`): a search prunes the same
#: architecture once per trial, and discovery already checked it
_VERDICTS: OrderedDict[tuple, dict[str, list[list[int]] | str | None]] = OrderedDict()


def _structure_key(model: nn.Module, inputs: Inputs, ignored: list[nn.Module]) -> tuple:
    """What the probe's verdicts depend on: every module's class and printed configuration, every parameter's
    and buffer's shape, the input shapes and the ignored layers (not the weights' values)."""
    names = {m: n for n, m in model.named_modules()}
    return (repr(model),
            tuple(f"{type(m).__module__}.{type(m).__qualname__}" for m in model.modules()),
            tuple((n, tuple(p.shape)) for n, p in model.named_parameters()),
            tuple((n, tuple(b.shape)) for n, b in model.named_buffers()),
            tuple((n, tuple(t.shape), str(t.dtype)) for n, t in named_tensors(inputs)),
            tuple(sorted(names.get(m, "") for m in ignored)))


def _probe(model: nn.Module, traced: Traced, infos: list[GroupInfo]) -> dict[str, list[list[int]] | str | None]:
    """Per group: its head units, None for a plain channel group, or why its coupling fails the numeric check."""
    graph = traced.graph
    layers = list(dict.fromkeys(m.target for info in infos for m in info.members if isinstance(m.target, nn.Module)))
    probe = Probe(model, traced.inputs, layers,
                  widths={m: (graph.get_in_channels(m), graph.get_out_channels(m)) for m in layers})
    verdicts: dict[str, list[list[int]] | str | None] = dict.fromkeys((i.name for i in infos), None)
    verdicts.update(find_units(probe, {i.name: i.members for i in infos}, {i.name: i.channels for i in infos}))
    alive = [i for i in infos if not isinstance(verdicts[i.name], str)]
    for info in alive:
        _set_units(info, verdicts[info.name])
    verdicts.update(check_drops(probe, {i.name: i.members for i in alive}, {i.name: probe_drop(i) for i in alive}))
    return verdicts


def _set_units(info: GroupInfo, units: list[list[int]] | None) -> None:
    if units is None:
        return
    info.units = units
    info.channel_groups = len(units)
    head0 = set(units[0])
    consumer = next(m for m in info.members if m.consumes and isinstance(m.target, nn.Module) and m.at(head0))
    info.head_dim = len(consumer.at(head0))


def _apply_verdicts(infos: list[GroupInfo], verdicts: dict, reject) -> list[GroupInfo]:
    kept = []
    for info in infos:
        verdict = verdicts.get(info.name)
        if isinstance(verdict, str):
            reject(info.group, info.root, verdict)
            continue
        _set_units(info, verdict)
        kept.append(info)
    return kept


def probe_drop(info: GroupInfo) -> set[int]:
    """The root channels the numeric check drops: every other head, or every other position in each channel group."""
    if info.units is not None:
        return {r for unit in info.units[1::2] for r in unit}
    per_group = info.channels // info.channel_groups
    if per_group < 2:
        return set()
    return {r for r in range(info.channels) if (r % per_group) % 2 == 1}


def _channel_groups(tp, group) -> int:
    """How many groups of channels must shrink alike (grouped convs, MultiheadAttention heads, equal splits)."""
    units = [1]
    for dep, _ in group:
        layer, fn = dep.target.module, dep.handler
        if fn in (tp.prune_conv_out_channels, tp.prune_conv_in_channels) and layer.groups > 1:
            units.append(layer.groups)  # grouped conv: every group keeps the same width
        elif isinstance(layer, nn.MultiheadAttention):
            units.append(layer.num_heads)  # embed_dim must stay divisible by the head count
        elif isinstance(layer, nn.GroupNorm):
            units.append(layer.num_groups)
        elif isinstance(layer, tp.ops._SplitOp) and layer.split_sizes and len(set(layer.split_sizes)) == 1:
            units.append(len(layer.split_sizes))  # chunk(): parts must stay equal
    return math.lcm(*units)


def _reaches_output(graph, group, outputs: dict) -> str:
    """Why the group cannot change width: its channels are (part of) one of the model's outputs ('' otherwise)."""
    import torch_pruning as tp

    for dep, _ in group:
        node = dep.target
        name = outputs.get(node.grad_fn)
        if name is None:
            continue
        if isinstance(node.module, tp.ops._OutputOp) or graph.is_out_channel_pruning_fn(dep.handler):
            return f"output layer: its channels are the model's output `{name}` (pruning would change its shape)"
    return ""


def _index_error(graph, group, names: dict[nn.Module, str]) -> str:
    """Why torch-pruning's channel mapping of ``group`` is unusable ('' when every index fits its layer or parameter)."""
    for dep, idxs in group:
        target = dep.target.module
        if not len(idxs):
            continue
        if isinstance(target, nn.Parameter):
            width = target.shape[dep.target.pruning_dim]
            where = f"parameter {graph._param_to_name.get(target, '?')}"
        elif isinstance(target, nn.Module) and target in names:
            out = graph.is_out_channel_pruning_fn(dep.handler)
            width = graph.get_out_channels(target) if out else graph.get_in_channels(target)
            where = names[target]
        else:
            continue
        if width is not None and max(int(i) for i in idxs) >= width:
            return (f"unsupported op: channels reach {where} through a reshape/transpose of the channel axis "
                    "that torch-pruning maps past its width")
    return ""


def _couplings(info: GroupInfo) -> tuple[str, ...]:
    import torch_pruning as tp

    kinds = []
    for dep, _ in info.group:
        layer, fn = dep.target.module, dep.handler
        if isinstance(layer, tp.ops._ElementWiseOp) and "AddBackward" in repr(layer):
            kinds.append("residual add")
        elif isinstance(layer, tp.ops._ConcatOp):
            kinds.append("concat")
        elif isinstance(layer, (tp.ops._SplitOp, tp.ops._UnbindOp)):
            kinds.append("split")
        elif fn in (tp.prune_depthwise_conv_out_channels, tp.prune_depthwise_conv_in_channels):
            kinds.append("depthwise conv")
        elif fn in (tp.prune_conv_out_channels, tp.prune_conv_in_channels) and layer.groups > 1:
            kinds.append("grouped conv")
        elif isinstance(layer, NORMS):
            kinds.append("norm")
        elif isinstance(layer, nn.MultiheadAttention):
            kinds.append("nn.MultiheadAttention embed_dim")
        elif isinstance(layer, nn.Parameter):
            kinds.append("parameter")
    if info.is_attention:
        kinds.append("attention heads")
    return tuple(dict.fromkeys(kinds))


def shrink_step(info: GroupInfo, round_to: int) -> int:
    """Kept widths are multiples of this many root channels: lcm(round_to, channel groups); for heads, whole heads
    whose total width at the output projection is a multiple of ``round_to``."""
    if info.is_attention:
        heads_step = round_to // math.gcd(round_to, info.head_dim or 1)
        return heads_step * (info.channels // info.heads)
    return math.lcm(round_to, info.channel_groups)


def cannot_shrink(info: GroupInfo, round_to: int, min_channels: int = 1) -> str:
    """Why no plan can shrink this group at ``round_to`` ('' when some smaller width is allowed)."""
    step = shrink_step(info, round_to)
    if step >= info.channels:
        what = (f"{info.heads} heads of width {info.head_dim}" if info.is_attention
                else f"lcm({round_to}, {info.channel_groups} channel groups) = {step}")
        return (f"cannot shrink at round_to {round_to}: kept widths must be multiples of {what}, and the group has "
                f"only {info.channels} channels")
    if not info.is_attention and min_channels >= info.channels:
        return f"cannot shrink: it has {info.channels} channels, not more than min_channels {min_channels}"
    return ""


def _leaf_weighted(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules()
            if n and any(True for _ in m.parameters(recurse=False))}


def discover(model: nn.Module, example_input: Inputs, ignore: tuple[str, ...] = (), nm_m: int = 4, *,
             round_to: int = 1) -> Discovery:
    """The full discovery report of ``model`` at ``example_input`` (``nm_m``: the M of N:M sparsity).

    Args:
        round_to: kept widths must be multiples of this; a group that cannot shrink under it is left out.

    Raises:
        PlanError: the model cannot be traced.
    """

    from autoprune.pruning.masks import nm_applicable

    traced = trace(model, example_input)
    ignored = user_ignored(model, ignore)
    analysis = analyse(model, traced, ignored)
    macs, layer_macs = count_macs(model, example_input)
    params = sum(p.numel() for p in model.parameters())
    names = traced.guarded.names
    groups, unshrinkable = [], []
    for info in analysis.infos:
        why = cannot_shrink(info, round_to)
        if why:
            unshrinkable.append(LeftOut(layer=info.name, type=type(info.root).__name__, reason=why))
            continue
        mods = list(dict.fromkeys(info.layers))
        group_macs = sum(layer_macs.get(names[m], 0) for m in mods)
        group_params = sum(p.numel() for m in mods for p in m.parameters(recurse=False))
        producers = [d.target.module for d, _ in info.group
                     if graph_is_out(d.handler) and isinstance(d.target.module, ROOT_TYPES)]
        nm_ok = any(not nm_applicable(m, nm_m) for m in producers)
        groups.append(PrunableGroup(
            name=info.name, channels=info.channels, layers=tuple(names[m] for m in mods),
            root_type=type(info.root).__name__, unit="head" if info.is_attention else "channel",
            heads=info.heads or None, channel_groups=info.channel_groups, couplings=_couplings(info),
            macs_share=round(group_macs / macs, 4) if macs else 0.0,
            params_share=round(group_params / params, 4) if params else 0.0,
            structures=("channel", "unstructured", *(("nm",) if nm_ok else ()), "none")))
    left = _left_out(model, traced, analysis, ignored) + unshrinkable
    return Discovery(model=type(model).__name__, groups=tuple(groups), left_out=tuple(left), macs=int(macs),
                     params=int(params), blocks=tuple(droppable_blocks(model, example_input, layer_macs, macs, params,
                                                                        ignore)))


def droppable_blocks(model: nn.Module, example_input: Inputs, layer_macs: dict[str, float] | None = None,
                     macs: float = 0.0, params: int = 0, ignore: tuple[str, ...] = ()) -> list[PrunableGroup]:
    """The blocks ``drop`` can remove (:func:`autoprune.pruning.blocks.find_blocks`) as groups of unit ``block``;
    a block matching an ``ignore`` pattern is not offered."""
    from autoprune.pruning.blocks import find_blocks

    if layer_macs is None:
        macs, layer_macs = count_macs(model, example_input)
        params = sum(p.numel() for p in model.parameters())
    out = []
    for block in find_blocks(model, example_input):
        if any(fnmatch.fnmatch(block.name, p) for p in ignore):
            continue
        block_params = sum(p.numel() for p in block.module.parameters())
        block_macs = layer_macs.get(block.name, 0)  # a module counts what runs inside it
        out.append(PrunableGroup(name=block.name, channels=1, layers=tuple(block.layers), root_type=block.type,
                                 unit="block", macs_share=round(block_macs / macs, 4) if macs else 0.0,
                                 params_share=round(block_params / params, 4) if params else 0.0,
                                 structures=("drop", "none")))
    return out


def _left_out(model: nn.Module, traced: Traced, analysis: Analysis, ignored: list[nn.Module]) -> list[LeftOut]:
    """Weighted layers whose output channels no group prunes, and why; plus partial support notes."""
    graph = traced.graph
    mha_parts = {m for mha in model.modules() if isinstance(mha, nn.MultiheadAttention) for m in mha.modules()
                 if m is not mha}
    pruned = {id(m.target) for info in analysis.infos for m in info.members if m.produces}
    ignored_set = set(ignored) | {m for i in ignored for m in i.modules()}
    left = []
    for name, module in _leaf_weighted(model).items():
        kind = type(module).__name__
        if isinstance(module, nn.MultiheadAttention):
            left.append(LeftOut(layer=name, type=kind, reason=(
                "heads not prunable: nn.MultiheadAttention ties its q/k/v width to embed_dim, so torch-pruning only "
                "shrinks every head alike with the residual stream; use separate q/k/v Linear layers for head "
                "pruning")))
            continue
        if id(module) in pruned or module in mha_parts:
            continue
        if module in analysis.rejected:
            reason = analysis.rejected[module]
        elif module in ignored_set:
            reason = "user-ignored (search space `ignore`)"
        elif module not in graph.module2node and isinstance(module, (*ROOT_TYPES, *NORMS)):
            reason = ("never called as a module on the example input (its weights may be used functionally, e.g. "
                      "F.linear(x, self.qkv.weight)), so tracing cannot couple it")
        elif isinstance(module, ROOT_TYPES):
            reason = "unsupported op: its output channels reach no prunable group (a shape op torch-pruning cannot map)"
        elif isinstance(module, (*NORMS, nn.Embedding, nn.PReLU)):
            continue  # norms and embeddings follow their producer's group; a producer left out is reported above
        else:
            own = [(n, p) for n, p in module.named_parameters(recurse=False)]
            unpruned = [(n, p) for n, p in own if id(p) not in pruned]
            if not unpruned:
                continue  # e.g. layer_scale, pos_embedding: pruned with the group they scale or shift
            group_reason = next((analysis.rejected[p] for _, p in unpruned if p in analysis.rejected), None)
            if group_reason is not None:  # in a group left out, e.g. the stream a model returns
                left.append(LeftOut(layer=name, type=kind, reason=group_reason))
                continue
            reason = (f"parameter(s) {', '.join(n for n, _ in unpruned)} of {kind} are in no prunable group "
                      "(torch-pruning has no handler that maps them)")
        left.append(LeftOut(layer=name, type=kind, reason=reason))
    return left


def graph_is_out(handler) -> bool:
    """Whether a torch-pruning handler removes output channels of its layer."""
    import torch_pruning as tp

    return handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels, tp.prune_depthwise_conv_out_channels)


def discover_groups(model: nn.Module, example_input: Inputs, ignore: tuple[str, ...] = (), *,
                    round_to: int = 1) -> list[PrunableGroup]:
    """The prunable groups of ``model`` in graph order (``discover(...).groups`` as a list)."""
    return list(discover(model, example_input, ignore, round_to=round_to).groups)
