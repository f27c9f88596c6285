"""The agent contract: every agent is an Optuna sampler of the run's study.

The driver owns the study and its trial bookkeeping. For each trial it calls
``study.ask(space.distributions())``, reads the plan from the trial's parameters
(``PlanSpace.plan_from_params``), evaluates it, stores the record on the trial and tells the
study. Optuna asks the study's sampler for those parameters, so an agent is whatever sampler
``AGENTS[name](context)`` returns:

* an Optuna sampler as it is (``tpe``, ``nsga2``, ``random``: see ``optuna_agents.py``), or
* a ``PlanAgent``, for agents that think in whole plans (``rl``, ``uniform``): one method,
  ``propose(finished, pending) -> PruningPlan``, called once per new trial with the study's
  history; the base class turns the plan into the trial's parameters.

A new agent is one module plus its line in ``registry.AGENTS``. An agent never touches models,
and whatever it learns must be recoverable from the study's finished trials (their records),
because it is rebuilt from the study when a search resumes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import optuna
from optuna.distributions import BaseDistribution

from autoprune.plan import PruningPlan
from autoprune.records import TrialRecord
from autoprune.registry import AGENTS
from autoprune.search.space import KEEP_FP32, PRECISION
from autoprune.search.study import records_of

if TYPE_CHECKING:
    from autoprune.search.objectives import Scoring
    from autoprune.search.space import PlanSpace


@dataclass(frozen=True, kw_only=True)
class AgentContext:
    """What an agent is built from.

    Attributes:
        space: the plans it may propose (their Optuna distributions).
        seed: the run's seed (the same seed and history give the same plans).
        scoring: objectives, constraints and scalar score (agents that learn a scalar reward use it).
        log_dir: the run folder, for agents that log their own progress (None: no logs).
        resumed_trials: trials already in the study when this session started.
    """

    space: PlanSpace
    seed: int
    scoring: Scoring
    log_dir: Path | None = None
    resumed_trials: int = 0

    @property
    def session_seed(self) -> int:
        """The seed for a sampler's random stream: a resumed session must not replay the first one's."""
        return self.seed + self.resumed_trials


def make_agent(name: str, context: AgentContext) -> optuna.samplers.BaseSampler:
    """The sampler of the agent registered as ``name`` (ConfigError listing the valid names otherwise)."""
    sampler: optuna.samplers.BaseSampler = AGENTS.get(name, where="--agent")(context)
    return sampler


class PlanAgent(optuna.samplers.BaseSampler, ABC):
    """An agent that proposes whole plans, as an Optuna sampler.

    Call order: for every trial the driver asks, Optuna calls ``sample_relative``, which calls
    ``propose`` with the records of the study's finished trials (by trial number) and the plans
    of the trials still running; the plan becomes the trial's parameters. A trial the driver
    re-queues (an interrupted one) keeps its own parameters and never reaches ``propose``.

    An agent that does not choose a plan's precision (``chooses_precision`` False) leaves the
    ``precision`` parameter of a mixed-precision space to the seeded random fallback, so its
    proposals still cover every allowed precision and none other. No plan agent chooses a searched
    ``keep_fp32/<glob>`` parameter (``search_keep_fp32``): the same fallback samples those.
    """

    #: whether ``propose`` picks the plan's precision (else it is sampled at random from the allowed ones)
    chooses_precision: ClassVar[bool] = False

    def __init__(self, context: AgentContext) -> None:
        self.context = context
        self.space = context.space
        # parameters outside the plan space (none in autoprune's own studies) are sampled at random
        self._fallback = optuna.samplers.RandomSampler(seed=context.session_seed)

    @abstractmethod
    def propose(self, finished: Sequence[TrialRecord], pending: Sequence[PruningPlan]) -> PruningPlan:
        """The next plan, given every finished trial's record and the plans of trials in flight."""

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: optuna.trial.FrozenTrial) -> dict[str, BaseDistribution]:
        dists = self.space.distributions()
        if not self.chooses_precision:
            dists.pop(PRECISION, None)
        for glob in self.space.searched_keep_fp32:  # no plan agent chooses these: the seeded fallback samples them
            dists.pop(KEEP_FP32 + glob)
        return dists

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        trials = study.get_trials(deepcopy=False)
        running = optuna.trial.TrialState.RUNNING
        pending = [self.space.plan_from_params(t.params) for t in trials
                   if t.state == running and t.number != trial.number and set(search_space) <= set(t.params)]
        params = self.space.params_from_plan(self.propose(records_of(trials), pending))
        return {k: v for k, v in params.items() if k in search_space}

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)
