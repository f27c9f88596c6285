"""The Agent ABC and its registry.

Call order, repeated until the budget is spent: ``trial = agent.ask()`` gives an Optuna
trial whose parameters are a plan (``PlanSpace.plan_from_params``); the runner evaluates it;
``agent.tell(trial, record)`` reports the outcome. The run's Optuna study stores every trial.
Agents never touch models.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from autoprune.registry import Registry

if TYPE_CHECKING:
    import optuna

    from autoprune.execution.record import TrialRecord
    from autoprune.search.objectives import Scoring
    from autoprune.search.space import PlanSpace

AGENTS: Registry[type[Agent]] = Registry("agent", ["autoprune.search.optuna_agents", "autoprune.search.rl"])


class Agent(ABC):
    """Proposes plans (ask) and learns from their outcomes (tell).

    An agent is rebuilt on resume from the study alone: whatever it learns must be
    recoverable from the study's finished trials (their records are in user attributes).

    Args:
        study: the run's study; every proposal is one of its trials.
        space: the plans it may propose.
        seed: the run's seed (same seed and history give the same plans).
        scoring: objectives, constraints and scalar score of the run (agents that learn a
            scalar reward use it).
        log_dir: the run folder, for agents that log their own progress (None: no logs).
    """

    def __init__(self, study: optuna.Study, space: PlanSpace, seed: int, *, scoring: Scoring | None = None,
                 log_dir: Path | None = None) -> None:
        self.study = study
        self.space = space
        self.seed = seed
        self.scoring = scoring
        self.log_dir = log_dir

    @staticmethod
    def sampler(seed: int) -> optuna.samplers.BaseSampler | None:
        """The sampler the study must be created with (agents that propose plans themselves return None)."""
        return None

    @abstractmethod
    def ask(self) -> optuna.trial.Trial:
        """A new trial of the study whose parameters define the next plan."""

    def tell(self, trial: optuna.trial.Trial, record: TrialRecord) -> None:
        """Learn from the trial's outcome; the driver has already written it to the study."""


def make_agent(name: str, study: optuna.Study, space: PlanSpace, seed: int, *, scoring: Scoring | None = None,
               log_dir: Path | None = None) -> Agent:
    return AGENTS.get(name, where="--agent")(study, space, seed, scoring=scoring, log_dir=log_dir)


def agent_sampler(name: str, seed: int):
    return AGENTS.get(name, where="--agent").sampler(seed)
