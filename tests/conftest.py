from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny():
    from tests.tiny_task import tiny_task

    return tiny_task()


@pytest.fixture()
def fast_profile():
    """ONNX Runtime CPU with a short protocol, for tests."""
    from autoprune.config import HardwareProfile

    return HardwareProfile(name="test-ort", backend="onnxruntime", threads=1, warmup_s=0.02, min_runs=20, repeats=2,
                           max_cv=1.0, round_to=4)
