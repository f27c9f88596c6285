"""Agents that are Optuna's own samplers: multivariate TPE, NSGA-II and random search.

Each is a factory ``(AgentContext) -> sampler`` (the contract in ``agent.py``); the sampler
learns from the study's finished trials by itself. The resumed session's sampler is seeded
with ``context.session_seed`` so it does not replay the first session's random stream.
"""
from __future__ import annotations

import optuna

from autoprune.search.agent import AgentContext

#: NSGA-II's population: a pruning search affords tens of trials, not thousands; with Optuna's
#: default of 50 every generation of a short run would be random sampling
NSGA2_POPULATION = 8


def tpe_agent(context: AgentContext) -> optuna.samplers.BaseSampler:
    """Multivariate TPE (models the joint distribution of the per-group ratios).

    Like NSGA-II it reads the constraint margins the driver sets on each trial
    (``Trial.set_constraint``) and prefers feasible trials.
    """
    return optuna.samplers.TPESampler(seed=context.session_seed, multivariate=True, n_startup_trials=5)


#: the warm start tpe gets unless the search sets one: with it, tpe beat uniform and global pruning at 0.5x dense
#: latency on MiniLM over 3 seeds (bench/search_value.py; README "Does the search pay?")
tpe_agent.default_warm_start = 4  # type: ignore[attr-defined]


def nsga2_agent(context: AgentContext) -> optuna.samplers.BaseSampler:
    """NSGA-II: a genetic algorithm ranking by non-domination and crowding; constraint-aware."""
    return optuna.samplers.NSGAIISampler(seed=context.session_seed, population_size=NSGA2_POPULATION)


def random_agent(context: AgentContext) -> optuna.samplers.BaseSampler:
    """Independent uniform sampling: the baseline every agent must beat."""
    return optuna.samplers.RandomSampler(seed=context.session_seed)
