"""Int8 candidates: ONNX Runtime static quantization, and their score measured in ONNX Runtime.

The runtime's own tool does the work, not hand-written kernels: the model is exported to ONNX
with a dynamic batch axis (one file serves calibration, evaluation and timing at the profile's
batch), pre-processed (``quant_pre_process``: shape inference, graph optimisation), then
``quantize_static`` writes QDQ nodes with per-channel int8 weights and uint8 activations (the
U8S8 pair ONNX Runtime's x86 kernels, VNNI included, run fastest) whose ranges come from
calibration batches of the task's training split, run through a ``CalibrationDataReader``, with
the profile's calibration method. ``onnx_score`` then scores the quantized file in an ONNX
Runtime session over a split, so the accuracy a search records is the shipped model's.

Call order: ``calibration_batches(task.train_set, n)`` once per search (the same batches for
every candidate); ``quantize_int8(model, example_input, batches, method=...)`` per candidate;
``onnx_score(q.onnx, task.val_set, task.metric)``; the meter times ``q.onnx`` (``prepare_onnx``).

On an x86 CPU without VNNI (AVX2 or AVX-512 only) weights are quantized to 7 bits (``reduce_range``):
there ONNX Runtime's U8S8 kernels add pairs of uint8 x int8 products in int16, which saturates with
full-range weights. Measured on this machine (AVX2, no VNNI), the digits model in int8 scored 91.7% with
full-range per-channel weights and 99.4% (its fp32 score) with ``reduce_range``; ONNX Runtime's
quantization guide recommends the same. The record says which was used.

Layers a plan keeps in fp32 (``keep_fp32``: module-name globs) are found in the exported graph by
their scopes (``onnx_scopes``) and passed to ``quantize_static`` as ``nodes_to_exclude``; a glob that
matches no layer, or whose layers have no node in the graph, is an error naming it.
"""
from __future__ import annotations

import functools
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.errors import AutopruneError
from autoprune.hardware.onnxruntime_backend import CALIBRATION_METHODS, export_onnx_bytes, onnx_feed

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from autoprune.inputs import Inputs

#: batch size of calibration and evaluation batches (the file has a dynamic batch axis)
BATCH = 32


