"""Agents backed by Optuna samplers: the study's sampler proposes every parameter."""
from __future__ import annotations

import optuna

from autoprune.search.agent import AGENTS, Agent


class OptunaAgent(Agent):
    """ask() = ``study.ask(distributions)``; learning happens inside the sampler."""

    def ask(self) -> optuna.trial.Trial:
        return self.study.ask(self.space.distributions())


@AGENTS.register("tpe")
class TPEAgent(OptunaAgent):
    """Multivariate TPE (models the joint distribution of the per-group ratios)."""

    @staticmethod
    def sampler(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)


@AGENTS.register("random")
class RandomAgent(OptunaAgent):
    """Independent uniform sampling: the baseline every agent must beat."""

    @staticmethod
    def sampler(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)
