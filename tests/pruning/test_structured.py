from __future__ import annotations

import copy

import pytest
import torch

from autoprune.errors import PlanError
from autoprune.plan import GroupPlan, PrunerSettings, PruningPlan
from autoprune.pruning import apply_plan, discover_groups, kept_channels, model_stats
from autoprune.tasks.digits import DigitsResNet


@pytest.fixture()
def resnet() -> DigitsResNet:
    torch.manual_seed(0)
    return DigitsResNet(widths=(16, 32, 64)).eval()


X = torch.randn(2, 1, 32, 32)


def test_discovery_couples_residual_adds_and_leaves_the_classifier(resnet) -> None:
    groups = {g.name: g for g in discover_groups(resnet, X[:1])}
    assert len(groups) == 6
    assert not any("fc" == g.name for g in groups.values())
    stem = groups["stem.0"]  # the stem output is added to stage 0's output: one group
    assert {"stem.0", "stages.0.conv2"} <= set(stem.layers) and stem.channels == 16


def test_ratio_zero_is_identity(resnet) -> None:
    pruned = copy.deepcopy(resnet)
    names = [g.name for g in discover_groups(resnet, X[:1])]
    apply_plan(pruned, X[:1], PruningPlan.uniform(names, 0.0))
    torch.testing.assert_close(pruned(X), resnet(X), rtol=0, atol=0)


def test_physically_removes_channels_and_macs_fall_as_planned(resnet) -> None:
    dense = model_stats(resnet, X[:1])
    names = [g.name for g in discover_groups(resnet, X[:1])]
    result = apply_plan(resnet, X[:1], PruningPlan.uniform(names, 0.5), PrunerSettings(round_to=8, min_channels=8))
    assert result.channels["stem.0"] == (16, 8) and result.channels["stages.2.conv1"] == (64, 32)
    assert resnet.stages[2].conv1.out_channels == 32 and resnet.stages[2].conv2.in_channels == 32
    assert resnet(X).shape == (2, 10)
    ratio = model_stats(resnet, X[:1]).macs / dense.macs
    assert 0.2 < ratio < 0.3  # half the channels on both sides of each conv: ~1/4 of the MACs


def test_only_listed_groups_change(resnet) -> None:
    result = apply_plan(resnet, X[:1], PruningPlan.of({"stages.1.conv1": GroupPlan(ratio=0.75)}),
                        PrunerSettings(round_to=4))
    assert result.channels["stages.1.conv1"] == (32, 8)
    assert all(before == after for name, (before, after) in result.channels.items() if name != "stages.1.conv1")


@pytest.mark.parametrize("channels, ratio, round_to, min_channels, expected", [
    (64, 0.5, 8, 8, 32), (64, 0.3, 16, 8, 48), (32, 0.79, 8, 8, 8), (6, 0.5, 8, 1, 6), (64, 0.99, 1, 4, 4),
    (64, 0.0, 16, 8, 64),
])
def test_kept_channels_rounds_and_never_empties(channels, ratio, round_to, min_channels, expected) -> None:
    assert kept_channels(channels, ratio, round_to, min_channels) == expected


def test_unknown_group_names_the_group_and_valid_ones(resnet) -> None:
    with pytest.raises(PlanError, match="group 'nope' is not a prunable group of DigitsResNet; groups: "):
        apply_plan(resnet, X[:1], PruningPlan.of({"nope": GroupPlan(ratio=0.5)}))
