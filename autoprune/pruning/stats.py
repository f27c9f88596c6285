"""MACs and parameter counts of a model at its example input."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import torch
from torch import nn

from autoprune.inputs import Inputs


@dataclass(frozen=True, kw_only=True)
class ModelStats:
    macs: int
    params: int


def model_stats(model: nn.Module, example_input: Inputs) -> ModelStats:
    """Multiply-accumulates of one forward pass at ``example_input`` and the parameter count.

    torch-pruning's counter calls the model as :func:`autoprune.inputs.call` does (a tensor is
    passed whole, a tuple by position, a dict by name).
    """
    import torch_pruning as tp

    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # its batch-size notes are not ours to print
        macs, params = tp.utils.count_ops_and_params(model, example_input)
    return ModelStats(macs=int(macs), params=int(params))
