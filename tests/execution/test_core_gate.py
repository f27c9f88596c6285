"""Fine-tune steps never run while latency is measured on the same machine (``execution/core_gate.py``)."""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from autoprune.execution.core_gate import TRACE_ENV, CoreGate
from tests.gate_task import STEPS_ENV


def _intervals(trace: Path) -> list[tuple[float, float]]:
    return [(d["start"], d["end"]) for d in map(json.loads, trace.read_text().splitlines())]


def _steps(folder: Path) -> dict[str, list[float]]:
    return {p.name: [float(t) for t in p.read_text().split()] for p in folder.glob("steps-*.txt")}


def _assert_no_step_while_measuring(intervals: list[tuple[float, float]], steps: dict[str, list[float]]) -> None:
    """No step time falls inside a measurement, and training did run across one (else the check proves nothing)."""
    assert intervals and steps
    inside = [(t, i) for times in steps.values() for t in times for i in intervals if i[0] < t < i[1]]
    assert not inside, f"{len(inside)} fine-tune steps ran during a measurement, e.g. {inside[:3]}"
    spanned = [i for i in intervals for times in steps.values() if min(times) < i[0] and max(times) > i[1]]
    assert spanned, "no measurement happened while a fine-tune was under way"


def _measure_three_times(folder: str, trace: str) -> None:
    os.environ[TRACE_ENV] = trace
    gate = CoreGate(Path(folder))
    time.sleep(0.2)
    for _ in range(3):
        with gate.measuring():
            time.sleep(0.15)  # stands for a timed run
        time.sleep(0.05)


def _train(folder: str, steps_file: str, seconds: float) -> None:
    gate = CoreGate(Path(folder))
    end = time.time() + seconds
    with open(steps_file, "a", encoding="utf-8") as f:
        while time.time() < end:
            with gate.step():
                f.write(f"{time.time()}\n")
                f.flush()
                time.sleep(0.002)  # a step's work


def test_gate_keeps_steps_of_several_processes_out_of_measurements(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    trace, steps = tmp_path / "trace.jsonl", tmp_path / "steps"
    steps.mkdir()
    procs = [ctx.Process(target=_measure_three_times, args=(str(tmp_path / "gate"), str(trace)))]
    procs += [ctx.Process(target=_train, args=(str(tmp_path / "gate"), str(steps / f"steps-{i}.txt"), 1.5))
              for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    intervals = _intervals(trace)
    assert len(intervals) == 3 and all(end - start >= 0.15 for start, end in intervals)
    _assert_no_step_while_measuring(intervals, _steps(steps))


@pytest.mark.ray
def test_ray_finetune_pauses_while_the_station_measures(tmp_path: Path, monkeypatch) -> None:
    """A real fine-tune job on one Ray worker, screens measured by the station meanwhile: no step overlaps a timing."""
    import ray

    from autoprune.config import ExecutionConfig, HardwareProfile, SearchConfig, SearchSpace
    from autoprune.execution.jobs import FinetuneJob, ScreenJob
    from autoprune.execution.ray_executor import RayExecutor, start_local_ray
    from autoprune.plan import PruningPlan
    from autoprune.pruning import discover_groups
    from autoprune.records import TrialRecord, TrialState
    from tests.gate_task import gate_task

    trace, steps = tmp_path / "trace.jsonl", tmp_path / "steps"
    steps.mkdir()
    monkeypatch.setenv(TRACE_ENV, str(trace))  # inherited by the Ray started below, so by its workers
    monkeypatch.setenv(STEPS_ENV, str(steps))
    # timings long enough (~0.5 s each) that a fine-tune is under way during some of them
    profile = HardwareProfile(name="gate-ort", backend="onnxruntime", threads=1, warmup_s=0.2, min_runs=100,
                              repeats=2, max_cv=10.0, round_to=4)
    config = SearchConfig(task="tests.gate_task:gate_task", profile=profile, agent="random", trials=4, seed=0,
                          space=SearchSpace(name="t", min_channels=4), min_speedup=0.0, finetune={"epochs": 12})
    task = gate_task()
    dense = task.build_model()
    groups = [g.name for g in discover_groups(dense, task.example_input)]
    start_local_ray(num_cpus=2, measure_profiles=[profile])
    try:
        with RayExecutor(ExecutionConfig(workers=2), config, dense, task.example_input) as executor:
            # warm up both workers (and the station) so the screens below start at once
            for number in (1, 2):
                executor.submit(ScreenJob(number=number, plan=PruningPlan.uniform(groups, 0.125 * number)))
            done = executor.wait()
            while executor.in_flight:
                done += executor.wait()
            screened = TrialRecord(number=0, plan=PruningPlan.uniform(groups, 0.25).to_dict(),
                                   state=TrialState.SCREENED, proxy=0.5)
            executor.submit(FinetuneJob(screened=screened))
            deadline = time.time() + 60
            while not list(steps.glob("steps-*.txt")) and time.time() < deadline:
                time.sleep(0.01)  # the fine-tune is under way
            for number in (3, 4, 5):
                executor.submit(ScreenJob(number=number, plan=PruningPlan.uniform(groups, 0.125 * number)))
            while executor.in_flight:
                done += executor.wait()
    finally:
        ray.shutdown()
    results = {d.job.number: d.result for d in done}
    assert results[0].record.state == TrialState.COMPLETE, results[0].record.reason
    assert all(results[n].state == TrialState.SCREENED and results[n].latency for n in range(1, 6))
    intervals, noted = _intervals(trace), _steps(steps)
    assert len(noted) == 1 and len(next(iter(noted.values()))) == 12 * 22  # one fine-tune, every step noted
    assert len(intervals) >= 5  # each screen's measurement
    _assert_no_step_while_measuring(intervals, noted)