@functools.cache
def _cpu_flags() -> str:
    """This machine's ``flags`` line of ``/proc/cpuinfo`` (read once; '' where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line for line in text.splitlines() if line.startswith("flags")), "")


def needs_reduced_range(cpu_flags: str | None = None) -> bool:
    """True on an x86 CPU without VNNI, where full-range int8 weights saturate ONNX Runtime's U8S8 kernels.

    ``cpu_flags``: the ``flags`` line of ``/proc/cpuinfo`` (read when None; False where it cannot be read,
    e.g. on ARM or macOS, whose kernels do not saturate this way).
    """
    flags = set((_cpu_flags() if cpu_flags is None else cpu_flags).replace(":", " ").split())
    return "avx2" in flags and not flags & {"avx512_vnni", "avx_vnni", "avx_vnni_int8"}


class QuantizationError(AutopruneError):
    """A model whose ONNX export ONNX Runtime cannot quantize or run once quantized (the op or node named)."""


@dataclass(frozen=True, kw_only=True)
class QuantizedModel:
    """A candidate quantized (int8) or converted (fp16, ``hardware/half.py``) as an in-memory ONNX file, and how.

    Attributes:
        onnx: the ONNX file (int8: QDQ format; weights embedded, dynamic batch axis, fp32 inputs and outputs).
        fp32_bytes: size of the same model's fp32 ONNX file.
        precision: int8 or fp16.
        method: the calibration method (int8; fp16 needs none).
        samples: training-split samples the calibration ran (int8).
    """

    onnx: bytes
    fp32_bytes: int
    precision: str = "int8"
    method: str = ""
    samples: int = 0
    #: the plan's globs of layers kept in fp32, and the graph nodes left unquantized for them
    keep_fp32: tuple[str, ...] = ()
    fp32_nodes: tuple[str, ...] = ()
    #: weights quantized to 7 bits (``needs_reduced_range``)
    reduce_range: bool = False

    def facts(self) -> dict[str, Any]:
        """What a record and a model card say about the quantization."""
        facts: dict[str, Any] = {"onnx_bytes": len(self.onnx), "fp32_onnx_bytes": self.fp32_bytes}
        if self.precision == "fp16":
            facts["format"] = "fp16 weights and activations (PyTorch .half() before export), fp32 inputs and outputs"
        else:
            weights = "7-bit (reduce_range: x86 without VNNI)" if self.reduce_range else "int8"
            facts.update(format=f"onnxruntime QDQ, {weights} per-channel weights, uint8 activations",
                         calibration=self.method, calibration_samples=self.samples, calibration_data="training split",
                         reduce_range=self.reduce_range)
        if self.keep_fp32:
            facts.update(keep_fp32=list(self.keep_fp32), fp32_nodes=list(self.fp32_nodes))
        return facts


def calibration_batches(dataset: Dataset, samples: int, batch_size: int = BATCH) -> list[Inputs]:
    """The first ``samples`` inputs of ``dataset`` (the task's training split) as input batches.

    Raises:
        QuantizationError: the split is empty (quantization needs calibration data).
    """
    from torch.utils.data import DataLoader

    batches: list[Inputs] = []
    taken = 0
    for inputs, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        from autoprune.inputs import batch_size as size_of
        from autoprune.inputs import take

        n = min(size_of(inputs), samples - taken)
        batches.append(take(inputs, n))
        taken += n
        if taken >= samples:
            break
    if not batches:
        raise QuantizationError("int8 needs calibration data: the task's training split is empty")
    return batches


class _Reader:
    """An ONNX Runtime ``CalibrationDataReader`` over input batches (made a subclass in ``_reader``)."""

    def __init__(self, session: Any, batches: Sequence[Inputs]) -> None:
        self._feeds = iter([onnx_feed(session, b) for b in batches])

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def _reader(session: Any, batches: Sequence[Inputs]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    return Reader(session, batches)


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    if name not in CALIBRATION_METHODS:
        raise QuantizationError(f"calibration method {name!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def _session(onnx: bytes | str, threads: int = 1, device: str = "cpu") -> Any:
    """An ONNX Runtime session on the CPU, or on CUDA (``device``: a CUDA profile's fp16 file is scored there)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise QuantizationError("scoring on cuda needs onnxruntime's CUDA provider: pip install onnxruntime-gpu")
    return ort.InferenceSession(onnx, sess_options=options, providers=providers)


def keep_fp32_layers(module_names: Sequence[str], globs: Sequence[str]) -> dict[str, list[str]]:
    """For each glob, the module names it matches (fnmatch, as the space's ``ignore``).

    Raises:
        QuantizationError: a glob matches no module (the message lists some of the model's layer names).
    """
    from fnmatch import fnmatchcase

    names = [n for n in module_names if n]
    matched = {g: [n for n in names if fnmatchcase(n, g)] for g in globs}
    for glob, layers in matched.items():
        if not layers:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise QuantizationError(f"keep_fp32 {glob!r} matches no layer of the model; its layers: {shown}")
    return matched


def excluded_nodes(model: nn.Module, onnx_model: Any, globs: Sequence[str]) -> list[str]:
    """The nodes of the exported graph ``onnx_model`` that run the layers ``globs`` keep in fp32.

    Raises:
        QuantizationError: a glob matches no layer, or none of its layers has a node in the graph (a layer folded
            into another at export, such as a BatchNorm into its Conv: name the Conv).
    """
    from autoprune.hardware.onnx_scopes import node_modules, nodes_in

    modules = [n for n, _ in model.named_modules()]
    mapping = node_modules([n.name for n in onnx_model.graph.node], modules)
    nodes: set[str] = set()
    for glob, layers in keep_fp32_layers(modules, globs).items():
        found = [n for layer_nodes in nodes_in(mapping, layers).values() for n in layer_nodes]
        if not found:
            raise QuantizationError(f"keep_fp32 {glob!r} matches {', '.join(layers)}, which no node of the exported "
                                    "graph runs (folded into another layer at export?); name the layer that runs it")
        nodes.update(found)
    return sorted(nodes)


def quantize_int8(model: nn.Module, example_input: Inputs, batches: Sequence[Inputs], *, method: str = "minmax",
                  per_channel: bool = True, keep_fp32: Sequence[str] = ()) -> QuantizedModel:
    """``model`` exported to ONNX and statically quantized to int8 (QDQ) with ``batches`` as calibration data.

    Args:
        keep_fp32: module-name globs of layers left in fp32 (their nodes are not quantized).

    Raises:
        QuantizationError: the export, the quantizer or ONNX Runtime failed on the model (the message
            says which step and what ONNX Runtime named), or a ``keep_fp32`` glob names no layer of the graph.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    if not batches:
        raise QuantizationError("int8 needs calibration data: no calibration batches were given")
    reduce_range = needs_reduced_range()
    try:
        fp32 = export_onnx_bytes(model, example_input, dynamic_batch=True)
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; the trial records which
        raise QuantizationError(f"ONNX export for quantization failed: {type(err).__name__}: "
                                f"{_first_line(err)}") from None
    with tempfile.TemporaryDirectory(prefix="autoprune-int8-") as tmp:
        folder = Path(tmp)
        (folder / "fp32.onnx").write_bytes(fp32)
        step = "pre-processing"
        try:
            quant_pre_process(str(folder / "fp32.onnx"), str(folder / "pre.onnx"), skip_symbolic_shape=True)
            step = "finding the layers kept in fp32"
            exclude = excluded_nodes(model, _load_onnx(folder / "pre.onnx"), keep_fp32) if keep_fp32 else []
            step = "quantize_static"
            reader = _reader(_session(str(folder / "pre.onnx")), batches)
            with warnings.catch_warnings():  # numpy's NaN warnings of a range that cannot be quantized: named below
                warnings.simplefilter("ignore", RuntimeWarning)
                quantize_static(str(folder / "pre.onnx"), str(folder / "int8.onnx"), reader,
                                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=_method(method), nodes_to_exclude=exclude, reduce_range=reduce_range,
                                extra_options={"CalibTensorRangeSymmetric": False})
            step = "loading the quantized model in ONNX Runtime"
            blob = (folder / "int8.onnx").read_bytes()
            _check_finite(_session(fp32), _session(blob), batches[0])
        except QuantizationError as err:
            if step != "loading the quantized model in ONNX Runtime":
                raise
            raise QuantizationError(f"{err}{_culprit(model, folder / 'pre.onnx', batches[0])}") from None
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own and plain exceptions
            culprit = _culprit(model, folder / "pre.onnx", batches[0]) if step != "pre-processing" else ""
            raise QuantizationError(f"int8 quantization failed in {step}: {type(err).__name__}: "
                                    f"{_first_line(err)}{culprit}") from None
    from autoprune.inputs import batch_size

    return QuantizedModel(onnx=blob, fp32_bytes=len(fp32), method=method, samples=sum(batch_size(b) for b in batches),
                          keep_fp32=tuple(keep_fp32), fp32_nodes=tuple(exclude), reduce_range=reduce_range)


def _culprit(model: nn.Module, path: Path, batch: Inputs) -> str:
    """Where an int8 range cannot be found: '; node N (op O, layer L) outputs inf or NaN on calibration inputs' for
    the first node of the fp32 graph at ``path`` whose output is not finite (no int8 scale fits it), else ''.

    Every intermediate tensor the shape inference typed is made a graph output for one run of ``batch``.
    """
    import numpy as np
    import onnx

    from autoprune.hardware.onnx_scopes import node_module

    try:
        graph_model = onnx.load(str(path))
        graph = graph_model.graph
        typed = {v.name: v for v in graph.value_info}
        shown = {o.name for o in graph.output}
        graph.output.extend([typed[o] for n in graph.node for o in n.output if o in typed and o not in shown])
        session = _session(graph_model.SerializeToString())
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, onnx_feed(session, batch)), strict=True))
    except Exception:  # noqa: BLE001 - a diagnosis only: the caller's error stands without it
        return ""
    modules = {n for n, _ in model.named_modules()}
    for node in graph.node:
        for out in node.output:
            value = values.get(out)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
                layer = node_module(node.name, modules)
                where = f"layer {layer!r}" if layer else "the model's own forward"
                return (f"; node {node.name or out} (op {node.op_type}, in {where}) outputs inf or NaN on "
                        "calibration inputs: no int8 range fits it")
    return ""


def _load_onnx(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def _check_finite(fp32: Any, int8: Any, batch: Inputs) -> None:
    """The quantizer can write NaN scales without failing (an activation range it cannot represent): reject a
    quantized model whose outputs are not finite where the fp32 model's are."""
    import numpy as np

    expected = fp32.run(None, onnx_feed(fp32, batch))
    got = int8.run(None, onnx_feed(int8, batch))
    for (name, e), g in zip(((o.name, v) for o, v in zip(fp32.get_outputs(), expected, strict=True)), got, strict=True):
        if not np.isfinite(g[np.isfinite(e)]).all():
            raise QuantizationError(f"the quantized model's output {name!r} is not finite on calibration inputs where "
                                    "the fp32 model's is (an activation range int8 cannot represent)")


def onnx_outputs(onnx: bytes, dataset: Dataset, *, threads: int = 1,
                 device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The primary output of the ONNX file over ``dataset`` (first output, batches of ``BATCH``) and the targets."""
    import torch
    from torch.utils.data import DataLoader

    session = _session(onnx, threads, device)
    outputs, targets = [], []
    for inputs, target in DataLoader(dataset, batch_size=BATCH, shuffle=False):
        outputs.append(torch.from_numpy(session.run(None, onnx_feed(session, inputs))[0]))
        targets.append(target)
    return torch.cat(outputs), torch.cat(targets)


def onnx_score(onnx: bytes, dataset: Dataset, metric: Callable[[torch.Tensor, torch.Tensor], float], *,
               threads: int = 1, device: str = "cpu") -> float:
    """The task's metric of the ONNX file run by ONNX Runtime over a whole split (scored once, as ``evaluate``)."""
    outputs, targets = onnx_outputs(onnx, dataset, threads=threads, device=device)
    return float(metric(outputs, targets))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"
