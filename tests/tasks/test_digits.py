"""The embedded digits task: data split, model shapes, the cached dense model, resolution by name."""
from __future__ import annotations

import pytest
import torch

from autoprune.task import resolve_task
from autoprune.tasks import digits


def test_the_split_is_fixed_stratified_disjoint_and_standardised() -> None:
    train, val, test = digits.load_digits_tensors(size=8)
    assert (len(train), len(val), len(test)) == (1437, 180, 180)
    assert train.tensors[0].shape[1:] == (1, 8, 8)
    assert set(val.tensors[1].tolist()) == set(test.tensors[1].tolist()) == set(range(10))
    again = digits.load_digits_tensors(size=8)
    assert all(torch.equal(a.tensors[0], b.tensors[0]) for a, b in zip((train, val, test), again, strict=True))
    rows = {tuple(x.flatten().tolist()) for x in test.tensors[0]}
    assert not rows & {tuple(x.flatten().tolist()) for x in val.tensors[0]}
    pooled = torch.cat([train.tensors[0], val.tensors[0], test.tensors[0]])
    assert abs(float(pooled.mean())) < 1e-5 and abs(float(pooled.std()) - 1.0) < 1e-4


def test_the_model_maps_an_image_to_ten_logits() -> None:
    model = digits.DigitsResNet(widths=(8, 16, 32)).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_the_dense_model_is_trained_once_and_cached(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AUTOPRUNE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(digits, "DENSE_RECIPE", digits.FineTuneRecipe(epochs=0))  # no training: the cache is tested
    task = resolve_task("digits")
    assert task.name == "digits" and task.recipe == digits.FINETUNE_RECIPE
    first = task.build_model()
    [cached] = tmp_path.glob("digits-dense-*.pt")
    assert not first.training and task.example_input.shape == (1, 1, 32, 32)
    stamp = cached.stat().st_mtime_ns
    assert all(torch.equal(a, b) for a, b in zip(resolve_task("digits").build_model().state_dict().values(),
                                                  first.state_dict().values(), strict=True))
    assert cached.stat().st_mtime_ns == stamp  # loaded, not trained again


@pytest.mark.slow
def test_the_trained_dense_model_is_accurate() -> None:
    from autoprune.training import evaluate

    task = resolve_task("digits")
    assert evaluate(task.build_model(), task.val_set, task.metric) > 0.95
