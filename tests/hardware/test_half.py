"""fp16 for CUDA profiles: PyTorch's half precision exported with fp32 inputs and outputs; offered on CUDA only."""
from __future__ import annotations

import dataclasses

import onnx
import pytest
import torch
from torch import nn

from autoprune.config import HardwareProfile, SearchConfig, SearchSpace
from autoprune.errors import ConfigError
from autoprune.hardware.half import convert_fp16
from autoprune.hardware.quantize import QuantizationError, onnx_outputs

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
TASK = "tests.tiny_task:tiny_task"
FP16_SPACE = SearchSpace(name="half", precisions=("fp32", "fp16"))


def _weights(blob: bytes) -> dict[str, int]:
    """Element type of the weight of every Conv and Gemm, by node name."""
    graph = onnx.load_from_string(blob).graph
    initializers = {i.name: i.data_type for i in graph.initializer}
    return {n.name: initializers[n.input[1]] for n in graph.node if n.op_type in ("Conv", "Gemm")}


def test_the_fp16_file_has_fp16_weights_fp32_io_and_agrees_with_fp32(tiny) -> None:
    model = tiny.build_model()
    converted = convert_fp16(model, tiny.example_input)
    graph = onnx.load_from_string(converted.onnx).graph
    assert [i.type.tensor_type.elem_type for i in [*graph.input, *graph.output]] == [FLOAT, FLOAT]
    weights = _weights(converted.onnx)
    assert len(weights) == 7 and set(weights.values()) == {FLOAT16}
    assert converted.precision == "fp16" and converted.facts()["format"].startswith("fp16 weights")
    assert len(converted.onnx) < 0.6 * converted.fp32_bytes  # half the bytes per weight
    # ONNX Runtime's CPU provider runs the file too (slowly): agreement is checkable without a GPU
    outputs, _ = onnx_outputs(converted.onnx, tiny.val_set)
    with torch.no_grad():
        reference = model(tiny.val_set.tensors[0])
    assert float((outputs.argmax(1) == reference.argmax(1)).float().mean()) >= 0.99
    assert outputs.dtype == torch.float32


def test_kept_layers_stay_fp32_in_the_fp16_file(tiny) -> None:
    converted = convert_fp16(tiny.build_model(), tiny.example_input, keep_fp32=("fc", "stem*"))
    weights = _weights(converted.onnx)
    assert {n: t for n, t in weights.items() if t == FLOAT} == {"/model/inner/stem/stem.0/Conv": FLOAT,
                                                               "/model/inner/fc/Gemm": FLOAT}
    assert converted.facts()["keep_fp32"] == ["fc", "stem*"]
    with pytest.raises(QuantizationError, match="keep_fp32 'head' matches no layer"):
        convert_fp16(tiny.build_model(), tiny.example_input, keep_fp32=("head",))


class _Scaled(nn.Module):
    """A Linear whose outputs exceed fp16's range (65504), scaled back down inside the same module."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        with torch.no_grad():
            self.lin.weight.fill_(1e3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(x)) * 1e-4


class _Large(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = _Scaled()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.second(self.first(x)))


def test_an_overflow_names_the_layer_and_keeping_its_block_fp32_cures_it() -> None:
    torch.manual_seed(0)
    model = _Large().eval()
    x = torch.full((1, 4), 100.0)
    with pytest.raises(QuantizationError, match=r"fp16 overflows in layer 'second.lin' \(Linear\)"):
        convert_fp16(model, x)
    converted = convert_fp16(model, x, keep_fp32=("second",))
    data = torch.utils.data.TensorDataset(x.repeat(4, 1), torch.zeros(4))
    outputs, _ = onnx_outputs(converted.onnx, data)
    with torch.no_grad():
        assert torch.allclose(outputs, model(x).repeat(4, 1), rtol=1e-2, atol=1e-2)


def test_fp16_is_proposed_only_on_cuda_profiles() -> None:
    cpu = HardwareProfile(name="cpu-ort", backend="onnxruntime")
    with pytest.raises(ConfigError, match="lists fp16, which hardware profile cpu-ort .* it runs fp32, int8$"):
        SearchConfig(task=TASK, profile=cpu, space=FP16_SPACE)
    cuda = dataclasses.replace(cpu, name="gpu-ort", device="cuda")
    assert SearchConfig(task=TASK, profile=cuda, space=FP16_SPACE).space.precisions == ("fp32", "fp16")
    with pytest.raises(ConfigError, match="lists int8, which hardware profile gpu-ort"):
        SearchConfig(task=TASK, profile=cuda, space=dataclasses.replace(FP16_SPACE, precisions=("fp32", "int8")))


def _cuda_provider() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_provider(), reason="needs onnxruntime-gpu with a CUDA device (fp16 is a CUDA precision)")
def test_on_cuda_the_fp16_file_scores_as_fp32_and_runs_faster(tiny) -> None:
    from autoprune.hardware.meter import LatencyMeter

    profile = HardwareProfile(name="gpu-ort", backend="onnxruntime", device="cuda", warmup_s=0.2, min_runs=50,
                              max_cv=10.0)
    model = tiny.build_model()
    converted = convert_fp16(model, tiny.example_input)
    outputs, _ = onnx_outputs(converted.onnx, tiny.val_set, device="cuda")
    with torch.no_grad():
        reference = model(tiny.val_set.tensors[0])
    assert float((outputs.argmax(1) == reference.argmax(1)).float().mean()) >= 0.99
    fp16, dense = LatencyMeter(profile, model, tiny.example_input, cache=None).compare_onnx(converted.onnx, None)[:2]
    assert fp16.device == "cuda" and fp16.median_ms > 0 and dense.median_ms > 0
