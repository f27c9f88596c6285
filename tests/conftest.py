from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny():
    from tests.tiny_task import tiny_task

    return tiny_task()


@pytest.fixture()
def fast_profile():
    """ONNX Runtime CPU with a short protocol, for tests; any CV passes (a tiny model on a loaded CI machine
    can exceed 100%), so no figure is re-measured or marked noisy (``test_busy_machine.py`` drives those)."""
    from autoprune.config import HardwareProfile

    return HardwareProfile(name="test-ort", backend="onnxruntime", threads=1, warmup_s=0.02, min_runs=20, repeats=2,
                           max_cv=10.0, round_to=4)


@pytest.fixture()
def fake_profile():
    """The fake latency backend (latency from MACs, no runtime) with an instant protocol: for driver tests."""
    from autoprune.testing.fakes import fake_profile

    return fake_profile()


@pytest.fixture(autouse=True, scope="session")
def _private_caches(tmp_path_factory):
    """Latency cache and TVM tuning database in a temp folder: tests never share state across runs."""
    root = tmp_path_factory.mktemp("caches")
    saved = {k: os.environ.get(k) for k in ("AUTOPRUNE_LATENCY_CACHE", "AUTOPRUNE_TVM_TUNING_DB")}
    os.environ["AUTOPRUNE_LATENCY_CACHE"] = str(root / "latency.db")
    os.environ["AUTOPRUNE_TVM_TUNING_DB"] = str(root / "tvm-tuning")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave at once, with pytest's own exit status, once TVM has been loaded in this process.

    With TVM's and PyTorch's LLVM both loaded, the interpreter's teardown can crash in C++ static
    destructors after every test has passed (apache/tvm#12326, #14682); CI once ended
    ``Segmentation fault`` after pytest's summary. The results are written by now; nothing is skipped
    but that teardown.
    """
    import sys

    if "tvm" in sys.modules and _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
