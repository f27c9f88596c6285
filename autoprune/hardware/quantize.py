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
"""
from __future__ import annotations

import tempfile
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


class QuantizationError(AutopruneError):
    """A model whose ONNX export ONNX Runtime cannot quantize or run once quantized (the op or node named)."""


@dataclass(frozen=True, kw_only=True)
class QuantizedModel:
    """A candidate quantized to int8 as an in-memory ONNX file, and how it was made.

    Attributes:
        onnx: the quantized ONNX file (QDQ format, weights embedded, dynamic batch axis).
        fp32_bytes: size of the same model's fp32 ONNX file.
        method: the calibration method.
        samples: training-split samples the calibration ran.
    """

    onnx: bytes
    fp32_bytes: int
    method: str
    samples: int

    def facts(self) -> dict[str, Any]:
        """What a record and a model card say about the quantization."""
        return {"format": "onnxruntime QDQ, int8 per-channel weights, uint8 activations",
                "calibration": self.method, "calibration_samples": self.samples,
                "calibration_data": "training split", "onnx_bytes": len(self.onnx), "fp32_onnx_bytes": self.fp32_bytes}


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


def _session(onnx: bytes | str, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])


def quantize_int8(model: nn.Module, example_input: Inputs, batches: Sequence[Inputs], *, method: str = "minmax",
                  per_channel: bool = True) -> QuantizedModel:
    """``model`` exported to ONNX and statically quantized to int8 (QDQ) with ``batches`` as calibration data.

    Raises:
        QuantizationError: the export, the quantizer or ONNX Runtime failed on the model (the message
            says which step and what ONNX Runtime named).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    if not batches:
        raise QuantizationError("int8 needs calibration data: no calibration batches were given")
    try:
        fp32 = export_onnx_bytes(model, example_input, dynamic_batch=True)
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; the trial records which
        raise QuantizationError(f"ONNX export for quantization failed: {type(err).__name__}: "
                                f"{_first_line(err)}") from None
    with tempfile.TemporaryDirectory(prefix="autoprune-int8-") as tmp:
        folder = Path(tmp)
        (folder / "fp32.onnx").write_bytes(fp32)
        step = "pre-processing (quant_pre_process)"
        try:
            quant_pre_process(str(folder / "fp32.onnx"), str(folder / "pre.onnx"), skip_symbolic_shape=True)
            step = "quantize_static"
            reader = _reader(_session(str(folder / "pre.onnx")), batches)
            quantize_static(str(folder / "pre.onnx"), str(folder / "int8.onnx"), reader,
                            quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=_method(method), extra_options={"CalibTensorRangeSymmetric": False})
            step = "loading the quantized model in ONNX Runtime"
            blob = (folder / "int8.onnx").read_bytes()
            _check_finite(_session(fp32), _session(blob), batches[0])
        except QuantizationError:
            raise
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own and plain exceptions
            raise QuantizationError(f"int8 quantization failed in {step}: {type(err).__name__}: "
                                    f"{_first_line(err)}") from None
    from autoprune.inputs import batch_size

    return QuantizedModel(onnx=blob, fp32_bytes=len(fp32), method=method, samples=sum(batch_size(b) for b in batches))


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


def onnx_outputs(onnx: bytes, dataset: Dataset, *, threads: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The primary output of the ONNX file over ``dataset`` (first output, batches of ``BATCH``) and the targets."""
    import torch
    from torch.utils.data import DataLoader

    session = _session(onnx, threads)
    outputs, targets = [], []
    for inputs, target in DataLoader(dataset, batch_size=BATCH, shuffle=False):
        outputs.append(torch.from_numpy(session.run(None, onnx_feed(session, inputs))[0]))
        targets.append(target)
    return torch.cat(outputs), torch.cat(targets)


def onnx_score(onnx: bytes, dataset: Dataset, metric: Callable[[torch.Tensor, torch.Tensor], float], *,
               threads: int = 1) -> float:
    """The task's metric of the ONNX file run by ONNX Runtime over a whole split (scored once, as ``evaluate``)."""
    outputs, targets = onnx_outputs(onnx, dataset, threads=threads)
    return float(metric(outputs, targets))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"
