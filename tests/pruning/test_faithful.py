"""Physically pruned == dense with the dropped channels cut off, for every CNN group of every family.

If torch-pruning's index mapping were wrong anywhere (concat offsets, splits, depthwise, grouped
convs), the pruned model would compute something else than the dense model without those
channels; zeroing every consumer's input weights for the dropped channels is that model.
"""
from __future__ import annotations

import copy

import pytest
import torch

from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan
from autoprune.pruning import apply_plan
from autoprune.pruning.graph import analyse, trace
from autoprune.testing.models import TINY

CNNS = ["resnet_basic", "resnet_bottleneck", "mobilenetv2", "efficientnet", "densenet", "shufflenet", "regnet"]


def _cut_inputs(layer: torch.nn.Module, idxs: list[int]) -> None:
    """Zero the weights that read input channels ``idxs`` (grouped convs: within each channel's group)."""
    if isinstance(layer, torch.nn.Conv2d) and layer.groups > 1:
        in_pg, out_pg = layer.in_channels // layer.groups, layer.out_channels // layer.groups
        for i in idxs:
            g = i // in_pg
            layer.weight[g * out_pg:(g + 1) * out_pg, i % in_pg] = 0
    else:
        layer.weight[:, idxs] = 0


@torch.no_grad()
@pytest.mark.parametrize("name", CNNS)
def test_pruning_equals_cutting_the_dropped_channels(name: str) -> None:
    import torch_pruning as tp

    build, x = TINY[name]
    torch.manual_seed(0)
    dense = build().eval()
    for bn in (m for m in dense.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.normal_(0, 0.5)  # non-trivial BN so a wrong channel would show
        bn.running_var.uniform_(0.5, 2.0)
    traced = trace(dense, x)
    infos, _ = analyse(dense, traced.graph, traced.outputs)
    names = {m: n for n, m in dense.named_modules()}
    for info in infos:
        pruned = copy.deepcopy(dense)
        dropped = apply_plan(pruned, x, PruningPlan.of({info.name: GroupPlan(ratio=0.5)}),
                             PrunerSettings(round_to=1)).removed[info.name]
        assert dropped, info.name
        cut = copy.deepcopy(dense)
        group = traced.graph.get_pruning_group(info.root, info.group[0].dep.handler, dropped)
        for dep, idxs in group:
            if dep.handler in (tp.prune_conv_in_channels, tp.prune_linear_in_channels):
                _cut_inputs(cut.get_submodule(names[dep.target.module]), list(idxs))
        torch.testing.assert_close(pruned(x), cut(x), rtol=1e-4, atol=1e-5, msg=f"{name}: group {info.name}")
