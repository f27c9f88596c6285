"""Fine-tuning, distillation, evaluation and BatchNorm recalibration on small synthetic data."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from autoprune.task import FineTuneRecipe
from autoprune.training import TrainingDiverged, evaluate, fine_tune
from autoprune.training.finetune import distillation_loss, recalibrate_batchnorm

#: a separable 3-class problem: the class is the index of the largest of the first three features
GENERATOR = torch.Generator().manual_seed(0)
INPUTS = torch.randn(256, 8, generator=GENERATOR)
DATA = TensorDataset(INPUTS, INPUTS[:, :3].argmax(1))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("optimizer, schedule, lr", [("adam", "onecycle", 1e-2), ("sgd", "cosine", 5e-2),
                                                     ("adam", "constant", 1e-2)])
def test_fine_tune_learns_and_returns_the_model_in_eval_mode(optimizer: str, schedule: str, lr: float) -> None:
    model = _model()
    before = evaluate(model, DATA)
    recipe = FineTuneRecipe(epochs=5, lr=lr, batch_size=32, optimizer=optimizer, schedule=schedule, threads=1)
    assert fine_tune(model, DATA, recipe, seed=0) is model and not model.training
    assert evaluate(model, DATA) > max(before, 0.8)


def test_the_same_seed_gives_the_same_weights_and_zero_epochs_change_nothing() -> None:
    recipe = FineTuneRecipe(epochs=1, lr=1e-2, batch_size=32, threads=1)
    a, b = fine_tune(_model(), DATA, recipe, seed=3), fine_tune(_model(), DATA, recipe, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    untouched = _model()
    fine_tune(untouched, DATA, FineTuneRecipe(epochs=0), seed=0)
    assert all(torch.equal(x, y) for x, y in zip(untouched.state_dict().values(), _model().state_dict().values(),
                                                  strict=True))


class Shifted(nn.Module):
    """A teacher that is confidently wrong in a learnable way: it answers ``(label + 1) % 3``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.nn.functional.one_hot((x[:, :3].argmax(1) + 1) % 3, 3).float()


def test_distillation_learns_the_teachers_answers_not_the_labels() -> None:
    recipe = FineTuneRecipe(epochs=5, lr=1e-2, batch_size=32, distill_weight=1.0, temperature=2.0, threads=1)
    student = fine_tune(_model(), DATA, recipe, seed=1, teacher=Shifted())
    plain = fine_tune(_model(), DATA, FineTuneRecipe(epochs=5, lr=1e-2, batch_size=32, threads=1), seed=1,
                      teacher=Shifted())  # distill_weight 0: the teacher is ignored
    with torch.no_grad():
        taught = (student(INPUTS).argmax(1) == Shifted()(INPUTS).argmax(1)).float().mean()
        ignored = (plain(INPUTS).argmax(1) == Shifted()(INPUTS).argmax(1)).float().mean()
    assert taught > 0.8 and ignored < 0.2
    logits = torch.randn(4, 3)
    assert float(distillation_loss(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)


def test_after_step_runs_after_every_optimizer_step() -> None:
    calls = []
    recipe = FineTuneRecipe(epochs=2, lr=1e-2, batch_size=64, threads=1)
    fine_tune(_model(), DATA, recipe, after_step=lambda m: calls.append(m.training))
    assert calls == [True] * (2 * len(DATA) // 64)


def test_a_diverging_loss_stops_training() -> None:
    model = _model()
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="loss is nan"):
        fine_tune(model, DATA, FineTuneRecipe(epochs=1, threads=1))


def test_recalibration_re_estimates_batchnorm_statistics_only() -> None:
    model = _model().eval()
    shifted = TensorDataset(INPUTS + 5.0, DATA.tensors[1])
    weights = [p.clone() for p in model.parameters()]
    recalibrate_batchnorm(model, shifted, batches=2, batch_size=64)
    with torch.no_grad():
        expected = model[0](shifted.tensors[0][:128]).mean(0)
    assert torch.allclose(model[1].running_mean, expected, atol=1e-4) and not model.training
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))
    assert model[1].momentum == nn.BatchNorm1d(16).momentum  # restored after the cumulative average


def test_evaluate_scores_the_whole_set_with_the_metric() -> None:
    model = _model()
    assert evaluate(model, DATA, metric=lambda logits, targets: float(len(targets))) == len(DATA)


class _DictSample(torch.utils.data.Dataset):
    """Samples whose input is a dict (as Hugging Face models take) and whose target is a vector."""

    def __init__(self) -> None:
        self.x = INPUTS
        self.target = INPUTS[:, :3] * 2.0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return {"features": self.x[i], "scale": torch.ones(1)}, self.target[i]


class _KeywordModel(nn.Module):
    """Takes inputs by name and returns a structured output, like a Hugging Face model."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, features: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embedding": self.linear(features) * scale, "aux": features}


def test_dict_inputs_structured_outputs_and_a_task_loss_train_and_evaluate() -> None:
    def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(out, target)

    def negative_mse(out: torch.Tensor, target: torch.Tensor) -> float:
        return -float(mse(out, target))

    torch.manual_seed(0)
    model, data = _KeywordModel(), _DictSample()
    before = evaluate(model, data, negative_mse)
    fine_tune(model, data, FineTuneRecipe(epochs=20, lr=3e-2, batch_size=32, threads=1), seed=0, loss_fn=mse)
    after = evaluate(model, data, negative_mse)
    assert after > before / 10  # the regression was learnt through the dict inputs (MSE down >10x)
