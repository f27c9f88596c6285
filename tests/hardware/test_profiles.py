"""Shipped profiles, the RPC environment override, and bad-input errors of the hardware layer."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autoprune.config import HardwareProfile, load_profile, profile_from_dict
from autoprune.errors import BackendUnavailable, ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_tvm_profiles_keep_tvm_settings_in_their_section() -> None:
    arm = load_profile(ROOT / "hw_profiles/tvm-rpc-arm64.yaml").options
    assert arm.target == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    assert arm.rpc is not None and arm.rpc.port == 9090
    local = load_profile(ROOT / "hw_profiles/tvm-llvm-local.yaml").options
    assert local.rpc is None and local.tuning_trials > 0


def test_the_flat_layout_of_tvm_settings_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("name: old\nbackend: tvm\ntarget: {kind: llvm}\ntuning_trials: 4\nrpc: {host: board, port: 9090}\n")
    options = load_profile(path).options
    assert (options.tuning_trials, options.rpc.host) == (4, "board")


def test_a_section_belongs_to_its_backend_and_is_checked_by_it(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nbackend: onnxruntime\ntvm: {tuning_trials: 4}\n")
    with pytest.raises(ConfigError, match="the `tvm` section only applies to `backend: tvm`, not onnxruntime"):
        load_profile(path)
    path.write_text("name: x\nbackend: tvm\ntvm: {tuning_trials: -1}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: tvm: `tuning_trials` must be an integer >= 0, got -1"):
        load_profile(path)


def test_rpc_address_comes_from_the_environment_for_a_user_file_only(monkeypatch) -> None:
    monkeypatch.setenv("AUTOPRUNE_RPC_HOST", "10.0.0.7")
    monkeypatch.setenv("AUTOPRUNE_RPC_PORT", "9191")
    profile = load_profile(ROOT / "hw_profiles/tvm-rpc-arm64.yaml")
    assert (profile.options.rpc.host, profile.options.rpc.port) == ("10.0.0.7", 9191)
    monkeypatch.setenv("AUTOPRUNE_RPC_HOST", "10.9.9.9")  # another machine rebuilds a recorded profile as recorded
    assert profile_from_dict(profile.to_dict()) == profile
    monkeypatch.setenv("AUTOPRUNE_RPC_PORT", "nine")
    with pytest.raises(ConfigError, match="AUTOPRUNE_RPC_PORT"):
        load_profile(ROOT / "hw_profiles/tvm-rpc-arm64.yaml")


def test_target_values_are_checked_by_field() -> None:
    from autoprune.hardware.tvm_backend import TvmOptions

    with pytest.raises(ConfigError, match="`target`"):
        TvmOptions(target={"mtriple": "aarch64-linux-gnu"})
    with pytest.raises(ConfigError, match="target.mattr"):
        TvmOptions(target={"kind": "llvm", "mattr": {"neon": True}})


def test_missing_onnxruntime_gives_the_install_hint(monkeypatch) -> None:
    from autoprune.hardware.base import get_backend

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailable, match="pip install onnxruntime"):
        get_backend(HardwareProfile(name="x", backend="onnxruntime")).providers()
