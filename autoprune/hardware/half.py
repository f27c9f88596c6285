"""fp16 candidates for CUDA profiles: the model cast to half precision by PyTorch, exported with fp32 inputs/outputs.

PyTorch's own ``.half()`` does the conversion (no converter of ONNX graphs to maintain): every
parameter and buffer becomes float16, a wrapper casts floating inputs to float16 on the way in and
floating outputs back to float32 on the way out, and the TorchScript exporter writes the graph
(float16 initializers and Conv/Gemm/MatMul, two Cast nodes at the edges). Callers feed and read the
file exactly as the fp32 one; token ids and other integer inputs pass unchanged. Layers a plan keeps
in fp32 (``keep_fp32`` globs) stay float32 modules with casts around them.

fp16 has a range of +-65504: a model whose activations overflow it is rejected here, naming the
first layer whose output became infinite where the fp32 model's is finite. Only CUDA profiles
offer fp16 (``OnnxRuntimeBackend.runnable_precisions``): ONNX Runtime's CPU kernels run such a file,
but not faster than fp32.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from autoprune.hardware.quantize import QuantizationError, QuantizedModel, keep_fp32_layers

if TYPE_CHECKING:
    import torch
    from torch import nn

    from autoprune.inputs import Inputs


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """``value`` (a tensor, or a tuple/list/mapping of them) with every floating tensor cast to ``dtype``."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, Mapping):
        return {k: _cast(v, dtype) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _keep_float(module: nn.Module) -> None:
    """Make ``module`` a float32 island inside a half model: float32 weights, inputs cast up, outputs cast down."""
    import torch

    module.float()
    module.register_forward_pre_hook(
        lambda _m, args, kwargs: (_cast(args, torch.float32), _cast(kwargs, torch.float32)), with_kwargs=True)
    module.register_forward_hook(lambda _m, _args, out: _cast(out, torch.float16))


def half_model(model: nn.Module, keep_fp32: Sequence[str] = ()) -> nn.Module:
    """A float16 copy of ``model`` that takes and returns float32 tensors; ``keep_fp32`` layers stay float32.

    Raises:
        QuantizationError: a ``keep_fp32`` glob matches no layer.
    """
    import torch
    from torch import nn

    half = copy.deepcopy(model).eval().half()
    modules = dict(half.named_modules())
    for layers in keep_fp32_layers(list(modules), keep_fp32).values():
        for name in layers:
            _keep_float(modules[name])

    class Fp32Io(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return _cast(self.inner(*_cast(args, torch.float16), **_cast(kwargs, torch.float16)), torch.float32)

    return Fp32Io(half).eval()


def first_overflow(model: nn.Module, half: nn.Module, example_input: Inputs) -> str | None:
    """The first layer (in execution order) whose fp16 output is not finite where its fp32 output is; None if none."""
    import torch

    from autoprune.inputs import call, flatten_outputs

    def outputs(net: nn.Module, prefix: str, x: Inputs) -> list[tuple[str, list[torch.Tensor]]]:
        seen: list[tuple[str, list[torch.Tensor]]] = []
        handles = [m.register_forward_hook(
            lambda _m, _a, out, name=name: seen.append((name, [t.float() for _, t in flatten_outputs(out)])))
            for name, m in net.named_modules(prefix="") if name.startswith(prefix) and name != prefix.rstrip(".")]
        try:
            with torch.no_grad():
                call(net, x)
        finally:
            for h in handles:
                h.remove()
        return seen

    # the same architecture runs its layers in the same order: pair the calls one to one
    for (name, fp32), (_, tensors) in zip(outputs(model, "", example_input), outputs(half, "inner.", example_input),
                                          strict=False):
        for f, h in zip(fp32, tensors, strict=False):
            if f.shape == h.shape and not torch.isfinite(h[torch.isfinite(f)]).all():
                return name
    return None


def convert_fp16(model: nn.Module, example_input: Inputs, *, keep_fp32: Sequence[str] = ()) -> QuantizedModel:
    """``model`` in float16 as an ONNX file with float32 inputs and outputs and a dynamic batch axis.

    Raises:
        QuantizationError: the model's activations overflow fp16 (the layer named), a ``keep_fp32`` glob matches
            no layer, or the export failed (the message says which).
    """
    from autoprune.hardware.onnxruntime_backend import export_onnx_bytes

    half = half_model(model, keep_fp32)
    layer = first_overflow(model, half, example_input)
    if layer is not None:
        kind = type(dict(model.named_modules())[layer]).__name__
        raise QuantizationError(f"fp16 overflows in layer {layer!r} ({kind}): its output exceeds fp16's range "
                                "(+-65504) where the fp32 model's is finite; keep it in fp32 (`keep_fp32`)")
    try:
        fp32 = export_onnx_bytes(model, example_input, dynamic_batch=True)
        blob = export_onnx_bytes(half, example_input, dynamic_batch=True)
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; the trial records which
        text = str(err).strip().splitlines()
        raise QuantizationError(f"ONNX export in fp16 failed: {type(err).__name__}: "
                                f"{text[0] if text else '(no message)'}") from None
    return QuantizedModel(onnx=blob, fp32_bytes=len(fp32), precision="fp16", keep_fp32=tuple(keep_fp32))
