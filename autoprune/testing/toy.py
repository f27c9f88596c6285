"""A toy search for agent tests: a plan space without a model, a known optimum, and the real driver loop.

``drive`` runs trials through ``execution.driver.Driver`` exactly as a search does (ask, screen,
promote, fine-tune, store the record, tell), with a ``FormulaExecutor`` that scores a plan by a
formula instead of pruning a model (``toy_record``: accuracy peaks at 1.0 when every ratio
equals its ``TARGETS`` value, latency falls with pruning).
"""
from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable

import optuna

from autoprune.config import SearchConfig, SearchSpace
from autoprune.execution.driver import Driver, Search
from autoprune.execution.executor import Executor
from autoprune.execution.jobs import DenseJob, Done, FinetuneJob, Job, Result, ScreenJob, TrialCostJob
from autoprune.execution.outcomes import Candidate
from autoprune.plan import PrunerSettings, PruningPlan
from autoprune.pruning.graph import PrunableGroup
from autoprune.records import TrialRecord, TrialState
from autoprune.search.agent import AgentContext, make_agent
from autoprune.search.objectives import Scoring
from autoprune.search.space import PlanSpace
from autoprune.search.study import finished_records
from autoprune.testing.fakes import NullSink, fake_profile, stats

#: the per-group ratios that maximise the toy accuracy
TARGETS = {"conv1": 0.6, "conv2": 0.2, "conv3": 0.7, "fc1": 0.1}
SCORING = Scoring(objectives=("accuracy", "latency"), dense={"latency": 1.0}, weights={"latency": 0.0},
                  reference={"accuracy": 0.5, "latency": 1.0})


#: spread of each toy group's unit importance around its mean (a wider spread has more unimportant channels)
SPREADS = {"conv1": 0.9, "conv2": 0.3, "conv3": 0.8, "fc1": 0.1}


def toy_space(space: SearchSpace | None = None, fast: tuple[str, ...] = ("channel",),
              precisions: tuple[str, ...] | None = None) -> PlanSpace:
    """The four ``TARGETS`` groups, 64 channels each, no rounding; unit importance spread as ``SPREADS`` says;
    ``precisions``: those the target runs."""
    groups = [PrunableGroup(name=n, channels=64, layers=(n,), root_type="Linear" if n.startswith("fc") else "Conv2d")
              for n in TARGETS]
    scores = {n: tuple(1.0 + SPREADS[n] * (2 * j / 63 - 1) for j in range(64)) for n in TARGETS}
    return PlanSpace.build(groups, space or SearchSpace(name="toy", ratio_step=0.05), PrunerSettings(), fast,
                           macs={"conv1": 4.0, "conv2": 3.0, "conv3": 2.0, "fc1": 1.0}, unit_scores=scores,
                           runnable_precisions=precisions)


def toy_record(number: int, plan: PruningPlan) -> TrialRecord:
    """The toy outcome of ``plan``, as a complete trial."""
    ratios = {n: g.ratio for n, g in plan.groups}
    accuracy = 1.0 - 2.0 * sum((ratios[n] - t) ** 2 for n, t in TARGETS.items()) / len(TARGETS)
    latency = 1.0 - 0.8 * sum(ratios.values()) / len(ratios)
    return TrialRecord(number=number, plan=plan.to_dict(), state=TrialState.COMPLETE, accuracy=accuracy,
                       latency=stats(latency), speedup=1.0 / latency, macs=int(1e6 * latency), params=1000)


class FormulaExecutor(Executor):
    """Runs the driver's jobs in this process with a formula instead of a model.

    ``evaluate(number, plan)`` gives a trial's complete record; its accuracy is the proxy the
    screen job returns, and the fine-tune job completes the trial with it. The dense model
    measures ``stats(1.0)``.
    """

    slots = 1

    def __init__(self, evaluate: Callable[[int, PruningPlan], TrialRecord] = toy_record, *,
                 trial_cost: float = 0.0) -> None:
        self.evaluate = evaluate
        #: what a ``TrialCostJob`` says one trial takes, in seconds
        self.trial_cost = trial_cost
        self._queue: deque[Job] = deque()

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def wait(self) -> list[Done]:
        job = self._queue.popleft()
        return [Done(job=job, result=self.result(job))]

    def result(self, job: Job) -> Result:
        if isinstance(job, DenseJob):
            return stats(1.0)
        if isinstance(job, TrialCostJob):
            return self.trial_cost
        if isinstance(job, ScreenJob):
            record = self.evaluate(job.number, job.plan)
            return dataclasses.replace(record, state=TrialState.SCREENED, accuracy=None, proxy=record.accuracy)
        assert isinstance(job, FinetuneJob), f"a formula runs trial jobs only, not {job}"
        return Candidate(record=dataclasses.replace(job.screened, state=TrialState.COMPLETE,
                                                    accuracy=job.screened.proxy))

    @property
    def in_flight(self) -> int:
        return len(self._queue)


def new_study(storage: str | None = None) -> optuna.Study:
    """An (in-memory, or ``storage``) two-objective study like a run's."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "minimize"], storage=storage, study_name="toy",
                               load_if_exists=True)


def drive(agent: str, study: optuna.Study, space: PlanSpace, trials: int, *, seed: int = 0,
          scoring: Scoring = SCORING, log_dir=None) -> list[TrialRecord]:
    """Run ``trials`` more toy trials of ``study`` with the agent ``agent`` (a fresh sampler, as a new session
    gets); return the records of the trials this call ran."""
    done = len(finished_records(study))
    context = AgentContext(space=space, seed=seed, scoring=scoring, log_dir=log_dir,
                           resumed_trials=len(study.get_trials(deepcopy=False)))
    study.sampler = make_agent(agent, context)
    # the plan space decides what is proposed; the config's space is fp32-only because the fake profile runs
    # nothing else (the formula scores any precision)
    config = SearchConfig(task="toy", profile=fake_profile(), agent=agent, trials=done + trials, seed=seed,
                          space=dataclasses.replace(space.space, precisions=("fp32",), keep_fp32=(),
                                                    search_keep_fp32=False))
    search = Search(config=config, study=study, space=space, scoring=scoring, executor=FormulaExecutor())
    return Driver(search, NullSink()).run()[done:]
