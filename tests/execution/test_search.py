from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import autoprune.testing.fakes  # noqa: F401  (the `fake` backend, for command-line searches)
from autoprune.cli import main
from autoprune.config import SearchConfig, SearchSpace
from autoprune.records import TrialState
from autoprune.results.run import RunFolder
from autoprune.results.search import all_failed, run_search
from autoprune.search.study import finished_records, open_study
from tests.conftest import ROOT

TASK = "tests.tiny_task:tiny_task"


def _config(profile, trials: int, agent: str = "tpe") -> SearchConfig:
    return SearchConfig(task=TASK, profile=profile, space=SearchSpace(name="t", min_channels=4), agent=agent,
                        trials=trials, seed=1, min_speedup=0.0)


@pytest.mark.parametrize("agent", ["tpe", "random"])
def test_search_end_to_end(tmp_path: Path, fake_profile, agent: str) -> None:
    events = []
    outcome = run_search(_config(fake_profile, 4, agent), tmp_path / "run", on_event=lambda k, p: events.append(k))
    assert len(outcome.records) == 4 and events.count("trial") == 4
    assert outcome.front and all(r.state == TrialState.COMPLETE for r in outcome.front)
    pareto = json.loads((tmp_path / "run/pareto.json").read_text())
    assert pareto["dense"]["latency"]["median_ms"] > 0 and pareto["trials"]["finished"] == 4
    entry = pareto["front"][0]
    assert {"plan", "accuracy", "latency", "speedup", "macs", "params"} <= set(entry)
    # every front model and the dense one carry a score on the held-out test split as well
    assert 0.0 < entry["test_accuracy"] <= 1.0 and 0.0 < pareto["dense"]["test_accuracy"] <= 1.0
    assert entry["speedup"] == pytest.approx(entry["dense_latency"]["median_ms"] / entry["latency"]["median_ms"])
    assert Path(entry["model_path"]).is_file()
    # the same call again finds the budget spent and repeats nothing
    again = run_search(_config(fake_profile, 4, agent), tmp_path / "run")
    assert [r.number for r in again.records] == [r.number for r in outcome.records]


def test_resume_refuses_a_different_search(tmp_path: Path, fake_profile) -> None:
    from autoprune.errors import ConfigError

    run_search(_config(fake_profile, 1), tmp_path / "run")
    with pytest.raises(ConfigError, match="different `agent`"):
        run_search(_config(fake_profile, 1, agent="random"), tmp_path / "run")


def test_rejected_candidates_cost_no_fine_tune(tmp_path: Path, fake_profile) -> None:
    config = SearchConfig(task=TASK, profile=fake_profile, space=SearchSpace(name="t"), trials=2, seed=0,
                          min_speedup=100.0)
    outcome = run_search(config, tmp_path / "run")
    assert all(r.state == "rejected" and "not faster than dense" in r.reason for r in outcome.records)
    assert all("finetune" not in r.seconds and r.latency is not None for r in outcome.records)


def _cli_search(tmp_path: Path, *extra: str) -> list[str]:
    """A command-line search on the fake backend (instant latency) and the tiny task."""
    (tmp_path / "hw.yaml").write_text("name: t-fake\nbackend: fake\nwarmup_s: 0\nmin_runs: 4\nrepeats: 2\n"
                                      "max_cv: 1.0\nround_to: 4\n")
    (tmp_path / "space.yaml").write_text("name: t\nmin_channels: 4\n")
    (tmp_path / "c.yaml").write_text("min_speedup: 0.0\nfinetune: {epochs: 1}\n")
    return ["search", "--task", TASK, "--hw", str(tmp_path / "hw.yaml"), "--space", str(tmp_path / "space.yaml"),
            "--config", str(tmp_path / "c.yaml"), "--agent", "random", *extra]


