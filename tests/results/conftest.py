from __future__ import annotations

from pathlib import Path

import pytest

TASK = "tests.tiny_task:tiny_task"


def _profile(**overrides):
    """The tests' fast ONNX Runtime profile (as the ``fast_profile`` fixture), usable at session scope."""
    from autoprune.config import HardwareProfile

    fields = dict(name="test-ort", backend="onnxruntime", threads=1, warmup_s=0.02, min_runs=20, repeats=2,
                  max_cv=1.0, round_to=4)
    return HardwareProfile(**{**fields, **overrides})


def make_run(out: Path, trials: int, profile=None) -> Path:
    from autoprune.config import SearchConfig, SearchSpace
    from autoprune.results.search import run_search

    config = SearchConfig(task=TASK, profile=profile or _profile(), space=SearchSpace(name="t", min_channels=4),
                          agent="random", trials=trials, seed=3, min_speedup=0.0)
    run_search(config, out)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 5-trial search on the tiny task (every trial complete: min_speedup 0)."""
    return make_run(tmp_path_factory.mktemp("results") / "run", trials=5)
