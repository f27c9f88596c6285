"""The shared backend suite on every backend that runs here (TVM's run in test_tvm.py)."""
from __future__ import annotations

from autoprune.config import HardwareProfile
from autoprune.testing.fakes import fake_profile
from autoprune.testing.suites import BackendSuite

SHORT = {"threads": 1, "warmup_s": 0.02, "min_runs": 20, "repeats": 2, "max_cv": 1.0}


class TestOnnxRuntime(BackendSuite):
    profile = HardwareProfile(name="test-ort", backend="onnxruntime", **SHORT)


class TestTorchEager(BackendSuite):
    profile = HardwareProfile(name="test-torch", backend="torch", **SHORT)


class TestFake(BackendSuite):
    profile = fake_profile()
