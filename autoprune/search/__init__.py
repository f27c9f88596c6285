"""Agents (ask/tell), the plan space they sample, objectives/constraints, Pareto fronts and hypervolume."""
from autoprune.search.agent import AGENTS, Agent, make_agent
from autoprune.search.objectives import Scoring
from autoprune.search.pareto import hypervolume, pareto_front
from autoprune.search.space import PlanSpace

__all__ = ["AGENTS", "Agent", "PlanSpace", "Scoring", "hypervolume", "make_agent", "pareto_front"]
