"""Layers kept in fp32 inside an int8 model: found in the exported graph by scope, left float, named when wrong."""
from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from autoprune.hardware.onnx_scopes import node_module, node_modules, nodes_in
from autoprune.hardware.quantize import QuantizationError, calibration_batches, onnx_outputs, quantize_int8


def _float_weight_nodes(blob: bytes) -> dict[str, bool]:
    """For every Conv and Gemm of a quantized graph: True when its weight is a plain float initializer (not the output
    of a DequantizeLinear, as every int8 weight is)."""
    graph = onnx.load_from_string(blob).graph
    initializers = {i.name: i.data_type for i in graph.initializer}
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    out = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            weight = node.input[1]
            assert weight in initializers or weight in dequantized, (node.name, weight)
            out[node.name] = initializers.get(weight) == onnx.TensorProto.FLOAT and weight not in dequantized
    return out


def test_kept_layers_stay_float_and_the_model_still_agrees(tiny) -> None:
    model = tiny.build_model()
    batches = calibration_batches(tiny.train_set, 128)
    quantized = quantize_int8(model, tiny.example_input, batches, keep_fp32=("fc", "stem*"))
    floats = _float_weight_nodes(quantized.onnx)
    assert floats == {"/model/stem/stem.0/Conv": True, "/model/block1/conv1/Conv": False,
                      "/model/block1/conv2/Conv": False, "/model/block2/conv1/Conv": False,
                      "/model/block2/conv2/Conv": False, "/model/block2/shortcut/shortcut.0/Conv": False,
                      "/model/fc/Gemm": True}
    facts = quantized.facts()
    assert facts["keep_fp32"] == ["fc", "stem*"]
    assert {"/model/fc/Gemm", "/model/stem/stem.0/Conv"} <= set(facts["fp32_nodes"])
    outputs, targets = onnx_outputs(quantized.onnx, tiny.val_set)
    with torch.no_grad():
        reference = model(tiny.val_set.tensors[0])
    assert float((outputs.argmax(1) == reference.argmax(1)).float().mean()) >= 0.95
    from autoprune.training import evaluate

    assert abs(float(tiny.metric(outputs, targets)) - evaluate(model, tiny.val_set)) <= 0.03
    everything = quantize_int8(model, tiny.example_input, batches)
    assert not any(_float_weight_nodes(everything.onnx).values())  # without keep_fp32 every weight is int8


def test_a_glob_that_names_no_layer_or_a_folded_one_is_an_error(tiny) -> None:
    model = tiny.build_model()
    batches = calibration_batches(tiny.train_set, 32)
    with pytest.raises(QuantizationError, match=r"keep_fp32 'head' matches no layer of the model; its layers: stem, "):
        quantize_int8(model, tiny.example_input, batches, keep_fp32=("head",))
    # the BatchNorm is folded into its Conv at export: no node runs it, and saying so beats ignoring it
    with pytest.raises(QuantizationError, match=r"keep_fp32 'stem.1' matches stem.1, which no node"):
        quantize_int8(model, tiny.example_input, batches, keep_fp32=("stem.1",))


NESTED_NODES = ["/model/layers.0/mlp/mlp.0/Gemm", "/model/layers.0/mlp/mlp.2/mlp.2.0/Gemm", "/model/layers.0/Add",
                "/model/layers.1/mlp/mlp.0/Gemm", "/model/head/Gemm", "/model/Flatten", "Identity_0"]
NESTED_MODULES = ["", "layers", "layers.0", "layers.0.mlp", "layers.0.mlp.0", "layers.0.mlp.1", "layers.0.mlp.2",
                  "layers.0.mlp.2.0", "layers.1", "layers.1.mlp", "layers.1.mlp.0", "head"]


def test_scopes_resolve_against_the_real_module_names() -> None:
    """The exporter's names of a ModuleList of blocks with nested Sequentials (as torch 2.13 writes them)."""
    mapping = node_modules(NESTED_NODES, NESTED_MODULES)
    assert mapping == {"/model/layers.0/mlp/mlp.0/Gemm": "layers.0.mlp.0",
                       "/model/layers.0/mlp/mlp.2/mlp.2.0/Gemm": "layers.0.mlp.2.0",
                       "/model/layers.0/Add": "layers.0", "/model/layers.1/mlp/mlp.0/Gemm": "layers.1.mlp.0",
                       "/model/head/Gemm": "head", "/model/Flatten": ""}
    assert nodes_in(mapping, ["layers.0", "head"]) == {
        "layers.0": ["/model/layers.0/Add", "/model/layers.0/mlp/mlp.0/Gemm", "/model/layers.0/mlp/mlp.2/mlp.2.0/Gemm"],
        "head": ["/model/head/Gemm"]}
    # a scope that names no module stops at the deepest module found (never an invented name)
    assert node_module("/model/layers.0/renamed/Gemm", set(NESTED_MODULES)) == "layers.0"


class _Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(2)])
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x) + x
        return self.head(x)


def test_a_module_list_layer_is_kept_in_fp32() -> None:
    torch.manual_seed(0)
    model = _Nested().eval()
    data = torch.randn(64, 8)
    quantized = quantize_int8(model, data[:1], [data], keep_fp32=("layers.1*",))
    assert _float_weight_nodes(quantized.onnx) == {"/model/layers.0/layers.0.0/Gemm": False,
                                                   "/model/layers.1/layers.1.0/Gemm": True,
                                                   "/model/head/Gemm": False}
