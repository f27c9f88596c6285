"""MACs and parameter counts of a model at its example input.

MACs are counted at the level of PyTorch's operators (``torch.utils.flop_counter``: convolutions,
matrix products, attention kernels), so a Linear used functionally (``F.linear(x, self.qkv.weight)``
in torchvision's Swin) and the attention products (q @ k, attention @ v) count too; a per-module
counter sees neither. ``nn.MultiheadAttention``'s fused inference kernel has no formula, so it is
switched to its unfused path while counting (same computation).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from autoprune.inputs import Inputs, call


@dataclass(frozen=True, kw_only=True)
class ModelStats:
    macs: int
    params: int


def _custom_formulas() -> dict:
    """Attention kernels PyTorch's counter has no formula for on CPU."""
    from torch.utils.flop_counter import sdpa_flop_count

    formulas = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        formulas[op] = lambda query, key, value, *args, out_shape=None, **kwargs: sdpa_flop_count(query, key, value)
    return formulas


def count_macs(model: nn.Module, example_input: Inputs) -> tuple[int, dict[str, int]]:
    """Multiply-accumulates of one forward pass: the total, and per module name.

    A module counts what runs inside it.
    """
    from torch.utils.flop_counter import FlopCounterMode

    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    counter = FlopCounterMode(display=False, custom_mapping=_custom_formulas())
    try:
        with torch.no_grad(), counter:
            call(model, example_input)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    root = type(model).__name__
    per_module: dict[str, int] = defaultdict(int)
    for name, ops in counter.get_flop_counts().items():
        per_module[_relative(name, root)] = sum(ops.values()) // 2
    return counter.get_total_flops() // 2, dict(per_module)


def _relative(name: str, root: str) -> str:
    """The counter names modules ``Global``, ``ResNet`` and ``ResNet.layer1.0``; ``named_modules`` says ``layer1.0``."""
    if name in ("Global", root):
        return ""
    return name.removeprefix(root + ".")


def model_stats(model: nn.Module, example_input: Inputs) -> ModelStats:
    """Multiply-accumulates of one forward pass at ``example_input`` and the parameter count.

    The model is called as :func:`autoprune.inputs.call` does (a tensor whole, a tuple by
    position, a dict by name).
    """
    macs, _ = count_macs(model, example_input)
    return ModelStats(macs=int(macs), params=sum(p.numel() for p in model.parameters()))
