"""Warm start: the baselines' plans are a sampler agent's first trials, once per study."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from autoprune.config import SearchConfig, SearchSpace
from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan
from autoprune.pruning import discover
from autoprune.results.search import run_search
from autoprune.search.space import PlanSpace, droppable
from autoprune.search.warm_start import depth_plans, drop_order, warm_plans
from autoprune.tasks.digits import DigitsResNet

TASK = "tests.tiny_task:tiny_task"


def test_depth_plans_drop_from_the_second_to_last_block_forward_and_never_the_first() -> None:
    blocks = [f"layer.{i}" for i in range(6)]
    assert drop_order(blocks) == ["layer.4", "layer.3", "layer.2", "layer.1", "layer.5"]
    assert drop_order(blocks[:1]) == ["layer.0"] and drop_order(blocks[:2]) == ["layer.1"]


def test_warm_plans_interleave_uniform_width_and_depth_on_the_space_grid() -> None:
    torch.manual_seed(0)
    model = DigitsResNet(widths=(8, 8, 16))
    report = discover(model, torch.randn(1, 1, 32, 32))
    space = SearchSpace(name="d", structures=("channel", "drop"), ratio_min=0.0, ratio_max=0.6, ratio_step=0.2)
    plans = PlanSpace.build(list(report.groups) + droppable(list(report.blocks), space), space, PrunerSettings(),
                            ("channel",))
    [drop] = depth_plans(plans)  # the digits model has one droppable block
    assert drop.as_dict()["stages.0"] == GroupPlan(ratio=0.0, structure="drop")
    assert all(g.ratio == 0.0 for n, g in drop.groups if n != "stages.0")
    warm = warm_plans(plans, 10)
    # coarse-to-fine width ratios (0 excluded) with the depth plan second; every plan is one the space can propose
    width = [{g.ratio for n, g in w.groups if not plans.is_block(n)} for w in warm if w != drop]
    assert warm[1] == drop and width == [{0.4}, {0.2}, {0.6}]
    assert all(plans.plan_from_params(plans.params_from_plan(p)) == p for p in warm)
    assert warm_plans(plans, 2) == warm[:2]


def test_a_warm_started_search_runs_the_baselines_plans_first_and_resumes_without_repeating(
        tmp_path: Path, fake_profile) -> None:
    space = SearchSpace(name="t", min_channels=4)
    config = SearchConfig(task=TASK, profile=fake_profile, space=space, agent="nsga2", trials=4, seed=1,
                          min_speedup=0.0, warm_start=3)
    outcome = run_search(config, tmp_path / "run")
    plans = [PruningPlan.from_dict(r.plan) for r in outcome.records]
    ratios = [{g.ratio for _, g in p.groups} for p in plans[:3]]
    assert all(len(r) == 1 and r != {0.0} for r in ratios), ratios  # one ratio everywhere: the uniform sweep's
    assert len({frozenset(r) for r in ratios}) == 3
    resumed = run_search(dataclasses.replace(config, trials=6), tmp_path / "run")
    assert [r.plan for r in resumed.records[:4]] == [r.plan for r in outcome.records]
    assert len(resumed.records) == 6  # the warm plans were not queued again


@pytest.mark.parametrize("agent", ["uniform", "rl"])
def test_warm_start_is_refused_for_agents_that_propose_their_own_plans(tmp_path: Path, fake_profile, agent) -> None:
    from autoprune.errors import ConfigError

    config = SearchConfig(task=TASK, profile=fake_profile, space=SearchSpace(name="t", min_channels=4), agent=agent,
                          trials=2, min_speedup=0.0, warm_start=2)
    with pytest.raises(ConfigError, match="`warm_start` seeds the sampler agents"):
        run_search(config, tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize(("agent", "uniform_first"), [("tpe", 2), ("nsga2", 0)])
def test_only_tpe_is_warm_started_by_default(tmp_path: Path, fake_profile, agent, uniform_first) -> None:
    """tpe's default warm start (measured to pay, README "Does the search pay?"); other agents get none by default."""
    space = SearchSpace(name="t", min_channels=4)
    config = SearchConfig(task=TASK, profile=fake_profile, space=space, agent=agent, trials=2, min_speedup=0.0)
    plans = [PruningPlan.from_dict(r.plan) for r in run_search(config, tmp_path / "run").records]
    uniform = [len({g.ratio for _, g in p.groups}) == 1 for p in plans]
    assert sum(uniform) == uniform_first, plans
    assert config.warm_start is None  # the default is the agent's, resolved where the agent is built
