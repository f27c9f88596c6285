"""The search driver: owns the run's study, asks the agent, runs trials, tells results.

Resuming is the same call on the same run folder: finished trials are kept, a trial that was
interrupted mid-way is re-run with the same plan, and the budget counts finished trials only.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autoprune.config import OBJECTIVES, ExecutionConfig, SearchConfig
from autoprune.errors import ConfigError
from autoprune.execution.executor import Executor
from autoprune.execution.record import COMPLETE, FAILED, REJECTED, TrialRecord
from autoprune.results.files import atomic_write_json
from autoprune.results.run import RECORD_ATTR, RunFolder, finished_records, open_study

#: fields that must match for a run folder to be resumed with a new command
IDENTITY_FIELDS = ("task", "agent", "seed", "objectives", "profile", "space")


@dataclass(frozen=True, kw_only=True)
class DenseReference:
    """The dense model's numbers every candidate is compared with."""

    accuracy: float
    latency: dict[str, Any]
    macs: int
    params: int
    groups: list[dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class SearchOutcome:
    run: RunFolder
    dense: DenseReference
    records: list[TrialRecord]
    front: list[TrialRecord]


def _check_resumable(run: RunFolder, config: SearchConfig) -> None:
    if not run.config.is_file():
        return
    saved = json.loads(run.config.read_text())
    current = json.loads(json.dumps(config.to_dict()))
    for key in IDENTITY_FIELDS:
        if saved.get(key) != current.get(key):
            raise ConfigError(f"{run.path}: holds a search with a different `{key}`; resume it with the same "
                              f"settings or choose another --out")


def objective_values(record: TrialRecord, objectives: tuple[str, ...]) -> list[float]:
    values = [record.objective(o) for o in objectives]
    if any(v is None for v in values):
        raise ValueError(f"trial {record.number}: objective missing in {dict(zip(objectives, values))}")
    return values  # type: ignore[return-value]


def front_of(records: list[TrialRecord], objectives: tuple[str, ...]) -> list[TrialRecord]:
    """Pareto-optimal complete trials, sorted by latency (or the first objective)."""
    from autoprune.search.pareto import pareto_front

    done = [r for r in records if r.state == COMPLETE]
    maximize = [OBJECTIVES[o] == "maximize" for o in objectives]
    front = [done[i] for i in pareto_front([objective_values(r, objectives) for r in done], maximize)]
    key = "latency" if "latency" in objectives else objectives[0]
    return sorted(front, key=lambda r: r.objective(key) or 0.0)


def write_pareto(run: RunFolder, config: SearchConfig, dense: DenseReference, records: list[TrialRecord]) -> list[TrialRecord]:
    front = front_of(records, config.objectives)
    atomic_write_json(run.pareto, {
        "objectives": {o: OBJECTIVES[o] for o in config.objectives},
        "dense": asdict(dense),
        "trials": {"finished": len(records), "complete": sum(r.state == COMPLETE for r in records),
                   "rejected": sum(r.state == REJECTED for r in records),
                   "failed": sum(r.state == FAILED for r in records)},
        "front": [r.to_dict() for r in front],
    })
    return front


def _recover_interrupted(study, objectives: tuple[str, ...]) -> int:
    """Close trials left RUNNING by a dead driver; re-queue the ones without a record."""
    import optuna

    requeued = 0
    for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
        data = trial.user_attrs.get(RECORD_ATTR)
        if data is not None:  # finished but not told: keep it, do not repeat it
            _tell(study, trial.number, TrialRecord.from_dict(data), objectives)
            continue
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
        requeued += 1
    return requeued


def _tell(study, number: int, record: TrialRecord, objectives: tuple[str, ...]) -> None:
    import optuna

    if record.state == COMPLETE:
        study.tell(number, objective_values(record, objectives))
    else:
        state = optuna.trial.TrialState.PRUNED if record.state == REJECTED else optuna.trial.TrialState.FAIL
        study.tell(number, state=state)


def _prepare_dense(task, config: SearchConfig):
    """The dense model and its prunable groups."""
    from autoprune.pruning import discover_groups

    dense_model = task.build_model()
    return dense_model, discover_groups(dense_model, task.example_input, config.space.ignore)


def _dense_reference(run: RunFolder, task, dense_model, groups, executor: Executor) -> DenseReference:
    """The dense reference, measured where candidates are measured (kept from the first session)."""
    from autoprune.pruning import model_stats
    from autoprune.training import evaluate

    if run.dense.is_file():
        return DenseReference(**json.loads(run.dense.read_text()))
    stats = model_stats(dense_model, task.example_input)
    dense = DenseReference(accuracy=evaluate(dense_model, task.val_set, task.metric),
                           latency=executor.dense_latency().to_dict(), macs=stats.macs, params=stats.params,
                           groups=[asdict(g) for g in groups])
    atomic_write_json(run.dense, asdict(dense))
    return dense


class _TrialClock:
    """Estimates a trial's wall time from finished trials, to stop submitting before a deadline."""

    def __init__(self, deadline: float | None, records: list[TrialRecord]) -> None:
        self.deadline = deadline
        self.started: dict[int, float] = {}
        # before this session has timed a trial, the work recorded by earlier ones is the estimate
        self.durations = [sum(r.seconds.values()) for r in records if r.seconds]

    def start(self, number: int) -> None:
        self.started[number] = time.time()

    def finish(self, number: int) -> None:
        if number in self.started:
            self.durations.append(time.time() - self.started.pop(number))

    def allows_another(self) -> bool:
        if self.deadline is None:
            return True
        if not self.durations:  # nothing to estimate from yet: start while there is time left
            return time.time() < self.deadline
        recent = sorted(self.durations[-20:])
        return time.time() + recent[len(recent) // 2] <= self.deadline


def run_search(
    config: SearchConfig,
    out: str | Path,
    *,
    storage: str | None = None,
    on_event: Callable[[str, Any], None] | None = None,
    execution: ExecutionConfig | None = None,
    executor: Executor | None = None,
    deadline: float | None = None,
) -> SearchOutcome:
    """Run (or resume) a search into ``out``; ``on_event(kind, payload)`` feeds a progress display.

    Trials run on ``executor`` (default: built from ``execution``: in-process for one worker, Ray
    for more); at most ``executor.slots`` are in flight while the agent keeps proposing. With a
    ``deadline`` (a ``time.time()`` value) no trial is started that would, by the median duration
    of finished trials, end after it; in-flight trials still finish.

    Events: ``("dense", DenseReference)``, ``("start", (done, total))``, ``("trial", TrialRecord)``.
    """
    from autoprune.execution.executor import make_executor, trial_task
    from autoprune.results.environment import library_versions, machine_fingerprint
    from autoprune.search.agent import agent_sampler, make_agent
    from autoprune.search.space import PlanSpace

    notify = on_event or (lambda kind, payload: None)
    run = RunFolder(Path(out))
    _check_resumable(run, config)
    task = trial_task(config)
    agent_sampler(config.agent, config.seed)  # fail on an unknown agent before any work
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.config, config.to_dict())
    atomic_write_json(run.environment, {"versions": library_versions(), "machine": machine_fingerprint(),
                                        "seed": config.seed})
    dense_model, groups = _prepare_dense(task, config)
    executor = executor or make_executor(execution or ExecutionConfig(), config, task, dense_model, run.trials)
    try:
        dense = _dense_reference(run, task, dense_model, groups, executor)
        notify("dense", dense)
        directions = [OBJECTIVES[o] for o in config.objectives]
        study = open_study(storage or run.storage_url(), directions)
        # a resumed sampler must not replay the first session's random stream: offset its seed by
        # the trials already in the study (0 for a fresh run, so fresh runs stay reproducible)
        sampler = agent_sampler(config.agent, config.seed + len(study.get_trials(deepcopy=False)))
        if sampler is not None:
            study.sampler = sampler
        _recover_interrupted(study, config.objectives)
        space = PlanSpace.build(groups, config.space, config.profile.fast_structures)
        agent = make_agent(config.agent, study, space, config.seed)
        records = finished_records(study)
        clock = _TrialClock(deadline, records)
        notify("start", (len(records), config.trials))
        pending: dict[int, Any] = {}
        while len(records) + len(pending) < config.trials or pending:
            while (len(records) + len(pending) < config.trials and len(pending) < executor.slots
                   and clock.allows_another()):
                trial = agent.ask()
                pending[trial.number] = trial
                clock.start(trial.number)
                executor.submit(trial.number, space.plan_from_params(trial.params))
            if not pending:  # the deadline leaves no time for another trial
                break
            finished = executor.wait()
            for record in finished:
                trial = pending.pop(record.number)
                clock.finish(record.number)
                trial.set_user_attr(RECORD_ATTR, record.to_dict())
                _tell(study, trial.number, record, config.objectives)
                agent.tell(trial, record)
                records.append(record)
            write_pareto(run, config, dense, records)  # once per batch: cheap with many workers
            for record in finished:
                notify("trial", record)
    finally:
        executor.close()
    records.sort(key=lambda r: r.number)
    front = write_pareto(run, config, dense, records)
    return SearchOutcome(run=run, dense=dense, records=records, front=front)
