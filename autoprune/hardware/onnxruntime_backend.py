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
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autoprune.errors import BackendUnavailable
from autoprune.hardware.base import CallablePrepared, LatencyBackend, Prepared
from autoprune.validation import check_choice, check_int

if TYPE_CHECKING:
    from torch import nn

    from autoprune.config import HardwareProfile
    from autoprune.inputs import Inputs

#: ONNX Runtime's calibration methods for static quantization, by the name a profile uses
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True, kw_only=True)
class OnnxRuntimeOptions:
    """The ``onnxruntime:`` section of a profile: how int8 plans are calibrated.

    Attributes:
        calibration: ONNX Runtime's calibration method for activation ranges (``CALIBRATION_METHODS``).
        calibration_samples: training-split samples run through the model to calibrate.
    """

    calibration: str = "minmax"
    calibration_samples: int = 256

    def __post_init__(self) -> None:
        check_choice("calibration", self.calibration, CALIBRATION_METHODS)
        check_int("calibration_samples", self.calibration_samples, 1)


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
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer's notes on shape-dependent Python (HF masks, advanced indexing) would flood a search's
            # console once per candidate; what the file computes is checked against PyTorch where it matters
            # (the export's verification at batch 1 and 8; latency needs only the traced shape)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            names = [*wrapped.input_names, *wrapped.output_names]
            torch.onnx.export(wrapped, tuple(t for _, t in named_tensors(inputs)), buffer, dynamo=False,
                              opset_version=opset, input_names=wrapped.input_names,
                              output_names=wrapped.output_names,
                              dynamic_axes={n: {0: "batch"} for n in names} if dynamic_batch else None)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    return buffer.getvalue()


def pin_batch(onnx_bytes: bytes, batch: int) -> bytes:
    """The ONNX file with its symbolic ``batch`` axis (``export_onnx_bytes(dynamic_batch=True)``) fixed to ``batch``.

    ONNX Runtime specialises kernels and layouts on static shapes, so a file is timed with the
    batch it runs at, as a statically exported model is.
    """
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == "batch":
                dim.dim_value = batch
    return model.SerializeToString()


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
    """CPU execution provider, or CUDA when the profile asks for it and it is present.

    On CPU it runs int8 plans: ``hardware/quantize.py`` quantizes them with ONNX Runtime's static
    quantization and ``prepare_onnx`` times the quantized file. On CUDA it runs fp16 plans instead
    (``hardware/half.py``): the CUDA provider has fast fp16 kernels (tensor cores), where its int8
    path needs TensorRT and the CPU provider gains nothing from fp16.
    """

    Options = OnnxRuntimeOptions

    @classmethod
    def runnable_precisions(cls, profile: HardwareProfile) -> tuple[str, ...]:
        return ("fp32", "int8") if profile.device == "cpu" else ("fp32", "fp16")

    @property
    def settings(self) -> OnnxRuntimeOptions:
        """The profile's ``onnxruntime:`` section (defaults when it has none)."""
        return self.profile.options if self.profile.options is not None else OnnxRuntimeOptions()

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

    def prepare_onnx(self, onnx_bytes: bytes, example_input: Inputs) -> Prepared:
        """An ONNX file made elsewhere (a quantized candidate) ready to time at the profile's batch size.

        The file must take the profile's batch: a dynamic ``batch`` axis is pinned to it (``pin_batch``).
        """
        x = self.batch_input(example_input)
        session = self.session(pin_batch(onnx_bytes, self.profile.batch_size))
        feed = onnx_feed(session, x)
        return CallablePrepared(lambda: session.run(None, feed), info={"model_bytes": len(onnx_bytes)})

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "onnxruntime": _ort().__version__}
