from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from autoprune.config import HardwareProfile, SearchConfig, SearchSpace, load_profile, load_space
from autoprune.errors import ConfigError
from autoprune.plan import PrunerSettings
from tests.conftest import ROOT


@pytest.mark.parametrize("path", sorted((ROOT / "hw_profiles").glob("*.yaml")))
def test_shipped_profiles_load(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")))
def test_shipped_spaces_load(path: Path) -> None:
    assert load_space(path).name == path.stem


def test_default_space_matches_issue() -> None:
    space = load_space(ROOT / "search_spaces/default.yaml")
    assert space.structures == ("channel",) and (space.ratio_min, space.ratio_max) == (0.0, 0.8)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("name: x\nbackend: onnxruntime\nthreads: 0\n", "`threads` must be an integer >= 1, got 0"),
    ("name: x\nbackend: tensorrt\n", "torch, tvm, got 'tensorrt'"),
    ("name: x\nbackend: torch\noptions: {}\n", "unknown field `options`"),
    ("name: x\nbackend: torch\nthreadz: 2\n", "unknown field `threadz`"),
    ("backend: torch\n", "missing required field `name`"),
    ("name: x\nbackend: torch\nprecision: fp16\n", "`precision` fp16 needs `device: cuda`"),
    ("name: [x\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
    ("name: x\nbackend: torch\nray_resource: CPU\n", "`ray_resource` must name a custom Ray resource"),
    ("name: x\nbackend: torch\nray_resource: 'node:10.0.0.1'\n", "got 'node:10.0.0.1'"),
    ("name: x\nbackend: torch\nray_resource: 'a b'\n", "got 'a b'"),
    ("name: x\nbackend: torch\nray_resource: 3\n", "got 3"),
    ("name: x\nbackend: torch\nray_resource: ''\n", "`ray_resource` must name a custom Ray resource"),
])
def test_profile_errors_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_profile(tmp_path / "nope.yaml")


def test_space_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"`ratio_min` \(0.5\) must be <= `ratio_max` \(0.2\)"):
        load_space(_write(tmp_path, "name: s\nratio_min: 0.5\nratio_max: 0.2\n"))
    with pytest.raises(ConfigError, match="`structures` must be one of"):
        load_space(_write(tmp_path, "name: s\nstructures: [filters]\n"))


def test_config_is_frozen_and_the_pruner_settings_come_from_space_and_profile() -> None:
    profile = HardwareProfile(name="p", backend="torch", round_to=16)
    space = SearchSpace(name="s", min_channels=4, importance="taylor", ignore=("fc*",), nm=(1, 4), mask_scope="group")
    config = SearchConfig(task="digits", profile=profile, space=space)
    assert config.pruner == PrunerSettings(round_to=16, min_channels=4, importance="taylor", ignore=("fc*",), nm=(1, 4),
                                           mask_scope="group")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.trials = 3  # type: ignore[misc]
    assert SearchConfig(task="t", profile=profile, space=SearchSpace(name="s", round_to=4)).pruner.round_to == 4
    assert PrunerSettings.from_dict(config.pruner.to_dict()) == config.pruner


