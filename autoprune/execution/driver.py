"""The search driver: owns the run's study, asks the agent, runs trials, tells results.

Resuming is the same call on the same run folder: finished trials are kept, a trial that was
interrupted mid-way is re-run with the same plan, and the budget counts finished trials only.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.config import OBJECTIVES, ExecutionConfig, SearchConfig
from autoprune.errors import ConfigError
from autoprune.execution.executor import Executor
from autoprune.execution.record import COMPLETE, FAILED, REJECTED, TrialRecord
from autoprune.plan import PruningPlan
from autoprune.results.files import atomic_write_json
from autoprune.results.run import RECORD_ATTR, RunFolder, finished_records, open_study

if TYPE_CHECKING:
    from autoprune.hardware.predictor import PredictorChoice

#: fields that must match for a run folder to be resumed with a new command
IDENTITY_FIELDS = ("task", "agent", "seed", "objectives", "profile", "space")
#: trial user attribute: hypervolume of the run's feasible trials up to and including this one
HYPERVOLUME_ATTR = "hypervolume"


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


def scoring_for(config: SearchConfig, dense: DenseReference):
    """The run's Scoring; ConfigError when an objective is not measured on this profile."""
    from autoprune.search.objectives import Scoring

    probe = TrialRecord(number=-1, plan={}, state=COMPLETE, accuracy=dense.accuracy, latency=dense.latency,
                        macs=dense.macs, params=dense.params)
    values = {o: probe.objective(o) for o in config.objectives}
    missing = [o for o, v in values.items() if v is None]
    if missing:
        measured = [o for o in OBJECTIVES if probe.objective(o) is not None]
        raise ConfigError(f"objectives: `{missing[0]}` is not measured by profile {config.profile.name!r} "
                          f"(backend {config.profile.backend}); measured objectives: {', '.join(measured)}")
    return Scoring.from_config(config, values)


def check_feasible(config: SearchConfig, dense: DenseReference, space, task, dense_model) -> None:
    """ConfigError when no plan of the space can meet the constraints (judged on the smallest plan).

    The smallest candidate (every group at the top of its ratio range) is pruned and measured
    once; if even it is too slow or too large, or the accuracy floor is above the dense model's,
    the search could only waste fine-tunes.
    """
    from autoprune.execution.runner import TrialRunner
    from autoprune.hardware.protocol import measure_models
    from autoprune.pruning import model_stats

    if config.min_accuracy is not None and config.min_accuracy > dense.accuracy:
        raise ConfigError(f"constraints cannot be met: min_accuracy {config.min_accuracy} is above the dense "
                          f"model's {dense.accuracy:.4f}")
    if config.max_latency_ms is None and config.max_params is None:
        return
    smallest = space.uniform_plan(space.ratio_grid[-1])
    pruner = TrialRunner(task=task, config=config, dense=dense_model, meter=None)
    model = pruner.prune(smallest).model
    params = model_stats(model, task.example_input).params
    if config.max_params is not None and params > config.max_params:
        raise ConfigError(f"constraints cannot be met: max_params {config.max_params} is below the smallest candidate "
                          f"of the space (every group at ratio {space.ratio_grid[-1]}: {params} params)")
    if config.max_latency_ms is not None:
        latency = measure_models(config.profile, [model], task.example_input)[0]
        if min(latency.median_ms, latency.p90_ms) > config.max_latency_ms:
            raise ConfigError(f"constraints cannot be met: max_latency_ms {config.max_latency_ms} is below the "
                              f"smallest candidate of the space (every group at ratio {space.ratio_grid[-1]}: "
                              f"{latency.median_ms:.3f} ms)")


def reuse_duplicate(records: list[TrialRecord], space, number: int, plan) -> TrialRecord | None:
    """The record of an earlier trial that builds the same candidate, re-numbered and marked, or None."""
    key = space.canonical(plan)
    for earlier in records:
        if earlier.duplicate_of is None and space.canonical(PruningPlan.from_dict(earlier.plan)) == key:
            return replace(earlier, number=number, plan=plan.to_dict(), duplicate_of=earlier.number, seconds={})
    return None


