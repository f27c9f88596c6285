"""A noisy candidate is measured again later (at most ``noisy_retries`` times) before its trial completes,
and a front point that stays noisy is marked in pareto.json, ``autoprune pareto`` and the report.

The fake backend's scripted machine (``FakeMachine``) makes the timings noisy or quiet on cue.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune.cli import main
from autoprune.config import SearchConfig, SearchSpace
from autoprune.records import TrialState
from autoprune.results.run import load_run
from autoprune.results.search import run_search
from autoprune.testing.fakes import FakeMachine, fake_profile

TASK = "tests.tiny_task:tiny_task"


@pytest.fixture(autouse=True)
def _machine():
    FakeMachine.script([])
    yield
    FakeMachine.script([])


def _config(trials: int, retries: int) -> SearchConfig:
    profile = fake_profile(max_cv=0.05, max_remeasure=0, noisy_retries=retries)
    return SearchConfig(task=TASK, profile=profile, space=SearchSpace(name="t", min_channels=4), agent="random",
                        trials=trials, seed=2, min_speedup=0.0)


def test_a_machine_that_stays_busy_leaves_marked_front_points_after_n_re_measures(tmp_path: Path, capsys,
                                                                                   monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # the table unwrapped
    FakeMachine.script([(0.0, 0.3)])  # every timing noisy, from the dense model on
    outcome = run_search(_config(3, retries=2), tmp_path / "run")
    complete = [r for r in outcome.records if r.state == TrialState.COMPLETE]
    assert len(outcome.records) == 3 and complete
    assert all(r.noisy and r.remeasures == 2 and "remeasure" in r.seconds for r in complete)
    assert all(r.state != TrialState.COMPLETE or r.noisy for r in outcome.front) and outcome.front
    pareto = json.loads((tmp_path / "run/pareto.json").read_text())
    assert pareto["noisy_front"] == [r.number for r in outcome.front]
    assert main(["pareto", str(tmp_path / "run"), "--json"]) == 0
    front = json.loads(capsys.readouterr().out)["front"]
    assert all(p["noisy"] and p["remeasures"] == 2 and p["latency_cv"] == pytest.approx(0.3) for p in front)
    assert main(["pareto", str(tmp_path / "run")]) == 0
    table = capsys.readouterr().out
    assert "noisy: CV 30.0% after 2 re-measure(s)" in table and "with a noisy latency" in table


def test_a_candidate_measured_quietly_later_enters_the_front_unmarked(tmp_path: Path) -> None:
    # the dense model and the first screens are timed on a busy machine, then it quietens down
    FakeMachine.script([(0.0, 0.3)] * 3 + [(0.0, 0.01)])
    outcome = run_search(_config(3, retries=2), tmp_path / "run")
    complete = [r for r in outcome.records if r.state == TrialState.COMPLETE]
    assert len(outcome.records) == 3 and complete
    assert not any(r.noisy for r in complete)
    remeasured = [r for r in complete if r.remeasures]
    # readings: the dense model (1), trial 0's screen (2), its re-measures (3: still noisy, 4: quiet)
    assert remeasured and remeasured[0].number == 0 and remeasured[0].remeasures == 2
    assert all(r.remeasures <= 2 and r.latency.cv == pytest.approx(0.01) for r in remeasured)
    assert all(r.speedup == pytest.approx(r.dense_latency.median_ms / r.latency.median_ms) for r in remeasured)
    assert json.loads((tmp_path / "run/pareto.json").read_text())["noisy_front"] == []


def test_no_retries_completes_at_once_and_still_marks(tmp_path: Path) -> None:
    FakeMachine.script([(0.0, 0.3)])
    outcome = run_search(_config(2, retries=0), tmp_path / "run")
    complete = [r for r in outcome.records if r.state == TrialState.COMPLETE]
    assert complete and all(r.noisy and r.remeasures == 0 for r in complete)


def test_the_report_says_which_front_points_are_noisy(tmp_path: Path) -> None:
    from autoprune.results.report import write_report

    FakeMachine.script([(0.0, 0.3)])
    run_search(_config(2, retries=1), tmp_path / "run")
    page = write_report(load_run(tmp_path / "run")).html.read_text()
    assert "Not trustworthy" in page and 'class="front noisy"' in page
