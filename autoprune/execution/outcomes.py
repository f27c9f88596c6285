"""What the runner's stages return besides a TrialRecord: a probe of the smallest candidate, a fine-tuned candidate."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from autoprune.latency import LatencyStats
from autoprune.records import TrialRecord


@dataclass(frozen=True, kw_only=True)
class Probe:
    """What the smallest candidate of a space costs (the driver's feasibility check)."""

    params: int
    latency: LatencyStats | None


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A fine-tuned candidate: its record and what the run folder saves of it."""

    record: TrialRecord
    #: the fine-tuned state_dict (None when a formula stands in for the model: benchmarks, tests)
    weights: dict[str, torch.Tensor] | None = None
    sparsity: dict[str, float] = field(default_factory=dict)
    #: the quantized ONNX file of a plan whose precision is not fp32 (the model that ships)
    onnx: bytes | None = None
