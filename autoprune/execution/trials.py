"""The driver's bookkeeping of trials in the run's study: resume, tell, duplicates, the deadline clock."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autoprune.plan import PruningPlan
from autoprune.records import TrialRecord, TrialState
from autoprune.search.space import PlanSpace
from autoprune.search.study import RECORD_ATTR, finished_records

if TYPE_CHECKING:
    import optuna


def resume(study: optuna.Study, objectives: Sequence[str]) -> list[TrialRecord]:
    """The finished trials' records, after closing trials a dead driver left RUNNING.

    A trial that finished but was not told is told now (kept, not repeated); one without a
    record is failed and its parameters re-queued, so the next ask re-runs its plan.
    """
    import optuna

    for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
        data = trial.user_attrs.get(RECORD_ATTR)
        if data is not None:
            tell(study, trial.number, TrialRecord.from_dict(data), objectives)
            continue
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
    return finished_records(study)


def tell(study: optuna.Study, number: int, record: TrialRecord, objectives: Sequence[str]) -> None:
    """Tell the study how trial ``number`` ended: objective values, or pruned (rejected), or failed.

    A duplicate (``duplicate_of``) is told as pruned whatever its original's state: it is the same candidate,
    and a second COMPLETE trial would count twice on any front drawn from the study (optuna-dashboard's).
    """
    import optuna

    if record.state == TrialState.COMPLETE and record.duplicate_of is None:
        values = [record.objective(o) for o in objectives]
        if any(v is None for v in values):
            raise ValueError(f"trial {number}: objective missing in {dict(zip(objectives, values, strict=True))}")
        study.tell(number, values)
    else:
        rejected = record.state in (TrialState.REJECTED, TrialState.COMPLETE)
        study.tell(number, state=optuna.trial.TrialState.PRUNED if rejected else optuna.trial.TrialState.FAIL)


def reuse_duplicate(records: Sequence[TrialRecord], space: PlanSpace, number: int,
                    plan: PruningPlan) -> TrialRecord | None:
    """The record of an earlier trial that builds the same candidate, re-numbered and marked, or None."""
    key = space.canonical(plan)
    for earlier in records:
        if earlier.duplicate_of is None and space.canonical(PruningPlan.from_dict(earlier.plan)) == key:
            return dataclasses.replace(earlier, number=number, plan=plan.to_dict(), duplicate_of=earlier.number,
                                       seconds={})
    return None


@dataclass
class TrialClock:
    """Estimates a trial's wall time from finished trials, to stop starting trials before a deadline.

    Before any trial of this search has finished, the estimate is the median of ``prior`` (trial
    durations of earlier searches of the same task and profile, e.g. in a sweep; else the driver's
    ``TrialCostJob``, one trial's work timed on the dense model); with none, only one trial runs
    until the first duration is known, so a deadline is overrun by at most one trial.
    """

    deadline: float | None
    #: wall times of finished trials (seeded with the work earlier sessions recorded)
    durations: list[float]
    started: dict[int, float] = field(default_factory=dict)
    #: trial durations of earlier searches, used until this search has its own
    prior: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, deadline: float | None, records: Sequence[TrialRecord], prior: Sequence[float] = ()) -> TrialClock:
        return cls(deadline=deadline, durations=[sum(r.seconds.values()) for r in records if r.seconds],
                   prior=list(prior))

    def start(self, number: int) -> None:
        self.started[number] = time.time()

    def finish(self, number: int) -> None:
        if number in self.started:
            self.durations.append(time.time() - self.started.pop(number))

    def estimate(self) -> float | None:
        """The median duration of the last 20 trials (this search's, else the prior ones), or None."""
        recent = sorted((self.durations or self.prior)[-20:])
        return recent[len(recent) // 2] if recent else None

    def allows_another(self) -> bool:
        if self.deadline is None:
            return True
        estimate = self.estimate()
        if estimate is None:  # nothing to estimate from: one trial at a time until the first one has finished
            return not self.started and time.time() < self.deadline
        return time.time() + estimate <= self.deadline
