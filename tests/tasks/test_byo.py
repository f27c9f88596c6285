"""Bring-your-own tasks: torchvision/timm on an ImageFolder tree, Hugging Face on a CSV, ``module:function`` from the
current folder; every bad input is one line naming what is wrong."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoprune.config import SearchConfig, SearchSpace
from autoprune.errors import ConfigError
from autoprune.task import TaskSpec, resolve_task
from tests.conftest import ROOT

CLASSES = ("cat", "dog")
COLOURS = {"cat": (200, 40, 40), "dog": (40, 40, 200)}


def write_image_folder(root: Path, per_class: dict[str, int], size: tuple[int, int] = (40, 48)) -> Path:
    """An ImageFolder tree of noisy images whose colour is their class (learnable in a step or two)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(COLOURS[cls]) + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255)
                Image.fromarray(pixels.astype("uint8")).save(folder / f"{i}.png")
    return root


@pytest.fixture()
def images(tmp_path, monkeypatch) -> Path:
    pytest.importorskip("PIL")
    from autoprune.compat import import_torchvision

    if import_torchvision() is None:
        pytest.skip("torchvision is not installed")
    from autoprune.tasks import vision

    monkeypatch.setenv("AUTOPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(vision, "DENSE_RECIPE", vision.DENSE_RECIPE.__class__(epochs=1, batch_size=8))
    return write_image_folder(tmp_path / "images", {"train": 4, "val": 2, "test": 2})


def test_torchvision_task_from_an_image_folder_trains_its_dense_model_once(images, tmp_path) -> None:
    task = resolve_task(TaskSpec(name="torchvision:resnet18", data=str(images), weights="none"))
    assert task.name == "torchvision:resnet18"
    assert task.example_input.shape == (1, 3, 40, 40)  # the first training image's shorter side
    assert (len(task.train_set), len(task.val_set), len(task.test_set)) == (8, 4, 4)
    x, y = task.val_set[0]
    assert x.shape == (3, 40, 40) and y in (0, 1)
    model = task.build_model()
    assert not model.training and model(task.example_input).shape == (1, 2)
    [cached] = (tmp_path / "cache").glob("torchvision_resnet18-dense-*.pt")
    stamp = cached.stat().st_mtime_ns
    again = resolve_task(TaskSpec(name="torchvision:resnet18", data=str(images), weights="none"))
    assert all(torch.equal(a, b) for a, b in zip(again.build_model().state_dict().values(),
                                                  model.state_dict().values(), strict=True))
    assert cached.stat().st_mtime_ns == stamp  # loaded, not trained again
    sized = resolve_task(TaskSpec(name="torchvision:resnet18", data=str(images), input_size=32))
    assert sized.example_input.shape == (1, 3, 32, 32)


def test_a_checkpoint_is_used_as_is_and_must_fit_the_data(images, tmp_path) -> None:
    from autoprune.compat import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(1)
    mine = tv.models.resnet18(num_classes=2).eval()
    torch.save({"state_dict": mine.state_dict()}, tmp_path / "mine.pt")
    task = resolve_task(TaskSpec(name="torchvision:resnet18", data=str(images), weights=str(tmp_path / "mine.pt")))
    assert all(torch.equal(a, b) for a, b in zip(task.build_model().state_dict().values(),
                                                  mine.state_dict().values(), strict=True))
    assert not list((tmp_path / "cache").glob("*.pt"))  # a checkpoint is trained already: nothing trained
    torch.save(tv.models.resnet18(num_classes=5).state_dict(), tmp_path / "five.pt")
    with pytest.raises(ConfigError, match=r"five.pt: does not fit torchvision:resnet18 with 2 classes"):
        resolve_task(TaskSpec(name="torchvision:resnet18", data=str(images), weights=str(tmp_path / "five.pt")))


def test_a_timm_model_from_an_image_folder(images) -> None:
    pytest.importorskip("timm")
    task = resolve_task(TaskSpec(name="timm:mobilenetv3_small_050", data=str(images), input_size=32))
    assert task.build_model()(task.example_input).shape == (1, 2)


@pytest.mark.slow
def test_a_torchvision_search_records_its_task_spec_and_resumes_only_with_it(images, tmp_path, fake_profile) -> None:
    from autoprune.records import TrialState
    from autoprune.results.export import export_trial
    from autoprune.results.run import load_run
    from autoprune.results.search import run_search

    config = SearchConfig(task="torchvision:resnet18", data=str(images), model_weights="none", input_size=32,
                          profile=fake_profile, space=SearchSpace(name="s", min_channels=8, ratio_max=0.5),
                          agent="random", trials=2, min_speedup=0.0, finetune={"epochs": 1})
    outcome = run_search(config, tmp_path / "run")
    assert [r.state for r in outcome.records] == [TrialState.COMPLETE] * 2
    recorded = json.loads((tmp_path / "run/config.json").read_text())
    assert (recorded["task"], recorded["data"], recorded["model_weights"], recorded["input_size"]) == \
        ("torchvision:resnet18", str(images), "none", 32)
    data = load_run(tmp_path / "run")
    assert data.config.task_spec == TaskSpec(name="torchvision:resnet18", data=str(images), weights="none",
                                             input_size=32)
    assert data.dense.test_accuracy is not None
    other = write_image_folder(tmp_path / "other", {"train": 4, "val": 2})
    with pytest.raises(ConfigError, match="different `data`"):
        run_search(SearchConfig(**{**config.__dict__, "data": str(other)}), tmp_path / "run")
    # export rebuilds the task from the recorded spec, from another folder
    os.chdir(tmp_path)
    result = export_trial(tmp_path / "run", outcome.front[0].number, "torch", tmp_path / "export")
    rebuild = json.loads((result.out / "rebuild.json").read_text())
    assert rebuild["task_options"] == {"data": str(images), "weights": "none", "input_size": 32}


@pytest.mark.parametrize("spec, message", [
    (TaskSpec(name="torchvision:resnet18"), r"^--task torchvision:resnet18: needs --data DIR, an ImageFolder tree"),
    (TaskSpec(name="torchvision:resnet_nope", data="x"), r"^--task torchvision:resnet_nope: unknown torchvision "
                                                         r"classifier 'resnet_nope'; valid: .*resnet18"),
    (TaskSpec(name="torchvision:resnet18", data="/nonexistent"), r"^--data /nonexistent: not a folder"),
    (TaskSpec(name="torchvision:", data="x"), r"^--task torchvision:: name the model"),
    (TaskSpec(name="digits", data="x"), r"^--task digits: this task takes no --data"),
])
def test_bad_specs_are_one_line_config_errors(spec, message) -> None:
    from autoprune.compat import import_torchvision

    if import_torchvision() is None:
        pytest.skip("torchvision is not installed")
    with pytest.raises(ConfigError, match=message) as err:
        resolve_task(spec)
    assert "\n" not in str(err.value)


def test_bad_image_folders_and_weights_are_one_line_errors(images, tmp_path) -> None:
    (tmp_path / "no-val" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"no-val: no val/ folder"):
        resolve_task(TaskSpec(name="torchvision:resnet18", data=str(tmp_path / "no-val")))
    odd = write_image_folder(tmp_path / "odd", {"train": 1, "val": 1})
    (odd / "val" / "dog").rename(odd / "val" / "bird")
    with pytest.raises(ConfigError, match=r"val/ has classes \['bird', 'cat'\], train/ has \['cat', 'dog'\]"):
        resolve_task(TaskSpec(name="torchvision:resnet18", data=str(odd)))
    with pytest.raises(ConfigError, match=r"^--weights IMAGENET9K: no such file, and not a weights name of "
                                          r"torchvision's resnet18; valid: IMAGENET1K_V1, DEFAULT, none"):
        resolve_task(TaskSpec(name="torchvision:resnet18", data=str(images), weights="IMAGENET9K"))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk.pt: not a PyTorch checkpoint"):
        resolve_task(TaskSpec(name="torchvision:resnet18", data=str(images), weights=str(tmp_path / "junk.pt")))


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "great", "awful", "the", "is", "a"]
REVIEWS = [("the movie is good", "pos"), ("a great movie", "pos"), ("good good movie", "pos"),
           ("the movie is great", "pos"), ("a good movie", "pos"), ("the movie is bad", "neg"),
           ("an awful movie", "neg"), ("bad bad movie", "neg"), ("the movie is awful", "neg"), ("a bad movie", "neg")]


