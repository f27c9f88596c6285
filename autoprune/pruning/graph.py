"""Discover prunable groups: sets of layers whose channels must be removed together.

torch-pruning's DependencyGraph traces the model once and couples layers across residual
adds, concatenations, splits, depthwise/grouped convolutions, norms and attention
projections. Each group is named after its root layer (a module name such as
``blocks.1.conv1.0``); that name is the key of a PruningPlan. A group is pruned in *units*:
one channel, or a whole attention head when the group holds the q/k/v projections of a module
that stores ``num_heads``. Every weighted layer that no group can prune is reported with its
reason (final classifier, user-ignored, unsupported op): nothing is skipped silently.
"""
from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from autoprune.errors import PlanError

ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
#: attribute names under which attention modules store their head count
HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_heads")


@dataclass(frozen=True, kw_only=True)
class PrunableGroup:
    """One prunable group as users and agents see it.

    Attributes:
        name: the root layer's module name; the key of a PruningPlan.
        channels: width of the root layer's output (what a ratio removes a share of).
        layers: module names of every coupled layer.
        root_type: class name of the root layer.
        unit: ``channel``, or ``head`` for attention groups (a ratio removes whole heads).
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
    """The discovery report: prunable groups, left-out layers, model totals."""

    model: str
    groups: tuple[PrunableGroup, ...]
    left_out: tuple[LeftOut, ...]
    macs: int
    params: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class GroupInfo:
    """Internal: one torch-pruning group with what apply needs (root, units, head layout)."""

    name: str
    root: nn.Module
    group: Any
    channels: int
    channel_groups: int = 1
    #: attention: the module that stores the head count, its attribute, and head size in root space
    owner: nn.Module | None = None
    head_attr: str | None = None
    heads: int = 0
    head_dim: int = 0
    layers: list[nn.Module] = field(default_factory=list)

    @property
    def is_attention(self) -> bool:
        return self.owner is not None


def user_ignored(model: nn.Module, ignore: tuple[str, ...]) -> list[nn.Module]:
    """Modules whose name matches one of the ``ignore`` glob patterns."""
    return [m for n, m in model.named_modules() if n and any(fnmatch.fnmatch(n, p) for p in ignore)]


@dataclass(frozen=True, kw_only=True)
class Traced:
    """A traced model: its torch-pruning graph, its output layers (the classifier) and its output shape."""

    graph: Any
    outputs: list[nn.Module]
    output_shape: tuple[int, ...] | None


def trace(model: nn.Module, example_input: torch.Tensor) -> Traced:
    """Trace ``model`` once into a torch-pruning DependencyGraph, noting which layers produce its output.

    Raises:
        PlanError: the model fails on its example input or cannot be traced.
    """
    import warnings

    import torch_pruning as tp

    produced: dict[int, nn.Module] = {}
    result: list[Any] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: produced.__setitem__(id(out), mod))
             for m in model.modules() if isinstance(m, ROOT_TYPES)]
    hooks.append(model.register_forward_hook(lambda _m, _i, out: result.append(out)))
    try:
        # torch-pruning traces through autograd: tracing must work even when called under no_grad()
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")  # unwrapped parameters (position embeddings) are handled, not news
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
    except Exception as err:  # noqa: BLE001 - tracing failures of user models are user-facing
        raise PlanError(f"model {type(model).__name__} cannot be traced for pruning at input "
                        f"{tuple(example_input.shape)}: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    finally:
        for h in hooks:
            h.remove()
    out = result[-1]
    outs = out if isinstance(out, (tuple, list)) else [out]
    return Traced(graph=graph, outputs=[produced[id(o)] for o in outs if id(o) in produced],
                  output_shape=tuple(out.shape) if isinstance(out, torch.Tensor) else None)


def _parent(names: dict[nn.Module, str], model: nn.Module, module: nn.Module) -> nn.Module | None:
    name = names.get(module, "")
    if "." not in name:
        return model if name else None
    return model.get_submodule(name.rsplit(".", 1)[0])


def _head_owner(model: nn.Module, names: dict[nn.Module, str], outs: list[nn.Module], ins: list[nn.Module]):
    """(owner, attr, heads) when every out-projection of the group sits in one module storing a head count."""
    owners = {_parent(names, model, m) for m in outs}
    if len(owners) != 1 or not ins:
        return None
    owner = owners.pop()
    if owner is None or not any(_parent(names, model, m) is owner for m in ins):
        return None
    for attr in HEAD_ATTRS:
        heads = getattr(owner, attr, None)
        if isinstance(heads, int) and heads > 1:
            return owner, attr, heads
    return None


def _index_error(group, names: dict[nn.Module, str]) -> str:
    """Why torch-pruning's channel mapping of ``group`` is unusable ('' when every index fits its layer)."""
    for dep, idxs in group:
        layer = dep.target.module
        if not isinstance(layer, (*ROOT_TYPES, nn.modules.batchnorm._BatchNorm, nn.LayerNorm)) or not len(idxs):
            continue
        if isinstance(layer, nn.LayerNorm):
            width = layer.normalized_shape[-1]
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            width = layer.num_features
        else:
            width = layer.weight.shape[0 if graph_is_out(dep.handler) else 1] * (
                1 if graph_is_out(dep.handler) else getattr(layer, "groups", 1))
        if max(int(i) for i in idxs) >= width:
            return (f"unsupported op: channels reach {names.get(layer, type(layer).__name__)} through a reshape/"
                    "transpose of the channel axis (e.g. a channel shuffle) that torch-pruning cannot map")
    return ""


