"""TrialRecord: everything one trial produced, as plain data that crosses processes as a dict."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

COMPLETE, REJECTED, FAILED = "complete", "rejected", "failed"


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """The outcome of one trial.

    ``state`` is ``complete`` (fine-tuned and measured), ``rejected`` (screened out before
    fine-tuning, e.g. not faster than dense, or a proxy score too low to earn the full
    fine-tune) or ``failed`` (with ``reason``). Latencies are
    LatencyStats dicts; ``dense_latency`` was measured interleaved with the candidate. A
    candidate rejected on its *predicted* latency has ``predicted_ms`` and no ``latency``.
    """

    number: int
    plan: dict[str, dict[str, Any]]
    state: str
    reason: str = ""
    accuracy: float | None = None
    latency: dict[str, Any] | None = None
    dense_latency: dict[str, Any] | None = None
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

    @property
    def screened_unmeasured(self) -> bool:
        """Rejected on its predicted latency alone (never measured)."""
        return self.state == REJECTED and self.latency is None and self.predicted_ms is not None

    @property
    def latency_ms(self) -> float | None:
        return None if self.latency is None else float(self.latency["median_ms"])

    @property
    def latency_p90_ms(self) -> float | None:
        return None if self.latency is None else float(self.latency["p90_ms"])

    def objective(self, name: str) -> float | None:
        """The value of a named objective (see ``config.OBJECTIVES``)."""
        values = {"accuracy": self.accuracy, "latency": self.latency_ms, "latency_p90": self.latency_p90_ms,
                  "params": self.params, "macs": self.macs,
                  "memory": (self.latency or {}).get("info", {}).get("peak_memory_bytes")}
        value = values[name]
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        return cls(**data)
