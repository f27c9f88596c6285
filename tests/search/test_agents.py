"""The shared agent suite over every registered agent, plus agent-specific behaviour."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from autoprune.config import SearchSpace
from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan
from autoprune.registry import AGENTS
from autoprune.search.rl import CURVE_FILE
from autoprune.search.uniform import sweep_order
from autoprune.testing.suites import AgentSuite
from autoprune.testing.toy import SCORING, SPREADS, TARGETS, drive, new_study, toy_space


@pytest.fixture(params=AGENTS.names())
def agent_name(request) -> str:
    return request.param


class TestEveryAgent(AgentSuite):
    @pytest.fixture(autouse=True)
    def _name(self, agent_name: str) -> None:
        self.name = agent_name


def test_every_issue_agent_is_registered() -> None:
    assert {"tpe", "nsga2", "random", "uniform", "rl", "global"} <= set(AGENTS.names())


@pytest.mark.parametrize("name", ["rl", "uniform", "global"])
def test_plan_agents_resume_exactly_as_if_uninterrupted(name: str, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space = toy_space()
    first = drive(name, new_study(storage), space, 6, seed=5)
    resumed = drive(name, new_study(storage), space, 3, seed=5)
    assert [r.plan for r in first + resumed] == [r.plan for r in drive(name, new_study(), space, 9, seed=5)]


@pytest.mark.parametrize("name", ["random", "tpe", "nsga2"])
def test_samplers_explore_the_structure_choice(name: str) -> None:
    space = toy_space(SearchSpace(name="s", structures=("channel",), layer_structures={
        "Conv2d": ("channel", "nm", "none"), "Linear": ("unstructured", "channel")}), fast=("channel", "unstructured"))
    assert space.group_structures["conv1"] == ("channel",
                                               "none") and space.group_structures["fc1"] == ("unstructured", "channel")
    seen = {(group.startswith("fc"), spec["structure"]) for r in drive(name, new_study(), space, 10)
            for group, spec in r.plan.items()}
    assert len(seen) >= 3


def test_uniform_sweeps_one_global_ratio_coarse_to_fine() -> None:
    plans = [r.plan for r in drive("uniform", new_study(), toy_space(), 5)]
    ratios = [{g["ratio"] for g in p.values()} for p in plans]
    assert all(len(r) == 1 for r in ratios)  # one global ratio per plan
    values = [r.pop() for r in ratios]
    assert values[0] == pytest.approx(0.45) and min(values) < 0.3 and max(values) > 0.6 and len(set(values)) == 5
    assert sorted(sweep_order(16)) == list(range(16)) and sweep_order(4)[:2] == [2, 1]


def test_rl_learns_the_toy_optimum(tmp_path: Path) -> None:
    """The toy reward peaks (at 0) when every ratio equals its target; RL must move towards it."""
    rewards = []
    for seed in (0, 1):
        records = drive("rl", new_study(), toy_space(), 30, seed=seed, log_dir=tmp_path)
        scores = [SCORING.score(r) for r in records]
        rewards.append((sum(scores[:6]) / 6, sum(scores[-6:]) / 6))
    for warmup, final in rewards:
        assert final > warmup + 0.1, rewards  # reward of the explored start vs the learned policy
    assert sum(final for _, final in rewards) / 2 > -0.1
    curve = json.loads((tmp_path / CURVE_FILE).read_text())["episodes"]
    assert len(curve) == 30 and curve[-1]["best_reward"] >= max(c["reward"] for c in curve) - 1e-9


def test_rl_enforces_the_latency_budget() -> None:
    """With a budget of 40% of dense latency, every plan's estimated latency meets it."""
    space = toy_space()
    for record in drive("rl", new_study(), space, 8, scoring=replace(SCORING, max_latency_ms=0.4)):
        keep = {n: 1 - g["ratio"] for n, g in record.plan.items()}
        assert space.mac_fraction(keep) <= 0.4 + 1e-9


def test_mixed_structures_space_on_a_cpu_profile() -> None:
    from autoprune.config import load_profile, load_space
    from tests.conftest import ROOT

    space = load_space(ROOT / "search_spaces/mixed-structures.yaml")
    fast = load_profile(ROOT / "hw_profiles/cpu-onnxruntime.yaml").fast_structures
    plan_space = toy_space(space, fast)
    assert plan_space.group_structures["conv1"] == ("channel", "none")  # nm is not fast on this CPU profile
    assert plan_space.group_structures["fc1"] == ("channel",)
    assert "structure/fc1" not in plan_space.distributions()


