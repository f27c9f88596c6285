"""Test doubles: a latency backend that needs no runtime, LatencyStats in one call, a run sink that keeps nothing.

``FakeLatencyBackend`` (registered as backend ``fake`` when this module is imported) times a
model by its multiply-accumulates: deterministic, instant and monotone in the model's size, so
driver tests run the real measurement protocol and meter without exporting anything, and a
pruned candidate is always faster than its dense model.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from autoprune.config import HardwareProfile
from autoprune.execution.outcomes import Candidate
from autoprune.hardware.base import LatencyBackend, Prepared
from autoprune.inputs import Inputs
from autoprune.latency import LatencyStats
from autoprune.records import TrialRecord
from autoprune.registry import BACKENDS

#: the fake latency: a fixed cost per call plus a cost per multiply-accumulate
FAKE_OVERHEAD_S = 1e-5
FAKE_SECONDS_PER_MAC = 1e-10


class _FixedTime(Prepared):
    def __init__(self, seconds: float, info: dict[str, Any]) -> None:
        self.seconds = seconds
        self.info = info

    def run(self, n: int) -> list[float]:
        return [self.seconds] * n


class FakeLatencyBackend(LatencyBackend):
    """Latency from MACs (``FAKE_OVERHEAD_S + FAKE_SECONDS_PER_MAC x MACs`` per inference); no runtime involved."""

    def prepare(self, model: nn.Module, example_input: Inputs) -> Prepared:
        from autoprune.pruning import model_stats

        stats = model_stats(model, self.batch_input(example_input))
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        return _FixedTime(FAKE_OVERHEAD_S + FAKE_SECONDS_PER_MAC * stats.macs, {"model_bytes": size})


if "fake" not in BACKENDS:
    BACKENDS.register("fake")(FakeLatencyBackend)


def fake_profile(name: str = "test-fake", **fields: Any) -> HardwareProfile:
    """A profile on the fake backend with an instant protocol (no warm-up, few runs)."""
    settings = {"warmup_s": 0.0, "min_runs": 4, "repeats": 2, "max_cv": 1.0, "round_to": 4, **fields}
    return HardwareProfile(name=name, backend="fake", **settings)


def stats(median_ms: float, *, p90_ms: float | None = None, cv: float = 0.01, profile: str = "test") -> LatencyStats:
    """A LatencyStats with the given figures and placeholder provenance (for records built by hand)."""
    return LatencyStats(median_ms=median_ms, p90_ms=median_ms * 1.1 if p90_ms is None else p90_ms,
                        mean_ms=median_ms, cv=cv, runs=50, profile=profile, backend="fake", device="cpu", threads=1,
                        batch_size=1)


class NullSink:
    """A ``RunSink`` that keeps nothing: candidates are not saved, and the records it is handed are remembered."""

    def __init__(self) -> None:
        self.records: list[TrialRecord] = []

    def save_candidate(self, candidate: Candidate) -> TrialRecord:
        return candidate.record

    def trials_finished(self, records: Sequence[TrialRecord]) -> None:
        self.records = list(records)
