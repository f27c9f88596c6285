"""PyTorch eager on the CPU, and the CUDA profiles (skipped without CUDA)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoprune.config import HardwareProfile, load_profile
from autoprune.hardware.protocol import measure_models
from autoprune.tasks.digits import DigitsResNet

ROOT = Path(__file__).resolve().parents[2]
X = torch.randn(1, 1, 16, 16)


def test_torch_cpu_backend_records_memory_versions_and_machine() -> None:
    profile = HardwareProfile(name="t", backend="torch", threads=1, warmup_s=0.02, min_runs=20, repeats=2, max_cv=1.0)
    stats = measure_models(profile, [DigitsResNet(widths=(8, 16, 32)).eval()], X)[0]
    assert stats.backend == "torch" and stats.runs >= 20 and stats.median_ms > 0
    assert stats.info["model_bytes"] > 10_000 and stats.info["session_memory_bytes"] >= 0
    assert {"torch", "python"} <= set(stats.versions) and stats.machine["cores"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["cuda-torch", "cuda-onnxruntime"])
def test_cuda_profiles_measure_on_the_gpu(name) -> None:
    if name == "cuda-onnxruntime":
        ort = pytest.importorskip("onnxruntime")
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            pytest.skip("onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    profile = load_profile(ROOT / "hw_profiles" / f"{name}.yaml")
    stats = measure_models(profile, [DigitsResNet(widths=(8, 16, 32)).eval()], X)[0]
    assert stats.device == "cuda" and stats.median_ms > 0 and stats.runs >= profile.min_runs