def test_a_search_whose_every_trial_failed_exits_1_with_the_commonest_reason(tmp_path: Path, monkeypatch,
                                                                             capsys) -> None:
    import autoprune.execution.runner as runner

    def diverge(*args, **kwargs) -> None:
        raise RuntimeError("fine-tune diverged: loss is nan")

    monkeypatch.setattr(runner, "fine_tune", diverge)
    assert main(_cli_search(tmp_path, "--trials", "3", "--out", str(tmp_path / "run"))) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("autoprune: error: all 3 trials failed; most common reason (3 of 3): RuntimeError: fine-tune "
                       "diverged: loss is nan")
    records = finished_records(open_study(RunFolder(tmp_path / "run").storage_url(), ["maximize", "minimize"]))
    assert [r.state for r in records] == [TrialState.FAILED] * 3
    # one trial that did not fail (complete or rejected) and the search is not a failure
    assert all_failed([dataclasses.replace(records[0], state=TrialState.REJECTED), *records[1:]]) is None
    assert all_failed([]) is None


def test_a_fresh_run_refused_after_set_up_leaves_nothing_and_the_corrected_command_runs(tmp_path: Path,
                                                                                       capsys) -> None:
    out = tmp_path / "run"
    args = _cli_search(tmp_path, "--trials", "1", "--out", str(out))
    assert main(args + ["--min-accuracy", "1.5"]) == 2  # refused after the dense model was measured
    assert "min_accuracy 1.5 is above the dense model's" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()  # an empty folder given as --out is kept, and kept empty
    assert main(args + ["--objectives", "accuracy,memory"]) == 2
    assert list(out.iterdir()) == []
    assert main(args) == 0  # the corrected command on the same --out
    assert (out / "config.json").is_file() and (out / "pareto.json").is_file()


def _finished(db: Path) -> int:
    with sqlite3.connect(db) as con:
        if not con.execute("select name from sqlite_master where name = 'trials'").fetchone():
            return 0
        return con.execute("select count(*) from trials where state in ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()[0]


@pytest.mark.slow
def test_killed_search_resumes_without_lost_or_repeated_trials(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # channel rounding of 1: the tiny model has hundreds of distinct candidates, so the trials are not duplicates of
    # one another that finish in one burst (the profile's rounding of 16 leaves the tiny model one candidate)
    space = tmp_path / "space.yaml"
    space.write_text("name: fine\nstructures: [channel]\nratio_min: 0.0\nratio_max: 0.8\nratio_step: 0.05\n"
                     "min_channels: 4\nround_to: 1\n")
    cmd = [sys.executable, "-m", "autoprune", "search", "--task", TASK, "--hw",
           str(ROOT / "hw_profiles/cpu-onnxruntime.yaml"),
           "--space", str(space), "--agent", "random", "--trials", "5", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "study.db").is_file() and _finished(out / "study.db") >= 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    study = open_study(RunFolder(out).storage_url(), ["maximize", "minimize"])
    before = finished_records(study)
    running = [t for t in study.trials if t.state.name == "RUNNING"]
    assert 2 <= len(before) < 5
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    study = open_study(RunFolder(out).storage_url(), ["maximize", "minimize"])
    after = finished_records(study)
    assert len(after) == 5
    assert [r.to_dict() for r in after[: len(before)]] == [r.to_dict() for r in before]  # kept as they were
    # nothing repeated: no plan fine-tuned twice (a resumed random sampler may draw an earlier plan again:
    # that trial is a duplicate pointing at its original, and costs no fine-tune)
    ran = [json.dumps(r.plan, sort_keys=True) for r in after if r.duplicate_of is None]
    assert len(set(ran)) == len(ran)
    originals = {r.number: r for r in after}
    assert all(originals[r.duplicate_of].duplicate_of is None and "finetune" not in r.seconds
               for r in after if r.duplicate_of is not None)
    for trial in running:  # an interrupted trial was re-run with its plan, as far as it was sampled when
        if "record" in trial.user_attrs:  # killed (one killed after its record was stored is kept instead)
            continue
        params = trial.params.items()
        later = [t for t in study.trials if t.number > trial.number]
        assert any(params <= t.params.items() and "record" in t.user_attrs for t in later)


def test_a_full_disk_is_one_line_naming_the_path(tmp_path: Path, monkeypatch, capsys) -> None:
    import errno

    import autoprune.results.run as run_module

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(run_module, "atomic_write_json", full)
    out = tmp_path / "run"
    assert main(_cli_search(tmp_path, "--trials", "1", "--out", str(out))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"autoprune: error: {out / 'config.json'}: no space left on device; free space or make the folder "
                   "writable, then run the same command again (finished work is kept)"]
    assert not out.exists()  # the fresh run's set-up was undone
