"""TVM backend: local (untuned and tuned from a pre-filled database), RPC on loopback (measuring and
tuning on the "board"), export, errors.

``data/tvm_tuning_db`` holds MetaSchedule records for :func:`tiny_cnn` at 1x8x8 on
:data:`PORTABLE_TARGET` with one core (made with ``tuning_trials: 2``), so the tuned path runs in
CI without tuning anything, on any x86-64 CPU. Only :func:`test_tunes_on_the_board_over_rpc` really
tunes (slow).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from autoprune.config import HardwareProfile
from autoprune.errors import BackendUnavailable, ConfigError
from autoprune.hardware.protocol import measure_models
from autoprune.hardware.tvm_backend import RpcConfig, TvmOptions
from autoprune.testing.suites import BackendSuite

pytest.importorskip("tvm")
pytestmark = pytest.mark.tvm

DATA = Path(__file__).parent / "data"


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()


X = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
#: a fixed ``mcpu``: the default (this machine's CPU) would key the committed database to one CPU
PORTABLE_TARGET = {"kind": "llvm", "mcpu": "x86-64"}


def tvm_profile(threads: int = 1, **options) -> HardwareProfile:
    """The tests' TVM profile with a short protocol; ``options`` are TvmOptions fields (the ``tvm:`` section)."""
    return HardwareProfile(name="test-tvm", backend="tvm", threads=threads, warmup_s=0.02, min_runs=20, repeats=2,
                           max_cv=1.0, max_remeasure=0, options=TvmOptions(**{"target": {"kind": "llvm"}, **options}))


class TestTvmUntuned(BackendSuite):
    profile = tvm_profile()


def test_untuned_local_measurement_says_so() -> None:
    stats = measure_models(tvm_profile(), [tiny_cnn()], X)[0]
    assert stats.backend == "tvm" and stats.runs >= 20 and 0 < stats.median_ms <= stats.p90_ms
    assert stats.info["tuned"] is False and stats.info["model_bytes"] > 1000
    assert "tvm" in stats.versions and stats.machine["id"]


def test_tuned_measurement_reuses_the_shared_database(tmp_path) -> None:
    db = shutil.copytree(DATA / "tvm_tuning_db", tmp_path / "db")
    profile = tvm_profile(tuning_trials=2, tuning_db=str(db), target=PORTABLE_TARGET)
    stats = measure_models(profile, [tiny_cnn()], X)[0]
    assert stats.info["tuned"] is True and stats.info["tasks"] >= 2
    assert stats.info["tasks_tuned"] == 0 and stats.info["tasks_reused"] == stats.info["tasks"]


def test_tuning_records_are_kept_per_target(tmp_path) -> None:
    from autoprune.hardware.tvm_backend import make_target, tuning_db_path

    profile = tvm_profile(tuning_db=str(tmp_path))
    host = tuning_db_path(profile, make_target(profile))
    portable = tuning_db_path(profile, make_target(tvm_profile(target=PORTABLE_TARGET)))
    two_cores = tuning_db_path(profile, make_target(tvm_profile(threads=2)))
    assert len({host, portable, two_cores}) == 3 and all(p.parent == tmp_path for p in (host, portable, two_cores))
    assert "mcpu" in str(make_target(profile))  # the host CPU's vector units are used, not baseline x86-64


@pytest.mark.slow
@pytest.mark.timeout(1200)  # MetaSchedule tuning: 160 s here when the machine is idle
def test_tune_further_searches_every_task_again_and_keeps_the_best(tmp_path) -> None:
    from tvm.s_tir import meta_schedule as ms

    from autoprune.hardware.tvm_backend import make_target, tune_further, tuning_db_path

    profile = tvm_profile(tuning_trials=2, tuning_db=str(tmp_path))
    model, x = one_layer()
    first = measure_models(profile, [model], x)[0]
    folder = tuning_db_path(profile, make_target(profile))
    records = len(ms.database.JSONDatabase(work_dir=str(folder)))
    facts = tune_further(model, x, profile, 2)
    assert facts["tasks_tuned"] == facts["tasks"] == first.info["tasks"]  # every task, not only missing ones
    assert len(ms.database.JSONDatabase(work_dir=str(folder))) > records  # new schedules were measured
    assert measure_models(profile, [model], x)[0].info["tasks_tuned"] == 0


