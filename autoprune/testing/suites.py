"""The shared suites every agent, latency backend and importance criterion must pass.

Each suite is a pytest class to subclass with the plugin's registered name; autoprune's own
tests run them over every registered name, and a plugin's author runs them on theirs:

    class TestMyAgent(AgentSuite):
        name = "my-agent"
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import ClassVar

import torch

from autoprune.config import HardwareProfile, SearchSpace
from autoprune.hardware.meter import LatencyMeter
from autoprune.hardware.protocol import measure_models
from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan, plan_groups, plan_precision
from autoprune.pruning import apply_plan, discover_groups
from autoprune.pruning.importance import make_importance
from autoprune.testing.models import TINY, ResNet
from autoprune.testing.toy import TARGETS, drive, new_study, toy_space


class AgentSuite:
    """The agent contract (``search/agent.py``): proposals are study trials on the space's grid, a seed
    fixes them, a new session continues the study, and only allowed structures are proposed."""

    name: ClassVar[str]

    def plans(self, seed: int, trials: int, space=None) -> list[dict]:
        space = space or toy_space()
        return [r.plan for r in drive(self.name, new_study(), space, trials, seed=seed)]

    def test_every_proposal_is_a_study_trial_on_the_grid(self) -> None:
        space = toy_space()
        study = new_study()
        records = drive(self.name, study, space, 7)
        trials = study.get_trials(deepcopy=False)
        assert [t.number for t in trials] == [r.number for r in records] == list(range(7))
        assert all(t.state.name == "COMPLETE" for t in trials)
        grid = set(space.ratio_grid)
        for trial in trials:
            assert set(trial.params) == set(space.distributions())
            plan = space.plan_from_params(trial.params)
            assert {n for n, _ in plan.groups} == set(TARGETS)
            assert all(g.ratio in grid for _, g in plan.groups)

    def test_same_seed_same_plans(self) -> None:
        assert self.plans(3, 7) == self.plans(3, 7)

    def test_a_new_session_continues_the_study(self, tmp_path: Path) -> None:
        storage = f"sqlite:///{tmp_path / 'study.db'}"
        space = toy_space()
        drive(self.name, new_study(storage), space, 6, seed=5)
        resumed = drive(self.name, new_study(storage), space, 3, seed=5)
        assert [r.number for r in resumed] == [6, 7, 8] and len(new_study(storage).trials) == 9

    def test_only_allowed_structures_are_proposed(self) -> None:
        """Conv groups may take channel/nm/none, Linear unstructured/channel; the target runs channel and
        unstructured fast: nm is never proposed, unstructured only on Linear groups."""
        space = toy_space(SearchSpace(name="s", structures=("channel",), layer_structures={
            "Conv2d": ("channel", "nm", "none"), "Linear": ("unstructured",
                                                            "channel")}), fast=("channel", "unstructured"))
        for plan in self.plans(0, 10, space):
            for group, spec in plan_groups(plan).items():
                assert spec["structure"] in space.group_structures[group]

    def test_only_allowed_precisions_are_proposed(self) -> None:
        """The space lists fp32, int8 and fp16; the target runs fp32 and int8: fp16 is never proposed, and over
        12 trials both allowed precisions are."""
        space = toy_space(SearchSpace(name="s", ratio_step=0.05, precisions=("fp32", "int8", "fp16")),
                          precisions=("fp32", "int8"))
        assert space.precisions == ("fp32", "int8")
        proposed = [plan_precision(plan) for plan in self.plans(0, 12, space)]
        assert set(proposed) == {"fp32", "int8"}

    def test_a_single_precision_space_proposes_only_it(self) -> None:
        space = toy_space(SearchSpace(name="s", ratio_step=0.05, precisions=("int8",)), precisions=("fp32", "int8"))
        assert {plan_precision(plan) for plan in self.plans(1, 5, space)} == {"int8"}


class BackendSuite:
    """The backend contract (``hardware/base.py``): the protocol's figures, and a smaller model is faster.

    Subclasses set ``profile`` (a HardwareProfile on the backend under test, with a short protocol).
    """

    profile: ClassVar[HardwareProfile]

    def test_measurement_follows_the_protocol(self) -> None:
        build, x = TINY["resnet_basic"]
        stats = measure_models(self.profile, [build().eval()], x)[0]
        assert stats.runs >= self.profile.min_runs and stats.backend == self.profile.backend
        assert 0 < stats.median_ms <= stats.p90_ms and stats.cv >= 0 and stats.attempts >= 1
        assert stats.info["model_bytes"] > 0 and stats.versions and stats.machine["id"]

    def test_a_pruned_candidate_is_measured_faster_than_dense(self) -> None:
        torch.manual_seed(0)
        # big enough that compute, not per-call overhead, sets the time (at 32x32 / width 32 the ~10x MAC cut
        # timed only ~1.6x on every backend, too close to the bar for a loaded machine)
        dense = ResNet((1, 1), width=64).eval()
        x = torch.randn(1, 3, 64, 64)
        pruned = copy.deepcopy(dense)
        apply_plan(pruned, x, PruningPlan.uniform([g.name for g in discover_groups(dense, x)], 0.75),
                   PrunerSettings(round_to=8))
        candidate, reference = LatencyMeter(self.profile, dense, x, cache=None).compare(pruned)
        assert reference.median_ms / candidate.median_ms > 1.5  # ~10x fewer MACs


class ImportanceSuite:
    """The importance contract (``pruning/importance.py``): a criterion ranks a group's channels, prunes
    it to the planned width through calibration, and leaves no calibration gradient behind."""

    name: ClassVar[str]

    def test_prunes_a_group_to_its_planned_width(self) -> None:
        build, x = TINY["bert"]
        torch.manual_seed(0)
        model = build().eval()
        batches = [(torch.randn(8, 6, 12), torch.randint(0, 5, (8,))) for _ in range(2)]
        result = apply_plan(model, x, PruningPlan.of({"layers.0.mlp.fc1": GroupPlan(ratio=0.5)}),
                            PrunerSettings(importance=self.name), calibration=batches)
        assert result.channels["layers.0.mlp.fc1"] == (64, 32) and model(x).shape == (1, 5)
        assert all(p.grad is None for p in model.parameters())

    def test_scores_every_weight_of_a_layer(self) -> None:
        layer = torch.nn.Linear(4, 6)
        imp = make_importance(self.name)
        imp.calibrate(torch.nn.Sequential(layer), [torch.randn(8, 4)])
        scores = imp.weight_scores(layer)
        assert scores.shape == layer.weight.shape and torch.isfinite(scores).all()
