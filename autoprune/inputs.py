"""Model inputs and outputs of the shapes users bring: a tensor, a tuple of tensors, or a dict of tensors.

One calling convention everywhere (tracing, pruning checks, fine-tuning, evaluation, export,
latency): a tensor is passed as ``model(x)``, a tuple or list as ``model(*xs)``, a mapping as
``model(**xs)``. A tensor is never unpacked (``model(*x)`` on a batch-1 tensor silently drops
the batch dimension). Outputs (a tensor, tuple, list, dict or a Hugging Face ``ModelOutput``)
are flattened to named tensors, so their shapes can be checked and exported.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Union

import torch
from torch import nn

#: what a model takes: one tensor, several by position, or several by name (batch first)
Inputs = Union[torch.Tensor, tuple[torch.Tensor, ...], Mapping[str, torch.Tensor]]


def call(model: Callable[..., Any], inputs: Inputs) -> Any:
    """``model`` applied to ``inputs`` by the convention above."""
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    raise TypeError(f"model inputs must be a tensor, a tuple of tensors or a dict of tensors, got "
                    f"{type(inputs).__name__}")


def map_tensors(inputs: Inputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
    """``inputs`` with ``fn`` applied to every tensor, same structure."""
    if isinstance(inputs, torch.Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return {k: fn(v) for k, v in inputs.items()}
    return tuple(fn(v) for v in inputs)


def named_tensors(inputs: Inputs) -> list[tuple[str, torch.Tensor]]:
    """The input tensors in calling order with stable names (``input``; ``input0``...; the dict's keys)."""
    if isinstance(inputs, torch.Tensor):
        return [("input", inputs)]
    if isinstance(inputs, Mapping):
        return list(inputs.items())
    return [(f"input{i}", t) for i, t in enumerate(inputs)]


def rebuild(inputs: Inputs, tensors: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> Inputs:
    """``inputs``' structure filled with ``tensors`` in ``named_tensors`` order."""
    if isinstance(inputs, torch.Tensor):
        return tensors[0]
    if isinstance(inputs, Mapping):
        return dict(zip(inputs.keys(), tensors))
    return tuple(tensors)


def batch_size(inputs: Inputs) -> int:
    """The batch size (first dimension of the first tensor)."""
    return int(named_tensors(inputs)[0][1].shape[0])


def take(inputs: Inputs, n: int) -> Inputs:
    """The first ``n`` samples."""
    return map_tensors(inputs, lambda t: t[:n])


def repeat_batch(inputs: Inputs, n: int) -> Inputs:
    """The first sample repeated to a batch of ``n`` (contiguous, as runtimes want)."""
    return map_tensors(inputs, lambda t: t[:1].repeat(n, *([1] * (t.dim() - 1))).contiguous())


def describe(inputs: Inputs) -> str:
    """Shapes for messages: ``(1, 3, 224, 224)`` or ``{input_ids: (1, 128), attention_mask: (1, 128)}``."""
    if isinstance(inputs, torch.Tensor):
        return str(tuple(inputs.shape))
    parts = [f"{name}: {tuple(t.shape)}" for name, t in named_tensors(inputs)]
    return "{" + ", ".join(parts) + "}" if isinstance(inputs, Mapping) else "(" + ", ".join(parts) + ")"


def flatten_outputs(out: Any, prefix: str = "output") -> list[tuple[str, torch.Tensor]]:
    """Every tensor in a model's output with its path (``output``, ``output.0``, ``output.last_hidden_state``).

    Mappings (a Hugging Face ``ModelOutput`` is one) keep their key order; ``None`` entries and
    values that are not tensors are skipped.
    """
    if isinstance(out, torch.Tensor):
        return [(prefix, out)]
    if isinstance(out, Mapping):
        items = list(out.items())
    elif isinstance(out, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(out)]
    else:
        return []
    flat: list[tuple[str, torch.Tensor]] = []
    for key, value in items:
        flat.extend(flatten_outputs(value, f"{prefix}.{key}"))
    return flat


def output_signature(out: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(path, shape) of every output tensor: equal before and after pruning, or the outputs changed."""
    return tuple((name, tuple(t.shape)) for name, t in flatten_outputs(out))


def primary_output(out: Any) -> torch.Tensor:
    """The tensor a metric or loss reads by default: the output itself, or its first tensor."""
    flat = flatten_outputs(out)
    if not flat:
        raise TypeError(f"the model's output holds no tensor (got {type(out).__name__})")
    return flat[0][1]


class PositionalModule(nn.Module):
    """Wraps a model so plain tensors go in by position and a flat tuple of tensors comes out.

    Exporters (ONNX's TorchScript exporter, ``torch.export``) and runtimes want exactly that;
    models with keyword inputs or structured outputs (Hugging Face) do not offer it.
    """

    def __init__(self, model: nn.Module, example: Inputs) -> None:
        super().__init__()
        self.model = model
        self._example = example
        self.input_names = [name for name, _ in named_tensors(example)]
        with torch.no_grad():
            self.output_names = [name for name, _ in flatten_outputs(call(model, example))]

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = call(self.model, rebuild(self._example, tensors))
        return tuple(t for _, t in flatten_outputs(out))