def test_xgboost_guides_only_runs_long_enough_for_it_to_predict() -> None:
    from tvm.s_tir.meta_schedule.cost_model import RandomModel, XGBModel

    from autoprune.hardware.tvm_backend import XGB_WARMUP_SAMPLES, _cost_model

    assert isinstance(_cost_model(XGB_WARMUP_SAMPLES), RandomModel)  # XGBoost would predict at random anyway
    assert isinstance(_cost_model(12 * 128), XGBModel)


def test_compiled_module_matches_torch() -> None:
    import tvm
    from tvm import relax

    from autoprune.hardware.tvm_backend import compile_model

    executable, info = compile_model(tiny_cnn(), X, tvm_profile())
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(X.numpy()))
    torch.testing.assert_close(torch.from_numpy(out.numpy()), tiny_cnn()(X).detach(), rtol=1e-4, atol=1e-5)


def test_batchnorm_is_folded_into_the_convolution_and_outputs_match() -> None:
    import tvm
    from tvm import relax

    from autoprune.hardware.tvm_backend import _relax_module, compile_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()).eval()
    bn = model[1]
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    assert "batch_norm" not in _relax_module(model, X).script()
    executable, _ = compile_model(model, X, tvm_profile())
    out = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(X.numpy()))
    torch.testing.assert_close(torch.from_numpy(out.numpy()), model(X).detach(), rtol=1e-4, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RpcServer:
    port: int
    log: Path  # the server's own log: "load_module <path>" for every module it loaded

    def loaded(self, prefix: str) -> list[str]:
        """Names of the modules the server loaded whose file name starts with ``prefix``."""
        names = [line.rsplit("/", 1)[-1] for line in self.log.read_text().splitlines() if " load_module " in line]
        return [n for n in names if n.startswith(prefix)]

    def sessions_open(self) -> int:
        text = self.log.read_text()
        return text.count(" start serving at ") - text.count(" finish serving ")


@pytest.fixture()
def rpc_server(tmp_path):
    """A real TVM RPC server on loopback; it forks a worker, so the whole process group is stopped."""
    port = _free_port()
    log = tmp_path / "rpc_server.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port",
                                   str(port), "--port-end", str(port + 1)], start_new_session=True,
                                  stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield RpcServer(port, log)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_measures_over_rpc(rpc_server) -> None:
    profile = tvm_profile(rpc=RpcConfig(host="127.0.0.1", port=rpc_server.port, timeout_s=5))
    stats = measure_models(profile, [tiny_cnn()], X)[0]
    assert stats.info["rpc"] == f"127.0.0.1:{rpc_server.port}" and stats.runs >= 20 and stats.median_ms > 0
    assert stats.info["tuned"] is False and stats.info["session_memory_bytes"] is None


@pytest.mark.parametrize("trials", [0, 2])
def test_unreachable_rpc_names_host_and_port_quickly(trials, tmp_path) -> None:
    port = _free_port()
    profile = tvm_profile(rpc=RpcConfig(host="127.0.0.1", port=port, timeout_s=2), tuning_trials=trials,
                          tuning_db=str(tmp_path / "db"))
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
        measure_models(profile, [tiny_cnn()], X)  # tuning: before the first candidate is built
    assert time.monotonic() - start < 60  # compile + a bounded connect, never TVM's long retry loop


