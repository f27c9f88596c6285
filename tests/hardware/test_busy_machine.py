"""Latency on a busy machine: waiting (bounded) for other processes' load, noisy figures marked, never cached.

Driven by the fake backend's scripted machine (``FakeMachine``: other processes' CPU use and the CV of
the timings at each load reading), not by loading this machine.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoprune.cli import main
from autoprune.hardware import load
from autoprune.hardware.cache import LatencyCache
from autoprune.hardware.load import other_cpu, wait_for_quiet
from autoprune.hardware.meter import LatencyMeter
from autoprune.hardware.protocol import measure_models
from autoprune.testing.fakes import FakeMachine, fake_profile


@pytest.fixture(autouse=True)
def _machine(monkeypatch):
    monkeypatch.setattr(load, "POLL_S", 0.01)
    FakeMachine.script([])
    yield
    FakeMachine.script([])


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3)).eval()


X = torch.randn(1, 1, 12, 12)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waiting_stops_when_the_load_drops_or_the_bound_is_spent() -> None:
    clock, readings = _Clock(), iter([2.0, 1.5, 0.3, 5.0])
    waited, seen = wait_for_quiet(lambda: next(readings), bound_s=10.0, tolerated=0.5, poll_s=1.0, sleep=clock.sleep,
                                  clock=clock)
    assert (waited, seen) == (2.0, 0.3)
    clock = _Clock()
    waited, seen = wait_for_quiet(lambda: 2.0, bound_s=2.5, tolerated=0.5, poll_s=1.0, sleep=clock.sleep, clock=clock)
    assert (waited, seen) == (2.5, 2.0)  # the bound: measured anyway, on a busy machine, and it says so
    clock = _Clock()
    assert wait_for_quiet(lambda: 2.0, bound_s=0.0, tolerated=0.5, sleep=clock.sleep, clock=clock) == (0.0, 2.0)


def test_the_psutil_gauge_reads_other_processes_in_cores() -> None:
    value = other_cpu(0.05)
    assert 0.0 <= value <= (__import__("os").cpu_count() or 1) + 0.5


def test_a_cv_above_max_cv_after_every_re_measure_is_marked_noisy() -> None:
    FakeMachine.script([(0.0, 0.3)])
    [stats] = measure_models(fake_profile(max_cv=0.05, max_remeasure=1), [_model()], X)
    assert stats.noisy and stats.attempts == 2 and stats.cv == pytest.approx(0.3)
    assert stats.other_cpu == 0.0 and stats.load_wait_s < 0.5
    FakeMachine.script([(0.0, 0.3), (0.0, 0.01)])  # quiet by the re-measure
    [stats] = measure_models(fake_profile(max_cv=0.05, max_remeasure=1), [_model()], X)
    assert not stats.noisy and stats.attempts == 2 and stats.cv == pytest.approx(0.01)


def test_the_measurement_waits_for_the_load_to_drop_and_records_the_wait() -> None:
    FakeMachine.script([(1.8, 0.4), (1.2, 0.4), (0.1, 0.01)])
    [stats] = measure_models(fake_profile(max_cv=0.05, load_wait_s=5.0, max_other_cpu=0.5), [_model()], X)
    assert FakeMachine.readings == 3 and stats.other_cpu == 0.1
    assert 0.02 <= stats.load_wait_s < 2.0 and not stats.noisy and stats.attempts == 1


def test_a_bounded_wait_then_measures_on_the_busy_machine_and_says_so() -> None:
    FakeMachine.script([(1.8, 0.4)])
    [stats] = measure_models(fake_profile(max_cv=0.05, max_remeasure=0, load_wait_s=0.05, max_other_cpu=0.5),
                             [_model()], X)
    assert stats.noisy and stats.other_cpu == 1.8 and 0.05 <= stats.load_wait_s < 1.0
    # no wait asked for: the load is still read and recorded
    FakeMachine.script([(1.8, 0.01)])
    [stats] = measure_models(fake_profile(max_cv=0.05), [_model()], X)
    assert stats.load_wait_s == 0.0 and stats.other_cpu == 1.8 and not stats.noisy


def test_a_noisy_measurement_is_not_cached(tmp_path: Path) -> None:
    profile = fake_profile(max_cv=0.05, max_remeasure=0)
    meter = LatencyMeter(profile, _model(), X, cache=LatencyCache(tmp_path / "cache.db"))
    candidate = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 8, 3)).eval()
    FakeMachine.script([(0.0, 0.3)])
    first, _ = meter.compare(candidate)
    again, _ = meter.compare(candidate)
    assert first.noisy and again.noisy and "cached" not in again.info  # measured again, not served from the cache
    FakeMachine.script([(0.0, 0.01)])
    quiet, _ = meter.compare(candidate)
    cached, _ = meter.compare(candidate)
    assert not quiet.noisy and cached.info.get("cached") is True


def test_profile_warns_when_the_cv_is_above_max_cv(tmp_path: Path, capsys) -> None:
    path = tmp_path / "fake.yaml"
    path.write_text("name: busy\nbackend: fake\nwarmup_s: 0.0\nmin_runs: 4\nrepeats: 2\nmax_cv: 0.05\n"
                    "max_remeasure: 1\n")
    FakeMachine.script([(1.5, 0.25)])
    assert main(["profile", "--task", "tests.tiny_task:tiny_task", "--hw", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: CV 25.0% is above the profile's max_cv 5%" in err and "1.50 cores" in err
    FakeMachine.script([(0.0, 0.01)])
    assert main(["profile", "--task", "tests.tiny_task:tiny_task", "--hw", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_profiles_reject_bad_busy_machine_fields() -> None:
    from autoprune.errors import ConfigError

    for bad in ({"noisy_retries": -1}, {"load_wait_s": -2.0}, {"max_other_cpu": -0.5}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            fake_profile(**bad)


