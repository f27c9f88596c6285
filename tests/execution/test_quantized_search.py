"""Prune and quantize in one search: a real ONNX Runtime CPU profile (short protocol) on the tiny task."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune.config import HardwareProfile, SearchConfig, SearchSpace
from autoprune.errors import ConfigError
from autoprune.records import TrialRecord, TrialState
from autoprune.results.search import run_search

TASK = "tests.tiny_task:tiny_task"
MIXED = SearchSpace(name="mixed", min_channels=4, precisions=("fp32", "int8"), keep_fp32=("fc",))


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory) -> tuple[Path, list[TrialRecord]]:
    profile = HardwareProfile(name="test-ort", backend="onnxruntime", threads=1, warmup_s=0.02, min_runs=20,
                              repeats=2, max_cv=1.0, round_to=4)
    out = tmp_path_factory.mktemp("mixed") / "run"
    config = SearchConfig(task=TASK, profile=profile, space=MIXED, agent="uniform", trials=6, seed=1, min_speedup=0.0)
    return out, run_search(config, out).records


def test_a_mixed_search_ends_with_both_precisions_in_its_records(mixed_run) -> None:
    out, records = mixed_run
    complete = [r for r in records if r.state == TrialState.COMPLETE]
    assert {r.precision for r in complete} == {"fp32", "int8"}, [(r.state, r.reason) for r in records]
    for r in complete:
        if r.precision == "int8":
            q = r.quantization
            assert q["calibration"] == "minmax" and q["calibration_data"] == "training split"
            assert Path(q["onnx_path"]).is_file() and Path(q["onnx_path"]).stat().st_size == q["onnx_bytes"]
            assert r.fp32_latency is not None and q["speedup_vs_fp32"] == pytest.approx(
                r.fp32_latency.median_ms / r.latency.median_ms)
            assert ("note" in q) == (q["speedup_vs_fp32"] <= 1.0)
            # scored in ONNX Runtime, close to (not the same computation as) the fp32 PyTorch score
            assert 0 < r.accuracy <= 1 and abs(r.accuracy - q["fp32_accuracy"]) <= 0.05
            assert r.test_accuracy is not None
            assert r.size_bytes == q["onnx_bytes"] and 0 < r.compressed_bytes < r.size_bytes  # the shipped file's
            assert r.plan["keep_fp32"] == ["fc"] and q["keep_fp32"] == ["fc"] and q["fp32_nodes"] == ["/model/fc/Gemm"]
        else:
            assert r.quantization == {} and r.fp32_latency is None
            assert 0 < r.compressed_bytes < r.size_bytes
            assert "keep_fp32" not in r.plan
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["dense"]["size_bytes"] > pareto["dense"]["compressed_bytes"] > 0
    assert all(r["size_bytes"] and r["compressed_bytes"] for r in pareto["front"])
    assert pareto["precisions"] == {p: sum(r.precision == p for r in complete) for p in ("fp32", "int8")}
    by_number = {c.number: c for c in complete}
    assert all(TrialRecord.from_dict(r).quantization == by_number[r["number"]].quantization for r in pareto["front"])


def test_a_space_asking_for_a_precision_the_profile_cannot_run_is_a_config_error() -> None:
    torch_profile = HardwareProfile(name="cpu-torch", backend="torch")
    with pytest.raises(ConfigError, match="lists int8, which hardware profile cpu-torch .* cannot run; it runs fp32$"):
        SearchConfig(task=TASK, profile=torch_profile, space=MIXED)
    cuda = HardwareProfile(name="gpu-ort", backend="onnxruntime", device="cuda")
    with pytest.raises(ConfigError, match="lists int8"):
        SearchConfig(task=TASK, profile=cuda, space=MIXED)


def test_the_space_file_names_its_precisions(tmp_path: Path) -> None:
    from autoprune.config import load_space

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nprecisions: [fp32, int8]\n")
    assert load_space(path).precisions == ("fp32", "int8")
    path.write_text("name: s\nprecisions: [fp32, int4]\n")
    with pytest.raises(ConfigError, match=r"s.yaml: `precisions` must be one of .*got 'int4'|int4"):
        load_space(path)


def _int8_trial(records: list[TrialRecord]) -> TrialRecord:
    return next(r for r in records if r.state == TrialState.COMPLETE and r.precision == "int8")


def test_an_exported_int8_trial_reloads_in_a_fresh_process_with_its_recorded_accuracy(mixed_run, tmp_path) -> None:
    import subprocess
    import sys

    from autoprune.results.export import export_trial, quantized_tolerance

    out, records = mixed_run
    record = _int8_trial(records)
    result = export_trial(out, record.number, "onnx", tmp_path / "export", force=True, warn=lambda _: None)
    card = result.card
    assert card["precision"]["precision"] == "int8" and card["precision"]["calibration"] == "minmax"
    assert card["precision"]["calibration_data"] == "training split"
    assert card["precision"]["size_bytes"] == (tmp_path / "export/model.onnx").stat().st_size
    assert 0 < card["precision"]["compressed_bytes"] < card["precision"]["size_bytes"]
    assert card["size"]["pruned"] == {"bytes": record.size_bytes, "compressed_bytes": record.compressed_bytes}
    assert card["verification"]["passed"] and card["verification"]["top1_agreement"] >= 0.95
    markdown = (tmp_path / "export/model_card.md").read_text()
    assert "Precision: **int8**" in markdown and "Calibration: method minmax" in markdown
    assert "size on disk (gzip'd)" in markdown and "Kept in fp32: the layers matching `fc`" in markdown
    script = ("import json, sys\nfrom autoprune.hardware.quantize import onnx_score\nfrom tests.tiny_task import "
              "tiny_task\nt = tiny_task()\nblob = open(sys.argv[1], 'rb').read()\n"
              "print(json.dumps(onnx_score(blob, t.val_set, t.metric)))\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "export/model.onnx")], capture_output=True,
                          text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    tiny_val = card["verification"]["samples"]
    assert abs(fresh - record.accuracy) <= quantized_tolerance(tiny_val)


def test_other_formats_refuse_an_int8_trial(mixed_run, tmp_path) -> None:
    from autoprune.results.export import export_trial

    out, records = mixed_run
    with pytest.raises(ConfigError, match="is int8; only --format onnx ships its quantized model"):
        export_trial(out, _int8_trial(records).number, "torch", tmp_path / "x", force=True, warn=lambda _: None)


def test_pick_filters_by_precision_and_the_plot_marks_it(mixed_run, capsys) -> None:
    from autoprune.cli import main
    from autoprune.results.pick import precision_front
    from autoprune.results.report import plot_pareto
    from autoprune.results.run import load_run

    out, _ = mixed_run
    data = load_run(out)
    for precision in ("fp32", "int8"):
        front = precision_front(data, precision)
        assert front and {r.precision for r in front} == {precision}
    with pytest.raises(ConfigError, match="no complete trial .* is fp16; it has fp32, int8"):
        precision_front(data, "fp16")
    assert main(["pick", str(out), "--knee", "--precision", "int8"]) == 0
    import re

    picked = int(re.search(r"picked trial (\d+)", capsys.readouterr().out).group(1))
    assert data.record(picked).precision == "int8"
    figure = plot_pareto(data)
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert {"front, fp32", "front, int8"} & set(labels)
