"""Screening by predicted latency in the trial runner: what clearly cannot pass is never measured."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from autoprune.cli import main
from autoprune.config import SearchConfig, SearchSpace
from autoprune.execution.runner import TrialRunner
from autoprune.hardware.meter import LatencyMeter
from autoprune.hardware.predictor import LatencyPredictor, model_layers
from autoprune.plan import PruningPlan
from autoprune.records import TrialState
from autoprune.results.run import load_run
from autoprune.search.study import open_study

TASK = "tests.tiny_task:tiny_task"


class CountingMeter(LatencyMeter):
    """A real meter that counts its candidate measurements."""

    compares = 0

    def compare(self, candidate):
        self.compares += 1
        return super().compare(candidate)


def fixed_predictor(models, example_input, profile, ms: float) -> LatencyPredictor:
    """A real predictor whose table holds every layer of ``models`` and whose correction predicts ``ms`` for them."""
    table = {key: 0.0 for model in models for key, _, _ in model_layers(model, example_input)}
    return LatencyPredictor(profile=profile.name, table=table, slope=0.0, intercept=ms,
                            holdout_mdape=0.05).bind(profile)


@pytest.fixture()
def runner_for(tiny, fake_profile):
    """``make(predicted_ms, **config)``: a runner whose meter predicts ``predicted_ms`` for the plan ``PLAN``."""
    task = dataclasses.replace(tiny, recipe=dataclasses.replace(tiny.recipe, epochs=0))  # proxy = accuracy: fast
    dense = tiny.build_model()

    def make(predicted_ms: float | None, **config) -> TrialRunner:
        settings = {"task": TASK, "profile": fake_profile, "space": SearchSpace(name="t", min_channels=4), "seed": 0,
                    "min_speedup": 0.0, **config}
        runner = TrialRunner(task=task, config=SearchConfig(**settings), dense=dense, meter=None)
        predictor = None
        if predicted_ms is not None:
            predictor = fixed_predictor([runner.prune(PLAN).model], task.example_input, fake_profile, predicted_ms)
        runner.meter = CountingMeter(fake_profile, dense, task.example_input, cache=None, predictor=predictor)
        return runner

    return make


PLAN = PruningPlan.from_dict({"stem.0": {"ratio": 0.5, "structure": "channel"}})


def test_predicted_far_too_slow_is_rejected_without_measuring(runner_for) -> None:
    runner = runner_for(1000.0, max_latency_ms=5.0)
    record = runner.screen(0, PLAN)
    assert runner.meter.compares == 0
    assert record.state == TrialState.REJECTED and record.screened_unmeasured
    assert record.predicted_ms == 1000.0 and record.latency is None and record.speedup is None
    assert record.reason.startswith("predicted 1000.000 ms, at best 850.000 ms with the 15% margin (not measured)")
    assert "over the latency budget: 850.000 ms > 5.000 ms" in record.reason
    assert record.macs and record.params and record.channels  # what pruning produced is still recorded
    assert "measure" not in record.seconds and "predict" in record.seconds


def test_predicted_slower_than_dense_is_rejected_without_measuring(runner_for) -> None:
    runner = runner_for(1000.0, min_speedup=1.0)
    record = runner.screen(0, PLAN)
    assert runner.meter.compares == 0 and record.screened_unmeasured
    assert "not faster than dense: speed-up" in record.reason


def test_predicted_fast_is_measured_and_keeps_its_prediction(runner_for) -> None:
    runner = runner_for(0.001, max_latency_ms=5.0)
    record = runner.screen(0, PLAN)
    assert runner.meter.compares == 1
    assert record.state == TrialState.SCREENED and record.latency is not None and record.predicted_ms == 0.001
    assert not record.screened_unmeasured


@pytest.mark.parametrize("budget, compares", [(3.0, 1), (2.999, 0)])
def test_margin_boundary(runner_for, budget: float, compares: int) -> None:
    # predicted 4 ms with a 25% margin is at best 3 ms: exactly the budget may pass, so it is measured
    runner = runner_for(4.0, max_latency_ms=budget, predictor_margin=0.25)
    record = runner.screen(0, PLAN)
    assert runner.meter.compares == compares and record.predicted_ms == 4.0
    assert record.screened_unmeasured == (compares == 0)


def test_no_predictor_or_a_degenerate_prediction_is_measured(runner_for) -> None:
    plain = runner_for(None, max_latency_ms=5.0)
    assert plain.screen(0, PLAN).predicted_ms is None and plain.meter.compares == 1
    negative = runner_for(-1.0, max_latency_ms=5.0)  # a fit below zero gives no basis for rejecting
    record = negative.screen(0, PLAN)
    assert negative.meter.compares == 1 and record.predicted_ms == -1.0 and record.latency is not None


def test_dense_median_is_measured_once(tiny, fake_profile) -> None:
    meter = LatencyMeter(fake_profile, tiny.build_model(), tiny.example_input, cache=None)
    first = meter.dense_median_ms()
    assert first > 0 and meter.dense_median_ms() == first
    meter.dense()  # later measurements do not move the reference a run's predictions are judged against
    assert meter.dense_median_ms() == first


def _search_files(folder: Path, profile) -> Path:
    """A profile, a space and a search config YAML for the CLI (every measured trial passes the screen)."""
    prof = {k: v for k, v in profile.to_dict().items() if v is not None}
    prof["fast_structures"] = list(prof["fast_structures"])
    (folder / "fast.yaml").write_text(yaml.safe_dump(prof))
    (folder / "space.yaml").write_text(yaml.safe_dump({"name": "t", "min_channels": 4}))
    config = {"task": TASK, "profile": "fast.yaml", "space": "space.yaml", "agent": "random", "seed": 3,
              "min_speedup": 0.0, "max_latency_ms": 100.0, "finetune": {"epochs": 0}}
    (folder / "search.yaml").write_text(yaml.safe_dump(config))
    return folder / "search.yaml"


def test_cli_search_screens_and_results_cope_with_unmeasured_trials(tmp_path: Path, fake_profile, capsys) -> None:
    config, run = _search_files(tmp_path, fake_profile), tmp_path / "run"
    search = ["search", "--config", str(config), "--out", str(run)]
    other = LatencyPredictor(profile="other-board").save(tmp_path / "other.json")
    assert main([*search, "--trials", "1", "--predictor", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "calibrated on profile 'other-board', not 'test-fake'" in err and "\n" not in err and not run.exists()

    assert main([*search, "--trials", "3", "--predictor", "off"]) == 0
    assert "latency screening: off (predictor: off)" in " ".join(capsys.readouterr().out.split())
    slow = LatencyPredictor(profile="test-fake", slope=0.0, intercept=1000.0, holdout_mdape=0.05)
    assert main([*search, "--trials", "6", "--predictor", str(slow.save(tmp_path / "slow.json"))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"latency screening: predictor {tmp_path / 'slow.json'} (held-out median error 5.0%)" in out

    data = load_run(run)
    first, screened = data.records[:3], [r for r in data.records[3:] if r.duplicate_of is None]
    assert all(r.state == TrialState.COMPLETE and r.predicted_ms is None for r in first) and data.front
    assert screened and all(r.screened_unmeasured and r.predicted_ms == 1000.0 for r in screened)
    study = open_study(data.run.storage_url(), ["maximize", "minimize"], create=False)
    for r in screened:  # told as pruned, and over the latency budget by its prediction (1000 / 100 - 1)
        trial = study.trials[r.number]
        assert trial.state.name == "PRUNED" and trial.constraints["latency"] == pytest.approx(9.0)
    pareto = json.loads(data.run.pareto.read_text())
    assert pareto["trials"]["rejected"] == 3 and pareto["screening"]["rejected_unmeasured"] == len(screened)
    assert pareto["screening"]["active"] and pareto["screening"]["path"] == str(tmp_path / "slow.json")
    assert main(["report", str(run)]) == 0 and main(["pareto", str(run), "--json"]) == 0
    assert main(["pick", str(run), "--knee"]) == 0
    page = (run / "report.html").read_text()
    assert "predicted 1000.000 ms" in page and "<td>-</td><td>1000.0000</td>" in page
