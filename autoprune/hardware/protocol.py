"""The measurement protocol every backend follows (DESIGN section 4).

Warm up by time, then time at least ``min_runs`` inferences split into ``repeats`` blocks;
when several models are measured together their blocks are interleaved so slow drifts of the
machine hit all of them alike. Report median, p90 and CV (std/mean of single runs); re-measure
while CV is above the profile's ``max_cv`` (up to ``max_remeasure`` times, keeping the best).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from autoprune.hardware.base import LatencyBackend, Prepared, get_backend

if TYPE_CHECKING:
    from torch import nn

    from autoprune.config import HardwareProfile
    from autoprune.inputs import Inputs
    from autoprune.hardware.cache import LatencyCache
    from autoprune.hardware.predictor import LatencyPredictor


@dataclass(frozen=True, kw_only=True)
class LatencyStats:
    """One model's measured latency on one profile."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    cv: float
    runs: int
    profile: str
    backend: str
    device: str
    threads: int
    batch_size: int
    attempts: int = 1
    info: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        return cls(**data)


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def _summarise(samples: list[float]) -> tuple[float, float, float, float]:
    ordered = sorted(samples)
    mean = statistics.fmean(ordered)
    cv = statistics.pstdev(ordered) / mean if mean > 0 else 0.0
    return statistics.median(ordered) * 1e3, _percentile(ordered, 0.9) * 1e3, mean * 1e3, cv


def _time_interleaved(prepared: list[Prepared], profile: HardwareProfile) -> list[list[float]]:
    deadline = time.perf_counter() + profile.warmup_s
    while True:  # warm up every model by time (at least one run each)
        for p in prepared:
            p.run(1)
        if time.perf_counter() >= deadline:
            break
    per_block = math.ceil(profile.min_runs / profile.repeats)
    samples: list[list[float]] = [[] for _ in prepared]
    for _ in range(profile.repeats):
        for i, p in enumerate(prepared):
            samples[i].extend(p.run(per_block))
    return samples


def measurement_versions(backend: LatencyBackend) -> dict[str, str]:
    """Every library version recorded with a measurement (the backend's own ones included)."""
    from autoprune.results.environment import library_versions

    return {**library_versions(), **backend.versions()}


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def prepare_measured(backend: LatencyBackend, model: nn.Module, example_input: Inputs) -> Prepared:
    """``backend.prepare`` plus the runtime session's memory: the process RSS growth over
    preparing and one inference (an approximation: freed Python objects can hide some of it).
    A backend that knows better (CUDA allocator, remote board) sets ``session_memory_bytes`` itself.
    """
    before = _rss_bytes()
    prepared = backend.prepare(model, example_input)
    prepared.run(1)
    prepared.info.setdefault("session_memory_bytes", max(0, _rss_bytes() - before))
    return prepared


def time_prepared(prepared: list[Prepared], backend: LatencyBackend) -> list[LatencyStats]:
    """Apply the protocol to already prepared models; one LatencyStats per model."""
    from autoprune.results.environment import machine_fingerprint

    profile = backend.profile
    versions, machine = measurement_versions(backend), machine_fingerprint()
    best: list[LatencyStats | None] = [None] * len(prepared)
    for attempt in range(1, profile.max_remeasure + 2):
        for i, samples in enumerate(_time_interleaved(prepared, profile)):
            median, p90, mean, cv = _summarise(samples)
            stats = LatencyStats(median_ms=median, p90_ms=p90, mean_ms=mean, cv=cv, runs=len(samples),
                                 profile=profile.name, backend=profile.backend, device=profile.device,
                                 threads=profile.threads, batch_size=profile.batch_size, attempts=attempt,
                                 info=dict(prepared[i].info), versions=versions, machine=machine)
            if best[i] is None or stats.cv < best[i].cv:
                best[i] = stats
        if all(s.cv <= profile.max_cv for s in best):
            break
    return [s for s in best if s is not None]


def measure_models(profile: HardwareProfile, models: list[nn.Module], example_input: Inputs) -> list[LatencyStats]:
    """Prepare and measure several models together (interleaved) on ``profile``."""
    backend = get_backend(profile)
    return time_prepared([prepare_measured(backend, m, example_input) for m in models], backend)


class LatencyMeter:
    """Keeps the dense model prepared so every candidate is measured interleaved with it.

    ``compare(candidate)`` returns (candidate stats, dense stats) from one interleaved
    measurement, so the speed-up ratio is taken in the same process and moment. With a cache
    (the default one unless ``cache=None``), an identical candidate measured before, in this
    run or another, is returned from the cache with the dense stats of that measurement
    (``info["cached"]`` is True). With a predictor, ``predict(candidate)`` estimates latency
    without measuring (for screening only); ``dense_median_ms()`` is the dense model's measured
    median a prediction is compared with.
    """

    def __init__(self, profile: HardwareProfile, dense: nn.Module, example_input: Inputs, *,
                 cache: LatencyCache | None | str = "default", predictor: LatencyPredictor | None = None) -> None:
        from autoprune.hardware.cache import LatencyCache
        from autoprune.results.environment import machine_fingerprint

        self.profile = profile
        self.backend = get_backend(profile)
        self.example_input = example_input
        self.cache = LatencyCache.default() if cache == "default" else cache
        self.predictor = predictor
        self._dense_model = dense
        self._dense = prepare_measured(self.backend, dense, example_input)
        self._versions = measurement_versions(self.backend)
        self._machine_id = machine_fingerprint()["id"]
        self._dense_median_ms: float | None = None

    def dense(self) -> LatencyStats:
        stats = time_prepared([self._dense], self.backend)[0]
        self._remember_dense(stats)
        return stats

    def _remember_dense(self, stats: LatencyStats) -> None:
        if self._dense_median_ms is None:
            self._dense_median_ms = stats.median_ms

    def dense_median_ms(self) -> float:
        """The dense model's median (ms) from this meter's first measurement of it (measured now if none yet).

        Kept once so every prediction in a run is judged against the same reference, without
        re-measuring the dense model per candidate.
        """
        if self._dense_median_ms is None:
            self.dense()
        assert self._dense_median_ms is not None
        return self._dense_median_ms

    def compare(self, candidate: nn.Module) -> tuple[LatencyStats, LatencyStats]:
        from dataclasses import replace

        from autoprune.hardware.cache import measurement_key

        key = None
        if self.cache is not None:
            key = measurement_key(candidate, self._dense_model, self.example_input, self.profile, self._versions,
                                  self._machine_id)
            hit = self.cache.get(key)
            if hit is not None:
                return tuple(replace(s, info={**s.info, "cached": True}) for s in hit)  # type: ignore[return-value]
        prepared = prepare_measured(self.backend, candidate, self.example_input)
        cand, dense = time_prepared([prepared, self._dense], self.backend)
        self._remember_dense(dense)
        if self.cache is not None and key is not None:
            self.cache.put(key, cand, dense)
        return cand, dense

    def predict(self, candidate: nn.Module) -> float | None:
        """Predicted median latency (ms) of ``candidate``; None without a predictor."""
        if self.predictor is None:
            return None
        return self.predictor.predict(candidate, self.example_input)
