"""``run_search``: run (or resume) a search into a run folder.

It wires the layers below together: the run folder (this package), the executor and the driver
(``execution/``), the study, agent, plan space and scoring (``search/``). Resuming is the same
call on the same folder.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autoprune.config import OBJECTIVES, ExecutionConfig, SearchConfig, runnable_precisions
from autoprune.execution.driver import Driver, EventSink, Search, check_feasible, measure_dense
from autoprune.execution.executor import Executor
from autoprune.execution.placement import make_executor
from autoprune.hardware.predictor import choose_predictor
from autoprune.pruning import discover_groups, model_stats
from autoprune.records import DenseReference, TrialRecord
from autoprune.results.pareto_file import screening_info, write_pareto
from autoprune.results.run import RunFolder, RunWriter
from autoprune.search.agent import AgentContext, make_agent
from autoprune.search.objectives import Scoring
from autoprune.search.space import PlanSpace, layer_macs
from autoprune.search.study import finished_records, open_study
from autoprune.training import evaluate, test_score

if TYPE_CHECKING:
    from torch import nn

    from autoprune.pruning import PrunableGroup
    from autoprune.task import Task


@dataclass(frozen=True, kw_only=True)
class SearchOutcome:
    """What a search session ends with: its folder, the dense reference, every record and the front."""

    run: RunFolder
    dense: DenseReference
    records: list[TrialRecord]
    front: list[TrialRecord]


def run_search(
    config: SearchConfig,
    out: str | Path,
    *,
    storage: str | None = None,
    on_event: EventSink | None = None,
    execution: ExecutionConfig | None = None,
    executor: Executor | None = None,
    deadline: float | None = None,
) -> SearchOutcome:
    """Run (or resume) a search into ``out``; ``on_event(kind, payload)`` feeds a progress display.

    Jobs run on ``executor`` (default: built from ``execution``: in-process for one worker, Ray for
    more). With a ``deadline`` (a ``time.time()`` value) no trial is started that would, by the
    median duration of finished trials, end after it. Candidates are screened by predicted latency
    when ``config.predictor`` resolves to a predictor (a bad one raises ConfigError before
    anything is written).

    Events: ``("dense", DenseReference)``, ``("screening", screening_info)``, ``("start", (done, total))``,
    ``("trial", TrialRecord)``.
    """
    notify = on_event or (lambda kind, payload: None)
    run = RunFolder(Path(out))
    run.check_resumable(config)
    task = config.trial_task()
    choice = choose_predictor(config.predictor, config.profile, config.task)
    screening = screening_info(choice, config.predictor_margin)
    run.start(config)
    dense_model = task.build_model()
    groups = discover_groups(dense_model, task.example_input, config.pruner.ignore, round_to=config.pruner.round_to)
    with executor or make_executor(execution or ExecutionConfig(), config, task, dense_model, choice.predictor) as jobs:
        dense = run.read_dense() or _measure_dense(run, task, dense_model, groups, jobs)
        notify("dense", dense)
        notify("screening", screening)
        search = _open_search(config, run, storage, dense, groups, dense_model, task, jobs)
        writer = RunWriter(run=run, config=config, dense=dense, screening=screening)
        records = Driver(search, writer, deadline=deadline, on_event=notify).run()
    front = write_pareto(run.pareto, config, dense, records, screening)
    return SearchOutcome(run=run, dense=dense, records=records, front=front)


def _measure_dense(run: RunFolder, task: Task, model: nn.Module, groups: list[PrunableGroup],
                   executor: Executor) -> DenseReference:
    """The dense reference, its latency measured where candidates are measured; kept in the run folder."""
    stats = model_stats(model, task.example_input)
    dense = DenseReference(accuracy=evaluate(model, task.val_set, task.metric), latency=measure_dense(executor),
                           macs=stats.macs, params=stats.params, groups=[dataclasses.asdict(g) for g in groups],
                           test_accuracy=test_score(task, model))
    run.write_dense(dense)
    return dense


def _open_search(config: SearchConfig, run: RunFolder, storage: str | None, dense: DenseReference,
                 groups: list[PrunableGroup], model: nn.Module, task: Task, executor: Executor) -> Search:
    """The study (its sampler the agent), plan space and scoring; on a fresh run, the feasibility check."""
    scoring = Scoring.from_config(config, dense)
    study = open_study(storage or run.storage_url(), [OBJECTIVES[o] for o in config.objectives])
    space = PlanSpace.build(groups, config.space, config.pruner, config.profile.fast_structures,
                            macs=layer_macs(model, task.example_input),
                            runnable_precisions=runnable_precisions(config.profile))
    context = AgentContext(space=space, seed=config.seed, scoring=scoring, log_dir=run.path,
                           resumed_trials=len(study.get_trials(deepcopy=False)))
    study.sampler = make_agent(config.agent, context)
    if not finished_records(study):
        check_feasible(config, dense, space, executor)
    return Search(config=config, study=study, space=space, scoring=scoring, executor=executor)
