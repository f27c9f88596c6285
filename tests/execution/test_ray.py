"""Trials on a real local Ray (one per module): parallel search, worker kills, driver kills, sockets."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from autoprune.config import ExecutionConfig, SearchConfig, SearchSpace
from autoprune.records import TrialState
from autoprune.results.run import RunFolder
from autoprune.results.search import run_search
from autoprune.search.study import finished_records, open_study
from tests.conftest import ROOT

pytestmark = pytest.mark.ray
TASK = "tests.tiny_task:tiny_task"
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    from autoprune.execution.ray_executor import start_local_ray

    start_local_ray(num_cpus=2, measure_profiles=["test-ort", "cpu-onnxruntime"])
    yield
    ray.shutdown()


def _config(profile, trials: int) -> SearchConfig:
    return SearchConfig(task=TASK, profile=profile, space=SearchSpace(name="t", min_channels=4), agent="random",
                        trials=trials, seed=3, min_speedup=0.0)


def test_local_ray_listens_on_loopback_only() -> None:
    ours = [psutil.Process()] + psutil.Process().children(recursive=True)
    names = " ".join(" ".join(p.cmdline()) for p in ours)
    assert "gcs_server" in names and "raylet" in names
    pids = {p.pid for p in ours}
    listening = [c for c in psutil.net_connections(kind="inet")
                 if c.pid in pids and c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 3  # gcs, raylet, workers...
    assert {c.laddr.ip for c in listening} <= LOOPBACK, listening
    # the dashboard's web UI is off (Ray keeps a minimal dashboard process without its HTTP port)
    ui_ports = {int(a.split("=")[1]) for p in ours for a in p.cmdline() if a.startswith("--port=")
                and "dashboard.py" in " ".join(p.cmdline())}
    assert not ui_ports & {c.laddr.port for c in listening}


def test_parallel_search_runs_exactly_the_asked_trials(tmp_path: Path, fast_profile) -> None:
    outcome = run_search(_config(fast_profile, 5), tmp_path / "run", execution=ExecutionConfig(workers=2))
    assert sorted(r.number for r in outcome.records) == [0, 1, 2, 3, 4]
    assert all(r.state == TrialState.COMPLETE and r.latency and r.accuracy is not None for r in outcome.records)
    assert all(Path(r.model_path).is_file() for r in outcome.records)
    study = open_study(RunFolder(tmp_path / "run").storage_url(), ["maximize", "minimize"])
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5
    assert json.loads((tmp_path / "run/dense.json").read_text())["latency"]["profile"] == "test-ort"


def test_measurement_actor_screens_with_the_predictor(tmp_path: Path, fast_profile) -> None:
    import dataclasses

    from autoprune.execution.jobs import ScreenJob
    from autoprune.execution.ray_executor import RayExecutor
    from autoprune.execution.runner import TrialRunner
    from autoprune.hardware.predictor import LatencyPredictor, model_layers
    from autoprune.plan import PruningPlan
    from autoprune.pruning import discover_groups
    from tests.tiny_task import tiny_task

    config = dataclasses.replace(_config(fast_profile, 2), max_latency_ms=100.0, finetune={"epochs": 0})
    task = tiny_task()
    dense = task.build_model()
    dense_plan = PruningPlan.from_dict({})
    small = PruningPlan.uniform([g.name for g in discover_groups(dense, task.example_input)], 0.5)
    pruner = TrialRunner(task=task, config=config, dense=dense, meter=None)

    def keys(plan: PruningPlan) -> list[str]:
        return [key for key, _, _ in model_layers(pruner.prune(plan).model, task.example_input)]

    # every layer of the unpruned candidate "takes" 1000 ms, every layer of the small one 1 us
    table = {**{k: 1000.0 for k in keys(dense_plan)}, **{k: 0.001 for k in keys(small)}}
    predictor = LatencyPredictor(profile=fast_profile.name, table=table).bind(fast_profile)
    executor = RayExecutor(ExecutionConfig(workers=2), config, dense, task.example_input, predictor=predictor)
    with executor:
        executor.submit(ScreenJob(number=0, plan=dense_plan))
        executor.submit(ScreenJob(number=1, plan=small))
        done = executor.wait()
        while executor.in_flight:
            done += executor.wait()
    slow, fast = sorted((d.result for d in done), key=lambda r: r.number)
    assert slow.screened_unmeasured and slow.predicted_ms == pytest.approx(1000.0 * len(keys(dense_plan)))
    assert "measure" not in slow.seconds and "over the latency budget" in slow.reason
    assert fast.state == TrialState.SCREENED and fast.latency is not None and "measure" in fast.seconds
    assert fast.predicted_ms == pytest.approx(0.001 * len(keys(small)))


def _kill_evaluations(count: int, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the Ray worker process running ``run_job``, ``count`` times."""
    while len(killed) < count and not stop.is_set():
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.pid not in killed and "run_job" in " ".join(proc.cmdline()):
                    proc.send_signal(signal.SIGKILL)
                    killed.append(proc.pid)
            except psutil.Error:
                continue
        time.sleep(0.02)


