"""The measurement protocol every backend follows (DESIGN section 4).

Warm up by time, then time at least ``min_runs`` inferences split into ``repeats`` blocks;
when several models are measured together their blocks are interleaved so slow drifts of the
machine hit all of them alike. Report median, p90 and CV (std/mean of single runs); re-measure
while CV is above the profile's ``max_cv`` (up to ``max_remeasure`` times, keeping the best);
a figure whose CV stays above it is marked ``noisy``. Before each attempt the machine's load
(other processes' CPU use, ``hardware/load.py``) is read, and the protocol waits up to the
profile's ``load_wait_s`` (in all) for it to drop to ``max_other_cpu``; the wait and the load
are recorded with the figure.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import TYPE_CHECKING

from autoprune.environment import library_versions, machine_fingerprint
from autoprune.hardware.base import LatencyBackend, Prepared, get_backend
from autoprune.hardware.load import tolerated_cpu, wait_for_quiet
from autoprune.latency import LatencyStats

if TYPE_CHECKING:
    from torch import nn

    from autoprune.config import HardwareProfile
    from autoprune.inputs import Inputs


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


def prepare_onnx_measured(backend: LatencyBackend, onnx: bytes, example_input: Inputs) -> Prepared:
    """``prepare_measured`` for an ONNX file made elsewhere (a quantized candidate).

    Raises:
        BackendUnavailable: the backend cannot time ONNX files (it has no ``prepare_onnx``).
    """
    from autoprune.errors import BackendUnavailable

    prepare = getattr(backend, "prepare_onnx", None)
    if prepare is None:
        raise BackendUnavailable(f"hardware profile {backend.profile.name}: backend {backend.profile.backend} "
                                 "cannot time a quantized ONNX model")
    before = _rss_bytes()
    prepared: Prepared = prepare(onnx, example_input)
    prepared.run(1)
    prepared.info.setdefault("session_memory_bytes", max(0, _rss_bytes() - before))
    return prepared


def time_prepared(prepared: list[Prepared], backend: LatencyBackend) -> list[LatencyStats]:
    """Apply the protocol to already prepared models; one LatencyStats per model."""
    profile = backend.profile
    versions, machine = measurement_versions(backend), machine_fingerprint()
    gauge = backend.load_gauge()
    waited = 0.0
    best: list[LatencyStats | None] = [None] * len(prepared)
    for attempt in range(1, profile.max_remeasure + 2):
        load = None
        if gauge is not None:
            seconds, load = wait_for_quiet(gauge, bound_s=max(0.0, profile.load_wait_s - waited),
                                           tolerated=tolerated_cpu(profile))
            waited += seconds
        for i, samples in enumerate(_time_interleaved(prepared, profile)):
            median, p90, mean, cv = _summarise(samples)
            stats = LatencyStats(median_ms=median, p90_ms=p90, mean_ms=mean, cv=cv, runs=len(samples),
                                 profile=profile.name, backend=profile.backend, device=profile.device,
                                 threads=profile.threads, batch_size=profile.batch_size, attempts=attempt,
                                 noisy=cv > profile.max_cv, load_wait_s=waited, other_cpu=load,
                                 info=dict(prepared[i].info), versions=versions, machine=machine)
            current = best[i]
            if current is None or stats.cv < current.cv:
                best[i] = stats
        if all(s is not None and s.cv <= profile.max_cv for s in best):
            break
    # every figure records the attempts and the whole wait of this measurement, whichever attempt it kept
    return [dataclasses.replace(s, attempts=attempt, load_wait_s=waited) for s in best if s is not None]


def measure_models(profile: HardwareProfile, models: list[nn.Module], example_input: Inputs) -> list[LatencyStats]:
    """Prepare and measure several models together (interleaved) on ``profile``."""
    backend = get_backend(profile)
    return time_prepared([prepare_measured(backend, m, example_input) for m in models], backend)
