"""What a search knows about its trials and its dense model, as plain data every layer shares.

``TrialRecord`` is everything one trial produced; ``DenseReference`` is the dense model every
candidate is compared with. Both cross processes and land on disk as plain dicts (``to_dict``):
in the study's trial attributes, ``pareto.json`` and ``dense.json``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from autoprune.latency import LatencyStats
from autoprune.plan import plan_precision


class TrialState(str, Enum):
    """Where a trial ended (its value is what run folders store)."""

    #: fine-tuned, evaluated and measured
    COMPLETE = "complete"
    #: stopped before fine-tuning: not faster than dense, over the latency budget (measured or
    #: predicted), or a proxy score too low to earn the full fine-tune
    REJECTED = "rejected"
    #: an error (pruning, fine-tuning, a worker crash), with its reason
    FAILED = "failed"
    #: passed the screen with a proxy score and waits for the driver's promotion decision;
    #: never a trial's final state
    SCREENED = "screened"

    def __str__(self) -> str:
        return self.value


def objective_value(name: str, *, accuracy: float | None, latency: LatencyStats | None, params: int | None,
                    macs: int | None) -> float | None:
    """The value of a named objective (``config.OBJECTIVES``) from a model's measurements; None if unmeasured."""
    values: dict[str, float | int | None] = {
        "accuracy": accuracy, "params": params, "macs": macs,
        "latency": None if latency is None else latency.median_ms,
        "latency_p90": None if latency is None else latency.p90_ms,
        "memory": None if latency is None else latency.peak_memory_bytes,
    }
    value = values[name]
    return None if value is None else float(value)


def _stats(data: Mapping[str, Any] | None) -> LatencyStats | None:
    return None if data is None else LatencyStats.from_dict(data)


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """The outcome of one trial.

    ``dense_latency`` was measured interleaved with the candidate, and ``speedup`` is that ratio.
    A candidate rejected on its *predicted* latency has ``predicted_ms`` and no ``latency``.
    """

    number: int
    plan: dict[str, dict[str, Any]]
    state: TrialState
    reason: str = ""
    accuracy: float | None = None
    latency: LatencyStats | None = None
    dense_latency: LatencyStats | None = None
    speedup: float | None = None
    macs: int | None = None
    params: int | None = None
    channels: dict[str, list[int]] = field(default_factory=dict)
    model_path: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    #: accuracy after BN recalibration only (the multi-fidelity proxy), when it was computed
    proxy: float | None = None
    #: the earlier trial whose candidate this plan builds too (identical after channel rounding)
    duplicate_of: int | None = None
    #: the latency predictor's estimate (ms) when one screened the candidate, kept on measured
    #: trials too so the prediction error can be audited
    predicted_ms: float | None = None
    #: the score on the task's held-out test split (None when the task has none): reported, never
    #: used by the search
    test_accuracy: float | None = None
    #: how many times the candidate was measured again later because its latency was noisy
    #: (``LatencyStats.noisy``); ``latency`` is the least noisy of its measurements
    remeasures: int = 0

    @property
    def noisy(self) -> bool:
        """Its latency figure is not to be trusted: the CV stayed above the profile's ``max_cv``."""
        return self.latency is not None and self.latency.noisy

    @property
    def noise_note(self) -> str:
        """'' for a trusted figure; else what reports print beside it ("noisy: CV 23.0% after 2 re-measures")."""
        if not self.noisy:
            return ""
        assert self.latency is not None
        return f"noisy: CV {100 * self.latency.cv:.1f}% after {self.remeasures} re-measure(s)"
    #: a quantized candidate's own fp32 model, measured interleaved with its quantized file and the
    #: dense model (``latency`` is then the quantized file's)
    fp32_latency: LatencyStats | None = None
    #: size on disk of the candidate's shipped file: its weights as ``torch.save`` writes them (fp32), or its
    #: quantized ONNX file; set on complete trials
    size_bytes: int | None = None
    #: the same file gzip'd (``files.GZIP_LEVEL``): what unstructured and N:M sparsity save on disk, where
    #: ``size_bytes`` does not change
    compressed_bytes: int | None = None
    #: how a quantized candidate was made and what it gained (``hardware.quantize.QuantizedModel.facts``
    #: plus ``fp32_accuracy``, ``speedup_vs_fp32`` and a ``note`` when it is no faster than fp32)
    quantization: dict[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        """The precision the candidate ships in (its plan's)."""
        return plan_precision(self.plan)

    @property
    def screened_unmeasured(self) -> bool:
        """Rejected on its predicted latency alone (never measured)."""
        return self.state == TrialState.REJECTED and self.latency is None and self.predicted_ms is not None

    @property
    def latency_ms(self) -> float | None:
        return None if self.latency is None else self.latency.median_ms

    @property
    def latency_p90_ms(self) -> float | None:
        return None if self.latency is None else self.latency.p90_ms

    def objective(self, name: str) -> float | None:
        """The value of a named objective (see ``config.OBJECTIVES``)."""
        return objective_value(name, accuracy=self.accuracy, latency=self.latency, params=self.params, macs=self.macs)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRecord:
        return cls(**{**data, "state": TrialState(data["state"]), "latency": _stats(data.get("latency")),
                      "dense_latency": _stats(data.get("dense_latency")),
                      "fp32_latency": _stats(data.get("fp32_latency"))})


@dataclass(frozen=True, kw_only=True)
class DenseReference:
    """The dense model's numbers every candidate is compared with (``dense.json``)."""

    accuracy: float
    latency: LatencyStats
    macs: int
    params: int
    #: the prunable groups as ``PrunableGroup`` dicts, in graph order
    groups: list[dict[str, Any]]
    #: the score on the task's held-out test split (None when the task has none)
    test_accuracy: float | None = None
    #: its weights' size on disk as ``torch.save`` writes them, plain and gzip'd (None in older run folders)
    size_bytes: int | None = None
    compressed_bytes: int | None = None

    def speedup_of(self, latency_ms: float) -> float:
        """The speed-up every front view shows: this dense p50 over a candidate's p50, the numbers the front is
        built from (so a faster model always shows the larger speed-up; ``TrialRecord.speedup`` keeps the
        ratio measured interleaved with the dense model, which the screen uses)."""
        return self.latency.median_ms / latency_ms

    def objective(self, name: str) -> float | None:
        """The dense model's value of a named objective (None when the profile does not measure it)."""
        return objective_value(name, accuracy=self.accuracy, latency=self.latency, params=self.params, macs=self.macs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DenseReference:
        return cls(**{**data, "latency": LatencyStats.from_dict(data["latency"])})