def test_killed_worker_is_retried_then_recorded_failed(tmp_path: Path, fast_profile) -> None:
    from autoprune.execution.jobs import ScreenJob
    from autoprune.execution.ray_executor import RayExecutor
    from autoprune.plan import PruningPlan
    from tests.tiny_task import tiny_task

    config, task = _config(fast_profile, 1), tiny_task()
    executor = RayExecutor(ExecutionConfig(workers=1, max_retries=1), config, task.build_model(), task.example_input)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_evaluations, args=(2, stop, killed))
    killer.start()
    try:
        executor.submit(ScreenJob(number=7, plan=PruningPlan.from_dict({})))
        records = [d.result for d in executor.wait()]
    finally:
        stop.set()
        killer.join()
        executor.close()
    assert len(killed) == 2  # the first attempt and its one retry
    [record] = records
    assert record.number == 7 and record.state == TrialState.FAILED
    assert "worker died 2 time(s)" in record.reason


def _finished(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as con:
        if not con.execute("select name from sqlite_master where name = 'trials'").fetchone():
            return 0
        return con.execute("select count(*) from trials where state in ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()[0]


@pytest.mark.slow
@pytest.mark.timeout(600)  # a killed driver, then a full resume: up to 150 s + 240 s of waiting
def test_killed_ray_driver_resumes_and_leaves_no_ray_behind(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "autoprune", "search", "--task", TASK, "--agent", "random", "--trials", "4",
           "--workers", "2", "--epochs", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 150
    while time.time() < deadline and not ((out / "study.db").is_file() and _finished(out / "study.db") >= 1):
        time.sleep(0.05)
    children = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = finished_records(open_study(RunFolder(out).storage_url(), ["maximize", "minimize"]))
    assert 1 <= len(before) < 4
    core = [p for p in children if p.name() in ("gcs_server", "raylet")]
    _gone, alive = psutil.wait_procs(core, timeout=20)
    assert len(core) == 2 and not alive  # the local Ray's core dies with its driver
    # Ray's agents notice later; end the rest of what the killed driver started
    for p in children:
        with contextlib.suppress(psutil.Error):
            p.kill()
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    study = open_study(RunFolder(out).storage_url(), ["maximize", "minimize"])
    after = finished_records(study)
    assert len(after) == 4
    by_number = {r.number: r.to_dict() for r in after}
    assert all(by_number[r.number] == r.to_dict() for r in before)  # kept as they were
    # nothing ran twice: every plan was fine-tuned at most once; a random sampler may propose a plan again
    # (the resumed session's seed drew trial 0's plan here), which is then a duplicate pointing at its original
    ran = [json.dumps(r.plan, sort_keys=True) for r in after if r.duplicate_of is None]
    assert len(set(ran)) == len(ran)
    assert all(by_number[r.duplicate_of]["duplicate_of"] is None for r in after if r.duplicate_of is not None)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]


def _write_sweep(folder: Path, profile, trials: int, workers: int) -> Path:

    import yaml

    prof = {k: v for k, v in profile.to_dict().items() if v is not None}
    prof["fast_structures"] = list(prof["fast_structures"])
    (folder / "fast.yaml").write_text(yaml.safe_dump(prof))
    (folder / "space.yaml").write_text(yaml.safe_dump({"name": "t", "min_channels": 4}))
    searches = [{"name": name, "task": TASK, "profile": str(folder / "fast.yaml"), "space": str(folder / "space.yaml"),
                 "agent": agent, "trials": trials, "min_speedup": 0.0, "finetune": {"epochs": 1}}
                for name, agent in (("first", "random"), ("second", "tpe"))]
    sweep = {"name": "tiny", "execution": {"workers": workers}, "searches": searches}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return folder / "sweep.yaml"


def test_sweep_ends_by_its_deadline_with_a_report(tmp_path: Path, fast_profile) -> None:
    from autoprune.results.sweep import run_sweep

    path = _write_sweep(tmp_path, fast_profile, trials=200, workers=2)
    start = time.time()
    # 30 s a search: room for a deadline search's timed first trial (TrialCostJob: a measurement, the scoring passes
    # and fine-tune steps on Ray workers that start cold) and then its trials; 15 s shares left none on a loaded CI
    deadline = start + 60
    outcome = run_sweep(path, tmp_path / "out", deadline=deadline)
    finished = time.time()
    counts = [len(o.records) for _, _, o in outcome.outcomes]
    ran = [n for n, _, _ in outcome.outcomes]
    report = (tmp_path / "out/report.md").read_text()
    # budgets shrank to fit; a loaded machine may leave the second search no time for its set-up and a trial:
    # then it is not started, and the report says so
    assert ran == ["first", "second"] or (ran == ["first"] and "estimated from the searches before them): second."
                                          in report), ran
    assert counts[0] >= 1 and sum(counts) < 400, counts
    assert finished <= deadline + 15  # in-flight trials finish: about one trial's overrun
    for name in ran:
        assert (tmp_path / "out" / name / "pareto.json").is_file()
    assert "## Recommended model per profile" in report and "## Search first: Pareto front" in report
    assert "test-ort" in report
    assert "<table>" in (tmp_path / "out/report.html").read_text()
    summary = json.loads((tmp_path / "out/sweep.json").read_text())
    assert [s["trials"] for s in summary["searches"]] == counts