def test_canonical_plans_merge_after_channel_rounding() -> None:
    space = toy_space()
    space = replace(space, settings=PrunerSettings(round_to=16, min_channels=8))
    a = PruningPlan.of({n: GroupPlan(ratio=0.3) for n in TARGETS})   # 64 * 0.7 = 44.8 -> 48 kept
    b = PruningPlan.of({n: GroupPlan(ratio=0.25) for n in TARGETS})  # 64 * 0.75 = 48 kept
    c = PruningPlan.of({n: GroupPlan(ratio=0.5) for n in TARGETS})   # 32 kept
    assert space.canonical(a) == space.canonical(b) != space.canonical(c)
    dense = PruningPlan.of({n: GroupPlan(ratio=0.4, structure="none") for n in TARGETS})
    assert space.canonical(dense) == space.canonical(PruningPlan.of({n: GroupPlan(ratio=0.0) for n in TARGETS}))


def test_global_ranks_channels_across_groups() -> None:
    """Groups whose channels matter less (a wider importance spread around the group mean) lose more of them,
    every proposal is a different candidate, and the sweep spans the compression range."""
    from autoprune.search.agent import AgentContext
    from autoprune.search.global_ranking import GlobalRankingAgent

    space = toy_space()
    agent = GlobalRankingAgent(AgentContext(space=space, seed=0, scoring=SCORING))
    records = drive("global", new_study(), space, 8)
    plans = [PruningPlan.from_dict(r.plan) for r in records]
    assert len({space.canonical(p) for p in plans}) == 8
    # below the mean score, a group with a wider spread has more channels under any threshold
    ratios = agent.plan_after(80).as_dict()
    by_spread = sorted(TARGETS, key=SPREADS.get)
    assert [ratios[n].ratio for n in by_spread] == sorted(ratios[n].ratio for n in by_spread)
    assert ratios["fc1"].ratio == 0.0 < ratios["conv1"].ratio
    assert any(len({g.ratio for _, g in p.groups}) > 1 for p in plans)
    macs = [agent.estimate(p) for p in plans]
    assert min(macs) < 0.35 and max(macs) > 0.8
    # a plan removing the k globally least important units: every removed unit scores below every kept one
    plan = agent.plan_after(100)
    cut = {n: round(g.ratio * 64) for n, g in plan.groups}
    removed = [s for n in TARGETS for s in space.unit_scores[n][:cut[n]]]
    kept = [s for n in TARGETS for s in space.unit_scores[n][cut[n]:]]
    assert max(removed) <= min(kept) + 0.05  # up to the 5% grid


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_global_meets_its_mac_target_on_a_tiny_model(target: float) -> None:
    """On a real model (L2 importance, channels rounded to 8) the pruned candidate's counted MACs hit the target."""
    import copy

    import torch

    from autoprune.pruning import apply_plan, discover_groups, model_stats
    from autoprune.pruning.ranking import unit_scores
    from autoprune.search.agent import AgentContext
    from autoprune.search.global_ranking import GlobalRankingAgent
    from autoprune.search.space import PlanSpace, layer_macs
    from autoprune.testing.models import ResNet

    torch.manual_seed(0)
    model = ResNet((1, 1), width=32).eval()
    x = torch.randn(1, 3, 32, 32)
    settings = PrunerSettings(round_to=8, min_channels=8, importance="l2")
    groups = discover_groups(model, x, round_to=8)
    space = PlanSpace.build(groups, SearchSpace(name="s", ratio_max=0.9), settings, ("channel",),
                            macs=layer_macs(model, x), unit_scores=unit_scores(copy.deepcopy(model), x, settings))
    agent = GlobalRankingAgent(AgentContext(space=space, seed=0, scoring=SCORING))
    plan = agent.plan_for(target)
    assert len({g.ratio for _, g in plan.groups}) > 1  # not one global ratio
    dense = model_stats(model, x).macs
    pruned = apply_plan(copy.deepcopy(model), x, plan, settings).model
    achieved = model_stats(pruned, x).macs / dense
    # 32-channel groups at round_to 8 move in steps of a quarter of their width: within 0.06 below the target
    assert target - 0.06 <= achieved <= target + 1e-6, (target, achieved)
    assert agent.estimate(plan) == pytest.approx(achieved, rel=0.01)
