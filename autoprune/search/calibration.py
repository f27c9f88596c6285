"""Calibrate a latency predictor for one task on one profile: measure random plans, fit, report the error.

It prunes (``pruning.rebuild``) and measures (``hardware``), so it sits above both; the search
screens candidates with what it saves (``hardware.predictor``).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

from autoprune.config import HardwareProfile
from autoprune.hardware.predictor import LatencyPredictor, mdape
from autoprune.hardware.protocol import measure_models
from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan
from autoprune.pruning import discover_groups
from autoprune.pruning.saving import rebuild
from autoprune.task import Task


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """What ``calibrate`` did and how good the predictor is on held-out plans."""

    predictor: LatencyPredictor
    layers: int
    fit_plans: int
    holdout_plans: int
    holdout_mdape: float
    holdout: list[dict[str, float]]
    seconds: float


def random_plans(group_names: list[str], count: int, seed: int, max_ratio: float = 0.75) -> list[PruningPlan]:
    """``count`` plans with independent uniform ratios per group (the first is the dense model)."""
    rng = random.Random(seed)
    plans = [PruningPlan.uniform(group_names, 0.0)]
    while len(plans) < count:
        plans.append(PruningPlan.of({n: GroupPlan(ratio=round(rng.uniform(0.0, max_ratio), 2)) for n in group_names}))
    return plans[:count]


def calibrate(task: Task, profile: HardwareProfile, settings: PrunerSettings, *, fit: int = 6, holdout: int = 12,
              seed: int = 0) -> Calibration:
    """Build a predictor for pruned variants of the task's model on ``profile`` and measure its error.

    ``fit`` random plans (the dense model among them) are pruned with the search's ``settings``
    and measured whole to fit the correction; ``holdout`` other random plans are measured whole
    only to report the error.
    """
    start = time.perf_counter()
    dense = task.build_model()
    names = [g.name for g in discover_groups(dense, task.example_input, settings.ignore, round_to=settings.round_to)]
    plans = random_plans(names, fit + holdout, seed)
    predictor = LatencyPredictor.for_profile(profile)
    sums, measured = [], []
    for plan in plans:
        candidate = rebuild(task, plan, settings, dense=dense).model
        sums.append(predictor.layer_sum(candidate, task.example_input))
        measured.append(measure_models(profile, [candidate], task.example_input)[0].median_ms)
    predictor.fit(sums[:fit], measured[:fit])
    predicted = [predictor.slope * s + predictor.intercept for s in sums[fit:]]
    predictor.holdout_mdape = mdape(predicted, measured[fit:])
    return Calibration(predictor=predictor, layers=len(predictor.table), fit_plans=fit, holdout_plans=holdout,
                       holdout_mdape=predictor.holdout_mdape,
                       holdout=[{"predicted_ms": p, "measured_ms": m} for p, m in zip(predicted, measured[fit:],
                                                                                      strict=True)],
                       seconds=time.perf_counter() - start)