@pytest.fixture()
def tiny_bert(tmp_path) -> Path:
    """A random-init two-layer BERT with a word-piece tokenizer built offline from a 13-word vocabulary."""
    from autoprune.compat import import_torchvision

    import_torchvision()
    transformers = pytest.importorskip("transformers")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = transformers.BertTokenizer(vocab_file=str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    folder = tmp_path / "bert"
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _csv(path: Path, rows) -> Path:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def test_hf_task_from_a_model_folder_and_one_csv(tiny_bert, tmp_path) -> None:
    data = _csv(tmp_path / "reviews.csv", REVIEWS)
    task = resolve_task(TaskSpec(name=f"hf:{tiny_bert}", data=str(data), input_size=8))
    assert (len(task.train_set), len(task.val_set), len(task.test_set)) == (8, 1, 1)  # 80/10/10, deterministic
    again = resolve_task(TaskSpec(name=f"hf:{tiny_bert}", data=str(data), input_size=8))
    assert torch.equal(again.val_set.encoded["input_ids"], task.val_set.encoded["input_ids"])
    assert set(task.example_input) == {"input_ids", "attention_mask", "token_type_ids"}
    assert task.example_input["input_ids"].shape == (1, 8)
    model = task.build_model()  # the saved classifier has 2 labels, as the data: used as is, nothing trained
    logits = model(**task.example_input)
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 2)
    inputs, label = task.train_set[0]
    assert inputs["input_ids"].shape == (8,) and label in (0, 1)