def one_layer() -> tuple[nn.Module, torch.Tensor]:
    """One fused task (matmul + bias) for the real tuning test."""
    torch.manual_seed(0)
    return nn.Linear(8, 4).eval(), torch.randn(1, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.slow
def test_tunes_on_the_board_over_rpc(rpc_server, tmp_path, monkeypatch) -> None:
    """Tuning with `rpc` runs every candidate on the RPC server, then the database is reused.

    Slow (30-100 s on a loaded 2-core machine), and not because of RPC: importing
    ``tvm.s_tir.tensor_intrin`` (~15 s) and MetaSchedule's evolutionary search before its first
    batch take that long for one task locally too; the RPC batch itself takes ~0.1 s.
    """
    import json

    from autoprune.hardware import tvm_backend

    def no_local_runner():
        raise AssertionError("tuning for an rpc profile must not time candidates in this process")

    monkeypatch.setattr(tvm_backend, "_in_process_builder_runner", no_local_runner)
    db = tmp_path / "db"
    profile = tvm_profile(tuning_trials=2, tuning_db=str(db),
                          rpc=RpcConfig(host="127.0.0.1", port=rpc_server.port, timeout_s=5))
    model, x = one_layer()
    stats = measure_models(profile, [model], x)[0]
    assert stats.info["tuned"] is True and stats.info["rpc"] == f"127.0.0.1:{rpc_server.port}"
    assert stats.info["tasks"] == stats.info["tasks_tuned"] >= 1 and stats.info["tasks_reused"] == 0
    candidates = rpc_server.loaded("autoprune-candidate-")
    assert 1 <= len(candidates) <= 2 * stats.info["tasks"]  # the server loaded the candidates
    # [workload, [trace, run_secs, target, args]]: measured times (the local runner is disabled), one
    # per candidate the server ran at most, all for this profile's target
    folder = tvm_backend.tuning_db_path(profile, tvm_backend.make_target(profile))
    records = [json.loads(line)[1] for line in (folder / "database_tuning_record.json").read_text().splitlines()]
    timed = [r for r in records if 0 < r[1][0] < 1]
    assert 1 <= len(timed) <= len(candidates)
    assert all(r[2] == json.loads(str(tvm_backend.make_target(profile))) for r in records)
    # every session was closed (the server serves one at a time, the next connect would wait forever)
    deadline = time.monotonic() + 10
    while rpc_server.sessions_open() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rpc_server.sessions_open() == 0

    again = measure_models(profile, [model], x)[0]
    assert again.info["tuned"] is True and again.info["tasks_tuned"] == 0
    assert again.info["tasks_reused"] == stats.info["tasks"]
    assert rpc_server.loaded("autoprune-candidate-") == candidates  # nothing tuned the second time


def test_board_runner_times_on_the_server_reports_failures_and_reconnects(rpc_server, tmp_path,
                                                                         monkeypatch) -> None:
    """The runner that tuning uses with `rpc`, driven through MetaSchedule's C++ entry point."""
    import tvm
    from tvm import te
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.runner import RunnerInput, rpc_runner
    from tvm.s_tir.meta_schedule.runner.runner import _ffi_api

    from autoprune.hardware.tvm_backend import _board_runner, _export, make_target

    proxy = subprocess.Popen([sys.executable, str(Path(__file__).with_name("tcp_proxy.py")), str(rpc_server.port)],
                             stdout=subprocess.PIPE, text=True)
    try:
        port = int(proxy.stdout.readline())
        profile = tvm_profile(rpc=RpcConfig(host="127.0.0.1", port=port, timeout_s=5))
        a = te.placeholder((64,), name="a")
        func = te.create_prim_func([a, te.compute((64,), lambda i: a[i] + 1, name="b")])
        good = str(_export(tvm.compile(tvm.IRModule({"main": func}), target=make_target(profile)), profile,
                           tmp_path / "good"))
        (tmp_path / "bad.so").write_text("not a library")
        args = ArgInfo.from_prim_func(func)
        runner = _board_runner(profile)

        def run(*paths):
            return [f.result() for f in _ffi_api.RunnerRun(runner, [RunnerInput(p, "cpu", args) for p in paths])]

        bad, ok, ok2 = run(str(tmp_path / "bad.so"), good, good)
        assert bad.run_secs is None and f"127.0.0.1:{port}" in bad.error_msg  # an error result, not an exception
        assert ok.error_msg is None and ok2.error_msg is None and 0 < float(ok.run_secs[0]) < 1
        assert rpc_server.loaded("autoprune-candidate-") == ["autoprune-candidate-2.so", "autoprune-candidate-3.so"]

        uploads = []

        def cut_before_the_first_upload(session, local, remote):
            if not uploads:
                proxy.send_signal(signal.SIGUSR1)  # the link to the board drops mid-batch
                time.sleep(0.5)
            uploads.append(remote)
            return upload(session, local, remote)

        upload = rpc_runner.default_upload_module
        monkeypatch.setattr(rpc_runner, "default_upload_module", cut_before_the_first_upload)
        results = run(good, good)
        assert [r.error_msg for r in results] == [None, None] and len(uploads) == 3  # retried once, reconnected
        assert rpc_server.loaded("autoprune-candidate-")[-2:] == ["autoprune-candidate-5.so",
                                                                  "autoprune-candidate-6.so"]

        proxy.kill()
        proxy.wait()
        with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):  # through the C++ scheduler's call
            run(good)
    finally:
        proxy.kill()
        proxy.wait()


