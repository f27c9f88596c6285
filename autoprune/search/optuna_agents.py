"""Agents backed by Optuna: samplers that propose every parameter, and the uniform sweep."""
from __future__ import annotations

from collections import Counter

import optuna

from autoprune.results.run import RECORD_ATTR
from autoprune.search.agent import AGENTS, Agent
from autoprune.search.space import RATIO


class OptunaAgent(Agent):
    """ask() = ``study.ask(distributions)``; learning happens inside the sampler."""

    def ask(self) -> optuna.trial.Trial:
        return self.study.ask(self.space.distributions())


@AGENTS.register("tpe")
class TPEAgent(OptunaAgent):
    """Multivariate TPE (models the joint distribution of the per-group ratios).

    Like NSGA-II it reads the constraint margins the driver sets on each trial
    (``Trial.set_constraint``) and prefers feasible trials."""

    @staticmethod
    def sampler(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)


@AGENTS.register("nsga2")
class NSGA2Agent(OptunaAgent):
    """NSGA-II: a genetic algorithm ranking by non-domination and crowding; constraint-aware.

    The population is small (8) because a pruning search affords tens of trials, not thousands:
    with Optuna's default of 50 every generation of a short run would be random sampling.
    """

    POPULATION = 8

    @staticmethod
    def sampler(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2Agent.POPULATION)


@AGENTS.register("random")
class RandomAgent(OptunaAgent):
    """Independent uniform sampling: the baseline every agent must beat."""

    @staticmethod
    def sampler(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)


def sweep_order(count: int) -> list[int]:
    """Indices 0..count-1, coarse to fine (van der Corput order), so any prefix spans the range."""
    order: list[int] = []
    k = 1
    while len(order) < count and k < 64 * count:
        v, denom, n = 0.0, 1.0, k
        while n:
            denom *= 2
            v += (n & 1) / denom
            n >>= 1
        index = min(int(v * count), count - 1)
        if index not in order:
            order.append(index)
        k += 1
    return order + [i for i in range(count) if i not in order]


@AGENTS.register("uniform")
class UniformAgent(Agent):
    """One global ratio for every group, swept across the space's range: the baseline a person runs.

    Ratios on the grid (0 excluded: that is the dense model) are visited coarse to fine; the
    next ratio is the least-used one in the study, so a resumed sweep continues where it
    stopped. Proposals are enqueued into the study, so they are ordinary trials of it.
    """

    def ask(self) -> optuna.trial.Trial:
        states = optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        if not any(t.state == states.WAITING for t in trials):  # a re-queued trial goes first
            grid = [r for r in self.space.ratio_grid if r > 0] or self.space.ratio_grid
            key = RATIO + self.space.names[0]
            used = Counter(round(t.params[key], 6) for t in trials if key in t.params
                           and (RECORD_ATTR in t.user_attrs or t.state == states.RUNNING))
            ratio = min((grid[i] for i in sweep_order(len(grid))), key=lambda r: used[r])
            self.study.enqueue_trial(self.space.params_from_plan(self.space.uniform_plan(ratio)), skip_if_exists=False)
        return self.study.ask(self.space.distributions())
