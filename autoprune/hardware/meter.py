"""LatencyMeter: candidates measured interleaved with a dense model kept prepared, through the cache.

The runner's measurements go through a meter: in-process a ``LatencyMeter``, on Ray a stand-in
that forwards to the measurement actor holding one (``execution/ray_executor.py``); both follow
the ``Meter`` protocol.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from autoprune.environment import machine_fingerprint
from autoprune.hardware.base import get_backend
from autoprune.hardware.cache import LatencyCache, measurement_key
from autoprune.hardware.protocol import measurement_versions, prepare_measured, prepare_onnx_measured, time_prepared
from autoprune.latency import LatencyStats

if TYPE_CHECKING:
    from torch import nn

    from autoprune.config import HardwareProfile
    from autoprune.hardware.predictor import LatencyPredictor
    from autoprune.inputs import Inputs


class Meter(Protocol):
    """What the trial runner measures with (a ``LatencyMeter`` here, the measurement actor on Ray)."""

    def dense(self) -> LatencyStats:
        """The dense model's latency, measured now."""

    def compare(self, candidate: nn.Module) -> tuple[LatencyStats, LatencyStats]:
        """(candidate, dense) from one interleaved measurement."""

    def predict(self, candidate: nn.Module) -> float | None:
        """The predicted median (ms), None without a predictor."""

    def compare_onnx(self, onnx: bytes, fp32: nn.Module | None) -> tuple[LatencyStats, ...]:
        """(the ONNX file, dense[, fp32]) from one interleaved measurement; ``fp32``: the candidate unquantized."""

    def dense_median_ms(self) -> float:
        """The dense median (ms) every prediction of a run is judged against."""


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
        key = None
        if self.cache is not None:
            key = measurement_key(candidate, self._dense_model, self.example_input, self.profile, self._versions,
                                  self._machine_id)
            hit = self.cache.get(key)
            if hit is not None and not any(s.noisy or s.cv > self.profile.max_cv for s in hit):  # noisy: measure again
                return tuple(replace(s, info={**s.info, "cached": True}) for s in hit)  # type: ignore[return-value]
        prepared = prepare_measured(self.backend, candidate, self.example_input)
        cand, dense = time_prepared([prepared, self._dense], self.backend)
        self._remember_dense(dense)
        if self.cache is not None and key is not None and not (cand.noisy or dense.noisy):
            self.cache.put(key, cand, dense)
        return cand, dense

    def compare_onnx(self, onnx: bytes, fp32: nn.Module | None) -> tuple[LatencyStats, ...]:
        """A quantized candidate's ONNX file measured interleaved with the dense model and, when given, its own
        fp32 model: (quantized, dense) or (quantized, dense, fp32). Not cached (the key is a module's
        architecture, which a quantized file does not have)."""
        models = [prepare_onnx_measured(self.backend, onnx, self.example_input), self._dense]
        if fp32 is not None:
            models.append(prepare_measured(self.backend, fp32, self.example_input))
        measured = time_prepared(models, self.backend)
        self._remember_dense(measured[1])
        return tuple(measured)

    def predict(self, candidate: nn.Module) -> float | None:
        """Predicted median latency (ms) of ``candidate``; None without a predictor."""
        if self.predictor is None:
            return None
        return self.predictor.predict(candidate, self.example_input)
