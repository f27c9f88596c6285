"""LatencyStats: one model's measured latency on one hardware profile, as every layer reads it.

Backends produce it (``hardware/``), records carry it, scoring and reports read its fields by
name. On disk (run folders, the latency cache, model cards) it is the plain dict of ``to_dict``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class LatencyStats:
    """One model's measured latency on one profile (median, p90 and CV of single runs, in ms).

    Attributes:
        attempts: how many times the protocol measured before the CV was within the profile's limit.
        noisy: the CV stayed above the profile's ``max_cv`` after every re-measure (the figure is not
            to be trusted: the driver re-measures the candidate later, reports mark it).
        load_wait_s: how long the measurement waited for other processes' CPU use to drop first.
        other_cpu: other processes' CPU use (in cores) on the measuring machine when timing began;
            None where it is not known (a remote board).
        info: facts about the prepared model (``model_bytes``, ``session_memory_bytes``, ``cached``,
            TVM's ``tuned``...), copied from the backend.
        versions: every library version that affects the figure.
        machine: the fingerprint of the machine it was measured on.
    """

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
    noisy: bool = False
    load_wait_s: float = 0.0
    other_cpu: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)

    @property
    def peak_memory_bytes(self) -> float | None:
        """The runtime's peak memory when the backend measures it (the ``memory`` objective)."""
        value = self.info.get("peak_memory_bytes")
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyStats:
        return cls(**data)
