"""The search driver: one loop over the run's study -- resume, propose, submit, complete.

The driver owns the study's trial bookkeeping: it asks the study for each trial (the agent is
the study's sampler), stores the finished trial's record on it and tells it. Every piece of
work, every latency measurement included, is a job on the executor. A trial is two jobs: the
driver screens it, then decides with the fresh history of every proxy score so far whether it
earns the fine-tune, and only then submits that. What the run folder keeps is written by a
``RunSink`` (``results/``); the driver knows no file.

A candidate whose latency stayed noisy (CV above the profile's ``max_cv`` after its re-measures)
does not complete yet: its trial waits, and once other work has finished (or nothing else is
left) it is measured again, up to the profile's ``noisy_retries`` times; it completes with its
least noisy figure, still marked ``noisy`` if none was quiet. So a front is never decided by a
figure that was not re-checked, and what stays noisy is shown.

Resuming is the same call on the same study: finished trials are kept, a trial that was
interrupted mid-way is re-run with the same plan, and the budget counts finished trials only.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from autoprune.config import SearchConfig
from autoprune.errors import ConfigError
from autoprune.execution.executor import Executor
from autoprune.execution.jobs import DenseJob, FinetuneJob, Job, ProbeJob, RemeasureJob, Result, ScreenJob, TrialCostJob
from autoprune.execution.outcomes import Candidate, Probe
from autoprune.execution.trials import TrialClock, resume, reuse_duplicate, tell
from autoprune.latency import LatencyStats
from autoprune.records import DenseReference, TrialRecord, TrialState
from autoprune.search.fidelity import Screened, promotion_refusal
from autoprune.search.objectives import Scoring
from autoprune.search.space import PlanSpace
from autoprune.search.study import DUPLICATE_ATTR, HYPERVOLUME_ATTR, RECORD_ATTR, flush_writes

if TYPE_CHECKING:
    import optuna

#: ``on_event(kind, payload)``: ("start", (done, total)), ("trial", TrialRecord)
EventSink = Callable[[str, Any], None]


class RunSink(Protocol):
    """Where a search's results are kept (a run folder, ``results/run.py``)."""

    def save_candidate(self, candidate: Candidate) -> TrialRecord:
        """Keep a fine-tuned candidate's weights; return its record with ``model_path`` set."""

    def trials_finished(self, records: Sequence[TrialRecord]) -> None:
        """Every record so far, after each batch of trials that finished together."""


@dataclass(frozen=True, kw_only=True)
class Search:
    """What the driver runs: the search's settings, its study (whose sampler is the agent), its plan
    space and scoring, and the executor its jobs run on."""

    config: SearchConfig
    study: optuna.Study
    space: PlanSpace
    scoring: Scoring
    executor: Executor


def _screened(record: TrialRecord) -> Screened:
    """A screened candidate's (proxy, speed-up): a screen measures the latency before it scores the proxy."""
    assert record.proxy is not None and record.speedup is not None, "a screened record has its proxy and speed-up"
    return record.proxy, record.speedup


def run_one(executor: Executor, job: Job) -> Result:
    """Run one job alone (nothing else may be in flight) and return its result."""
    assert executor.in_flight == 0, "run_one needs an idle executor"
    executor.submit(job)
    [done] = executor.wait()
    return done.result


def measure_dense(executor: Executor) -> LatencyStats:
    """The dense model's latency, measured where the executor measures candidates."""
    latency = run_one(executor, DenseJob())
    assert isinstance(latency, LatencyStats)
    return latency


