from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autoprune.cli import main
from autoprune.results.export import ExportError, OnnxExporter, export_trial, load_export
from autoprune.results.run import load_run
from tests.conftest import ROOT
from tests.results.conftest import _profile, make_run
from tests.tiny_task import tiny_task

# Run in a fresh interpreter: load the export with the deployment runtime alone, predict, save.
RELOAD = {
    "onnx": """
import onnxruntime as ort
session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
outputs = [session.run(None, {session.get_inputs()[0].name: x[None]})[0] for x in inputs]
""",
    "torch": """
import torch
from autoprune.results.export import load_torch_export
model = load_torch_export(folder)
with torch.no_grad():
    outputs = [model(torch.from_numpy(x[None])).numpy() for x in inputs]
""",
    "tvm": """
import json, tvm
lib = tvm.runtime.load_module(str(folder / json.loads((folder / "export.json").read_text())["files"][0]))
vm = tvm.relax.VirtualMachine(lib, tvm.cpu())
def run(x):
    out = vm["main"](tvm.runtime.tensor(x))
    return (out if hasattr(out, "numpy") else out[0]).numpy()
outputs = [run(x[None]) for x in inputs]
""",
}


def reload_in_fresh_process(folder: Path, fmt: str, inputs: np.ndarray, tmp_path: Path) -> np.ndarray:
    np.save(tmp_path / "inputs.npy", inputs)
    script = ("import sys, numpy as np\nfrom pathlib import Path\nfolder = Path(sys.argv[1])\n"
              "inputs = np.load(sys.argv[2])\n" + RELOAD[fmt] + "np.save(sys.argv[3], np.concatenate(outputs))\n")
    result = subprocess.run([sys.executable, "-c", script, str(folder), str(tmp_path / "inputs.npy"),
                             str(tmp_path / "outputs.npy")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(tmp_path / "outputs.npy")


def pruned_outputs(run: Path, trial: int, inputs: np.ndarray) -> np.ndarray:
    """The trial's candidate reloaded from its trial folder with the pruner's own loader."""
    from autoprune.pruning.saving import load_pruned

    data = load_run(run)
    task = tiny_task()
    model = load_pruned(data.run.trial_folder(trial), task)
    with torch.no_grad():
        return model(torch.from_numpy(inputs)).numpy()


def validation_inputs(n: int = 48) -> np.ndarray:
    return tiny_task().val_set.tensors[0][-n:].numpy()  # the last ones: export verified on the first ones


@pytest.mark.parametrize("fmt", ["onnx", "torch"])
def test_export_reloads_in_a_fresh_process_with_the_same_predictions(tiny_run: Path, tmp_path: Path, fmt: str,
                                                                    capsys) -> None:
    trial = load_run(tiny_run).front[0].number
    out = tmp_path / "export"
    assert main(["export", str(tiny_run), "--trial", str(trial), "--format", fmt, "--out", str(out)]) == 0
    assert f"exported trial {trial} as {fmt}" in capsys.readouterr().out
    inputs = validation_inputs()
    expected = pruned_outputs(tiny_run, trial, inputs)
    got = reload_in_fresh_process(out, fmt, inputs, tmp_path)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()
    files = {p.name for p in out.iterdir()}
    assert {"model_card.md", "model_card.json", "export.json"} <= files
    assert files - {"model_card.md", "model_card.json", "export.json"} == (
        {"model.onnx"} if fmt == "onnx" else {"rebuild.json", "state_dict.pt"})


def test_model_card_numbers_are_the_runs_records(tiny_run: Path, tmp_path: Path) -> None:
    data = load_run(tiny_run)
    record = data.front[-1]
    result = export_trial(tiny_run, record.number, "onnx", tmp_path / "card")
    card = json.loads((tmp_path / "card/model_card.json").read_text())
    assert card == json.loads(json.dumps(result.card))
    assert card["accuracy"]["pruned"] == record.accuracy and card["accuracy"]["dense"] == data.dense.accuracy
    assert abs(card["accuracy"]["pruned_at_export"] - record.accuracy) <= 1 / 180
    # the held-out test split is reported for the dense and the pruned model, and the card says so
    assert card["accuracy"]["test"] == {"dense": data.dense.test_accuracy, "pruned": record.test_accuracy}
    assert 0.0 < record.test_accuracy <= 1.0 and 0.0 < data.dense.test_accuracy <= 1.0
    assert "test: held out" in (tmp_path / "card/model_card.md").read_text()
    assert card["params"] == {"dense": data.dense.params, "pruned": record.params}
    assert card["macs"] == {"dense": data.dense.macs, "pruned": record.macs}
    assert card["plan"] == record.plan and card["model"]["trial"] == record.number and card["model"]["on_pareto_front"]
    assert card["latency"]["at_search"]["pruned_p50_ms"] == record.latency_ms
    assert card["latency"]["at_search"]["speedup"] == record.speedup
    now = card["latency"]["at_export"]
    assert now["pruned"]["runs"] >= data.config.profile.min_runs and now["profile"] == data.config.profile.name
    assert now["speedup"] == pytest.approx(now["dense_p50_ms"] / now["pruned_p50_ms"])
    assert card["seeds"] == {"search": data.config.seed, "fine_tune": data.config.seed + record.number}
    assert (card["data"]["validation_samples"], card["data"]["test_samples"]) == (180, 180)
    assert card["data"]["task"] == data.config.task
    assert card["versions"]["search"] == data.environment["versions"] and "torch" in card["versions"]["export"]
    assert card["machine"]["search"] == data.environment["machine"] and card["machine"]["export"]["id"]
    groups = {g["group"]: g for g in card["sparsity"]["groups"]}
    assert {k: [g["channels_before"], g["channels_after"]] for k, g in groups.items()} == record.channels
    layers = {layer["layer"]: layer for layer in card["sparsity"]["layers"]}
    assert sum(layer["params_pruned"] for layer in layers.values()) == record.params
    assert sum(layer["params_dense"] for layer in layers.values()) == data.dense.params
    assert card["model"]["size_bytes"] == (tmp_path / "card/model.onnx").stat().st_size
    assert card["verification"]["passed"] and card["verification"]["samples"] == 32
    inputs = validation_inputs(4)
    predict = load_export(tmp_path / "card")  # any export folder, its format read from export.json
    np.testing.assert_allclose(np.concatenate([predict(x[None]) for x in inputs]),
                               pruned_outputs(tiny_run, record.number, inputs), rtol=1e-4, atol=1e-5)
    md = (tmp_path / "card/model_card.md").read_text()
    assert f"{100 * record.accuracy:.2f}%" in md and f"{record.params:,}" in md
    assert f"{now['pruned_p50_ms']:.4f} ms" in md


def test_a_mismatching_export_fails_loudly_and_writes_nothing(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    load = OnnxExporter.load

    def off_by_a_bit(self, folder):
        predict = load(self, folder)
        return lambda x: predict(x) + 1e-3

    monkeypatch.setattr(OnnxExporter, "load", off_by_a_bit)
    trial = load_run(tiny_run).front[0].number
    parent = tmp_path / "exports"
    parent.mkdir()
    with pytest.raises(ExportError, match="does not match the pruned PyTorch model.*nothing was written"):
        export_trial(tiny_run, trial, "onnx", parent / "model")
    assert list(parent.iterdir()) == []  # no output, no staging folder left behind


def test_an_off_front_trial_needs_force_and_gets_a_warning(tiny_run: Path, tmp_path: Path, capsys) -> None:
    import optuna

    from autoprune.records import TrialRecord, TrialState
    from autoprune.results.run import RunFolder
    from autoprune.search.study import RECORD_ATTR, open_study
    from autoprune.testing.fakes import stats

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    # a hand-made trial that dominates every real one pushes them all off the front
    study = open_study(RunFolder(run).storage_url(), ["maximize", "minimize"], create=False)
    best = TrialRecord(number=len(study.trials), plan={}, state=TrialState.COMPLETE, accuracy=1.0,
                       latency=stats(1e-6, p90_ms=1e-6), speedup=1e4, macs=1, params=1)
    study.add_trial(optuna.trial.create_trial(values=[1.0, 1e-6], user_attrs={RECORD_ATTR: best.to_dict()}))
    trial = load_run(tiny_run).front[0].number
    args = ["export", str(run), "--trial", str(trial), "--format", "torch", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--trial {trial}: not on the Pareto front" in err and "--force" in err and "\n" not in err.strip()
    assert not (tmp_path / "out").exists()
    assert main(args + ["--force"]) == 0
    assert f"warning: trial {trial} is not on the Pareto front" in capsys.readouterr().err
    card = json.loads((tmp_path / "out/model_card.json").read_text())
    assert card["model"]["on_pareto_front"] is False and "Not on the Pareto front" in (
        tmp_path / "out/model_card.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["export", "{tmp}", "--trial", "0", "--out", "{tmp}/x"], "not a run folder"),
    (["pareto", "{tmp}"], "not a run folder"),
    (["pick", "{tmp}", "--knee"], "not a run folder"),
    (["report", "{tmp}"], "not a run folder"),
    (["export", "{run}", "--trial", "99", "--out", "{tmp}/x"], "no finished trial 99"),
    (["export", "{run}", "--trial", "{front}", "--format", "tvm", "--out", "{tmp}/x"],
     "profile 'test-ort' uses backend 'onnxruntime', so it has no TVM target"),
    (["export", "{run}", "--trial", "{front}", "--format", "tflite", "--out", "{tmp}/x"],
     "unknown export format 'tflite'; valid: onnx, torch, tvm"),
    (["pick", "{run}", "--max-latency-ms", "1e-9"], "no Pareto model within 1e-09 ms"),
])
def test_bad_input_is_one_line_exit_2(tiny_run: Path, tmp_path: Path, capsys, args, message) -> None:
    front = str(load_run(tiny_run).front[0].number)
    args = [a.format(tmp=tmp_path, run=tiny_run, front=front) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autoprune: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_pareto_and_pick_print_the_front(tiny_run: Path, capsys) -> None:
    data = load_run(tiny_run)
    assert main(["pareto", str(tiny_run), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [e["trial"] for e in printed["front"]] == [r.number for r in data.front]
    assert printed["front"][0]["accuracy"] == data.front[0].accuracy
    assert main(["pick", str(tiny_run), "--min-accuracy", "0"]) == 0
    out = capsys.readouterr().out
    assert f"picked trial {data.front[0].number}: the fastest" in out and "PICKED" in out


def _tvm_export():
    try:
        from autoprune.hardware import tvm_backend
    except ImportError:
        return None
    return getattr(tvm_backend, "export_tvm_library", None)


needs_tvm_export = pytest.mark.skipif(
    _tvm_export() is None, reason="autoprune.hardware.tvm_backend.export_tvm_library is not in this tree (TVM branch)")


def _tvm_profile():
    from autoprune.hardware.tvm_backend import TvmOptions

    return _profile(name="test-tvm", backend="tvm", options=TvmOptions(target={"kind": "llvm"}), min_runs=4, repeats=1)


@pytest.fixture(scope="module")
def tvm_run(tmp_path_factory) -> Path:
    """A finished 1-trial search on the tiny task with an untuned local TVM profile."""
    return make_run(tmp_path_factory.mktemp("tvm") / "run", trials=1, profile=_tvm_profile())


@pytest.mark.tvm
@needs_tvm_export
def test_tvm_export_reloads_in_a_fresh_process(tvm_run: Path, tmp_path: Path) -> None:
    trial = load_run(tvm_run).front[0].number
    assert main(["export", str(tvm_run), "--trial", str(trial), "--format", "tvm", "--out", str(tmp_path / "out")]) == 0
    inputs = validation_inputs(16)
    got = reload_in_fresh_process(tmp_path / "out", "tvm", inputs, tmp_path)
    expected = pruned_outputs(tvm_run, trial, inputs)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.tvm
@needs_tvm_export
def test_tvm_exports_serve_batches_unless_static(tvm_run: Path, tmp_path: Path, capsys) -> None:
    """The default TVM library has a symbolic batch (verified at 1 and 8, the card says how it was built);
    ``--static-batch`` fixes it to the example's batch and the library refuses batch 8."""
    trial = load_run(tvm_run).front[0].number
    inputs = validation_inputs(8)
    expected = pruned_outputs(tvm_run, trial, inputs)
    dynamic = tmp_path / "dynamic"
    assert main(["export", str(tvm_run), "--trial", str(trial), "--format", "tvm", "--out", str(dynamic)]) == 0
    printed = capsys.readouterr().out
    assert "at batch 1 and 8" in printed and "note: the library takes any batch size" in printed
    card = json.loads((dynamic / "model_card.json").read_text())
    assert card["verification"]["batch_sizes"] == [1, 8] and card["verification"]["passed"]
    assert "TVM's default schedules" in card["model"]["note"]
    markdown = (dynamic / "model_card.md").read_text()
    assert "Note: the library takes any batch size" in markdown and "(at batch 1 and 8)" in markdown
    assert json.loads((dynamic / "export.json").read_text())["batch"] == "dynamic"
    predict = load_export(dynamic)
    for batch in (inputs[:1], inputs):  # batch 1 and batch 8 from the same library
        np.testing.assert_allclose(predict(batch), expected[: len(batch)], rtol=1e-3, atol=1e-4)

    static = export_trial(tvm_run, trial, "tvm", tmp_path / "static", dynamic_batch=False)
    assert static.card["verification"]["batch_sizes"] == [1] and "note" not in static.card["model"]
    assert json.loads((tmp_path / "static/export.json").read_text())["batch"] == 1
    predict = load_export(tmp_path / "static")
    np.testing.assert_allclose(predict(inputs[:1]), expected[:1], rtol=1e-3, atol=1e-4)
    with pytest.raises(RuntimeError, match=r"shape\[0\] mismatch"):
        predict(inputs)


@pytest.mark.tvm
@needs_tvm_export
def test_the_tvm_note_says_a_tuned_profile_keeps_its_schedules_only_with_static_batch() -> None:
    from autoprune.hardware.tvm_backend import TvmOptions
    from autoprune.results.export import TvmExporter

    tuned = _profile(name="test-tvm", backend="tvm", options=TvmOptions(target={"kind": "llvm"}, tuning_trials=8))
    exporter = TvmExporter()
    exporter.dynamic_batch = True
    note = exporter.note(tuned)
    assert note is not None and "not the profile's MetaSchedule-tuned ones" in note and "--static-batch" in note
    assert "MetaSchedule" not in (exporter.note(_tvm_profile()) or "")
    exporter.dynamic_batch = False
    assert exporter.note(tuned) is None


@pytest.mark.tvm
@needs_tvm_export
def test_a_model_that_fixes_its_batch_points_to_static_batch(tmp_path: Path) -> None:
    from torch import nn

    from autoprune.results.export import TvmExporter

    class FixedBatch(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.view(1, 4)  # the batch is baked into the code

    exporter = TvmExporter()
    exporter.dynamic_batch = True
    hint = r"symbolic batch axis \(traced at batch 2; --static-batch .*invalid for input of size 8"
    with pytest.raises(RuntimeError, match=hint):
        exporter.write(FixedBatch(), torch.ones(1, 4), _tvm_profile(), None, tmp_path)
    assert not list(tmp_path.iterdir())


def test_an_exporter_crash_is_one_error_and_leaves_nothing(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    def broken(self, model, example_input, profile, recipe, folder):
        (folder / "model.onnx").write_bytes(b"half")
        raise RuntimeError("Exporting the operator 'aten::foo' is not supported")

    monkeypatch.setattr(OnnxExporter, "write", broken)
    with pytest.raises(ExportError,
                       match="exporting or reloading trial .* failed: RuntimeError: Exporting the operator"):
        export_trial(tiny_run, load_run(tiny_run).front[0].number, "onnx", tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_onnx_exports_serve_batches_unless_static(tiny_run: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    trial = load_run(tiny_run).front[0].number
    inputs = validation_inputs(8)
    expected = pruned_outputs(tiny_run, trial, inputs)
    dynamic = export_trial(tiny_run, trial, "onnx", tmp_path / "dynamic")
    assert dynamic.card["verification"]["batch_sizes"] == [1, 8] and dynamic.card["verification"]["passed"]
    session = ort.InferenceSession(str(tmp_path / "dynamic/model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for batch in (inputs[:1], inputs):  # batch 1 and batch 8 from the same file
        got = session.run(None, {name: batch})[0]
        np.testing.assert_allclose(got, expected[: len(batch)], rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "dynamic/export.json").read_text())["batch"] == "dynamic"

    static = export_trial(tiny_run, trial, "onnx", tmp_path / "static", dynamic_batch=False)
    assert static.card["verification"]["batch_sizes"] == [1]
    session = ort.InferenceSession(str(tmp_path / "static/model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {name: inputs[:1]})[0], expected[:1], rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="Expected: 1"):
        session.run(None, {name: inputs})


def test_a_dict_input_task_searches_with_drop_and_exports_with_a_card(tmp_path: Path) -> None:
    """Text models take dict inputs: export verifies on them, the card shows validation and test agreement."""
    pytest.importorskip("transformers")
    from autoprune.config import SearchConfig, SearchSpace
    from autoprune.results.search import run_search
    from tests.tiny_text_task import tiny_text_task

    config = SearchConfig(task="tests.tiny_text_task:tiny_text_task", profile=_profile(),
                          space=SearchSpace(name="t", structures=("channel", "drop"), min_channels=4),
                          agent="random", trials=2, seed=3, min_speedup=0.0)
    run = tmp_path / "run"
    run_search(config, run)
    data = load_run(run)
    assert len(data.records) == 2 and all(r.state == "complete" for r in data.records)
    params = {k for r in data.records for k in r.plan}
    assert {"encoder.encoder.layer.0", "encoder.encoder.layer.1"} <= params  # blocks are in every plan
    record = data.front[0]
    for fmt in ("onnx", "torch"):
        out = tmp_path / fmt
        result = export_trial(run, record.number, fmt, out)
        card = result.card
        assert card["verification"]["passed"] and card["verification"]["samples"] == 32
        assert card["accuracy"]["metric"] == "agreement@10" and card["accuracy"]["dense"] == 1.0
        assert card["accuracy"]["test"] == {"dense": data.dense.test_accuracy, "pruned": record.test_accuracy}
        assert data.dense.test_accuracy == 1.0 and 0.0 < record.test_accuracy <= 1.0
        cosine = card["accuracy"]["extra"]["mean cosine"]
        assert set(cosine) == {"validation", "test"} and cosine["test"]["dense"] == pytest.approx(1.0)
        assert 0.0 < cosine["test"]["pruned"] <= 1.0 + 1e-6
        assert "mean cosine (test, at export)" in (out / "model_card.md").read_text()
        manifest = json.loads((out / "export.json").read_text())
        assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]
        task = tiny_text_task()
        inputs, _ = task.val_set[5]
        x = {k: v.unsqueeze(0).numpy() for k, v in inputs.items()}
        model = load_export(out)
        from autoprune.pruning.saving import load_pruned

        pruned = load_pruned(data.run.trial_folder(record.number), task)
        with torch.no_grad():
            want = pruned(**{k: torch.from_numpy(v) for k, v in x.items()}).numpy()
        np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-5)
