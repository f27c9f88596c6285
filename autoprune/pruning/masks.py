"""Sparsity masks: unstructured magnitude (per layer or per group) and N:M (2:4 by default).

A mask is a boolean tensor shaped like a layer's weight (True = keep). Masks are applied by
multiplying the weight in place, so the state_dict keeps its keys and a masked model exports
and reloads like any other; fine-tuning re-applies them after every optimizer step.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from autoprune.errors import PlanError
from autoprune.plan import MASK_SCOPES


def magnitude_masks(scores: dict[str, torch.Tensor], ratio: float, scope: str = "layer") -> dict[str, torch.Tensor]:
    """Keep the highest-scoring ``1 - ratio`` of weights, ranked per layer or across the group's layers."""
    if scope not in MASK_SCOPES:
        raise PlanError(f"mask scope {scope!r} is not one of {', '.join(MASK_SCOPES)}")
    if scope == "group":
        flat = torch.cat([s.flatten() for s in scores.values()])
        drop = int(ratio * flat.numel())
        if drop == 0:
            return {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
        threshold = torch.kthvalue(flat, drop).values
        return {n: s > threshold for n, s in scores.items()}
    masks = {}
    for name, s in scores.items():
        drop = int(ratio * s.numel())
        mask = torch.ones(s.numel(), dtype=torch.bool)
        if drop:
            mask[torch.argsort(s.flatten())[:drop]] = False
        masks[name] = mask.view_as(s)
    return masks


def nm_applicable(module: nn.Module, m: int) -> str:
    """'' when ``module`` can take an N:M mask along its input dimension, else why not."""
    fan_in = module.weight.shape[1]
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and fan_in == 1:
        return "depthwise convolution (one input per filter)"
    if fan_in % m:
        return f"input width {fan_in} is not a multiple of M={m}"
    return ""


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest scores in every block of ``m`` consecutive inputs (per output, per kernel tap)."""
    # move the input dimension last so blocks run along it, as sparse kernels expect
    moved = scores.movedim(1, -1) if scores.dim() > 2 else scores
    blocks = moved.reshape(-1, m)
    keep = torch.zeros_like(blocks, dtype=torch.bool)
    keep.scatter_(1, torch.topk(blocks, n, dim=1).indices, True)
    keep = keep.view_as(moved)
    return keep.movedim(-1, 1) if scores.dim() > 2 else keep


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked weights in place (idempotent)."""
    with torch.no_grad():
        for name, mask in masks.items():
            weight = model.get_submodule(name).weight
            weight.mul_(mask.to(weight.device, weight.dtype))


def mask_reapplier(masks: dict[str, torch.Tensor]) -> Callable[[nn.Module], None]:
    """A ``fine_tune(after_step=...)`` hook that keeps ``masks`` enforced."""
    return lambda model: apply_masks(model, masks)


def layer_sparsity(model: nn.Module, names: list[str]) -> dict[str, float]:
    """Share of exactly-zero weights per named layer (what was achieved, not what was asked)."""
    out = {}
    for name in names:
        w = model.get_submodule(name).weight
        out[name] = round(float((w == 0).sum()) / w.numel(), 4)
    return out