def test_hf_task_prunes_heads_and_fine_tunes_through_the_runner(tiny_bert, tmp_path, fake_profile) -> None:
    from autoprune.records import TrialState
    from autoprune.results.search import run_search

    folder = tmp_path / "splits"
    folder.mkdir()
    _csv(folder / "train.csv", REVIEWS)
    _csv(folder / "val.csv", REVIEWS[:2] + REVIEWS[5:7])
    config = SearchConfig(task=f"hf:{tiny_bert}", data=str(folder), input_size=8, profile=fake_profile,
                          space=SearchSpace(name="s", min_channels=4, ratio_min=0.5, ratio_max=0.5), agent="random",
                          trials=1, min_speedup=0.0)
    outcome = run_search(config, tmp_path / "run")
    [record] = outcome.records
    assert record.state == TrialState.COMPLETE and record.macs < outcome.dense.macs
    assert outcome.dense.test_accuracy is None  # no test.csv: no test split
    # export rebuilds the task from the run's spec and verifies on dict inputs (ONNX inputs named as the dict's keys)
    from autoprune.results.export import export_trial, load_export, numpy_batch

    task = config.trial_task()
    for fmt in ("onnx", "torch"):
        result = export_trial(tmp_path / "run", record.number, fmt, tmp_path / fmt, force=True)
        assert result.card["verification"]["samples"] == len(task.val_set)
        manifest = json.loads((result.out / "export.json").read_text())
        assert {i["name"] for i in manifest["inputs"]} == {"input_ids", "attention_mask", "token_type_ids"}
        batch = numpy_batch(task.val_set[0][0])
        assert load_export(result.out)(batch).shape == (1, 2)


def test_hf_labels_and_a_new_classifier(tiny_bert, tmp_path, monkeypatch) -> None:
    from autoprune.tasks import text

    monkeypatch.setenv("AUTOPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(text, "DENSE_RECIPE", text.DENSE_RECIPE.__class__(epochs=1, batch_size=4))
    rows = [(t, {"pos": 0, "neg": 2}[label]) for t, label in REVIEWS] + [("the movie", 1)]
    data = tmp_path / "three.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    task = resolve_task(TaskSpec(name=f"hf:{tiny_bert}", data=str(data), input_size=8))
    assert task.build_model()(**task.example_input).shape == (1, 3)  # 3 classes: a new classifier, trained once
    assert len(list((tmp_path / "cache").glob("*-dense-*.pt"))) == 1


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_text("words,label\nx,1\n"), r"needs the columns `text` and `label`, has words, label"),
    (lambda p: p.write_text("text,label\nx,1\ny,1\nz,1\n"), r"1 distinct label; a classifier needs at least 2"),
    (lambda p: p.write_text("text,label\nx,1\n"), r"1 rows; one file is split into train/val/test"),
])
def test_bad_text_data_is_one_line(tiny_bert, tmp_path, write, message) -> None:
    data = tmp_path / "d.csv"
    write(data)
    with pytest.raises(ConfigError, match=message) as err:
        resolve_task(TaskSpec(name=f"hf:{tiny_bert}", data=str(data)))
    assert "\n" not in str(err.value)


