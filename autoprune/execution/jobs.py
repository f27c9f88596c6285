"""The units of work an executor runs: plain, picklable descriptions the runner turns into results.

A job carries only plans and records (no model, no file path), so any worker that can rebuild
the search's runner can run it. ``run(runner)`` does the work; ``failed(reason)`` is its result
when the worker running it died past its retries (a trial is then recorded FAILED; the dense
measurement and the probes have no record to fall back on, so they raise).

Call order for the driver: ``DenseJob`` once, ``ProbeJob`` once on a fresh run with size or
latency constraints, ``TrialCostJob`` once when a deadline search has no trial duration to go by,
then per trial a ``ScreenJob`` and, when the driver promotes the screened
candidate, a ``FinetuneJob``; for a finished candidate whose latency stayed noisy, up to the
profile's ``noisy_retries`` ``RemeasureJob``s before its trial completes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autoprune.errors import BackendUnavailable
from autoprune.execution.outcomes import Candidate, Probe
from autoprune.latency import LatencyStats
from autoprune.plan import PruningPlan
from autoprune.records import TrialRecord, TrialState

if TYPE_CHECKING:
    from autoprune.execution.runner import TrialRunner


@dataclass(frozen=True, kw_only=True)
class DenseJob:
    """Measure the dense model where candidates are measured."""

    def run(self, runner: TrialRunner) -> LatencyStats:
        return runner.meter.dense()

    def failed(self, reason: str) -> LatencyStats:
        raise BackendUnavailable(f"measuring the dense model failed: {reason}")


@dataclass(frozen=True, kw_only=True)
class ProbeJob:
    """Prune ``plan`` (the smallest of the space), count its parameters, measure it if ``measure``."""

    plan: PruningPlan
    measure: bool

    def run(self, runner: TrialRunner) -> Probe:
        return runner.probe(self.plan, measure=self.measure)

    def failed(self, reason: str) -> Probe:
        raise BackendUnavailable(f"probing the smallest candidate of the space failed: {reason}")


@dataclass(frozen=True)
class TrialCostJob:
    """Time one trial's work on the dense model: a deadline's first estimate, before any trial has finished."""

    def run(self, runner: TrialRunner) -> float:
        return runner.trial_cost()

    def failed(self, reason: str) -> float:
        raise BackendUnavailable(f"timing a trial's work on the dense model failed: {reason}")


@dataclass(frozen=True, kw_only=True)
class ScreenJob:
    """Stage one of trial ``number``: prune, screen, measure, proxy."""

    number: int
    plan: PruningPlan

    def run(self, runner: TrialRunner) -> TrialRecord:
        return runner.screen(self.number, self.plan)

    def failed(self, reason: str) -> TrialRecord:
        return TrialRecord(number=self.number, plan=self.plan.to_dict(), state=TrialState.FAILED, reason=reason)


@dataclass(frozen=True, kw_only=True)
class FinetuneJob:
    """Stage two of a trial the driver promoted: fine-tune and evaluate its screened candidate."""

    screened: TrialRecord

    @property
    def number(self) -> int:
        return self.screened.number

    def run(self, runner: TrialRunner) -> Candidate:
        return runner.finetune(self.screened)

    def failed(self, reason: str) -> Candidate:
        return Candidate(record=dataclasses.replace(self.screened, state=TrialState.FAILED, reason=reason))


@dataclass(frozen=True, kw_only=True)
class RemeasureJob:
    """Measure a finished candidate again because its latency was noisy (``TrialRecord.noisy``)."""

    record: TrialRecord

    @property
    def number(self) -> int:
        return self.record.number

    def run(self, runner: TrialRunner) -> TrialRecord:
        return runner.remeasure(self.record)

    def failed(self, reason: str) -> TrialRecord:
        return dataclasses.replace(self.record, remeasures=self.record.remeasures + 1)


Job = DenseJob | ProbeJob | TrialCostJob | ScreenJob | FinetuneJob | RemeasureJob
Result = LatencyStats | Probe | float | TrialRecord | Candidate


@dataclass(frozen=True, kw_only=True)
class Done:
    """A finished job and its result."""

    job: Job
    result: Result
