"""TVM backend: local (untuned and tuned from a pre-filled database), RPC on loopback, export, errors.

``data/tvm_tuning_db`` holds MetaSchedule records for :func:`tiny_cnn` at 1x8x8 on
``{kind: llvm, num-cores: 1}`` (made with ``tuning_trials: 2``), so the tuned path runs in CI
without tuning anything.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from autoprune.config import HardwareProfile, RpcConfig
from autoprune.errors import BackendUnavailable, ConfigError
from autoprune.hardware.protocol import measure_models

pytest.importorskip("tvm")
pytestmark = pytest.mark.tvm

DATA = Path(__file__).parent / "data"


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()


X = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def tvm_profile(**overrides) -> HardwareProfile:
    fields = dict(name="test-tvm", backend="tvm", threads=1, warmup_s=0.02, min_runs=20, repeats=2, max_cv=1.0,
                  max_remeasure=0, target={"kind": "llvm"})
    return HardwareProfile(**{**fields, **overrides})


def test_untuned_local_measurement_says_so() -> None:
    stats = measure_models(tvm_profile(), [tiny_cnn()], X)[0]
    assert stats.backend == "tvm" and stats.runs >= 20 and 0 < stats.median_ms <= stats.p90_ms
    assert stats.info["tuned"] is False and stats.info["model_bytes"] > 1000
    assert "tvm" in stats.versions and stats.machine["id"]


def test_tuned_measurement_reuses_the_shared_database(tmp_path) -> None:
    db = shutil.copytree(DATA / "tvm_tuning_db", tmp_path / "db")
    stats = measure_models(tvm_profile(tuning_trials=2, tuning_db=str(db)), [tiny_cnn()], X)[0]
    assert stats.info["tuned"] is True and stats.info["tasks"] >= 2
    assert stats.info["tasks_tuned"] == 0 and stats.info["tasks_reused"] == stats.info["tasks"]


def test_compiled_module_matches_torch() -> None:
    import tvm
    from tvm import relax

    from autoprune.hardware.tvm_backend import compile_model

    executable, info = compile_model(tiny_cnn(), X, tvm_profile())
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(X.numpy()))
    torch.testing.assert_close(torch.from_numpy(out.numpy()), tiny_cnn()(X).detach(), rtol=1e-4, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def rpc_server():
    """A real TVM RPC server on loopback; it forks a worker, so the whole process group is stopped."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port",
                               str(port), "--port-end", str(port + 1)], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_measures_over_rpc(rpc_server) -> None:
    profile = tvm_profile(rpc=RpcConfig(host="127.0.0.1", port=rpc_server, timeout_s=5))
    stats = measure_models(profile, [tiny_cnn()], X)[0]
    assert stats.info["rpc"] == f"127.0.0.1:{rpc_server}" and stats.runs >= 20 and stats.median_ms > 0
    assert stats.info["tuned"] is False and stats.info["session_memory_bytes"] is None


def test_unreachable_rpc_names_host_and_port_quickly() -> None:
    port = _free_port()
    profile = tvm_profile(rpc=RpcConfig(host="127.0.0.1", port=port, timeout_s=2))
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
        measure_models(profile, [tiny_cnn()], X)
    assert time.monotonic() - start < 60  # compile + a bounded connect, never TVM's long retry loop


def test_tuning_db_of_another_target_is_refused(tmp_path) -> None:
    """MetaSchedule looks records up by workload only: one folder must hold one target's records."""
    db = shutil.copytree(DATA / "tvm_tuning_db", tmp_path / "db")  # tuned for {llvm, num-cores: 1}
    with pytest.raises(ConfigError, match="tuning_db.*num-cores"):
        measure_models(tvm_profile(threads=2, tuning_trials=2, tuning_db=str(db)), [tiny_cnn()], X)


def test_export_library_for_host_and_for_a_board(tmp_path) -> None:
    from autoprune.hardware.tvm_backend import export_tvm_library

    host = export_tvm_library(tiny_cnn(), X, tvm_profile(), tmp_path / "host.bin")
    assert host.suffix == ".so" and host.stat().st_size > 1000
    arm = tvm_profile(target={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    board = export_tvm_library(tiny_cnn(), X, arm, tmp_path / "board.so")
    assert board.suffix == ".tar" and board.stat().st_size > 1000


def test_invalid_target_names_the_field() -> None:
    from autoprune.hardware.base import get_backend

    with pytest.raises(ConfigError, match="target.mtripl"):
        get_backend(tvm_profile(target={"kind": "llvm", "mtripl": "x"}))
    with pytest.raises(ConfigError, match="target.kind"):
        get_backend(tvm_profile(target={"kind": "llvmx"}))
    with pytest.raises(ConfigError, match="target.num-cores"):
        get_backend(tvm_profile(target={"kind": "llvm", "num-cores": "two"}))
    with pytest.raises(ConfigError, match="rpc"):  # a foreign target needs a board to run on
        get_backend(tvm_profile(target={"kind": "llvm", "mtriple": "aarch64-linux-gnu"}))
    with pytest.raises(ConfigError, match="tuning_trials"):
        get_backend(tvm_profile(tuning_trials=4, rpc=RpcConfig(host="127.0.0.1", port=9)))


def test_missing_tvm_gives_the_install_hint(monkeypatch) -> None:
    from autoprune.hardware.base import get_backend

    monkeypatch.setitem(sys.modules, "tvm", None)
    with pytest.raises(BackendUnavailable, match="pip install"):
        get_backend(tvm_profile())