def test_bad_hf_model_is_one_line(tmp_path) -> None:
    pytest.importorskip("transformers")
    data = _csv(tmp_path / "reviews.csv", REVIEWS)
    with pytest.raises(ConfigError, match=r"^--task hf:/nonexistent/model: cannot load a sequence classifier") as err:
        resolve_task(TaskSpec(name="hf:/nonexistent/model", data=str(data)))
    assert "\n" not in str(err.value)


#: the console script's launcher as pip writes it (``bin/autoprune``): sys.path[0] is its folder, not the current one
LAUNCHER = """import sys
{setup}
from autoprune.cli import main
sys.exit(main())
"""

USER_MODULE = """from tests.tiny_task import tiny_task


def fn(data=None):
    task = tiny_task()
    assert data is None or data.endswith("given")
    return task
"""


def _launch(tmp_path: Path, cwd: Path, args: list[str], setup: str = "", pythonpath: str | None = None):
    launcher = tmp_path / "bin" / "autoprune_launcher.py"
    launcher.parent.mkdir(exist_ok=True)
    launcher.write_text(LAUNCHER.format(setup=setup))
    env = {**os.environ, "PYTHONPATH": str(ROOT) if pythonpath is None else pythonpath}
    return subprocess.run([sys.executable, str(launcher), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


@pytest.mark.slow
def test_a_task_module_in_the_current_folder_is_found(tmp_path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "mymodule.py").write_text(USER_MODULE)
    done = _launch(tmp_path, work, ["inspect", "--task", "mymodule:fn", "--json"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["groups"]


def test_task_modules_get_their_options_and_bad_ones_are_named(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    (tmp_path / "byo_module_a.py").write_text(USER_MODULE)
    assert resolve_task(TaskSpec(name="byo_module_a:fn", data="given")).name == "tiny"
    assert str(tmp_path) in sys.path  # appended: a library of the same name still wins
    with pytest.raises(ConfigError, match=r"this task takes no --weights"):
        resolve_task(TaskSpec(name="byo_module_a:fn", weights="x"))
    with pytest.raises(ConfigError, match=rf"module 'byo_module_a' \({tmp_path / 'byo_module_a.py'}\) has no "
                                          r"callable 'nope'"):
        resolve_task("byo_module_a:nope")
    with pytest.raises(ConfigError, match=rf"cannot import module 'no_such_module' \(looked in the current folder "
                                          rf"{tmp_path} and on sys.path\): ModuleNotFoundError"):
        resolve_task("no_such_module:fn")


#: an editable install's finder (setuptools puts one after the path finder): it maps autoprune.* to the checkout
EDITABLE = f"""
import importlib.machinery, importlib.util, pathlib
class Editable:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] != "autoprune":
            return None
        base = pathlib.Path({str(ROOT)!r}).joinpath(*name.split("."))
        if (base / "__init__.py").is_file():
            return importlib.util.spec_from_file_location(name, base / "__init__.py",
                                                          submodule_search_locations=[str(base)])
        return importlib.util.spec_from_file_location(name, base.with_suffix(".py"))
# after the path finder, as setuptools installs its own (which this one stands in front of: it maps to /work/main)
from importlib.machinery import PathFinder
sys.meta_path.insert(sys.meta_path.index(PathFinder) + 1, Editable())
"""


@pytest.mark.slow
def test_a_folder_named_autoprune_on_the_path_is_a_one_line_error(tmp_path) -> None:
    shadow = tmp_path / "shadow"
    (shadow / "autoprune").mkdir(parents=True)  # e.g. a clone's parent folder, or a results folder, on PYTHONPATH
    tests_path = tmp_path / "tests_only"
    tests_path.mkdir()
    (tests_path / "tests").symlink_to(ROOT / "tests")
    done = _launch(tmp_path, tmp_path, ["inspect", "--task", "tests.tiny_task:tiny_task"], setup=EDITABLE,
                   pythonpath=f"{shadow}{os.pathsep}{tests_path}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert f"`import autoprune` finds {shadow / 'autoprune'}, not the installed package" in done.stderr
    assert "a folder named autoprune on sys.path" in done.stderr
    done = _launch(tmp_path, tmp_path, ["inspect", "--task", "tests.tiny_task:tiny_task", "--json"], setup=EDITABLE,
                   pythonpath=str(tests_path))
    assert done.returncode == 0, done.stderr  # the same install without the shadow works


@pytest.mark.parametrize("args, message", [
    (["--task", "torchvision:resnet18", "--data", "/nonexistent"], "--data /nonexistent: not a folder"),
    (["--task", "digits", "--weights", "x.pt"], "--task digits: this task takes no --weights"),
    (["--task", "hf:/nonexistent/model"], "--task hf:/nonexistent/model: needs --data"),
    (["--task", "nope"], "--task: unknown task 'nope'; valid: digits"),
    (["--space", "nope"],
     "nope: file not found; give a YAML path or a built-in name: default, minilm, mixed-structures"),
])
def test_the_cli_prints_bad_task_options_in_one_line(capsys, args, message) -> None:
    from autoprune.cli import main

    assert main(["inspect", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autoprune: error: ") and message in err and err.count("\n") == 1, err


def test_a_search_config_file_names_data_relative_to_itself_and_built_ins_by_name(tmp_path, monkeypatch) -> None:
    from autoprune.cli import _search_config, build_parser

    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "s.yaml").write_text("task: torchvision:resnet18\ndata: ../images\nmodel_weights: DEFAULT\n"
                                   "input_size: 64\nprofile: cpu-torch\nspace: default\n")
    monkeypatch.chdir(ROOT.parent)  # anywhere but the config's folder
    config = _search_config(build_parser().parse_args(["search", "--config", str(folder / "s.yaml"), "--out", "x"]))
    assert config.data == str((folder / "../images").absolute()) and config.model_weights == "DEFAULT"
    assert config.input_size == 64 and config.profile.backend == "torch" and config.space.name
    flags = _search_config(build_parser().parse_args(
        ["search", "--config", str(folder / "s.yaml"), "--data", "here", "--weights", "none", "--out", "x"]))
    assert (flags.data, flags.model_weights) == (str(ROOT.parent / "here"), "none")  # flags win, relative to cwd


def test_timm_weights_names_are_checked(images) -> None:
    pytest.importorskip("timm")
    with pytest.raises(ConfigError, match=r"^--weights nope: no such file, and not pretrained weights of timm's "
                                          r"mobilenetv3_small_050; valid: pretrained, .*none or a checkpoint file$"):
        resolve_task(TaskSpec(name="timm:mobilenetv3_small_050", data=str(images), weights="nope"))
    with pytest.raises(ConfigError, match=r"^--task timm:no_such_net: unknown timm model"):
        resolve_task(TaskSpec(name="timm:no_such_net", data=str(images)))


def test_a_worker_in_another_folder_rebuilds_the_same_task_from_the_recorded_config(images, tmp_path, monkeypatch,
                                                                                     fake_profile) -> None:
    from autoprune.config import search_config_from_dict

    monkeypatch.chdir(images.parent)
    config = SearchConfig(task="torchvision:resnet18", data=images.name, model_weights="none", input_size=16,
                          profile=fake_profile, space=SearchSpace(name="s"))
    assert config.data == str(images)  # made absolute where the user typed it
    dense = config.trial_task().build_model()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # what a Ray worker or a later `autoprune export` does: rebuild from config.json
    again = search_config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.task_spec == config.task_spec
    task = again.trial_task()
    assert task.example_input.shape == (1, 3, 16, 16)
    assert all(torch.equal(a, b) for a, b in zip(task.build_model().state_dict().values(),
                                                  dense.state_dict().values(), strict=True))