@pytest.mark.parametrize("fields, message", [
    ({"importance": "bogus"}, "`importance` must be one of bn_scale, l1, l2, random, taylor, wanda, got 'bogus'"),
    ({"mask_scope": "model"}, "`mask_scope` must be one of layer, group, got 'model'"),
    ({"nm": (4, 2)}, "`nm` must be [N, M] with 0 < N < M, got [4, 2]"),
    ({"min_channels": 0}, "`min_channels` must be an integer >= 1, got 0"),
])
def test_pruner_fields_of_a_space_are_checked_by_the_settings_they_become(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        SearchSpace(name="s", **fields)
    assert str(err.value) == message


@pytest.mark.parametrize("fields, message", [
    ({"predictor": ""}, "`predictor` must be auto, off or the path of a predictor JSON, got ''"),
    ({"predictor": 3}, "`predictor` must be auto, off or the path of a predictor JSON, got 3"),
    ({"predictor_margin": 1.0}, "`predictor_margin` must be a number in [0.0, 0.99], got 1.0"),
    ({"predictor_margin": -0.1}, "`predictor_margin` must be a number in [0.0, 0.99], got -0.1"),
])
def test_predictor_fields_are_validated(fields: dict, message: str) -> None:
    profile = HardwareProfile(name="p", backend="torch")
    with pytest.raises(ConfigError) as err:
        SearchConfig(task="t", profile=profile, space=SearchSpace(name="s"), **fields)
    assert str(err.value) == message


def test_predictor_fields_from_yaml_and_config_json(tmp_path: Path) -> None:
    from autoprune.config import load_search_settings, search_config_from_dict

    path = _write(tmp_path, "predictor: off\npredictor_margin: 0.2\n")  # YAML reads a bare off as false
    settings = load_search_settings(path)
    profile = HardwareProfile(name="p", backend="torch")
    config = SearchConfig(task="t", profile=profile, space=SearchSpace(name="s"), **settings)
    assert (config.predictor, config.predictor_margin) == ("off", 0.2)
    assert SearchConfig(task="t", profile=profile, space=SearchSpace(name="s")).predictor == "auto"
    again = search_config_from_dict({**config.to_dict(), "predictor": "x/p.json"})
    assert again.predictor == "x/p.json" and again.predictor_margin == 0.2
    with pytest.raises(ConfigError, match="config: `predictor_margin` must be a number"):
        search_config_from_dict({**config.to_dict(), "predictor_margin": 2})


def test_a_profile_recorded_by_an_older_autoprune_reads_back() -> None:
    from autoprune.config import profile_from_dict

    profile = load_profile(ROOT / "hw_profiles/cpu-onnxruntime.yaml")
    legacy = {**profile.to_dict(), "target": None, "tuning_trials": 0, "tuning_db": None, "cross_compiler": None,
              "rpc": None}  # every profile carried TVM's keys, unset, before backends owned their section
    assert profile_from_dict(legacy) == profile
    with pytest.raises(ConfigError, match="unknown field `target`"):
        profile_from_dict({**profile.to_dict(), "target": {"kind": "llvm"}})  # set: not a legacy leftover


def test_built_in_profiles_and_spaces_resolve_by_name_from_any_folder(tmp_path, monkeypatch) -> None:
    from autoprune.config import PACKAGE_DIR, builtin_names

    monkeypatch.chdir(tmp_path)  # no hw_profiles/ or search_spaces/ here
    assert load_profile("cpu-onnxruntime") == load_profile(ROOT / "hw_profiles/cpu-onnxruntime.yaml")
    assert load_profile("hw_profiles/cpu-torch.yaml").backend == "torch"
    assert load_space("default") == load_space("search_spaces/default.yaml") \
        == load_space(ROOT / "search_spaces/default.yaml")
    # the repository's folders are the package's (one copy of each file)
    assert (ROOT / "hw_profiles").resolve() == PACKAGE_DIR / "hw_profiles"
    assert "cpu-onnxruntime" in builtin_names("hw_profiles") and "default" in builtin_names("search_spaces")
    with pytest.raises(ConfigError, match=r"^nope: file not found; give a YAML path or a built-in name: default, "):
        load_space("nope")
    (tmp_path / "default.yaml").write_text("name: mine\nratio_max: 0.5\n")
    assert load_space("default.yaml").name == "mine"  # an existing file wins over the built-in name


def test_ray_resource_names_the_measuring_node(tmp_path: Path) -> None:
    from autoprune.config import profile_from_dict
    from autoprune.execution.ray_executor import measure_resource

    default = load_profile(ROOT / "hw_profiles/cpu-onnxruntime.yaml")
    assert measure_resource(default) == measure_resource("cpu-onnxruntime") == "autoprune_measure_cpu_onnxruntime"
    assert "ray_resource" not in default.to_dict()  # records and latency-cache keys of existing profiles unchanged
    own = load_profile(_write(tmp_path, "name: x\nbackend: onnxruntime\nray_resource: 'measure:pi4'\n"))
    assert measure_resource(own) == "measure:pi4"
    assert profile_from_dict(own.to_dict()) == own
