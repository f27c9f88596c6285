"""Int8 static quantization with ONNX Runtime: agreement with fp32, calibration data, failures named."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from autoprune.hardware.onnxruntime_backend import OnnxRuntimeBackend
from autoprune.hardware.quantize import QuantizationError, calibration_batches, onnx_outputs, onnx_score, quantize_int8
from autoprune.testing.models import ResNet


def _agreement(model: nn.Module, onnx: bytes, dataset: TensorDataset) -> float:
    outputs, _ = onnx_outputs(onnx, dataset)
    with torch.no_grad():
        reference = model(dataset.tensors[0])
    return float((outputs.argmax(1) == reference.argmax(1)).float().mean())


def test_the_tiny_task_model_quantized_agrees_with_fp32(tiny) -> None:
    model = tiny.build_model()
    quantized = quantize_int8(model, tiny.example_input, calibration_batches(tiny.train_set, 128))
    assert _agreement(model, quantized.onnx, tiny.val_set) >= 0.95
    accuracy = onnx_score(quantized.onnx, tiny.val_set, tiny.metric)
    from autoprune.training import evaluate

    assert abs(accuracy - evaluate(model, tiny.val_set)) <= 0.03
    facts = quantized.facts()
    assert facts["calibration"] == "minmax" and facts["calibration_samples"] == 128
    assert 0 < facts["onnx_bytes"] < facts["fp32_onnx_bytes"]  # int8 weights: a smaller file


def test_a_residual_cnn_quantized_agrees_with_fp32_on_its_own_data() -> None:
    """A random-init residual CNN on inputs it was calibrated on the distribution of (argmax agreement)."""
    torch.manual_seed(0)
    model = ResNet((1, 1), width=16).eval()
    inputs = torch.randn(160, 3, 32, 32)
    data = TensorDataset(inputs, torch.zeros(160, dtype=torch.long))
    quantized = quantize_int8(model, inputs[:1], calibration_batches(TensorDataset(inputs[:64], torch.zeros(64)), 64),
                              method="entropy")
    assert _agreement(model, quantized.onnx, data) >= 0.95


def test_no_calibration_data_is_named() -> None:
    with pytest.raises(QuantizationError, match="needs calibration data"):
        calibration_batches(TensorDataset(torch.zeros(0, 3), torch.zeros(0)), 16)
    with pytest.raises(QuantizationError, match="needs calibration data"):
        quantize_int8(nn.Linear(3, 2), torch.zeros(1, 3), [])


class _Unexportable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft(x).real  # no ONNX symbolic for aten::fft_fft in the TorchScript exporter


def test_a_model_that_cannot_be_exported_for_quantization_is_named() -> None:
    with pytest.raises(QuantizationError, match="ONNX export for quantization failed"):
        quantize_int8(_Unexportable(), torch.zeros(1, 8), [torch.zeros(4, 8)])


def test_the_onnxruntime_backend_runs_int8_on_cpu_and_fp16_on_cuda(fast_profile) -> None:
    import dataclasses

    assert OnnxRuntimeBackend.runnable_precisions(fast_profile) == ("fp32", "int8")
    assert OnnxRuntimeBackend.runnable_precisions(dataclasses.replace(fast_profile, device="cuda")) == ("fp32", "fp16")


class _Overflowing(nn.Module):
    """Exports and runs in fp32 (its output is inf), but no int8 scale fits an infinite activation range."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.adaptive_avg_pool2d(self.conv(x), 1).flatten(1)
        return self.fc(y.to(torch.float16).float() * torch.tensor(1e38) * torch.tensor(1e38))


def test_a_model_onnxruntime_cannot_quantize_is_a_failed_trial_with_the_reason(tiny, fast_profile) -> None:
    import dataclasses

    from autoprune.config import SearchConfig, SearchSpace
    from autoprune.execution.runner import TrialRunner
    from autoprune.hardware.meter import LatencyMeter
    from autoprune.plan import GroupPlan, PruningPlan
    from autoprune.records import TrialState

    torch.manual_seed(0)
    dense = _Overflowing().eval()
    task = dataclasses.replace(tiny, build_model=lambda: _Overflowing().eval())
    config = SearchConfig(task="tests.tiny_task:tiny_task", profile=fast_profile, min_speedup=0.0,
                          space=SearchSpace(name="t", min_channels=4, precisions=("fp32", "int8")))
    runner = TrialRunner(task=task, config=config, dense=dense,
                         meter=LatencyMeter(fast_profile, dense, task.example_input, cache=None))
    plan = PruningPlan.of({"conv": GroupPlan(ratio=0.0)}, precision="int8")
    record = runner.screen(0, plan)
    assert record.state == TrialState.FAILED and record.precision == "int8"
    assert record.reason.startswith("QuantizationError: int8 quantization failed in quantize_static:"), record.reason
    # the line names where no int8 range fits: the first node whose activations are not finite, its op and layer
    assert "(op Mul, in the model's own forward) outputs inf or NaN on calibration inputs" in record.reason
    fp32 = runner.screen(1, dataclasses.replace(plan, precision="fp32"))
    assert fp32.state == TrialState.SCREENED  # the same candidate runs in fp32


def test_weights_keep_7_bits_on_x86_without_vnni_only() -> None:
    from autoprune.hardware.quantize import needs_reduced_range

    assert needs_reduced_range("flags\t\t: fpu sse4_2 avx avx2 fma")  # AVX2 alone: the U8S8 kernels saturate
    assert not needs_reduced_range("flags\t\t: fpu avx avx2 avx512f avx512_vnni")
    assert not needs_reduced_range("flags\t\t: fpu avx avx2 avx_vnni")
    assert not needs_reduced_range("Features\t: fp asimd asimddp")  # ARM (a Features line, no avx2)


def test_the_digits_model_in_int8_keeps_its_fp32_accuracy_within_one_point() -> None:
    """On this project's CI machines (AVX2, no VNNI), full-range int8 weights cost the digits model 7.8 points."""
    from autoprune.hardware.onnxruntime_backend import export_onnx_bytes
    from autoprune.tasks.digits import digits_task

    task = digits_task()
    model = task.build_model()
    quantized = quantize_int8(model, task.example_input, calibration_batches(task.train_set, 256))
    fp32 = onnx_score(export_onnx_bytes(model, task.example_input, dynamic_batch=True), task.val_set, task.metric)
    assert onnx_score(quantized.onnx, task.val_set, task.metric) >= fp32 - 0.01
