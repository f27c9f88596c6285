from __future__ import annotations

import copy

import torch

from autoprune.hardware.predictor import LatencyPredictor, calibrate, mdape, model_layers, random_plans
from autoprune.plan import PruningPlan
from autoprune.pruning import apply_plan, discover_groups
from autoprune.tasks.digits import DigitsResNet


def test_layer_keys_follow_pruned_shapes() -> None:
    x = torch.randn(1, 1, 16, 16)
    dense = DigitsResNet(widths=(8, 16, 32)).eval()
    names = [g.name for g in discover_groups(dense, x)]
    pruned = apply_plan(copy.deepcopy(dense), x, PruningPlan.uniform(names, 0.5), round_to=4).model
    dense_keys = [k for k, _, _ in model_layers(dense, x)]
    pruned_keys = [k for k, _, _ in model_layers(pruned, x)]
    assert len(dense_keys) == len(pruned_keys) and "x=(1, 16, 16)" in dense_keys[0]
    assert "out=8" in dense_keys[0] and "out=4" in pruned_keys[0]


def test_calibrated_predictor_ranks_and_round_trips(fast_profile, tmp_path) -> None:
    torch.manual_seed(0)
    model, x = DigitsResNet(widths=(16, 32, 64)).eval(), torch.randn(1, 1, 16, 16)
    result = calibrate(model, x, fast_profile, fit=3, holdout=3, seed=0)
    predictor = result.predictor
    assert result.layers == len(predictor.table) > 5 and predictor.fit_measurements == 3
    assert 0 <= result.holdout_mdape < 1.0 and predictor.slope > 0
    names = [g.name for g in discover_groups(model, x)]
    small = apply_plan(copy.deepcopy(model), x, PruningPlan.uniform(names, 0.75), round_to=4).model
    dense_ms, small_ms = predictor.predict(model, x), predictor.predict(small, x)
    assert dense_ms > small_ms > 0
    loaded = LatencyPredictor.load(predictor.save(tmp_path / "p.json"), fast_profile)
    assert loaded.predict(small, x) == small_ms  # every layer comes from the saved table


def test_random_plans_start_dense_and_are_reproducible() -> None:
    plans = random_plans(["a", "b"], 4, seed=3)
    assert plans[0].mean_ratio() == 0.0 and plans == random_plans(["a", "b"], 4, seed=3)
    assert abs(mdape([1.1, 0.8, 1.0], [1.0, 1.0, 1.0]) - 0.1) < 1e-12
