"""Depth pruning: whole blocks a model can lose without changing any shape (the ``drop`` structure).

A *droppable block* is an entry of a ``nn.ModuleList`` or ``nn.Sequential`` (a stack of layers:
Hugging Face ``BertLayer``, ResNet basic/bottleneck blocks, ViT encoder blocks, MobileNetV2's
residual blocks) that holds at least two weighted Conv/Linear layers, is called once per
forward, and returns a tensor of exactly the shape and dtype of the tensor it takes (its first
input). Dropping it removes it from its stack, so the stack's next entry reads what the dropped
one read: the pruned model equals the dense model with that block replaced by identity.

The block's shape rule is checked on the example input; the pruned model's outputs are
checked by the pruner like every plan's. A model that records its depth in a Hugging Face
config (``num_hidden_layers``, ``n_layers``, ``num_layers``) gets that number updated, so the
model and its config agree (saving with ``save_pretrained``, rebuilding from the plan).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from autoprune.inputs import Inputs, call, primary_output

#: attribute names of a (Hugging Face) config that hold the depth of the model's layer stack
DEPTH_ATTRS = ("num_hidden_layers", "n_layers", "num_layers")
STACKS = (nn.ModuleList, nn.Sequential)
WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(kw_only=True)
class BlockInfo:
    """One droppable block: its module name, the module, its stack and the weighted layers inside it."""

    name: str
    module: nn.Module
    stack: nn.Module
    layers: list[str] = field(default_factory=list)

    @property
    def type(self) -> str:
        return type(self.module).__name__


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


def find_blocks(model: nn.Module, example_input: Inputs) -> list[BlockInfo]:
    """Every droppable block of ``model`` in module order (see the module docstring for the rule)."""
    candidates: dict[nn.Module, BlockInfo] = {}
    for stack_name, stack in model.named_modules():
        if not isinstance(stack, STACKS):
            continue
        for child_name, child in stack.named_children():
            layers = [n for n, m in child.named_modules() if isinstance(m, WEIGHTED)]
            if len(layers) >= 2:
                name = f"{stack_name}.{child_name}" if stack_name else child_name
                candidates[child] = BlockInfo(name=name, module=child, stack=stack,
                                              layers=[f"{name}.{n}" for n in layers])
    if not candidates:
        return []
    calls: dict[nn.Module, list[bool]] = {m: [] for m in candidates}

    def hook(module, args, kwargs, output) -> None:
        x = _first_tensor(args, kwargs)
        try:
            y = primary_output(output)
        except TypeError:
            y = None
        calls[module].append(x is not None and y is not None and x.shape == y.shape and x.dtype == y.dtype)

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in candidates]
    try:
        with torch.no_grad():
            call(model, example_input)
    finally:
        for handle in handles:
            handle.remove()
    return [info for m, info in candidates.items() if calls[m] == [True]]


def drop_blocks(model: nn.Module, blocks: list[BlockInfo]) -> dict[str, int]:
    """Remove ``blocks`` from their stacks in place; returns, per stack name, its depth after.

    Hugging Face configs that recorded a stack's old depth are set to the new one.
    """
    names = {m: n for n, m in model.named_modules()}
    depths: dict[str, int] = {}
    before = {id(b.stack): len(b.stack) for b in blocks}
    for block in blocks:
        stack = block.stack
        index = next(i for i, child in enumerate(stack) if child is block.module)
        del stack[index]  # both stacks renumber their entries
        depths[names[stack]] = len(stack)
    for block in blocks:
        _update_depth(model, block.stack, before[id(block.stack)])
    return depths


def _update_depth(model: nn.Module, stack: nn.Module, old: int) -> None:
    """Set a config's depth that equals the stack's old length, in every module holding the stack."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is None or not any(m is stack for m in module.modules()):
            continue
        for attr in DEPTH_ATTRS:
            if getattr(config, attr, None) == old:
                setattr(config, attr, len(stack))
