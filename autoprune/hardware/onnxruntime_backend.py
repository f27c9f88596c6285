"""ONNX Runtime backend: export with torch's TorchScript-based exporter, run an InferenceSession.

The legacy exporter (``dynamo=False``) takes 0.1-0.4 s here against 2-5 s for the dynamo
exporter and matched PyTorch to 6e-8, which matters when every candidate is exported. It passes
every input by position and wants plain tensors out, so the model is wrapped in
:class:`~autoprune.inputs.PositionalModule` (keyword inputs of Hugging Face models go in by name;
``ModelOutput`` comes out flattened). ``nn.MultiheadAttention`` takes a fused fast path under
``no_grad`` whose op the exporter cannot write, so the fast path is off while exporting.
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from autoprune.errors import BackendUnavailable
from autoprune.hardware.base import CallablePrepared, LatencyBackend, Prepared

if TYPE_CHECKING:
    from torch import nn

    from autoprune.inputs import Inputs


def export_onnx_bytes(model: nn.Module, inputs: Inputs, opset: int = 17, *, dynamic_batch: bool = False) -> bytes:
    """The model as an in-memory ONNX file (weights embedded); graph inputs are named as in
    :func:`~autoprune.inputs.named_tensors` (``input`` for a single tensor).

    Args:
        dynamic_batch: make the first axis of every input and output a named dimension (``batch``), so the
            file runs any batch size; otherwise it is fixed to the example's (what latency measurement wants).
    """
    import torch

    from autoprune.inputs import PositionalModule, named_tensors

    buffer = io.BytesIO()
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        wrapped = PositionalModule(model.eval(), inputs).eval()
        with torch.no_grad():
            names = [*wrapped.input_names, *wrapped.output_names]
            torch.onnx.export(wrapped, tuple(t for _, t in named_tensors(inputs)), buffer, dynamo=False,
                              opset_version=opset, input_names=wrapped.input_names,
                              output_names=wrapped.output_names,
                              dynamic_axes={n: {0: "batch"} for n in names} if dynamic_batch else None)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    return buffer.getvalue()


def onnx_feed(session, inputs: Inputs) -> dict[str, Any]:
    """The numpy feed of an InferenceSession for ``inputs`` (graph inputs the exporter folded away are skipped)."""
    from autoprune.inputs import named_tensors

    wanted = {i.name for i in session.get_inputs()}
    return {name: t.detach().cpu().numpy() for name, t in named_tensors(inputs) if name in wanted}


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


class OnnxRuntimeBackend(LatencyBackend):
    """CPU execution provider, or CUDA when the profile asks for it and it is present."""

    def providers(self) -> list[str]:
        ort = _ort()
        if self.profile.device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable(f"hardware profile {self.profile.name}: onnxruntime has no CUDA provider; "
                                         "pip install onnxruntime-gpu on a machine with CUDA")
            return ["CUDAExecutionProvider"]
        return ["CPUExecutionProvider"]

    def session(self, onnx_bytes: bytes):
        ort = _ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.profile.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(onnx_bytes, sess_options=options, providers=self.providers())

    def prepare(self, model: nn.Module, example_input: Inputs) -> Prepared:
        x = self.batch_input(example_input)
        blob = export_onnx_bytes(model, x)
        session = self.session(blob)
        feed = onnx_feed(session, x)
        return CallablePrepared(lambda: session.run(None, feed), info={"model_bytes": len(blob)})

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "onnxruntime": _ort().__version__}