def proxy_history(records: list[TrialRecord]) -> list[float]:
    """Proxy scores of the candidates evaluated so far (duplicates once), for the runner's promotion rule."""
    return [r.proxy for r in records if r.proxy is not None and r.duplicate_of is None]


def annotate_trial(trial, record: TrialRecord, records: list[TrialRecord], scoring) -> None:
    """Store the constraint margins (Optuna's samplers prefer feasible trials) and the run's hypervolume so far."""
    for name, value in zip(("latency", "accuracy", "params"), scoring.constraint_values(record)):
        trial.set_constraint(name, value)
    trial.set_user_attr(HYPERVOLUME_ATTR, scoring.hypervolume(records))


def search_summary(records: list[TrialRecord], scoring) -> dict[str, Any]:
    """Counts, hypervolume per trial and proxy/full Spearman correlation of a run."""
    from autoprune.search.fidelity import spearman

    ordered = sorted(records, key=lambda r: r.number)
    history = [{"trial": r.number, "hypervolume": hv} for r, hv in zip(ordered, scoring.hypervolume_history(ordered))]
    both = [r for r in ordered if r.state == COMPLETE and r.proxy is not None and r.duplicate_of is None]
    return {
        "fine_tunes": sum(r.state == COMPLETE and r.duplicate_of is None for r in records),
        "duplicates": sum(r.duplicate_of is not None for r in records),
        "proxy_rejected": sum(r.state == REJECTED and r.reason.startswith("proxy") for r in records),
        "hypervolume": {"value": history[-1]["hypervolume"] if history else 0.0,
                        "reference": dict(scoring.reference),
                        "normalisation": "accuracy as is; other objectives as a fraction of the dense model",
                        "history": history},
        "proxy_vs_full": {"pairs": len(both),
                          "spearman": spearman([r.proxy for r in both], [r.accuracy for r in both])},
    }


def screening_info(choice: PredictorChoice, margin: float) -> dict[str, Any]:
    """What screens the run's candidates by predicted latency, as plain data (the console line, pareto.json)."""
    predictor = choice.predictor
    return {"setting": choice.setting, "path": None if choice.path is None else str(choice.path),
            "active": predictor is not None, "margin": margin,
            "holdout_mdape": None if predictor is None else predictor.holdout_mdape}


def screening_summary(records: list[TrialRecord], info: dict[str, Any]) -> dict[str, Any]:
    """``info`` plus what the predictor rejected unmeasured and its error on the candidates measured anyway."""
    from autoprune.hardware.predictor import mdape

    own = [r for r in records if r.duplicate_of is None]
    pairs = [(r.predicted_ms, r.latency_ms) for r in own if r.predicted_ms is not None and r.latency_ms is not None]
    return {**info, "rejected_unmeasured": sum(r.screened_unmeasured for r in own), "measured": len(pairs),
            "mdape": mdape([p for p, _ in pairs], [m for _, m in pairs]) if pairs else None}


def front_of(config: SearchConfig, dense: DenseReference, records: list[TrialRecord], scoring=None) -> list[TrialRecord]:
    """The feasible Pareto front, sorted by latency (or the first objective)."""
    key = "latency" if "latency" in config.objectives else config.objectives[0]
    scoring = scoring or scoring_for(config, dense)
    return sorted(scoring.front(records), key=lambda r: r.objective(key) or 0.0)


