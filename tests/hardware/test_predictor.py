from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from autoprune.errors import ConfigError
from autoprune.hardware.predictor import LatencyPredictor, choose_predictor, default_predictor_path, mdape, model_layers
from autoprune.plan import PrunerSettings, PruningPlan
from autoprune.pruning import apply_plan, discover_groups
from autoprune.search.calibration import calibrate, random_plans
from autoprune.tasks.digits import DigitsResNet
from autoprune.testing.models import model_task


def test_layer_keys_follow_pruned_shapes() -> None:
    x = torch.randn(1, 1, 16, 16)
    dense = DigitsResNet(widths=(8, 16, 32)).eval()
    names = [g.name for g in discover_groups(dense, x)]
    pruned = apply_plan(copy.deepcopy(dense), x, PruningPlan.uniform(names, 0.5), PrunerSettings(round_to=4)).model
    dense_keys = [k for k, _, _ in model_layers(dense, x)]
    pruned_keys = [k for k, _, _ in model_layers(pruned, x)]
    assert len(dense_keys) == len(pruned_keys) and "x=(1, 16, 16)" in dense_keys[0]
    assert "out=8" in dense_keys[0] and "out=4" in pruned_keys[0]


def test_calibrated_predictor_ranks_and_round_trips(fake_profile, tmp_path) -> None:
    torch.manual_seed(0)  # the fake backend's latency follows MACs: the fit is exact up to the per-call overhead
    model, x = DigitsResNet(widths=(16, 32, 64)).eval(), torch.randn(1, 1, 16, 16)
    task = model_task(lambda: copy.deepcopy(model), x)
    result = calibrate(task, fake_profile, PrunerSettings(round_to=4, min_channels=8), fit=3, holdout=3, seed=0)
    predictor = result.predictor
    assert result.layers == len(predictor.table) > 5 and predictor.fit_measurements == 3
    assert 0 <= result.holdout_mdape < 1.0 and predictor.slope > 0
    names = [g.name for g in discover_groups(model, x)]
    small = apply_plan(copy.deepcopy(model), x, PruningPlan.uniform(names, 0.75), PrunerSettings(round_to=4)).model
    dense_ms, small_ms = predictor.predict(model, x), predictor.predict(small, x)
    assert dense_ms > small_ms > 0
    loaded = LatencyPredictor.load(predictor.save(tmp_path / "p.json"), fake_profile)
    assert loaded.predict(small, x) == small_ms  # every layer comes from the saved table


def test_random_plans_start_dense_and_are_reproducible() -> None:
    plans = random_plans(["a", "b"], 4, seed=3)
    assert plans[0].mean_ratio() == 0.0 and plans == random_plans(["a", "b"], 4, seed=3)
    assert abs(mdape([1.1, 0.8, 1.0], [1.0, 1.0, 1.0]) - 0.1) < 1e-12


def test_load_refuses_another_profile_and_files_that_are_not_predictors(fast_profile, tmp_path) -> None:
    path = LatencyPredictor(profile="other-board", slope=2.0).save(tmp_path / "p.json")
    with pytest.raises(ConfigError, match=r"p.json: calibrated on profile 'other-board', not 'test-ort'"):
        LatencyPredictor.load(path, fast_profile)
    assert LatencyPredictor.load(path, dataclasses.replace(fast_profile, name="other-board")).slope == 2.0
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    for name, message in (("missing.json", "file not found"), ("bad.json", "not valid JSON"),
                          ("list.json", "not a latency predictor")):
        with pytest.raises(ConfigError, match=message) as err:
            LatencyPredictor.load(tmp_path / name, fast_profile)
        assert str(err.value).startswith(str(tmp_path / name)) and "\n" not in str(err.value)


def test_choose_predictor_auto_off_and_path(fast_profile, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default path is relative to the working folder
    off = choose_predictor("off", fast_profile, "tiny")
    assert off.predictor is None and off.path is None
    missing = choose_predictor("auto", fast_profile, "tiny")
    assert missing.predictor is None and missing.path == default_predictor_path(fast_profile, "tiny")
    LatencyPredictor(profile=fast_profile.name, holdout_mdape=0.07).save(missing.path)
    auto = choose_predictor("auto", fast_profile, "tiny")
    assert auto.predictor is not None and auto.predictor.holdout_mdape == 0.07 and auto.path == missing.path
    named = choose_predictor(str(missing.path), fast_profile, "another-task")
    assert named.predictor is not None and named.setting == str(missing.path)
