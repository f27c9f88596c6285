"""End-to-end searches on the tiny task: hypervolume, proxies, duplicates, rejection, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune.cli import main
from autoprune.config import SearchConfig, SearchSpace
from autoprune.errors import ConfigError
from autoprune.execution.runner import TrialRunner
from autoprune.records import TrialState
from autoprune.results.run import RunFolder
from autoprune.results.search import run_search
from autoprune.search.rl import CURVE_FILE
from autoprune.search.study import HYPERVOLUME_ATTR, open_study
from autoprune.testing.fakes import fake_profile
from tests.conftest import ROOT

TASK = "tests.tiny_task:tiny_task"


def _config(profile, **kwargs) -> SearchConfig:
    base = {"task": TASK, "profile": profile, "space": SearchSpace(name="t", min_channels=4), "trials": 4, "seed": 1,
            "min_speedup": 0.0}
    return SearchConfig(**{**base, **kwargs})


def test_rl_search_tracks_hypervolume_proxies_and_its_learning_curve(tmp_path: Path, fake_profile) -> None:
    outcome = run_search(_config(fake_profile, agent="rl"), tmp_path / "run")
    pareto = json.loads((tmp_path / "run/pareto.json").read_text())
    history = [h["hypervolume"] for h in pareto["hypervolume"]["history"]]
    assert len(history) == 4 and history == sorted(history) and pareto["hypervolume"]["value"] == history[-1]
    assert pareto["hypervolume"]["reference"] == {"accuracy": 0.5, "latency": 1.0}
    study = open_study(RunFolder(tmp_path / "run").storage_url(), ["maximize", "minimize"])
    assert [t.user_attrs[HYPERVOLUME_ATTR] for t in study.trials] == pytest.approx(history)
    complete = [r for r in outcome.records if r.state == TrialState.COMPLETE]
    assert all(r.proxy is not None and 0 <= r.proxy <= 1 for r in complete)
    assert pareto["proxy_vs_full"]["pairs"] == len(complete) and pareto["fine_tunes"] == len(complete)
    curve = json.loads((tmp_path / "run" / CURVE_FILE).read_text())["episodes"]
    assert [c["trial"] for c in curve] == [0, 1, 2, 3]


def test_plans_identical_after_rounding_are_evaluated_once(tmp_path: Path, fake_profile) -> None:
    # rounding to 16 channels leaves the tiny model's 16/32-channel groups few distinct widths
    space = SearchSpace(name="t", min_channels=4, round_to=16)
    outcome = run_search(_config(fake_profile, agent="uniform", space=space, trials=5), tmp_path / "run")
    dups = [r for r in outcome.records if r.duplicate_of is not None]
    assert dups, [r.plan for r in outcome.records]
    for dup in dups:
        original = outcome.records[dup.duplicate_of]
        assert dup.plan != original.plan and dup.channels == original.channels and dup.seconds == {}
    pareto = json.loads((tmp_path / "run/pareto.json").read_text())
    assert pareto["duplicates"] == len(dups)
    own = [r for r in outcome.records if r.duplicate_of is None]
    assert pareto["fine_tunes"] == sum(r.state == TrialState.COMPLETE for r in own)
    assert all(r.duplicate_of is None for r in outcome.front)


def test_low_proxy_candidates_cost_no_fine_tune(tmp_path: Path, fake_profile) -> None:
    outcome = run_search(_config(fake_profile, agent="random", trials=5, proxy_keep=0.01, proxy_warmup=1),
                         tmp_path / "run")
    refused = [r for r in outcome.records if r.state == TrialState.REJECTED]
    assert refused and outcome.records[0].state == TrialState.COMPLETE  # the warm-up candidate is always fine-tuned
    for r in refused:
        assert r.reason.startswith("proxy") and r.proxy is not None and "finetune" not in r.seconds
    assert json.loads((tmp_path / "run/pareto.json").read_text())["proxy_rejected"] == len(refused)


def test_latency_budget_rejects_before_fine_tune() -> None:
    config = SearchConfig(task=TASK, profile=fake_profile(), space=SearchSpace(name="s"), max_latency_ms=2.0)
    runner = TrialRunner(task=None, config=config,
                         dense=None, meter=None)  # type: ignore[arg-type]
    assert runner.screen_reason(1.5, 2.5).startswith("over the latency budget")
    assert runner.screen_reason(0.9, 1.0).startswith("not faster than dense")
    assert runner.screen_reason(1.5, 1.5) == ""


@pytest.mark.parametrize("kwargs, message", [
    ({"max_latency_ms": 1e-6}, "constraints cannot be met: max_latency_ms 1e-06 is below the smallest candidate"),
    ({"max_params": 10}, "constraints cannot be met: max_params 10 is below the smallest candidate"),
    ({"min_accuracy": 1.0}, "constraints cannot be met: min_accuracy 1.0 is above the dense model's"),
    ({"objectives": ("accuracy", "memory")}, "`memory` is not measured by profile 'test-fake'"),
])
def test_impossible_requests_fail_before_any_trial(tmp_path: Path, fake_profile, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_search(_config(fake_profile, **kwargs), tmp_path / "run")
    assert not (tmp_path / "run/study.db").exists() or not open_study(
        RunFolder(tmp_path / "run").storage_url(), ["maximize", "minimize"]).trials


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(text)
    return path


def test_cli_config_file_and_flags(tmp_path: Path) -> None:
    from autoprune.cli import _search_config, build_parser

    path = _write(tmp_path, f"agent: nsga2\ntrials: 7\nobjectives: [accuracy, latency_p90, params]\nmax_params: 5000\n"
                            f"profile: {ROOT / 'hw_profiles/cpu-torch.yaml'}\nreference: {{accuracy: 0.8}}\n")
    args = build_parser().parse_args(["search", "--out", "x", "--config", str(path), "--trials", "3"])
    config = _search_config(args)
    assert (config.agent, config.trials, config.max_params, config.profile.name) == ("nsga2", 3, 5000, "cpu-torch")
    assert config.objectives == ("accuracy", "latency_p90", "params") and config.reference == {"accuracy": 0.8}
    args = build_parser().parse_args(["search", "--out", "x", "--objectives", "accuracy,macs", "--proxy-keep", "0.5"])
    config = _search_config(args)
    assert config.objectives == ("accuracy", "macs") and config.proxy_keep == 0.5 and config.agent == "tpe"


@pytest.mark.parametrize("args, message", [
    (["--agent", "bogus"], "`agent` must be one of global, nsga2, random, rl, tpe, uniform, got 'bogus'"),
    (["--objectives", "accuracy,speed"], "`objectives` must be one of accuracy, latency"),
    (["--objectives", "accuracy,memory"], "`memory` is not measured by profile 'cpu-onnxruntime'"),
    (["--max-latency-ms", "0.000001"], "constraints cannot be met"),
])
def test_cli_bad_search_input_exits_2(tmp_path: Path, capsys, args, message) -> None:
    hw = str(ROOT / "hw_profiles/cpu-onnxruntime.yaml")
    assert main(["search", "--task", TASK, "--hw", hw, "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autoprune: error: ") and message in err and "\n" not in err


def test_config_file_rejects_unknown_fields(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, "agent: tpe\nbudget: 3\n")
    assert main(["search", "--out", str(tmp_path / "run"), "--config", str(path)]) == 2
    assert "search.yaml: unknown field `budget`" in capsys.readouterr().err


def tiny_without_fine_tune():
    """The tiny task with a zero-epoch recipe (the benchmark's AMC-style setting)."""
    from dataclasses import replace

    from tests.tiny_task import tiny_task

    task = tiny_task()
    return replace(task, recipe=replace(task.recipe, epochs=0))


def test_zero_epoch_recipe_scores_the_recalibrated_candidate(tmp_path: Path, fake_profile) -> None:
    outcome = run_search(_config(fake_profile, task="tests.search.test_search_run:tiny_without_fine_tune", trials=2,
                                 agent="uniform"), tmp_path / "run")
    for r in outcome.records:
        assert r.state == TrialState.COMPLETE and r.accuracy == r.proxy and "finetune" not in r.seconds


def test_example_search_config_loads() -> None:
    from autoprune.cli import _search_config, build_parser

    args = build_parser().parse_args(["search", "--out", "x", "--config",
                                      str(ROOT / "search_configs/latency-budget.yaml")])
    config = _search_config(args)
    assert (config.agent, config.max_latency_ms, config.proxy_keep, config.space.name) == ("rl", 1.0, 0.5, "default")


def test_global_search_ranks_the_task_models_channels(tmp_path: Path, fake_profile) -> None:
    """A search with the global agent scores the dense model's channels and prunes the groups unevenly,
    each candidate a different one, each reaching its MAC target."""
    outcome = run_search(_config(fake_profile, agent="global", trials=3), tmp_path / "run")
    complete = [r for r in outcome.records if r.state == TrialState.COMPLETE]
    assert len(complete) == 3 and all(r.duplicate_of is None for r in complete)
    assert any(len({g["ratio"] for g in r.plan.values()}) > 1 for r in complete)
    assert len({r.macs for r in complete}) == 3 and all(r.macs < outcome.dense.macs for r in complete)