def check_feasible(config: SearchConfig, dense: DenseReference, space: PlanSpace, executor: Executor) -> None:
    """ConfigError when no plan of the space can meet the constraints (judged on the smallest plan).

    The smallest candidate (every group at the top of its ratio range) is pruned and measured
    once, on the executor like every candidate; if even it is too slow or too large, or the
    accuracy floor is above the dense model's, the search could only waste fine-tunes.
    """
    if config.min_accuracy is not None and config.min_accuracy > dense.accuracy:
        raise ConfigError(f"constraints cannot be met: min_accuracy {config.min_accuracy} is above the dense "
                          f"model's {dense.accuracy:.4f}")
    if config.max_latency_ms is None and config.max_params is None:
        return
    top = space.ratio_grid[-1]
    probe = run_one(executor, ProbeJob(plan=space.uniform_plan(top), measure=config.max_latency_ms is not None))
    assert isinstance(probe, Probe)
    if config.max_params is not None and probe.params > config.max_params:
        raise ConfigError(f"constraints cannot be met: max_params {config.max_params} is below the smallest candidate "
                          f"of the space (every group at ratio {top}: {probe.params} params)")
    latency = probe.latency
    if config.max_latency_ms is not None and min(latency.median_ms, latency.p90_ms) > config.max_latency_ms:
        raise ConfigError(f"constraints cannot be met: max_latency_ms {config.max_latency_ms} is below the "
                          f"smallest candidate of the space (every group at ratio {top}: {latency.median_ms:.3f} ms)")


