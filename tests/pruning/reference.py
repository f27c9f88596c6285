"""The model a pruned model must equal: the dense model with the removed channels and heads cut out.

Removing channel ``c`` of a group means no layer reads it any more. In the dense model that is:
every Conv/Linear that consumes the group's channels gets zero weights on ``c``'s input positions
(as torch-pruning maps them, which is what is under test), ``nn.MultiheadAttention`` also loses
the q/k/v rows of ``c`` (its inner width follows ``embed_dim``), and a norm that normalises over
channels (LayerNorm, GroupNorm) normalises over the kept ones only. Layers that only produce
channels (BatchNorm, biases, embeddings, parameters) need nothing: no one reads their dropped part.
If torch-pruning's index mapping were wrong anywhere (a shuffle, a channel-last reshape, a head
mixed with another), the physically pruned model would compute something else than this one.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from autoprune.inputs import Inputs, call, flatten_outputs
from autoprune.pruning.graph import analyse, trace
from autoprune.pruning.probe import channel_axis

CHANNEL_NORMS = (nn.LayerNorm, nn.GroupNorm)


@torch.no_grad()
def scramble(model: nn.Module, seed: int = 0) -> nn.Module:
    """Make every parameter and norm statistic matter, so a wrongly mapped channel shows in the output.

    Random-init models keep BatchNorm at identity statistics and start layer scales, class tokens
    and biases at (near) zero; those would hide a wrong channel.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.5)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) * 1.5 + 0.5)
    for param in model.parameters():
        if param.abs().max() < 1e-3 or (param.dim() == 1 and bool((param == 1).all())):
            param.copy_(torch.randn(param.shape, generator=gen) * 0.5 + (1.0 if param.dim() == 1 else 0.0))
    return model.eval()


def _cut_inputs(layer: nn.Module, idxs: list[int]) -> None:
    """Zero the weights that read input channels ``idxs`` (grouped convs: within each channel's group)."""
    if isinstance(layer, nn.modules.conv._ConvNd) and layer.groups > 1:
        in_pg, out_pg = layer.in_channels // layer.groups, layer.out_channels // layer.groups
        for i in idxs:
            g = i // in_pg
            layer.weight[g * out_pg:(g + 1) * out_pg, i % in_pg] = 0
    else:
        layer.weight[:, idxs] = 0


def _cut_attention(mha: nn.MultiheadAttention, idxs: list[int]) -> None:
    """Cut embed channels ``idxs`` from a MultiheadAttention: its inputs and its q/k/v inner channels."""
    e = mha.embed_dim
    rows = [i + s * e for s in range(3) for i in idxs]
    mha.in_proj_weight[:, idxs] = 0
    mha.in_proj_weight[rows] = 0
    if mha.in_proj_bias is not None:
        mha.in_proj_bias[rows] = 0


class _KeptChannelsNorm(nn.Module):
    """A channel norm that normalises over the kept channels only and outputs zeros on the dropped ones."""

    def __init__(self, norm: nn.Module, dropped: list[int]) -> None:
        import torch_pruning as tp

        super().__init__()
        width = norm.normalized_shape[-1] if isinstance(norm, nn.LayerNorm) else norm.num_channels
        self.width = width
        self.keep = torch.tensor(sorted(set(range(width)) - set(dropped)))
        self.norm = copy.deepcopy(norm)
        prune = tp.prune_layernorm_out_channels if isinstance(norm, nn.LayerNorm) else tp.prune_groupnorm_out_channels
        prune(self.norm, sorted(dropped))
        self.original = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = channel_axis(self.original, x.shape, self.width) % x.dim()
        out = torch.zeros_like(x)
        return out.index_copy(axis, self.keep, self.norm(x.index_select(axis, self.keep)))


@torch.no_grad()
def cut_reference(dense: nn.Module, inputs: Inputs, removed: dict[str, list[int]]) -> nn.Module:
    """A copy of ``dense`` with the root channels ``removed[group]`` of each group cut out.

    See the module docstring.
    """
    import torch_pruning as tp

    ref = copy.deepcopy(dense)
    traced = trace(ref, inputs)
    infos = {i.name: i for i in analyse(ref, traced, []).infos}
    names = traced.guarded.names
    norms: dict[nn.Module, list[int]] = {}
    for name, idxs in removed.items():
        if not idxs:
            continue
        info = infos[name]
        for dep, dep_idxs in traced.guarded.get_pruning_group(info.root, info.handler, idxs):
            layer, fn = dep.target.module, dep.handler
            if not isinstance(layer, nn.Module) or layer not in names:
                continue
            if isinstance(layer, nn.MultiheadAttention):
                _cut_attention(layer, list(dep_idxs))
            elif isinstance(layer, CHANNEL_NORMS):
                norms.setdefault(layer, []).extend(dep_idxs)
            elif fn in (tp.prune_conv_in_channels, tp.prune_linear_in_channels):
                _cut_inputs(layer, list(dep_idxs))
    for layer, idxs in norms.items():
        parent, _, attr = names[layer].rpartition(".")
        setattr(ref.get_submodule(parent) if parent else ref, attr, _KeptChannelsNorm(layer, sorted(set(idxs))))
    return ref


@torch.no_grad()
def assert_same_outputs(pruned: nn.Module, reference: nn.Module, inputs: Inputs, *, rtol: float = 1e-4,
                        atol: float = 1e-5, msg: str = "") -> None:
    """Every output tensor of ``pruned`` equals ``reference``'s (atol relative to the output's scale)."""
    got, want = flatten_outputs(call(pruned, inputs)), flatten_outputs(call(reference, inputs))
    assert [n for n, _ in got] == [n for n, _ in want], msg
    for (name, a), (_, b) in zip(got, want, strict=False):
        scale = float(b.abs().max()) or 1.0
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * scale, msg=f"{msg}: output {name}")
