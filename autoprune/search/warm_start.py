"""Warm start: the baselines' plans are a sampler agent's first trials.

With a few tens of trials, TPE and NSGA-II spend most of the budget sampling a space of one ratio
per group (and a keep/drop choice per block) at random, and rarely reach the plans a person would
try first. On MiniLM a 24-trial NSGA-II search ended below the uniform depth plans it never
proposed (README, MiniLM). A warm start enqueues those plans as the search's first trials: the
uniform width sweep (one ratio everywhere, coarse to fine) interleaved with depth plans that drop
1, 2, ... blocks; the sampler then models the study from these points on. The trials are ordinary
trials of the study (fine-tuned, measured, counted in the budget), so a resumed search needs nothing
more than its study.
"""
from __future__ import annotations

from itertools import chain, zip_longest
from typing import TYPE_CHECKING

from autoprune.plan import GroupPlan, PruningPlan
from autoprune.search.uniform import sweep_order

if TYPE_CHECKING:
    import optuna

    from autoprune.search.space import PlanSpace


def drop_order(blocks: list[str]) -> list[str]:
    """Blocks in the order depth plans drop them: from the second-to-last block towards the front, the last
    block after those, the first only when it is the only one (it reads the embeddings or the stem; the last
    writes what the head reads)."""
    if len(blocks) < 2:
        return list(blocks)
    return [*reversed(blocks[1:-1]), blocks[-1]]


def depth_plans(space: PlanSpace) -> list[PruningPlan]:
    """Plans dropping the first k blocks of :func:`drop_order` (k = 1, 2, ...; every block the space lets a plan
    drop), the width kept; k coarse to fine so any prefix spans the range."""
    blocks = [n for n in space.names if space.is_block(n) and "drop" in space.group_structures[n]]
    order = drop_order(blocks)
    plans = []
    for k in (i + 1 for i in sweep_order(len(order))):
        dropped = set(order[:k])
        plans.append(PruningPlan.of({n: GroupPlan(ratio=0.0, structure="drop") if n in dropped else
                                     GroupPlan(ratio=0.0, structure=space.default_structure(n))
                                     for n in space.names}, space.precisions[0]))
    return plans


def warm_plans(space: PlanSpace, count: int) -> list[PruningPlan]:
    """The first ``count`` warm-start plans: uniform width ratios (coarse to fine, 0 excluded) interleaved with
    :func:`depth_plans`."""
    grid = [r for r in space.ratio_grid if r > 0]
    width = [space.uniform_plan(grid[i]) for i in sweep_order(len(grid))]
    mixed = [p for p in chain.from_iterable(zip_longest(width, depth_plans(space))) if p is not None]
    return mixed[:count]


def enqueue_warm_start(study: optuna.Study, space: PlanSpace, count: int) -> int:
    """Enqueue the warm-start plans as the next trials of a study that has none yet; return how many."""
    if count <= 0 or study.get_trials(deepcopy=False):
        return 0  # a resumed study already holds them (or never asked for them)
    plans = warm_plans(space, count)
    for plan in plans:
        study.enqueue_trial(space.params_from_plan(plan), skip_if_exists=True)
    return len(plans)