class Driver:
    """Runs a search's remaining trials: ``Driver(search, sink, ...).run()``.

    At most ``executor.slots`` jobs are in flight while the agent keeps proposing. With a
    ``deadline`` (a ``time.time()`` value) no trial is started that would, by the median duration
    of finished trials, end after it; in-flight trials still finish.
    """

    def __init__(self, search: Search, sink: RunSink, *, deadline: float | None = None,
                 on_event: EventSink | None = None, prior_durations: Sequence[float] = ()) -> None:
        self.search = search
        self.sink = sink
        self.notify = on_event or (lambda kind, payload: None)
        self.records = resume(search.study, search.config.objectives)
        self.clock = TrialClock.of(deadline, self.records, prior_durations)
        if deadline is not None and self.clock.estimate() is None and time.time() < deadline:
            # nothing to estimate a trial from: time one on the dense model rather than start one blind
            cost = run_one(search.executor, TrialCostJob())
            assert isinstance(cost, float)
            self.clock.prior = [cost]
            self.notify("trial_estimate", cost)
        self.trials: dict[int, optuna.trial.Trial] = {}  # asked, not finished
        self.promoted: dict[int, TrialRecord] = {}  # screened candidates being fine-tuned
        self.batch: list[TrialRecord] = []
        #: noisy candidates waiting to be measured again, with the count of finished jobs when they were queued
        self.noisy: dict[int, tuple[TrialRecord, int]] = {}
        self.jobs_done = 0

    def run(self) -> list[TrialRecord]:
        """Propose, submit and complete trials until the budget (or the deadline) is spent; every record, by number."""
        self.notify("start", (len(self.records), self.search.config.trials))
        while True:
            self._remeasure_due()
            while self._may_start():
                self._propose()
            flush_writes(self.search.study)  # before waiting: every started trial's plan is in the study
            if self.batch:
                self._flush()
            elif self.search.executor.in_flight:
                for done in self.search.executor.wait():
                    self._on_done(done.job, done.result)
            elif self.noisy:
                continue  # nothing in flight: the queued re-measures are due now
            else:
                return sorted(self.records, key=lambda r: r.number)

    def _may_start(self) -> bool:
        budget = len(self.records) + len(self.trials) < self.search.config.trials
        return budget and self.search.executor.in_flight < self.search.executor.slots and self.clock.allows_another()

    def _propose(self) -> None:
        """Ask the study for a trial; complete it at once as a duplicate, or submit its screen."""
        trial = self.search.study.ask(self.search.space.distributions())
        plan = self.search.space.plan_from_params(trial.params)
        self.trials[trial.number] = trial
        duplicate = reuse_duplicate(self.records, self.search.space, trial.number, plan)
        if duplicate is not None:  # the same candidate was evaluated: no work at all
            self._complete(duplicate)
            return
        self.clock.start(trial.number)
        self.search.executor.submit(ScreenJob(number=trial.number, plan=plan))

    def _remeasure_due(self) -> None:
        """Submit the re-measures that are due: once another job has finished since, or nothing else is in flight."""
        executor = self.search.executor
        for number, (record, queued_at) in list(self.noisy.items()):
            if executor.in_flight >= executor.slots:
                return
            if self.jobs_done > queued_at or executor.in_flight == 0:
                del self.noisy[number]
                executor.submit(RemeasureJob(record=record))

    def _hold_if_noisy(self, record: TrialRecord) -> bool:
        """Queue a complete candidate with a noisy latency for a later re-measure (while retries are left)."""
        if not (record.state == TrialState.COMPLETE and record.noisy
                and record.remeasures < self.search.config.profile.noisy_retries):
            return False
        # kept on the trial now: a driver killed meanwhile resumes with this record instead of re-running it
        self.trials[record.number].set_user_attr(RECORD_ATTR, record.to_dict())
        self.noisy[record.number] = (record, self.jobs_done)
        return True

    def _on_done(self, job: Job, result: Result) -> None:
        self.jobs_done += 1
        if isinstance(job, RemeasureJob):
            assert isinstance(result, TrialRecord)
            if not self._hold_if_noisy(result):
                self._complete(result)
        elif isinstance(job, ScreenJob):
            self._on_screened(result)
        elif isinstance(job, FinetuneJob):
            self.promoted.pop(job.number)
            self._on_finetuned(result)

    def _on_screened(self, record: TrialRecord) -> None:
        """Promote a screened candidate to the fine-tune, or reject it on its proxy; complete anything else."""
        if record.state != TrialState.SCREENED:
            self._complete(record)
            return
        reason = promotion_refusal(_screened(record), self._screened_so_far(), self.search.config.proxy_keep,
                                   self.search.config.proxy_warmup)
        if reason:
            self._complete(dataclasses.replace(record, state=TrialState.REJECTED, reason=reason))
            return
        self.promoted[record.number] = record
        self.search.executor.submit(FinetuneJob(screened=record))

    def _screened_so_far(self) -> list[Screened]:
        """(proxy, speed-up) of every candidate that reached the proxy so far (duplicates once)."""
        seen = [r for r in self.records if r.duplicate_of is None] + list(self.promoted.values())
        return [_screened(r) for r in seen if r.proxy is not None and r.speedup is not None]

    def _on_finetuned(self, candidate: Candidate) -> None:
        record = candidate.record
        if record.state == TrialState.COMPLETE:
            record = self.sink.save_candidate(candidate)
        if not self._hold_if_noisy(record):
            self._complete(record)

    def _complete(self, record: TrialRecord) -> None:
        """Store the record on its trial (with its constraint margins and the hypervolume so far) and tell the study."""
        trial = self.trials.pop(record.number)
        self.clock.finish(record.number)
        self.records.append(record)
        scoring = self.search.scoring
        for name, value in zip(("latency", "accuracy", "params"), scoring.constraint_values(record), strict=True):
            trial.set_constraint(name, value)  # Optuna's samplers prefer feasible trials
        trial.set_user_attr(HYPERVOLUME_ATTR, scoring.hypervolume(self.records))
        if record.duplicate_of is not None:  # visible as such in the study (optuna-dashboard), told as pruned
            trial.set_user_attr(DUPLICATE_ATTR, record.duplicate_of)
        trial.set_user_attr(RECORD_ATTR, record.to_dict())
        tell(self.search.study, trial.number, record, self.search.config.objectives)
        self.batch.append(record)

    def _flush(self) -> None:
        """Hand the run's records to the sink once per batch (cheap with many workers), then announce the batch."""
        self.sink.trials_finished(sorted(self.records, key=lambda r: r.number))
        for record in self.batch:
            self.notify("trial", record)
        self.batch = []
