"""``run_search``: run (or resume) a search into a run folder.

It wires the layers below together: the run folder (this package), the executor and the driver
(``execution/``), the study, agent, plan space and scoring (``search/``). Resuming is the same
call on the same folder.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autoprune.config import OBJECTIVES, ExecutionConfig, SearchConfig, runnable_precisions
from autoprune.errors import ConfigError
from autoprune.execution.driver import Driver, EventSink, Search, check_feasible, measure_dense
from autoprune.execution.executor import Executor
from autoprune.execution.placement import make_executor
from autoprune.execution.runner import check_precisions
from autoprune.files import disk_size, weights_bytes
from autoprune.hardware.predictor import choose_predictor
from autoprune.pruning import discover_groups, model_stats
from autoprune.pruning.graph import droppable_blocks
from autoprune.pruning.ranking import task_unit_scores
from autoprune.records import DenseReference, TrialRecord, TrialState
from autoprune.registry import AGENTS
from autoprune.results.pareto_file import screening_info, write_pareto
from autoprune.results.run import RunFolder, RunSetup, RunWriter
from autoprune.search.agent import AgentContext, PlanAgent, make_agent
from autoprune.search.objectives import Scoring
from autoprune.search.space import PlanSpace, droppable, layer_macs
from autoprune.search.study import finished_records
from autoprune.search.warm_start import enqueue_warm_start
from autoprune.training import evaluate, test_score

if TYPE_CHECKING:
    import optuna
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
    #: wall seconds from the call to the first trial (dense training and measurement, predictor, agent):
    #: what a sweep must fit into its deadline before this search's first trial can start
    setup_s: float = 0.0


def run_search(
    config: SearchConfig,
    out: str | Path,
    *,
    storage: str | None = None,
    study: str | None = None,
    on_event: EventSink | None = None,
    execution: ExecutionConfig | None = None,
    executor: Executor | None = None,
    deadline: float | None = None,
    prior_durations: Sequence[float] = (),
) -> SearchOutcome:
    """Run (or resume) a search into ``out``; ``on_event(kind, payload)`` feeds a progress display.

    Jobs run on ``executor`` (default: built from ``execution``: in-process for one worker, Ray for
    more). With a ``deadline`` (a ``time.time()`` value) no trial is started that would, by the
    median duration of finished trials (before there are any: of ``prior_durations``, trial
    durations of earlier searches; with neither, one trial at a time), end after it. Candidates
    are screened by predicted latency when ``config.predictor`` resolves to a predictor (a bad one
    raises ConfigError before anything is written).

    Events: ``("dense", DenseReference)``, ``("screening", screening_info)``, ``("trial_estimate", seconds)``
    (a deadline search with nothing to estimate its trials from), ``("start", (done, total))``,
    ``("trial", TrialRecord)``.

    ``storage``: the study's SQLAlchemy URL (default: the one the folder recorded, else ``OUT/study.db``);
    in a database the search is the study ``study`` (default: the folder's name), and a fresh ``out``
    resumes it from the database alone.
    """
    notify = on_event or (lambda kind, payload: None)
    started = time.time()
    run = RunFolder(Path(out), storage=storage, study=study)
    run.check_writable()  # a file, a read-only folder: refused before any work
    directions = [OBJECTIVES[o] for o in config.objectives]
    with RunSetup(run, storage) as setup:  # a fresh run that fails before its first trial leaves nothing behind
        run.bind(directions)  # a study in a database: created, or what it holds of the run copied into the folder
        run.check_resumable(config)
        task = config.trial_task()
        choice = choose_predictor(config.predictor, config.profile, config.task)
        screening = screening_info(choice, config.predictor_margin)
        run.start(config)
        optuna_study = run.open_study(directions, sole_writer=True)
        dense_model = task.build_model()
        check_precisions(config, task, dense_model)  # int8/fp16 the model cannot take: exit 2 before any trial
        groups = discover_groups(dense_model, task.example_input, config.pruner.ignore,
                                 round_to=config.pruner.round_to)
        with executor or make_executor(execution or ExecutionConfig(), config, task, dense_model,
                                       choice.predictor) as jobs:
            dense = run.read_dense() or _measure_dense(run, task, dense_model, groups, jobs)
            notify("dense", dense)
            notify("screening", screening)
            search = _open_search(config, run, optuna_study, dense, groups + _blocks(config, dense_model, task),
                                  dense_model, task, jobs)
            setup.commit()
            setup_s = time.time() - started
            writer = RunWriter(run=run, config=config, dense=dense, screening=screening)
            records = Driver(search, writer, deadline=deadline, on_event=notify,
                             prior_durations=prior_durations).run()
    front = write_pareto(run.pareto, config, dense, records, screening)
    return SearchOutcome(run=run, dense=dense, records=records, front=front, setup_s=setup_s)


def _measure_dense(run: RunFolder, task: Task, model: nn.Module, groups: list[PrunableGroup],
                   executor: Executor) -> DenseReference:
    """The dense reference, its latency measured where candidates are measured; kept in the run folder."""
    stats = model_stats(model, task.example_input)
    size, compressed = disk_size(weights_bytes(model.state_dict()))
    dense = DenseReference(accuracy=evaluate(model, task.val_set, task.metric), latency=measure_dense(executor),
                           macs=stats.macs, params=stats.params, groups=[dataclasses.asdict(g) for g in groups],
                           test_accuracy=test_score(task, model), size_bytes=size, compressed_bytes=compressed)
    run.write_dense(dense)
    return dense


def _blocks(config: SearchConfig, model: nn.Module, task: Task) -> list[PrunableGroup]:
    """The droppable blocks the space lets plans drop (found only when the space allows ``drop`` somewhere)."""
    space = config.space
    if "drop" not in (*space.structures, *(s for allowed in space.layer_structures.values() for s in allowed)):
        return []
    return droppable(droppable_blocks(model, task.example_input, ignore=config.pruner.ignore), space)


def _open_search(config: SearchConfig, run: RunFolder, study: optuna.Study, dense: DenseReference,
                 groups: list[PrunableGroup], model: nn.Module, task: Task, executor: Executor) -> Search:
    """The study's sampler (the agent), plan space and scoring; on a fresh run, the feasibility check."""
    scoring = Scoring.from_config(config, dense)
    factory = AGENTS.get(config.agent, where="--agent")
    ranks = getattr(factory, "needs_unit_scores", False)
    warm = config.warm_start if config.warm_start is not None else getattr(factory, "default_warm_start", 0)
    space = PlanSpace.build(groups, config.space, config.pruner, config.profile.fast_structures,
                            macs=layer_macs(model, task.example_input),
                            runnable_precisions=runnable_precisions(config.profile),
                            unit_scores=task_unit_scores(task, config.pruner, model) if ranks else None)
    context = AgentContext(space=space, seed=config.seed, scoring=scoring, log_dir=run.path,
                           resumed_trials=len(study.get_trials(deepcopy=False)))
    study.sampler = make_agent(config.agent, context)
    if warm and isinstance(study.sampler, PlanAgent):
        raise ConfigError(f"`warm_start` seeds the sampler agents (tpe, nsga2, random); agent {config.agent!r} "
                          "proposes its own plans: use warm_start 0")
    if not finished_records(study):
        check_feasible(config, dense, space, executor)
    enqueue_warm_start(study, space, warm)
    return Search(config=config, study=study, space=space, scoring=scoring, executor=executor)


def all_failed(records: list[TrialRecord]) -> str | None:
    """When every finished trial failed: one line with the count and the most common reason (None otherwise).

    A search like that has no front and nothing to tell the agent; its cause is almost always one
    error repeated (a fine-tune that diverges, a backend that cannot run the pruned model).
    """
    if not records or any(r.state != TrialState.FAILED for r in records):
        return None
    reasons = Counter(" ".join((r.reason or "no reason recorded").split()) for r in records)
    reason, count = reasons.most_common(1)[0]
    others = f"; {len(reasons) - 1} other reason(s): `autoprune report` lists them" if len(reasons) > 1 else ""
    return (f"all {len(records)} trials failed; most common reason ({count} of {len(records)}): "
            f"{reason[:300]}{others}")
