"""Test doubles: a latency backend that needs no runtime, LatencyStats in one call, a run sink that keeps nothing.

``FakeLatencyBackend`` (registered as backend ``fake`` when this module is imported) times a
model by its multiply-accumulates: deterministic, instant and monotone in the model's size, so
driver tests run the real measurement protocol and meter without exporting anything, and a
pruned candidate is always faster than its dense model. ``FakeMachine`` scripts the machine it
measures on (other processes' CPU use, the CV of its timings), so the busy-machine paths (load
waits, noisy figures, later re-measures) run deterministically.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

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


class FakeMachine:
    """The scripted machine the fake backend measures on: a list of states (other processes' CPU use in
    cores, CV of the timings). Reading *i* of the load (the protocol reads it before each timing attempt,
    and again each time it polls while waiting) sees state *i*, and timings use the state last read;
    past the end the last state stays.

    ``FakeMachine.script([(1.5, 0.4), (0.0, 0.01)])``: busy and noisy at the first reading, idle and quiet
    from the second. ``FakeMachine.script([])`` (the default): idle, timings exact.
    """

    states: ClassVar[list[tuple[float, float]]] = []
    readings: ClassVar[int] = 0

    @classmethod
    def script(cls, states: Sequence[tuple[float, float]]) -> None:
        cls.states, cls.readings = list(states), 0

    @classmethod
    def _state(cls) -> tuple[float, float]:
        if not cls.states:
            return 0.0, 0.0
        return cls.states[max(0, min(cls.readings - 1, len(cls.states) - 1))]

    @classmethod
    def read_load(cls) -> float:
        """Other processes' CPU use now; moves the script on by one state."""
        cls.readings += 1
        return cls._state()[0]

    @classmethod
    def cv(cls) -> float:
        return cls._state()[1]


class _FixedTime(Prepared):
    def __init__(self, seconds: float, info: dict[str, Any]) -> None:
        self.seconds = seconds
        self.info = info

    def run(self, n: int) -> list[float]:
        # alternately above and below by the machine's CV: mean and median stay ``seconds``, CV is exact
        cv = FakeMachine.cv()
        return [self.seconds * (1 + cv if i % 2 == 0 else 1 - cv) for i in range(n)]


class FakeLatencyBackend(LatencyBackend):
    """Latency from MACs (``FAKE_OVERHEAD_S + FAKE_SECONDS_PER_MAC x MACs`` per inference); no runtime involved."""

    def prepare(self, model: nn.Module, example_input: Inputs) -> Prepared:
        from autoprune.pruning import model_stats

        stats = model_stats(model, self.batch_input(example_input))
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        return _FixedTime(FAKE_OVERHEAD_S + FAKE_SECONDS_PER_MAC * stats.macs, {"model_bytes": size})

    def load_gauge(self):
        return FakeMachine.read_load


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
