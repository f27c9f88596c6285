"""`autoprune inspect` / `autoprune sensitivity`, and the runner keeping masks and saving reloadable trials."""
from __future__ import annotations

import json

import pytest

from autoprune.cli import main
from autoprune.config import SearchSpace, pruner_settings
from autoprune.search.sensitivity import parse_ratios, sensitivity
from tests.conftest import ROOT

TASK = "tests.tiny_task:tiny_task"


def test_inspect_json_lists_groups_and_left_out(capsys) -> None:
    assert main(["inspect", "--task", TASK, "--json", "--space", str(ROOT / "search_spaces/default.yaml")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "TinyResNet" and len(report["groups"]) == 4
    assert report["left_out"] == [{"layer": "fc", "type": "Linear",
                                   "reason": "output layer: its channels are the model's output `output` "
                                             "(pruning would change its shape)"}]
    assert all({"name", "channels", "layers", "couplings", "macs_share", "params_share"} <= set(g)
               for g in report["groups"])


def test_inspect_reports_groups_that_cannot_shrink_at_round_to(capsys) -> None:
    assert main(["inspect", "--task", TASK, "--json", "--round-to", "16"]) == 0
    report = json.loads(capsys.readouterr().out)
    cannot = {o["layer"]: o["reason"] for o in report["left_out"] if o["reason"].startswith("cannot shrink")}
    assert {g["name"] for g in report["groups"]} == {"block2.conv1", "block2.shortcut.0"}  # 32 channels
    assert set(cannot) == {"stem.0", "block1.conv1"}  # 16 channels: no multiple of 16 below 16
    assert all("round_to 16" in r for r in cannot.values())


@pytest.mark.parametrize("args, message", [
    (["sensitivity", "--task", TASK, "--ratios", "0.5,1.5"], "--ratios: every ratio must be in (0, 1)"),
    (["sensitivity", "--task", TASK, "--ratios", "half"], "--ratios: expected comma-separated numbers"),
    (["inspect", "--task", "nosuch"], "unknown task 'nosuch'"),
])
def test_bad_flags_are_one_line_exit_2(args, message, capsys) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autoprune: error: ") and message in err and "\n" not in err


def test_sensitivity_measures_each_group(tiny, fast_profile) -> None:
    rows = []
    settings = pruner_settings(SearchSpace(name="t", min_channels=4), fast_profile)
    report = sensitivity(tiny, fast_profile, settings, parse_ratios("0.5"), on_row=rows.append)
    assert len(report.rows) == 4 == len(rows)
    for row in report.rows:
        assert row.channels[1] < row.channels[0] and 0 < row.macs_ratio < 1 and row.speedup > 0
        assert row.accuracy_drop == pytest.approx(report.dense_accuracy - row.accuracy)
    assert report.to_dict()["rows"][0]["group"] == report.rows[0].group


def test_runner_keeps_masks_through_fine_tuning_and_saves_a_reloadable_trial(tiny, fast_profile, tmp_path) -> None:
    import torch

    from autoprune.config import SearchConfig
    from autoprune.execution.runner import TrialRunner
    from autoprune.hardware.meter import LatencyMeter
    from autoprune.plan import GroupPlan, PruningPlan
    from autoprune.pruning.saving import load_pruned
    from autoprune.records import DenseReference, TrialState
    from autoprune.results.run import RunFolder, RunWriter
    from autoprune.testing.fakes import stats

    config = SearchConfig(task=TASK, profile=fast_profile, min_speedup=0.0,
                          space=SearchSpace(name="t", min_channels=4, structures=("channel", "unstructured"),
                                            importance="taylor"))
    dense = tiny.build_model()
    runner = TrialRunner(task=tiny, config=config, dense=dense, meter=LatencyMeter(fast_profile, dense,
                                                                                   tiny.example_input))
    plan = PruningPlan.of({"stem.0": GroupPlan(ratio=0.5), "block1.conv1": GroupPlan(ratio=0.7,
                                                                                     structure="unstructured")})
    screened = runner.screen(0, plan)
    assert screened.state == TrialState.SCREENED, screened.reason
    candidate = runner.finetune(screened)
    assert candidate.record.state == TrialState.COMPLETE, candidate.record.reason
    reference = DenseReference(accuracy=1.0, latency=stats(1.0), macs=1, params=1, groups=[])
    record = RunWriter(run=RunFolder(tmp_path), config=config, dense=reference, screening={}).save_candidate(candidate)
    assert record.model_path == str(tmp_path / "trials/0000/model.pt")
    model = load_pruned(tmp_path / "trials/0000", tiny)
    weight = model.block1.conv1.weight
    assert float((weight == 0).float().mean()) >= 0.7 - 1e-3  # still sparse after fine-tuning
    assert json.loads((tmp_path / "trials/0000/plan.json").read_text())["sparsity"]["block1.conv1"] >= 0.69
    assert model.stem[0].out_channels == 8 and torch.isfinite(model(tiny.example_input)).all()
