"""The uniform agent: one global ratio for every group, swept coarse to fine (the baseline a person runs)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from autoprune.plan import PruningPlan
from autoprune.records import TrialRecord
from autoprune.search.agent import PlanAgent


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


class UniformAgent(PlanAgent):
    """One global ratio for every group, swept across the space's range.

    Ratios on the grid (0 excluded: that is the dense model) are visited coarse to fine; the
    next ratio is the least-used one among finished and running trials, so parallel trials take
    different ratios and a resumed sweep continues where it stopped. In a mixed-precision space
    the sweep is over (ratio, precision) pairs: each ratio in every allowed precision.
    """

    chooses_precision = True

    def propose(self, finished: Sequence[TrialRecord], pending: Sequence[PruningPlan]) -> PruningPlan:
        grid = [r for r in self.space.ratio_grid if r > 0] or self.space.ratio_grid
        first = self.space.names[0]
        plans = [PruningPlan.from_dict(r.plan) for r in finished] + list(pending)
        used = Counter((round(p.as_dict()[first].ratio, 6), p.precision) for p in plans if first in p.as_dict())
        pairs = [(grid[i], precision) for i in sweep_order(len(grid)) for precision in self.space.precisions]
        ratio, precision = min(pairs, key=lambda pair: used[pair])
        return self.space.uniform_plan(ratio, precision)
