"""Latency backends, the measurement protocol, and the hardware fingerprint."""
from autoprune.hardware.base import BACKENDS, LatencyBackend, Prepared, get_backend
from autoprune.hardware.protocol import LatencyMeter, LatencyStats, measure_models

__all__ = ["BACKENDS", "LatencyBackend", "LatencyMeter", "LatencyStats", "Prepared", "get_backend", "measure_models"]
