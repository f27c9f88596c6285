"""Physically pruned == dense with the removed channels and heads cut out, for every model family in the tests.

This is the test that catches wrong index mappings: a channel shuffle, a channel-last reshape, a
head mixed with another, a concat offset or a grouped conv pruned at the wrong positions all give
a model that runs but computes something else than the cut reference (see ``reference.py``).
"""
from __future__ import annotations

import copy

import pytest
import torch

from autoprune.plan import PruningPlan
from autoprune.pruning import apply_plan, discover
from autoprune.testing.models import TINY
from autoprune.testing.real import REAL
from tests.pruning.reference import assert_same_outputs, cut_reference, scramble

#: families whose attention groups must be pruned as whole heads
WITH_HEADS = {"bert", "vit_attrs", "swin", "timm_vit", "hf_bert", "hf_distilbert"}
FAMILIES = {**TINY, **REAL}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_pruned_model_equals_the_dense_model_with_the_same_channels_cut(name: str) -> None:
    build, x = FAMILIES[name]
    torch.manual_seed(0)
    dense = scramble(build())
    report = discover(copy.deepcopy(dense), x)
    assert report.groups, f"{name}: nothing prunable"
    pruned = copy.deepcopy(dense)
    result = apply_plan(pruned, x, PruningPlan.uniform([g.name for g in report.groups], 0.5))
    assert any(result.removed.values()), f"{name}: the plan removed nothing"
    if name in WITH_HEADS:
        assert result.heads and all(after < before for before, after in result.heads.values()), name
    assert_same_outputs(pruned, cut_reference(dense, x, result.removed), x, msg=name)


@torch.no_grad()
def test_the_reference_catches_a_wrong_mapping() -> None:
    """The check can fail: cutting other channels than the ones pruned gives a different model."""
    build, x = TINY["resnet_basic"]
    torch.manual_seed(0)
    dense = scramble(build())
    group = discover(copy.deepcopy(dense), x).groups[0]
    pruned = copy.deepcopy(dense)
    removed = apply_plan(pruned, x, PruningPlan.uniform([group.name], 0.5)).removed
    wrong = {group.name: sorted(set(range(group.channels)) - set(removed[group.name]))}
    with pytest.raises(AssertionError):
        assert_same_outputs(pruned, cut_reference(dense, x, wrong), x)
