"""What travels with a job to a cluster, and which resource places the measurement (no Ray started here)."""
from __future__ import annotations

import sys
from pathlib import Path

from autoprune.config import HardwareProfile
from autoprune.execution.ray_executor import measure_resource, measures_here, task_modules


def test_a_user_task_module_travels_and_installed_code_does_not(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg/__init__.py").write_text("")
    (tmp_path / "mypkg/tasks.py").write_text("def my_task():\n    return None\n")
    (tmp_path / "solo.py").write_text("def solo_task():\n    return None\n")
    monkeypatch.chdir(tmp_path)  # the user's folder, as for `autoprune search --task mypkg.tasks:my_task`
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for name in ("mypkg", "mypkg.tasks", "solo"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    [package] = task_modules("mypkg.tasks:my_task")
    assert package.__name__ == "mypkg" and Path(package.__file__).parent == tmp_path / "mypkg"  # the whole package
    [module] = task_modules("solo:solo_task")
    assert Path(module.__file__) == tmp_path / "solo.py"
    assert task_modules("digits") == []  # registered: part of autoprune
    assert task_modules("torchvision:resnet18") == []  # a model source, not a module
    assert task_modules("autoprune.tasks.digits:digits_task") == []
    assert task_modules("json:loads") == []  # the standard library
    assert task_modules("yaml:safe_load") == []  # installed in the environment
    assert task_modules("no_such_module_here:f") == []  # resolve_task reports it


def test_measuring_resource_follows_the_profile() -> None:
    plain = HardwareProfile(name="cpu-onnxruntime", backend="onnxruntime")
    assert measure_resource(plain) == "autoprune_measure_cpu_onnxruntime"
    board = HardwareProfile(name="pi4", backend="onnxruntime", ray_resource="measure:pi4")
    assert measure_resource(board) == "measure:pi4"
    assert measures_here(plain)


def test_a_remote_board_does_not_hold_the_measuring_cores() -> None:
    from autoprune.config import load_profile
    from tests.conftest import ROOT

    assert not measures_here(load_profile(ROOT / "hw_profiles/tvm-rpc-arm64.yaml"))
    assert measures_here(load_profile(ROOT / "hw_profiles/tvm-llvm-local.yaml"))