def write_pareto(run: RunFolder, config: SearchConfig, dense: DenseReference, records: list[TrialRecord],
                 screening: dict[str, Any]) -> list[TrialRecord]:
    """Write ``pareto.json``: the feasible Pareto front, counts, hypervolume, proxy quality and screening
    (``screening``: a ``screening_info``)."""
    scoring = scoring_for(config, dense)
    front = front_of(config, dense, records, scoring)
    atomic_write_json(run.pareto, {
        "objectives": {o: OBJECTIVES[o] for o in config.objectives},
        "constraints": {"max_latency_ms": config.max_latency_ms, "min_accuracy": config.min_accuracy,
                        "max_params": config.max_params, "min_speedup": config.min_speedup},
        "dense": asdict(dense),
        "trials": {"finished": len(records), "complete": sum(r.state == COMPLETE for r in records),
                   "rejected": sum(r.state == REJECTED for r in records),
                   "failed": sum(r.state == FAILED for r in records)},
        **search_summary(records, scoring),
        "screening": screening_summary(records, screening),
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

    Candidates are screened by predicted latency when ``config.predictor`` resolves to a predictor
    (a bad one raises ConfigError before anything is written).

    Events: ``("dense", DenseReference)``, ``("screening", screening_info)``, ``("start", (done, total))``,
    ``("trial", TrialRecord)``.
    """
    from autoprune.execution.executor import make_executor, trial_task
    from autoprune.hardware.predictor import choose_predictor
    from autoprune.results.environment import library_versions, machine_fingerprint
    from autoprune.search.agent import agent_sampler, make_agent
    from autoprune.search.space import PlanSpace, layer_macs

    notify = on_event or (lambda kind, payload: None)
    run = RunFolder(Path(out))
    _check_resumable(run, config)
    task = trial_task(config)
    agent_sampler(config.agent, config.seed)  # fail on an unknown agent before any work
    choice = choose_predictor(config.predictor, config.profile, config.task)
    screening = screening_info(choice, config.predictor_margin)
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.config, config.to_dict())
    atomic_write_json(run.environment, {"versions": library_versions(), "machine": machine_fingerprint(),
                                        "seed": config.seed})
    dense_model, groups = _prepare_dense(task, config)
    executor = executor or make_executor(execution or ExecutionConfig(), config, task, dense_model, run.trials,
                                         predictor=choice.predictor)
    try:
        dense = _dense_reference(run, task, dense_model, groups, executor)
        notify("dense", dense)
        notify("screening", screening)
        scoring = scoring_for(config, dense)
        directions = [OBJECTIVES[o] for o in config.objectives]
        study = open_study(storage or run.storage_url(), directions)
        # a resumed sampler must not replay the first session's random stream: offset its seed by
        # the trials already in the study (0 for a fresh run, so fresh runs stay reproducible)
        sampler = agent_sampler(config.agent, config.seed + len(study.get_trials(deepcopy=False)))
        if sampler is not None:
            study.sampler = sampler
        _recover_interrupted(study, config.objectives)
        space = PlanSpace.build(groups, config.space, config.profile.fast_structures,
                                macs=layer_macs(dense_model, task.example_input), round_to=config.round_to)
        records = finished_records(study)
        if not records:
            check_feasible(config, dense, space, task, dense_model)
        agent = make_agent(config.agent, study, space, config.seed, scoring=scoring, log_dir=run.path)
        clock = _TrialClock(deadline, records)
        notify("start", (len(records), config.trials))
        pending: dict[int, Any] = {}
        while len(records) + len(pending) < config.trials or pending:
            finished: list[TrialRecord] = []
            while (len(records) + len(pending) < config.trials and len(pending) < executor.slots
                   and clock.allows_another()):
                trial = agent.ask()
                plan = space.plan_from_params(trial.params)
                pending[trial.number] = trial
                duplicate = reuse_duplicate(records + finished, space, trial.number, plan)
                if duplicate is not None:  # the same candidate was evaluated: no work at all
                    finished.append(duplicate)
                    continue
                clock.start(trial.number)
                executor.submit(trial.number, plan, proxy_history=proxy_history(records))
            if not pending:  # the deadline leaves no time for another trial
                break
            if not finished:
                finished = executor.wait()
            for record in finished:
                trial = pending.pop(record.number)
                clock.finish(record.number)
                annotate_trial(trial, record, records + [record], scoring)
                trial.set_user_attr(RECORD_ATTR, record.to_dict())
                _tell(study, trial.number, record, config.objectives)
                agent.tell(trial, record)
                records.append(record)
            write_pareto(run, config, dense, records, screening)  # once per batch: cheap with many workers
            for record in finished:
                notify("trial", record)
    finally:
        executor.close()
    records.sort(key=lambda r: r.number)
    front = write_pareto(run, config, dense, records, screening)
    return SearchOutcome(run=run, dense=dense, records=records, front=front)
