"""MACs and parameter counts of a model at its example input."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True, kw_only=True)
class ModelStats:
    macs: int
    params: int


def model_stats(model: nn.Module, example_input: torch.Tensor) -> ModelStats:
    """Multiply-accumulates of one forward pass at ``example_input`` and the parameter count."""
    import torch_pruning as tp

    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example_input)
    return ModelStats(macs=int(macs), params=int(params))