def analyse(model: nn.Module, graph, ignored: list[nn.Module]) -> tuple[list[GroupInfo], dict[nn.Module, str]]:
    """Every prunable group with its channel grouping and attention-head layout, in graph order.

    Returns:
        The groups, and the root layers of groups that cannot be pruned safely, with the reason.
    """
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    infos, rejected = [], {}
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=ROOT_TYPES):
        root = group[0].dep.target.module
        why = _index_error(group, names)
        if why:
            for dep, _ in group:
                if graph_is_out(dep.handler) and isinstance(dep.target.module, ROOT_TYPES):
                    rejected[dep.target.module] = why
            continue
        info = GroupInfo(name=names[root], root=root, group=group, channels=int(graph.get_out_channels(root)))
        outs, ins, units = [], [], [1]
        for dep, _ in group:
            layer, fn = dep.target.module, dep.handler
            if layer in names:
                info.layers.append(layer)
            if fn in (tp.prune_conv_out_channels, tp.prune_conv_in_channels) and layer.groups > 1:
                units.append(layer.groups)  # grouped conv: every group keeps the same width
            elif isinstance(layer, nn.MultiheadAttention):
                units.append(layer.num_heads)  # embed_dim must stay divisible by the head count
            elif isinstance(layer, tp.ops._SplitOp) and layer.split_sizes and len(set(layer.split_sizes)) == 1:
                units.append(len(layer.split_sizes))  # chunk(): parts must stay equal
            if fn == tp.prune_linear_out_channels:
                outs.append(layer)
            elif fn == tp.prune_linear_in_channels:
                ins.append(layer)
        info.channel_groups = max(units)
        attention = _head_owner(model, names, outs, ins)
        if attention is not None:
            owner, attr, heads = attention
            per_head = [m.in_features // heads for m in ins if _parent(names, model, m) is owner]
            if per_head and info.channels % (heads * per_head[0]) == 0:
                info.owner, info.head_attr, info.heads, info.head_dim = owner, attr, heads, per_head[0]
        infos.append(info)
    return infos, rejected


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
        elif isinstance(layer, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
            kinds.append("norm")
        elif isinstance(layer, nn.MultiheadAttention):
            kinds.append("nn.MultiheadAttention embed_dim")
        elif isinstance(layer, nn.Parameter):
            kinds.append("parameter")
    if info.is_attention:
        kinds.append("attention heads")
    return tuple(dict.fromkeys(kinds))


def _leaf_weighted(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules()
            if n and any(True for _ in m.parameters(recurse=False))}


def discover(model: nn.Module, example_input: torch.Tensor, ignore: tuple[str, ...] = (), nm_m: int = 4) -> Discovery:
    """The full discovery report of ``model`` at ``example_input`` (``nm_m``: the M of N:M sparsity).

    Raises:
        PlanError: the model cannot be traced.
    """
    import torch_pruning as tp

    from autoprune.pruning.masks import nm_applicable

    traced = trace(model, example_input)
    outputs, ignored = traced.outputs, user_ignored(model, ignore)
    infos, rejected = analyse(model, traced.graph, outputs + ignored)
    with torch.no_grad():
        macs, params, layer_macs, layer_params = tp.utils.count_ops_and_params(model, example_input, layer_wise=True)
    names = {m: n for n, m in model.named_modules()}
    groups = []
    for info in infos:
        mods = list(dict.fromkeys(info.layers))
        group_macs = sum(layer_macs.get(m) or 0 for m in mods)
        group_params = sum(layer_params.get(m) or 0 for m in mods)
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
    return Discovery(model=type(model).__name__, groups=tuple(groups),
                     left_out=tuple(_left_out(model, infos, rejected, outputs, ignored)), macs=int(macs), params=int(params))


def _left_out(model: nn.Module, infos: list[GroupInfo], rejected: dict[nn.Module, str], outputs: list[nn.Module],
              ignored: list[nn.Module]) -> list[LeftOut]:
    """Weighted layers whose output channels no group prunes, and why; plus partial support notes."""
    mha_parts = {m for mha in model.modules() if isinstance(mha, nn.MultiheadAttention) for m in mha.modules()
                 if m is not mha}
    roots = {info.root for info in infos}
    out_pruned = {dep.target.module for info in infos for dep, _ in info.group
                  if graph_is_out(dep.handler)}
    ignored_set = set(ignored) | {m for i in ignored for m in i.modules()}
    left = []
    for name, module in _leaf_weighted(model).items():
        kind = type(module).__name__
        if isinstance(module, nn.MultiheadAttention):
            left.append(LeftOut(layer=name, type=kind, reason=(
                "heads not prunable: nn.MultiheadAttention packs q/k/v in one in_proj and torch-pruning only shrinks "
                "its embed_dim (pruned with the residual group); use separate q/k/v Linear layers for head pruning")))
            continue
        if module in roots or module in out_pruned or module in mha_parts:
            continue
        if module in rejected:
            reason = rejected[module]
        elif module in outputs:
            reason = "final classifier (its outputs are the model's outputs)"
        elif module in ignored_set:
            reason = "user-ignored (search space `ignore`)"
        elif isinstance(module, ROOT_TYPES):
            reason = "unsupported op: its output channels reach no prunable group (a shape op torch-pruning cannot map)"
        elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.Embedding,
                                 nn.PReLU)):
            continue  # norms and embeddings follow their producer's group; a producer left out is reported above
        else:
            reason = f"unsupported op: no torch-pruning handler for {kind}"
        left.append(LeftOut(layer=name, type=kind, reason=reason))
    return left


def graph_is_out(handler) -> bool:
    """Whether a torch-pruning handler removes output channels of its layer."""
    import torch_pruning as tp

    return handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels, tp.prune_depthwise_conv_out_channels)


def discover_groups(model: nn.Module, example_input: torch.Tensor, ignore: tuple[str, ...] = ()) -> list[PrunableGroup]:
    """The prunable groups of ``model`` in graph order (``discover(...).groups`` as a list)."""
    return list(discover(model, example_input, ignore).groups)
