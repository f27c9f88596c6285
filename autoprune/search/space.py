"""PlanSpace: the discovered groups of a model crossed with a SearchSpace, as Optuna parameters.

Every agent's proposal is stored as Optuna parameters ``ratio/<group>`` (and
``structure/<group>`` when more than one structure is allowed), so every trial, whatever
agent proposed it, lives in the same study with the same distributions.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from autoprune.config import SearchSpace
from autoprune.plan import GroupPlan, PruningPlan
from autoprune.pruning.graph import PrunableGroup

RATIO = "ratio/"
STRUCTURE = "structure/"


@dataclass(frozen=True, kw_only=True)
class PlanSpace:
    """The set of plans an agent may propose for one model, space and profile."""

    groups: tuple[PrunableGroup, ...]
    space: SearchSpace
    structures: tuple[str, ...]

    @classmethod
    def build(cls, groups: list[PrunableGroup], space: SearchSpace, fast_structures: tuple[str, ...]) -> PlanSpace:
        """Only structures both the space allows and the profile runs fast are proposed."""
        allowed = tuple(s for s in space.structures if s in fast_structures or s == "none")
        return cls(groups=tuple(groups), space=space, structures=allowed or ("none",))

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def distributions(self) -> dict[str, BaseDistribution]:
        step = self.space.ratio_step
        high = self.space.ratio_min + round((self.space.ratio_max - self.space.ratio_min) / step) * step
        dists: dict[str, BaseDistribution] = {}
        for name in self.names:
            dists[RATIO + name] = FloatDistribution(self.space.ratio_min, round(high, 6), step=step)
            if len(self.structures) > 1:
                dists[STRUCTURE + name] = CategoricalDistribution(self.structures)
        return dists

    def plan_from_params(self, params: Mapping[str, Any]) -> PruningPlan:
        single = self.structures[0]
        return PruningPlan.of({
            name: GroupPlan(ratio=round(float(params[RATIO + name]), 6),
                            structure=str(params.get(STRUCTURE + name, single)))
            for name in self.names
        })

    def params_from_plan(self, plan: PruningPlan) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, group in plan.groups:
            params[RATIO + name] = group.ratio
            if len(self.structures) > 1:
                params[STRUCTURE + name] = group.structure
        return params

    def snap_ratio(self, ratio: float) -> float:
        """The nearest ratio on the space's grid."""
        step = self.space.ratio_step
        snapped = self.space.ratio_min + round((ratio - self.space.ratio_min) / step) * step
        return round(min(max(snapped, self.space.ratio_min), self.space.ratio_max), 6)
