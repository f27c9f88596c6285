"""The global agent: Torch-Pruning-style global channel ranking to a MACs target, swept over targets.

This is the FLOPs-guided recipe most users run (``MetaPruner(global_pruning=True)`` stepped until
a MACs target is met), in our pruner's terms so it yields an ordinary ``PruningPlan`` and goes
through the same runner, fine-tune and measurement as every other agent:

1. every unit the pruner can remove (a channel position of a channel group, a head of an
   attention group) has the dense model's importance under the space's criterion, divided by its
   group's mean (``PlanSpace.unit_scores``, from :func:`autoprune.pruning.ranking.unit_scores`);
2. all units of all groups are ranked together, least important first; removing the ``k`` first
   gives each group the ratio of its units among them (capped at the space's ``ratio_max``,
   snapped to its grid), and the pruner then drops exactly each group's least important units;
3. ``k`` is the smallest count whose estimated MACs (``PlanSpace.mac_fraction``, with the
   pruner's channel rounding) are at most the target.

The targets are the MAC shares of the ``uniform`` agent's plans at every ratio of the grid, so
the two baselines sweep the same compression range; they are visited coarse to fine, each next
target the least used one, and targets that build the same candidate are proposed once.
Groups whose default structure is not ``channel`` keep the grid's lowest ratio.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from autoprune.plan import GroupPlan, PruningPlan
from autoprune.records import TrialRecord
from autoprune.search.agent import AgentContext, PlanAgent
from autoprune.search.uniform import sweep_order


class GlobalRankingAgent(PlanAgent):
    """Global importance ranking across groups to a MACs target, swept over targets (module docstring)."""

    #: the search wiring computes ``PlanSpace.unit_scores`` for agents that say they need them
    needs_unit_scores = True

    def __init__(self, context: AgentContext) -> None:
        super().__init__(context)
        space = self.space
        grid = space.ratio_grid
        self.floor, self.ceiling = grid[0], grid[-1]
        self.ranked = [n for n in space.names if space.default_structure(n) == "channel"]
        self.units = {n: self._scores(n) for n in self.ranked}
        scores = np.concatenate([np.asarray(self.units[n], dtype=float) for n in self.ranked] or [np.zeros(0)])
        owners = np.concatenate([np.full(len(self.units[n]), i) for i, n in enumerate(self.ranked)]
                                or [np.zeros(0, dtype=int)])
        positions = np.concatenate([np.arange(len(self.units[n])) for n in self.ranked] or [np.zeros(0, dtype=int)])
        # least important first; ties by group order, then unit position (deterministic)
        self._order = owners[np.lexsort((positions, owners, scores))].astype(int)
        ratios = [r for r in grid if r > 0] or grid
        self.targets = sorted({round(self.estimate(space.uniform_plan(r)), 6) for r in ratios}, reverse=True)
        plans: dict[str, PruningPlan] = {}
        for target in self.targets:
            plan = self.plan_for(target)
            plans.setdefault(space.canonical(plan), plan)
        self.plans = list(plans.values())

    def _scores(self, name: str) -> tuple[float, ...]:
        scores = self.space.unit_scores.get(name)
        if scores:
            return tuple(scores)
        group = next(g for g in self.space.groups if g.name == name)
        count = group.heads if group.unit == "head" and group.heads else group.channels // max(group.channel_groups, 1)
        return (1.0,) * max(count, 1)  # no scores known: every unit alike

    def estimate(self, plan: PruningPlan) -> float:
        """Estimated MACs of ``plan``'s candidate as a share of dense (after the pruner's rounding)."""
        return self.space.mac_fraction({n: self.space.kept_fraction(n, g) for n, g in plan.groups})

    def plan_after(self, removed: int) -> PruningPlan:
        """The plan that removes the ``removed`` globally least important units."""
        counts = np.bincount(self._order[:removed], minlength=len(self.ranked))
        groups = {}
        for name in self.space.names:
            structure = self.space.default_structure(name)
            ratio = self.floor
            if name in self.units:
                share = min(counts[self.ranked.index(name)] / len(self.units[name]), self.ceiling)
                ratio = max(self.floor, self.space.snap_ratio(share))
            groups[name] = GroupPlan(ratio=ratio, structure=structure)
        return PruningPlan.of(groups)

    def plan_for(self, target: float) -> PruningPlan:
        """The plan removing the fewest globally ranked units whose estimated MAC share is <= ``target``
        (every unit the space allows removing, when no plan reaches it)."""
        low, high = 0, len(self._order)
        while low < high:
            mid = (low + high) // 2
            if self.estimate(self.plan_after(mid)) <= target + 1e-9:
                high = mid
            else:
                low = mid + 1
        return self.plan_after(low)

    def propose(self, finished: Sequence[TrialRecord], pending: Sequence[PruningPlan]) -> PruningPlan:
        plans = [PruningPlan.from_dict(r.plan) for r in finished] + list(pending)
        used = Counter(self.space.canonical(p) for p in plans)
        return min((self.plans[i] for i in sweep_order(len(self.plans))), key=lambda p: used[self.space.canonical(p)])
