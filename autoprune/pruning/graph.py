"""Discover prunable groups: sets of layers whose channels must be removed together.

torch-pruning's DependencyGraph traces the model once and couples layers across residual
adds, concatenations, depthwise convolutions and norms. Each group is named after its root
layer (a module name such as ``stages.1.conv1``); that name is the key of a PruningPlan.
The final classifier (the layer that produces the model's output) is never pruned.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from torch import nn

from autoprune.errors import PlanError

ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True, kw_only=True)
class PrunableGroup:
    """One prunable group: its name (root layer), channel count and coupled layers."""

    name: str
    channels: int
    layers: tuple[str, ...]
    root_type: str


def output_layers(model: nn.Module, example_input: torch.Tensor) -> list[nn.Module]:
    """The Conv/Linear layers whose output *is* the model's output (the classifier head)."""
    produced: dict[int, nn.Module] = {}
    hooks = [m.register_forward_hook(lambda mod, _i, out: produced.__setitem__(id(out), mod))
             for m in model.modules() if isinstance(m, ROOT_TYPES)]
    try:
        with torch.no_grad():
            out = model(example_input)
    finally:
        for h in hooks:
            h.remove()
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [produced[id(o)] for o in outs if id(o) in produced]


def ignored_modules(model: nn.Module, example_input: torch.Tensor, ignore: tuple[str, ...] = ()) -> list[nn.Module]:
    """Output layers plus every module whose name matches one of the ``ignore`` glob patterns."""
    matched = [m for n, m in model.named_modules() if n and any(fnmatch.fnmatch(n, p) for p in ignore)]
    return output_layers(model, example_input) + matched


def build_graph(model: nn.Module, example_input: torch.Tensor):
    """Trace ``model`` into a torch-pruning DependencyGraph; PlanError if it cannot be traced."""
    import torch_pruning as tp

    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    except Exception as err:  # noqa: BLE001 - tracing failures of user models are user-facing
        raise PlanError(f"model {type(model).__name__} cannot be traced for pruning: {type(err).__name__}: {err}") from None


def iter_groups(model: nn.Module, graph, ignored: list[nn.Module]):
    """Yield (name, root module, torch-pruning group) for every prunable group."""
    names = {m: n for n, m in model.named_modules()}
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=ROOT_TYPES):
        root = group[0].dep.target.module
        yield names[root], root, group


def discover_groups(model: nn.Module, example_input: torch.Tensor, ignore: tuple[str, ...] = ()) -> list[PrunableGroup]:
    """List the prunable groups of ``model`` in graph order."""
    graph = build_graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    found = []
    for name, root, group in iter_groups(model, graph, ignored_modules(model, example_input, ignore)):
        layers = tuple(dict.fromkeys(names[d.target.module] for d, _ in group if d.target.module in names))
        found.append(PrunableGroup(name=name, channels=int(graph.get_out_channels(root)), layers=layers,
                                   root_type=type(root).__name__))
    return found
