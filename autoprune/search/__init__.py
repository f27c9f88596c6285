"""Agents (ask/tell), the plan space they sample, and Pareto fronts."""
from autoprune.search.agent import AGENTS, Agent, make_agent
from autoprune.search.pareto import pareto_front
from autoprune.search.space import PlanSpace

__all__ = ["AGENTS", "Agent", "PlanSpace", "make_agent", "pareto_front"]