def test_export_library_for_host_and_for_a_board(tmp_path) -> None:
    from autoprune.hardware.tvm_backend import export_tvm_library

    host = export_tvm_library(tiny_cnn(), X, tvm_profile(), tmp_path / "host.bin")
    assert host.suffix == ".so" and host.stat().st_size > 1000
    arm = tvm_profile(target={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    board = export_tvm_library(tiny_cnn(), X, arm, tmp_path / "board.so")
    assert board.suffix == ".tar" and board.stat().st_size > 1000


def test_a_dynamic_batch_library_serves_any_batch_untuned_and_a_static_one_keeps_its_tuned_batch(tmp_path) -> None:
    """MetaSchedule's records are per static shape: the symbolic-batch build uses TVM's default schedules (the
    database is not touched), the static build of a tuning profile stays tuned and takes only its batch."""
    import tvm
    from tvm import relax

    from autoprune.hardware.tvm_backend import compile_model, export_tvm_library

    db = shutil.copytree(DATA / "tvm_tuning_db", tmp_path / "db")
    before = sorted((p.name, p.stat().st_size) for p in db.rglob("*"))
    profile = tvm_profile(tuning_trials=2, tuning_db=str(db), target=PORTABLE_TARGET)
    _, info = compile_model(tiny_cnn(), X, profile, dynamic_batch=True)
    assert info["tuned"] is False and sorted((p.name, p.stat().st_size) for p in db.rglob("*")) == before
    library = export_tvm_library(tiny_cnn(), X, tvm_profile(), tmp_path / "dynamic.so", dynamic_batch=True)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    batch8 = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for x in (X, batch8):
        out = vm["main"](tvm.runtime.tensor(x.numpy()))
        torch.testing.assert_close(torch.from_numpy(out.numpy()), tiny_cnn()(x).detach(), rtol=1e-4, atol=1e-5)

    executable, info = compile_model(tiny_cnn(), X, profile)
    assert info["tuned"] is True and info["tasks_tuned"] == 0
    vm = relax.VirtualMachine(executable, tvm.cpu())
    with pytest.raises(RuntimeError, match=r"shape\[0\] mismatch"):
        vm["main"](tvm.runtime.tensor(batch8.numpy()))


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
    board = {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}
    with pytest.raises(ConfigError, match="num-cores"):  # MetaSchedule needs the board's core count
        get_backend(tvm_profile(tuning_trials=4, target=board, rpc=RpcConfig(host="127.0.0.1", port=9)))
    get_backend(tvm_profile(tuning_trials=4, target={**board, "num-cores": 4}, rpc=RpcConfig(host="127.0.0.1", port=9)))


def test_missing_tvm_gives_the_install_hint(monkeypatch) -> None:
    from autoprune.hardware.base import get_backend

    monkeypatch.setitem(sys.modules, "tvm", None)
    with pytest.raises(BackendUnavailable, match="pip install"):
        get_backend(tvm_profile())
