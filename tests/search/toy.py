"""A toy plan space and evaluator for agent tests: no model, a known optimum."""
from __future__ import annotations

import optuna

from autoprune.config import SearchSpace
from autoprune.execution.record import COMPLETE, TrialRecord
from autoprune.pruning.graph import PrunableGroup
from autoprune.results.run import RECORD_ATTR
from autoprune.search.objectives import Scoring
from autoprune.search.space import PlanSpace

#: the per-group ratios that maximise the toy accuracy
TARGETS = {"conv1": 0.6, "conv2": 0.2, "conv3": 0.7, "fc1": 0.1}
SCORING = Scoring(objectives=("accuracy", "latency"), dense={"latency": 1.0}, weights={"latency": 0.0})


def toy_space(space: SearchSpace | None = None, fast: tuple[str, ...] = ("channel",)) -> PlanSpace:
    groups = [PrunableGroup(name=n, channels=64, layers=(n,), root_type="Linear" if n.startswith("fc") else "Conv2d")
              for n in TARGETS]
    return PlanSpace.build(groups, space or SearchSpace(name="toy", ratio_step=0.05), fast,
                           macs={"conv1": 4.0, "conv2": 3.0, "conv3": 2.0, "fc1": 1.0}, round_to=1, min_channels=1)


def toy_record(number: int, plan) -> TrialRecord:
    """Accuracy peaks at 1.0 when every ratio equals its target; latency falls with pruning."""
    ratios = {n: g.ratio for n, g in plan.groups}
    accuracy = 1.0 - 2.0 * sum((ratios[n] - t) ** 2 for n, t in TARGETS.items()) / len(TARGETS)
    latency = 1.0 - 0.8 * sum(ratios.values()) / len(ratios)
    return TrialRecord(number=number, plan=plan.to_dict(), state=COMPLETE, accuracy=accuracy,
                       latency={"median_ms": latency, "p90_ms": latency}, speedup=1.0 / latency,
                       macs=int(1e6 * latency), params=1000)


def new_study(agent_name: str, seed: int, storage: str | None = None) -> optuna.Study:
    from autoprune.search.agent import agent_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "minimize"], sampler=agent_sampler(agent_name, seed),
                               storage=storage, study_name="toy", load_if_exists=True)


def drive(agent, study: optuna.Study, space: PlanSpace, trials: int) -> list[TrialRecord]:
    """The driver's loop in miniature: ask, evaluate, store the record, tell the study and the agent."""
    out = []
    for _ in range(trials):
        trial = agent.ask()
        record = toy_record(trial.number, space.plan_from_params(trial.params))
        trial.set_user_attr(RECORD_ATTR, record.to_dict())
        study.tell(trial.number, [record.accuracy, record.latency_ms])
        agent.tell(trial, record)
        out.append(record)
    return out
