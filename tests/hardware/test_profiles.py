"""Shipped profiles, the RPC environment override, and bad-input errors of the hardware layer."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autoprune.config import HardwareProfile, load_profile
from autoprune.errors import BackendUnavailable, ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_tvm_profiles() -> None:
    arm = load_profile(ROOT / "hw_profiles/tvm-rpc-arm64.yaml")
    assert arm.target == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    assert arm.rpc is not None and arm.rpc.port == 9090
    local = load_profile(ROOT / "hw_profiles/tvm-llvm-local.yaml")
    assert local.rpc is None and local.tuning_trials > 0


def test_rpc_address_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("AUTOPRUNE_RPC_HOST", "10.0.0.7")
    monkeypatch.setenv("AUTOPRUNE_RPC_PORT", "9191")
    rpc = load_profile(ROOT / "hw_profiles/tvm-rpc-arm64.yaml").rpc
    assert (rpc.host, rpc.port) == ("10.0.0.7", 9191)
    monkeypatch.setenv("AUTOPRUNE_RPC_PORT", "nine")
    with pytest.raises(ConfigError, match="AUTOPRUNE_RPC_PORT"):
        load_profile(ROOT / "hw_profiles/tvm-rpc-arm64.yaml")


def test_target_values_are_checked_by_field() -> None:
    with pytest.raises(ConfigError, match="`target`"):
        HardwareProfile(name="x", backend="tvm", target={"mtriple": "aarch64-linux-gnu"})
    with pytest.raises(ConfigError, match="target.mattr"):
        HardwareProfile(name="x", backend="tvm", target={"kind": "llvm", "mattr": {"neon": True}})


def test_missing_onnxruntime_gives_the_install_hint(monkeypatch) -> None:
    from autoprune.hardware.base import get_backend

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailable, match="pip install onnxruntime"):
        get_backend(HardwareProfile(name="x", backend="onnxruntime")).providers()
