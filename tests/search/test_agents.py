"""The shared suite every registered agent passes, plus agent-specific behaviour."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune.config import SearchSpace
from autoprune.search.agent import AGENTS, agent_sampler, make_agent
from autoprune.search.optuna_agents import sweep_order
from autoprune.search.rl import CURVE_FILE
from tests.search.toy import SCORING, TARGETS, drive, new_study, toy_space

AGENT_NAMES = AGENTS.names()


def _plans(name: str, seed: int, trials: int, space=None, log_dir: Path | None = None) -> list[dict]:
    space = space or toy_space()
    study = new_study(name, seed)
    agent = make_agent(name, study, space, seed, scoring=SCORING, log_dir=log_dir)
    return [r.plan for r in drive(agent, study, space, trials)]


def test_every_issue_agent_is_registered() -> None:
    assert {"tpe", "nsga2", "random", "uniform", "rl"} <= set(AGENT_NAMES)


@pytest.mark.parametrize("name", AGENT_NAMES)
def test_ask_tell_contract(name: str) -> None:
    space = toy_space()
    study = new_study(name, 0)
    agent = make_agent(name, study, space, 0, scoring=SCORING)
    dists = space.distributions()
    records = drive(agent, study, space, 7)
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == [r.number for r in records] == list(range(7))  # every proposal is a study trial
    assert all(t.state.name == "COMPLETE" for t in trials)
    grid = set(space.ratio_grid)
    for trial in trials:
        assert set(trial.params) == set(dists)
        plan = space.plan_from_params(trial.params)
        assert {n for n, _ in plan.groups} == set(TARGETS)
        assert all(g.ratio in grid for _, g in plan.groups)


@pytest.mark.parametrize("name", AGENT_NAMES)
def test_same_seed_same_plans(name: str) -> None:
    assert _plans(name, 3, 7) == _plans(name, 3, 7)


@pytest.mark.parametrize("name", AGENT_NAMES)
def test_resume_from_the_study(name: str, tmp_path: Path) -> None:
    """A new agent on the same study (as after a restart) continues it; rl and uniform exactly as if uninterrupted."""
    space = toy_space()
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = new_study(name, 5, storage)
    first = drive(make_agent(name, study, space, 5, scoring=SCORING), study, space, 6)
    reloaded = new_study(name, 5, storage)
    reloaded.sampler = agent_sampler(name, 5 + 6) or reloaded.sampler  # the driver's seed offset
    resumed = drive(make_agent(name, reloaded, space, 5, scoring=SCORING), reloaded, space, 3)
    assert [r.number for r in resumed] == [6, 7, 8] and len(reloaded.trials) == 9
    if name in ("rl", "uniform"):
        assert [r.plan for r in first + resumed] == _plans(name, 5, 9)


@pytest.mark.parametrize("name", AGENT_NAMES)
def test_only_allowed_structures_are_proposed(name: str) -> None:
    """Conv groups may take channel/nm/none, Linear unstructured/channel; the target runs channel and unstructured fast."""
    space = toy_space(SearchSpace(name="s", structures=("channel",), layer_structures={
        "Conv2d": ("channel", "nm", "none"), "Linear": ("unstructured", "channel")}), fast=("channel", "unstructured"))
    assert space.group_structures["conv1"] == ("channel", "none") and space.group_structures["fc1"] == ("unstructured", "channel")
    seen = set()
    for plan in _plans(name, 0, 10, space):
        for group, spec in plan.items():
            assert spec["structure"] in space.group_structures[group]
            seen.add((group.startswith("fc"), spec["structure"]))
    assert (True, "nm") not in seen and (False, "nm") not in seen and (False, "unstructured") not in seen
    if name in ("random", "tpe", "nsga2"):  # samplers explore the categorical choice
        assert len(seen) >= 3


def test_uniform_sweeps_one_global_ratio_coarse_to_fine() -> None:
    plans = _plans("uniform", 0, 5)
    ratios = [{g["ratio"] for g in p.values()} for p in plans]
    assert all(len(r) == 1 for r in ratios)  # one global ratio per plan
    values = [r.pop() for r in ratios]
    assert values[0] == pytest.approx(0.45) and min(values) < 0.3 and max(values) > 0.6 and len(set(values)) == 5
    assert sorted(sweep_order(16)) == list(range(16)) and sweep_order(4)[:2] == [2, 1]


def test_rl_learns_the_toy_optimum(tmp_path: Path) -> None:
    """The toy reward peaks (at 0) when every ratio equals its target; RL must move towards it."""
    rewards = []
    for seed in (0, 1):
        space = toy_space()
        study = new_study("rl", seed)
        agent = make_agent("rl", study, space, seed, scoring=SCORING, log_dir=tmp_path)
        scores = [SCORING.score(r) for r in drive(agent, study, space, 30)]
        rewards.append((sum(scores[:6]) / 6, sum(scores[-6:]) / 6))
    for warmup, final in rewards:
        assert final > warmup + 0.1, rewards  # reward of the explored start vs the learned policy
    assert sum(final for _, final in rewards) / 2 > -0.1
    curve = json.loads((tmp_path / CURVE_FILE).read_text())["episodes"]
    assert len(curve) == 30 and curve[-1]["best_reward"] >= max(c["reward"] for c in curve) - 1e-9


def test_rl_enforces_the_latency_budget() -> None:
    """With a budget of 40% of dense latency, every plan's estimated latency meets it."""
    from dataclasses import replace

    space = toy_space()
    scoring = replace(SCORING, max_latency_ms=0.4)
    study = new_study("rl", 0)
    agent = make_agent("rl", study, space, 0, scoring=scoring)
    for record in drive(agent, study, space, 8):
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
    from autoprune.plan import GroupPlan, PruningPlan

    space = toy_space()
    space = type(space).build(list(space.groups), space.space, ("channel",), macs=space.macs, round_to=16, min_channels=8)
    a = PruningPlan.of({n: GroupPlan(ratio=0.3) for n in TARGETS})   # 64 * 0.7 = 44.8 -> 48 kept
    b = PruningPlan.of({n: GroupPlan(ratio=0.25) for n in TARGETS})  # 64 * 0.75 = 48 kept
    c = PruningPlan.of({n: GroupPlan(ratio=0.5) for n in TARGETS})   # 32 kept
    assert space.canonical(a) == space.canonical(b) != space.canonical(c)
    dense = PruningPlan.of({n: GroupPlan(ratio=0.4, structure="none") for n in TARGETS})
    assert space.canonical(dense) == space.canonical(PruningPlan.of({n: GroupPlan(ratio=0.0) for n in TARGETS}))
